"""Scripted SMTP servers on loopback for the transport and loop tests: replies chosen by
the test, every line the client sent recorded, a connect attempt's outcome as text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from digest.send.transport import SMTPMessenger, Timeouts
from digest.settings import Settings

EHLO = b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def scripted_server(
    connections: list[list[bytes]],
    replies: dict[bytes, bytes] | None = None,
    first_closes_with: bytes = b"",
    pause: float = 0.0,
    delays: dict[bytes, float] | None = None,
) -> asyncio.Server:
    """A server that answers each command by its verb and records each connection's lines.

    Defaults: the EHLO above, 354 to DATA, 250 to the rest and to the final dot; *replies*
    overrides them by verb, and *delays* holds a verb's answer back that many seconds
    (a slow server). With *first_closes_with*, the first connection sends those
    bytes right behind the 250 to its first message (in the same write, or *pause*
    seconds later) and closes.
    """
    answers = {b"EHLO": EHLO, b"DATA": b"354 go ahead\r\n", **(replies or {})}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines: list[bytes] = []
        connections.append(lines)
        first = len(connections) == 1
        writer.write(b"220 scripted ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            lines.append(line)
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    if first and first_closes_with:
                        if pause:
                            writer.write(b"250 2.0.0 queued\r\n")
                            await writer.drain()
                            await asyncio.sleep(pause)
                            writer.write(first_closes_with)
                        else:  # one write, so the client reads both in one read
                            writer.write(b"250 2.0.0 queued\r\n" + first_closes_with)
                        await writer.drain()
                        break
                    writer.write(b"250 2.0.0 queued\r\n")
                continue
            verb = line[:4].upper()
            if delays and verb in delays:
                await asyncio.sleep(delays[verb])
            writer.write(answers.get(verb, b"250 ok\r\n"))
            in_data = verb == b"DATA" and answers.get(verb, b"").startswith(b"354")
            if verb == b"QUIT":
                break
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def messenger(port: int, security: str = "none", timeouts: Timeouts | None = None) -> SMTPMessenger:
    return SMTPMessenger(
        Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_security=security), timeouts=timeouts
    )


def connect_outcome(
    handle: Handler, security: str = "none", timeouts: Timeouts | None = None
) -> tuple[str, float]:
    """Connect to a server run by *handle*; return "connected" or the error, and the seconds it took."""

    async def attempt() -> tuple[str, float]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        client = messenger(server.sockets[0].getsockname()[1], security, timeouts)
        started = time.monotonic()
        try:
            await client.connect()
        except Exception as e:  # noqa: BLE001 - the kind is what is tested
            return f"{type(e).__name__}: {e}", time.monotonic() - started
        finally:
            server.close()
        return "connected", time.monotonic() - started

    return asyncio.run(attempt())
