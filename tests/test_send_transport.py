"""The SMTP messenger against scripted servers: what goes on the wire when a message is refused."""

from __future__ import annotations

import asyncio

import pytest

from digest.config import Settings
from digest.send.transport import PermanentFailure, SMTPMessenger, Suppressed

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
