"""The SMTP messenger against scripted servers: what goes on the wire when a message is refused."""

from __future__ import annotations

import asyncio

import pytest

from digest.send.replies import REPLY_LINE_LIMIT, PermanentFailure, SessionRefused, Suppressed
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


def _one_message(replies: dict[bytes, bytes], username: str = "") -> tuple[str, list[list[bytes]]]:
    """Send MESSAGE to a scripted server with these replies; return the outcome and the lines."""
    connections: list[list[bytes]] = []

    async def scenario() -> str:
        server = await scripted_server(connections, replies)
        client = messenger(_port(server))
        if username:
            client.settings = client.settings.__class__(
                smtp_host="127.0.0.1",
                smtp_port=_port(server),
                smtp_security="none",
                smtp_username=username,
                smtp_password="s3cret-pass",
            )
        try:
            return await client.push("news@example.org", "reader@example.org", MESSAGE)
        except Exception as e:  # noqa: BLE001 - the outcome is what is tested
            return f"{type(e).__name__}: {e}"
        finally:
            await client.close()
            server.close()

    return asyncio.run(scenario()), connections


def test_a_server_without_ehlo_gets_helo_and_the_message_goes_one_command_at_a_time() -> None:
    outcome, [lines] = _one_message({b"EHLO": b"502 5.5.1 EHLO not implemented\r\n"})
    assert outcome == "250 2.0.0 queued"
    commands = [line for line in lines if line[:4] in (*COMMANDS, b"HELO")]
    assert commands[:3] == [
        b"EHLO [127.0.0.1]\r\n",
        b"HELO [127.0.0.1]\r\n",
        b"MAIL FROM:<news@example.org>\r\n",
    ]


def test_any_2xx_to_the_final_dot_is_a_success() -> None:
    # A 2xx other than 250 (RFC 5321 says 250, some servers differ): recorded sent, so that
    # --retry-failed can never send a delivered message again.
    connections: list[list[bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines: list[bytes] = []
        connections.append(lines)
        writer.write(b"220 odd ESMTP\r\n")
        while line := await reader.readline():
            lines.append(line)
            verb = line[:4].upper()
            if line == b".\r\n":
                writer.write(b"251 2.0.0 taken, oddly\r\n")
            elif verb == b"EHLO":
                writer.write(b"250-odd\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
            elif verb in (b"MAIL", b"RCPT", b"QUIT"):
                writer.write(b"250 ok\r\n")
        writer.close()

    async def scenario() -> str:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        client = messenger(_port(server))
        try:
            return await client.push("news@example.org", "reader@example.org", MESSAGE)
        finally:
            await client.close()
            server.close()

    assert asyncio.run(scenario()) == "251 2.0.0 taken, oddly"


@pytest.mark.parametrize(
    ("sender", "recipient", "error"),
    [
        ("b@x.org>\r\nRCPT TO:<victim@evil.example", "reader@example.org", "SendError"),
        ("news@example.org", "reader@example.org>\r\nRSET", "PermanentFailure"),
        ("news@example.org", "a b@example.org", "PermanentFailure"),
    ],
)
def test_an_address_that_would_break_the_command_line_never_reaches_the_server(
    sender: str, recipient: str, error: str
) -> None:
    connections: list[list[bytes]] = []

    async def scenario() -> str:
        server = await scripted_server(connections)
        client = messenger(_port(server))
        try:
            await client.push(sender, recipient, MESSAGE)
        except Exception as e:  # noqa: BLE001 - the kind is what is tested
            return type(e).__name__
        finally:
            await client.close()
            server.close()
        return "sent"

    assert asyncio.run(scenario()) == error
    assert not [line for conn in connections for line in conn if line[:4] in (b"MAIL", b"RCPT", b"RSET")]


def test_a_server_offering_only_login_gets_auth_login() -> None:
    ehlo = b"250-scripted\r\n250-PIPELINING\r\n250 AUTH LOGIN\r\n"
    outcome, [lines] = _one_message({b"EHLO": ehlo, b"AUTH": b"535 5.7.8 no\r\n"}, username="editor")
    assert outcome.startswith("SendError: the SMTP server refused the login: 535")
    assert [line for line in lines if line.startswith(b"AUTH")] == [b"AUTH LOGIN\r\n"]


def test_a_refused_login_never_shows_the_credentials_a_server_echoes() -> None:
    import base64

    plain = base64.b64encode(b"\0editor\0s3cret-pass")
    ehlo = b"250-scripted\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n"
    refusal = b"535 5.7.8 bad credentials: AUTH PLAIN " + plain + b"\r\n"
    outcome, [lines] = _one_message({b"EHLO": ehlo, b"AUTH": refusal}, username="editor")
    assert lines[1] == b"AUTH PLAIN " + plain + b"\r\n"  # PLAIN, where it is offered
    assert (
        outcome
        == "SendError: the SMTP server refused the login: 535 5.7.8 bad credentials: AUTH PLAIN [redacted]"
    )
    assert plain.decode() not in outcome and "s3cret" not in outcome


def test_a_login_without_tls_goes_only_to_an_address_of_this_machine(monkeypatch) -> None:
    # The name was loopback when the settings were checked; if it resolves elsewhere when the
    # connection opens (DNS rebinding), the password is not sent there: nothing connects.
    import socket

    from digest.send import transport
    from digest.send.transport import SendError
    from digest.settings import Settings

    client = transport.SMTPMessenger(
        Settings(
            smtp_host="localhost", smtp_port=2525, smtp_security="none", smtp_username="u", smtp_password="p"
        )
    )
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 2525))],
    )
    connected: list[object] = []

    async def never(*args, **kwargs):
        connected.append(args)
        raise AssertionError("connected")

    async def attempt() -> str:
        monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", never)
        try:
            await client.connect()
        except SendError as e:
            return e.message
        return "connected"

    assert asyncio.run(attempt()) == (
        "DIGEST_SMTP_SECURITY=none would send the password unencrypted to localhost (192.0.2.1)"
    )
    assert connected == []


def test_the_size_checked_against_the_servers_is_rfc_1870s() -> None:
    """Without the final '.' line and the dots stuffing added: a message exactly at the
    server's SIZE goes, one byte more does not."""
    message = b"Subject: dots\r\n\r\n.a line that starts with a dot\r\n"
    wire = message.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    client = messenger(25)
    client._size_limit = len(message)
    client.check_size(wire)  # no error
    client._size_limit = len(message) - 1
    with pytest.raises(SessionRefused, match=rf"the message is {len(message)} bytes .* takes at most"):
        client.check_size(wire)


def test_a_refused_message_is_followed_by_rset() -> None:
    """Postfix keeps the transaction open after its end-of-data restrictions refuse a message:
    a MAIL without RSET then gets '503 5.5.1 Error: nested MAIL command'. This server does the
    same; the next message goes, because the client resets first (for 5xx and 4xx alike)."""
    connections: list[list[bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines: list[bytes] = []
        connections.append(lines)
        writer.write(b"220 strict ESMTP\r\n")
        open_transaction, in_data, refusals = (
            False,
            False,
            [b"554 5.7.1 refused at the end\r\n", b"450 4.7.1 later\r\n"],
        )
        while line := await reader.readline():
            lines.append(line)
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    if refusals:
                        writer.write(refusals.pop(0))  # the transaction stays open
                    else:
                        open_transaction = False
                        writer.write(b"250 2.0.0 queued\r\n")
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-strict\r\n250 PIPELINING\r\n")
            elif verb == b"MAIL":
                writer.write(b"503 5.5.1 Error: nested MAIL command\r\n" if open_transaction else b"250 ok\r\n")
                open_transaction = True
            elif verb == b"RSET":
                open_transaction = False
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"DATA":
                in_data = True
                writer.write(b"354 go\r\n")
            else:
                writer.write(b"250 ok\r\n")
        writer.close()

    async def scenario() -> list[str]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        client = messenger(_port(server))
        outcomes = []
        try:
            for reader in ("a@example.org", "b@example.org", "c@example.org"):
                try:
                    outcomes.append(await client.push("news@example.org", reader, MESSAGE))
                except Exception as e:  # noqa: BLE001 - the outcome is what is tested
                    outcomes.append(f"{type(e).__name__}: {e}")
        finally:
            await client.close()
            server.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes == [
        "PermanentFailure: 554 5.7.1 refused at the end",
        "TemporaryFailure: 450 4.7.1 later",
        "250 2.0.0 queued",
    ]
    [lines] = connections  # one connection throughout
    verbs = [line[:4] for line in lines if line[:4] in (b"MAIL", b"RSET")]
    assert verbs == [b"MAIL", b"RSET", b"MAIL", b"RSET", b"MAIL"]


def test_a_server_on_this_machine_without_starttls_is_told_about_security_none() -> None:
    """A local relay (Postfix on loopback, a test server) usually offers no STARTTLS: the
    hint names the setting that fits it, not only implicit TLS on 465."""
    from digest.errors import SendError

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 plain ESMTP\r\n")
        while line := await reader.readline():
            writer.write(b"250-plain\r\n250 PIPELINING\r\n" if line[:4].upper() == b"EHLO" else b"221 bye\r\n")
        writer.close()

    async def attempt() -> SendError:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        client = messenger(_port(server), "starttls")
        try:
            with pytest.raises(SendError) as e:
                await client.connect()
            await client.close()
        finally:
            server.close()
        return e.value

    error = asyncio.run(attempt())
    assert error.message == "127.0.0.1 does not offer STARTTLS"
    assert error.hint == (
        "set DIGEST_SMTP_SECURITY=tls (port 465), or fix the server; "
        "for a server on this machine, DIGEST_SMTP_SECURITY=none"
    )
