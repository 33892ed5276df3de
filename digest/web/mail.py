"""The confirmation email: one message, built with the email package, sent with smtplib."""

from __future__ import annotations

import base64
import smtplib
import ssl
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid, parseaddr

import jinja2

from ..config import Newsletter
from ..errors import SendError
from ..send.recipients import envelope_address
from ..send.session import hide_login
from ..send.transport import check_settings
from ..settings import Settings

TIMEOUT = 30


def confirmation(
    env: jinja2.Environment, newsletter: Newsletter, address: str, url: str, days: int
) -> EmailMessage:
    """Build the email that asks *address* to confirm a subscription."""
    message = EmailMessage(policy=SMTP)
    message["From"] = newsletter.sender
    # Checked by email-validator: no CR/LF can reach a header. An internationalised domain
    # goes in its IDNA form, as a send writes it, so no SMTPUTF8 is needed for it.
    message["To"] = envelope_address(address)
    if newsletter.reply_to:
        message["Reply-To"] = newsletter.reply_to
    message["Subject"] = f"Confirm your subscription to {newsletter.name}"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=newsletter.sender_domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        env.get_template("confirm_email.txt").render(
            newsletter=newsletter, address=address, confirm_url=url, days=days
        )
    )
    return message


def send(settings: Settings, message: EmailMessage) -> None:
    """Send one message through the configured SMTP server; raise SendError if it fails."""
    check_settings(settings)
    host = settings.smtp_host or ""
    security = settings.smtp_security
    port = settings.smtp_port or {"tls": 465, "starttls": 587}.get(security, 25)
    context = ssl.create_default_context(cafile=settings.smtp_cafile)
    client: smtplib.SMTP | None = None
    try:
        if security == "tls":
            client = smtplib.SMTP_SSL(host, port, timeout=TIMEOUT, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=TIMEOUT)
        if security == "starttls":
            client.starttls(context=context)
        if settings.smtp_username:
            _login(client, settings.smtp_username, settings.smtp_password or "")
        client.send_message(
            message,
            from_addr=envelope_address(parseaddr(message["From"])[1]),
            to_addrs=[envelope_address(address) for address in message.get_all("To", [])],
        )
    except (smtplib.SMTPException, OSError) as e:
        if client is not None:
            client.close()
        # A server may echo the login in its reply: never in the error, nor in a traceback.
        # The reply's own bytes are cleaned (a repr of them would escape a non-ASCII password).
        if isinstance(e, smtplib.SMTPResponseException):
            reply = e.smtp_error if isinstance(e.smtp_error, bytes) else str(e.smtp_error).encode()
            if settings.smtp_username:
                reply = hide_login(reply, settings.smtp_username, settings.smtp_password or "")
            text = f"{type(e).__name__}: {e.smtp_code} {reply.decode('utf-8', 'replace')}"
        else:
            text = f"{type(e).__name__}: {e}"
            if settings.smtp_username:
                text = hide_login(text.encode(), settings.smtp_username, settings.smtp_password or "").decode()
        raise SendError(
            f"cannot send the confirmation email: {text}", hint="check the DIGEST_SMTP_* settings"
        ) from None
    except BaseException:
        if client is not None:
            client.close()
        raise
    # The server took the message: a QUIT it refuses or a connection lost now changes
    # nothing of that (the caller must not say "nothing was changed", nor count it unsent).
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def _login(client: smtplib.SMTP, username: str, password: str) -> None:
    """Log in; a non-ASCII login goes as AUTH PLAIN in UTF-8 (RFC 4616), which smtplib's
    login() cannot send (it encodes as ASCII)."""
    if username.isascii() and password.isascii():
        client.login(username, password)
        return
    client.ehlo_or_helo_if_needed()
    if not client.has_extn("auth"):  # never a login to a server that offers none
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    plain = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
    code, reply = client.docmd("AUTH", f"PLAIN {plain}")
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, reply)
