"""The confirmation email's sending (web/mail.py) against a scripted SMTP server on loopback."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage

import pytest

from digest.errors import SendError
from digest.settings import Settings
from digest.web import mail

from .scripted import scripted_server

EHLO = b"250-scripted\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n"
QUIT = b"221 2.0.0 bye\r\n"


@contextmanager
def server(replies: dict[bytes, bytes]) -> Iterator[tuple[int, list[list[bytes]]]]:
    """A scripted server in a thread of its own (smtplib blocks): its port and the lines it got."""
    connections: list[list[bytes]] = []
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: list[asyncio.Server] = []

    async def start() -> None:
        box.append(await scripted_server(connections, {b"EHLO": EHLO, b"QUIT": QUIT, **replies}))
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()))
    thread.start()
    try:
        assert started.wait(10)
        yield box[0].sockets[0].getsockname()[1], connections
    finally:
        loop.call_soon_threadsafe(box[0].close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "digest@example.org"
    msg["To"] = "reader@example.com"
    msg["Subject"] = "Confirm"
    msg.set_content("Confirm, please.")
    return msg


def settings(port: int, password: str) -> Settings:
    return Settings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        smtp_username="editor",
        smtp_password=password,
    )


def test_a_refused_login_never_shows_the_credentials_a_server_echoes() -> None:
    plain = base64.b64encode(b"\0editor\0s3cret-pass")
    refusal = b"535 5.7.8 authentication failed: unrecognized AUTH PLAIN " + plain + b"\r\n"
    with server({b"AUTH": refusal}) as (port, _), pytest.raises(SendError) as caught:
        mail.send(settings(port, "s3cret-pass"), message())
    text = str(caught.value)
    assert text.startswith("cannot send the confirmation email: SMTPAuthenticationError: 535 5.7.8 ")
    assert "[redacted]" in text and plain.decode() not in text and "s3cret" not in text
    # Nor in a traceback (--verbose): the smtplib error is not chained.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_login_that_is_not_ascii_goes_as_auth_plain_in_utf8() -> None:
    # smtplib's login() encodes as ASCII and raised UnicodeEncodeError (an internal error).
    with server({b"AUTH": b"235 2.7.0 ok\r\n"}) as (port, connections):
        mail.send(settings(port, "Pässwörd-1"), message())
    [lines] = connections
    [auth] = [line for line in lines if line.startswith(b"AUTH")]
    assert base64.b64decode(auth.split()[2]) == "\0editor\0Pässwörd-1".encode()
    assert any(line.upper().startswith(b"RCPT TO:<READER@EXAMPLE.COM>") for line in lines)


def test_a_refused_utf8_login_is_an_error_without_the_password() -> None:
    with server({b"AUTH": b"535 5.7.8 no\r\n"}) as (port, _), pytest.raises(SendError) as caught:
        mail.send(settings(port, "Pässwörd-1"), message())
    assert "535" in str(caught.value) and "Pässwörd" not in str(caught.value)


def test_an_echoed_utf8_password_is_hidden_too() -> None:
    # The reply was shown as the repr of its bytes, where the password's raw UTF-8 never matched.
    refusal = "535 5.7.8 Authentication failed for |editor|Pässwörd-1|\r\n".encode()
    with server({b"AUTH": refusal}) as (port, _), pytest.raises(SendError) as caught:
        mail.send(settings(port, "Pässwörd-1"), message())
    text = str(caught.value)
    assert "[redacted]" in text and "Pässwörd" not in text and "P\\xc3" not in text, text


def test_a_utf8_login_is_never_sent_to_a_server_that_offers_no_auth() -> None:
    # Postfix without SASL answers AUTH with 503: it was taken for "already logged in".
    ehlo = b"250-scripted\r\n250 PIPELINING\r\n"
    replies = {b"EHLO": ehlo, b"AUTH": b"503 5.5.1 Error: authentication not enabled\r\n"}
    with server(replies) as (port, connections), pytest.raises(SendError) as caught:
        mail.send(settings(port, "Pässwörd-1"), message())
    assert "SMTPNotSupportedError" in str(caught.value)
    [lines] = connections
    assert not [line for line in lines if line.upper().startswith((b"AUTH", b"MAIL", b"RCPT"))]


@pytest.mark.parametrize(
    ("password", "escaped"), [("Pässwörd-1", "w\\xc3\\xb6rd"), ("it's\\x-long", "s\\\\x-long")]
)
def test_a_password_echoed_in_a_refused_recipients_reply_is_hidden(password: str, escaped: str) -> None:
    # SMTPRecipientsRefused is no SMTPResponseException: its replies show as reprs of bytes.
    refusal = f"550 5.7.1 not you, your password is {password}\r\n".encode()
    with server({b"AUTH": b"235 2.7.0 ok\r\n", b"RCPT": refusal}) as (port, _):
        with pytest.raises(SendError) as caught:
            mail.send(settings(port, password), message())
    text = str(caught.value)
    assert "SMTPRecipientsRefused" in text and "[redacted]" in text, text
    assert escaped not in text and password not in text, text
