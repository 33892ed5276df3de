"""The SMTP messenger against scripted servers: what goes on the wire when a message is refused."""

from __future__ import annotations

import asyncio

import pytest

from digest.config import Settings
from digest.send.replies import PermanentFailure, Suppressed
from digest.send.transport import SMTPMessenger

MESSAGE = b"Subject: hello\r\n\r\nbody\r\n.\r\n"


async def _scripted(replies: dict[bytes, bytes], received: list[bytes]) -> asyncio.Server:
    """A server that answers each command by its verb and records every line it reads."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            received.append(line)
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    writer.write(b"250 2.0.0 queued\r\n")
                continue
            verb = line[:4].upper()
            writer.write(replies.get(verb, b"250 ok\r\n"))
            in_data = verb == b"DATA" and replies.get(verb, b"").startswith(b"354")
            if verb == b"QUIT":
                break
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _messenger(server: asyncio.Server) -> SMTPMessenger:
    port = server.sockets[0].getsockname()[1]
    return SMTPMessenger(Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_security="none"))


EHLO = b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


def test_a_message_refused_before_it_goes_out_writes_nothing_and_keeps_the_session() -> None:
    received: list[bytes] = []

    async def scenario() -> str:
        server = await _scripted({b"EHLO": EHLO, b"DATA": b"354 go ahead\r\n"}, received)
        messenger = _messenger(server)

        async def refused() -> bytes:
            raise Suppressed

        try:
            with pytest.raises(Suppressed):
                await messenger.push("news@example.org", "gone@example.org", refused)
            # The same connection carries the next message.
            return await messenger.push("news@example.org", "stays@example.org", MESSAGE)
        finally:
            await messenger.close()
            server.close()

    assert asyncio.run(scenario()) == "250 2.0.0 queued"
    commands = [line for line in received if line[:4] in (b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT")]
    assert commands == [
        b"EHLO [127.0.0.1]\r\n",
        b"MAIL FROM:<news@example.org>\r\n",
        b"RCPT TO:<stays@example.org>\r\n",
        b"DATA\r\n",
        b"QUIT\r\n",
    ]


def test_a_354_after_a_refused_recipient_closes_the_connection_rather_than_send_an_empty_message() -> None:
    # RFC 2920 says a server must not accept DATA when no recipient was accepted; one that
    # does would take '.' as an empty message to deliver.
    received: list[bytes] = []

    async def scenario() -> None:
        server = await _scripted(
            {b"EHLO": EHLO, b"RCPT": b"550 5.1.1 no such user\r\n", b"DATA": b"354 go ahead\r\n"}, received
        )
        messenger = _messenger(server)
        try:
            with pytest.raises(PermanentFailure, match="550 5.1.1"):
                await messenger.push("news@example.org", "nobody@example.org", MESSAGE)
            await asyncio.sleep(0.1)  # let the server read whatever was sent
        finally:
            await messenger.close()
            server.close()

    asyncio.run(scenario())
    assert received[-1] == b"DATA\r\n"  # then the connection closed: no '.', no RSET
    assert b".\r\n" not in received


def test_a_server_that_speaks_unasked_on_an_idle_connection_gets_a_new_one() -> None:
    # A relay closing an idle connection says "421" first (RFC 5321 3.8). That reply must
    # not be read as the answer to the next message's MAIL: a new connection carries it.
    connections: list[list[bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines: list[bytes] = []
        connections.append(lines)
        writer.write(b"220 scripted ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            lines.append(line)
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    writer.write(b"250 2.0.0 queued\r\n")
                    if len(connections) == 1:  # the first connection then times out
                        writer.write(b"421 4.4.2 idle too long, closing\r\n")
                        await writer.drain()
                        break
                continue
            verb = line[:4].upper()
            writer.write({b"EHLO": EHLO, b"DATA": b"354 go ahead\r\n"}.get(verb, b"250 ok\r\n"))
            in_data = verb == b"DATA"
            if verb == b"QUIT":
                break
        writer.close()

    async def scenario() -> list[str]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        messenger = _messenger(server)
        try:
            first = await messenger.push("news@example.org", "a@example.org", MESSAGE)
            await asyncio.sleep(0.2)  # the 421 arrives while the connection is idle
            second = await messenger.push("news@example.org", "b@example.org", MESSAGE)
            return [first, second]
        finally:
            await messenger.close()
            server.close()

    assert asyncio.run(scenario()) == ["250 2.0.0 queued", "250 2.0.0 queued"]
    assert len(connections) == 2
    assert b"RCPT TO:<b@example.org>\r\n" in connections[1]
    assert not any(line.startswith(b"RCPT TO:<b@") for line in connections[0])


def test_a_cancelled_push_sends_nothing_more() -> None:
    # Ctrl-C during `digest send --test` cancels the push while its envelope is answered:
    # the connection is dropped where it is, no body follows, no QUIT is mistaken for one.
    delivered: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        in_data, body = False, []
        while line := await reader.readline():
            if in_data:
                if line == b".\r\n":
                    delivered.append(b"".join(body))
                    writer.write(b"250 2.0.0 queued\r\n")
                    in_data = False
                else:
                    body.append(line)
                continue
            verb = line[:4].upper()
            if verb == b"MAIL":
                await asyncio.sleep(0.3)  # a slow server
            writer.write({b"EHLO": EHLO, b"DATA": b"354 go ahead\r\n"}.get(verb, b"250 ok\r\n"))
            in_data = verb == b"DATA"
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        messenger = _messenger(server)
        try:
            await messenger.connect()
            push = asyncio.ensure_future(messenger.push("news@example.org", "a@example.org", MESSAGE))
            await asyncio.sleep(0.1)
            push.cancel()
            with pytest.raises(asyncio.CancelledError):
                await push
            await messenger.close()
            await asyncio.sleep(0.5)  # what the server would have received by now
        finally:
            server.close()

    asyncio.run(scenario())
    assert delivered == []


@pytest.mark.parametrize(
    "greeting", [b"+25 hello\r\n", b"2 hello\r\n", b"150 hello\r\n", b"220-a\r\n250 b\r\n"]
)
def test_a_reply_that_is_not_smtp_drops_the_connection(greeting: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await reader.read(100)
        writer.close()

    async def scenario() -> str:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        messenger = _messenger(server)
        try:
            await messenger.connect()
        except Exception as e:  # noqa: BLE001 - the kind is what is tested
            return f"{type(e).__name__}: {e}"
        finally:
            server.close()
        return "connected"

    outcome = asyncio.run(scenario())
    assert outcome.startswith("TemporaryFailure: connection failed: not an SMTP reply: ")


def test_a_server_silent_in_the_tls_handshake_fails_within_the_timeout() -> None:
    # The connection is dropped at once when the handshake times out, not closed politely
    # (a TLS session half set up would hold the close for seconds more).
    import time

    from digest.send.transport import Timeouts

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-scripted\r\n250 STARTTLS\r\n")
            elif verb == b"STAR":
                writer.write(b"220 go ahead\r\n")
                await asyncio.sleep(10)  # and then nothing: no handshake
                break
        writer.close()

    async def scenario() -> tuple[str, float]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        messenger = SMTPMessenger(
            Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_security="starttls"),
            timeouts=Timeouts.scaled(command=1),
        )
        started = time.monotonic()
        try:
            await messenger.connect()
        except Exception as e:  # noqa: BLE001 - the kind is what is tested
            return f"{type(e).__name__}: {e}", time.monotonic() - started
        finally:
            server.close()
        return "connected", time.monotonic() - started

    outcome, seconds = asyncio.run(scenario())
    assert outcome == "TemporaryFailure: connection failed: no reply in time"
    assert seconds < 4  # the 1 s timeout, not 1 s plus a 5 s wait for a polite close
