"""The SMTP messenger against scripted servers: what goes on the wire when a message is refused."""

from __future__ import annotations

import asyncio

import pytest

from digest.send.replies import REPLY_LINE_LIMIT, PermanentFailure, Suppressed
from digest.send.transport import Timeouts

from .scripted import connect_outcome, messenger, scripted_server

MESSAGE = b"Subject: hello\r\n\r\nbody\r\n.\r\n"
COMMANDS = (b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT")


def _port(server: asyncio.Server) -> int:
    return server.sockets[0].getsockname()[1]


def test_a_message_refused_before_it_goes_out_writes_nothing_and_keeps_the_session() -> None:
    connections: list[list[bytes]] = []

    async def scenario() -> str:
        server = await scripted_server(connections)
        client = messenger(_port(server))

        async def refused() -> bytes:
            raise Suppressed

        try:
            with pytest.raises(Suppressed):
                await client.push("news@example.org", "gone@example.org", refused)
            # The same connection carries the next message.
            return await client.push("news@example.org", "stays@example.org", MESSAGE)
        finally:
            await client.close()
            server.close()

    assert asyncio.run(scenario()) == "250 2.0.0 queued"
    [received] = connections
    commands = [line for line in received if line[:4] in COMMANDS]
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
    connections: list[list[bytes]] = []

    async def scenario() -> None:
        server = await scripted_server(connections, {b"RCPT": b"550 5.1.1 no such user\r\n"})
        client = messenger(_port(server))
        try:
            with pytest.raises(PermanentFailure, match="550 5.1.1"):
                await client.push("news@example.org", "nobody@example.org", MESSAGE)
            await asyncio.sleep(0.1)  # let the server read whatever was sent
        finally:
            await client.close()
            server.close()

    asyncio.run(scenario())
    [received] = connections
    assert received[-1] == b"DATA\r\n"  # then the connection closed: no '.', no RSET
    assert b".\r\n" not in received


@pytest.mark.parametrize(
    "pause",
    [0.05, 0.0],
    ids=["idle", "in the same read as the 250"],
)
def test_a_server_that_speaks_unasked_gets_the_next_message_on_a_new_connection(pause: float) -> None:
    # A relay closing an idle connection says "421" first (RFC 5321 3.8). That reply must
    # not be read as the answer to the next message's MAIL: a new connection carries it.
    connections: list[list[bytes]] = []

    async def scenario() -> list[str]:
        server = await scripted_server(
            connections, first_closes_with=b"421 4.4.2 idle too long, closing\r\n", pause=pause
        )
        client = messenger(_port(server))
        try:
            first = await client.push("news@example.org", "a@example.org", MESSAGE)
            await asyncio.sleep(0.2)  # the 421 arrives while the connection is idle
            second = await client.push("news@example.org", "b@example.org", MESSAGE)
            return [first, second]
        finally:
            await client.close()
            server.close()

    assert asyncio.run(scenario()) == ["250 2.0.0 queued", "250 2.0.0 queued"]
    assert len(connections) == 2
    assert b"RCPT TO:<b@example.org>\r\n" in connections[1]
    assert not any(line.startswith(b"RCPT TO:<b@") for line in connections[0])


def test_a_cancelled_push_sends_nothing_more() -> None:
    # Ctrl-C during `digest send --test` cancels the push while its envelope is answered:
    # the connection is dropped where it is, no body follows, no QUIT is mistaken for one.
    connections: list[list[bytes]] = []

    async def scenario() -> None:
        server = await scripted_server(connections, delays={b"MAIL": 0.3})  # a slow server
        client = messenger(_port(server))
        try:
            await client.connect()
            push = asyncio.ensure_future(client.push("news@example.org", "a@example.org", MESSAGE))
            await asyncio.sleep(0.1)
            push.cancel()
            with pytest.raises(asyncio.CancelledError):
                await push
            await client.close()
            await asyncio.sleep(0.5)  # what the server would have received by now
        finally:
            server.close()

    asyncio.run(scenario())
    [received] = connections
    assert b".\r\n" not in received  # no message was delivered


@pytest.mark.parametrize(
    "greeting", [b"+25 hello\r\n", b"2 hello\r\n", b"150 hello\r\n", b"220-a\r\n250 b\r\n"]
)
def test_a_reply_that_is_not_smtp_drops_the_connection(greeting: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await reader.read(100)
        writer.close()

    outcome, _ = connect_outcome(handle)
    assert outcome.startswith("TemporaryFailure: connection failed: not an SMTP reply: ")


def test_an_overlong_reply_line_is_a_clear_failure() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220-" + b"x" * (REPLY_LINE_LIMIT + 10) + b"\r\n220 ok\r\n")
        await writer.drain()
        await reader.read(100)
        writer.close()

    outcome, _ = connect_outcome(handle)
    assert outcome == (
        f"TemporaryFailure: connection failed: a reply line longer than {REPLY_LINE_LIMIT} bytes"
    )


def test_a_server_silent_in_the_tls_handshake_fails_within_the_timeout() -> None:
    # The connection is dropped at once when the handshake times out, not closed politely
    # (a TLS session half set up would hold the close for seconds more).
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

    outcome, seconds = connect_outcome(handle, "starttls", Timeouts.scaled(command=1))
    assert outcome == "TemporaryFailure: connection failed: no reply in time"
    assert seconds < 4  # the 1 s timeout, not 1 s plus a 5 s wait for a polite close
