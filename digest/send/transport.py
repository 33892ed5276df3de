"""Messengers: where a prepared message goes. SMTP for real, an outbox folder for files.

A messenger has ``push(sender, recipient, data)`` and ``close()``; it raises
TemporaryFailure (4xx, dropped connection), PermanentFailure (5xx for this
recipient) or SendError (the send cannot go on: refused connection, bad login).
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from ..atomic import write_atomically
from ..config import Settings
from ..errors import ConfigError, SendError

log = logging.getLogger(__name__)

TIMEOUT = 60.0


class TemporaryFailure(Exception):
    """Try again later: a 4xx reply or a dropped connection."""


class PermanentFailure(Exception):
    """The server refused this recipient or message for good (5xx)."""


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"


def _read_reply(reader) -> tuple[int, bytes]:
    """Read one (possibly multi-line) SMTP reply: smtplib's getreply, without its overhead."""
    lines = []
    while True:
        line = reader.readline(8193)
        if not line:
            raise smtplib.SMTPServerDisconnected("connection closed by the server")
        lines.append(line[4:].strip())
        if line[3:4] != b"-":
            try:
                return int(line[:3]), b"\n".join(lines)
            except ValueError:
                raise smtplib.SMTPServerDisconnected(f"not an SMTP reply: {line[:40]!r}") from None


def is_loopback_host(host: str) -> bool:
    import ipaddress

    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_settings(settings: Settings) -> None:
    """Refuse SMTP settings that are missing or would send a password in the clear."""
    if not settings.smtp_host:
        raise ConfigError(
            "no SMTP server is configured",
            hint="set DIGEST_SMTP_HOST (and DIGEST_SMTP_PORT, DIGEST_SMTP_USERNAME, "
                 "DIGEST_SMTP_PASSWORD) in .env or the environment, or write files with --outbox DIR")
    if (settings.smtp_security == "none" and settings.smtp_username
            and not is_loopback_host(settings.smtp_host)):
        raise ConfigError(
            "DIGEST_SMTP_SECURITY=none would send the password unencrypted to "
            f"{settings.smtp_host}",
            hint="use starttls or tls; 'none' with a login is only allowed to this machine")


class SMTPMessenger:
    """One SMTP connection, opened on first use and renewed every *per_connection* messages."""

    def __init__(self, settings: Settings, per_connection: int = 100) -> None:
        check_settings(settings)
        self.settings = settings
        self.per_connection = per_connection
        self._smtp: smtplib.SMTP | None = None
        self._pipelining = False
        self._count = 0

    @property
    def server(self) -> str:
        s = self.settings
        return f"{s.smtp_host}:{self._port()} ({s.smtp_security})"

    def _port(self) -> int:
        s = self.settings
        return s.smtp_port or {"tls": 465, "starttls": 587}.get(s.smtp_security, 25)

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.smtp_cafile)

    def connect(self) -> None:
        s = self.settings
        try:
            if s.smtp_security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.smtp_host, self._port(), timeout=TIMEOUT,
                                                      context=self._context())
            else:
                smtp = smtplib.SMTP(s.smtp_host, self._port(), timeout=TIMEOUT)
            smtp.ehlo()
            if s.smtp_security == "starttls":
                if not smtp.has_extn("starttls"):
                    smtp.close()
                    raise SendError(f"{s.smtp_host} does not offer STARTTLS",
                                    hint="set DIGEST_SMTP_SECURITY=tls (port 465), or fix the server")
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password or "")
        except smtplib.SMTPAuthenticationError as e:
            raise SendError(f"the SMTP server refused the login: {_reply(e.smtp_code, e.smtp_error)}",
                            hint="check DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD") from None
        except ssl.SSLError as e:
            raise SendError(f"TLS with {s.smtp_host} failed: {e.reason or e}",
                            hint="check DIGEST_SMTP_SECURITY and the server's certificate "
                                 "(DIGEST_SMTP_CAFILE for a private CA)") from None
        except (ConnectionRefusedError, socket.gaierror, TimeoutError) as e:
            raise SendError(f"cannot connect to {self.server}: {e}",
                            hint="check DIGEST_SMTP_HOST and DIGEST_SMTP_PORT") from None
        except smtplib.SMTPConnectError as e:
            raise SendError(f"{s.smtp_host} refused the connection: "
                            f"{_reply(e.smtp_code, e.smtp_error)}",
                            hint="check the server, or try again later") from None
        except (smtplib.SMTPException, OSError) as e:
            raise TemporaryFailure(f"connection failed: {e}") from None
        if smtp.file is None:  # smtplib reads replies through this buffered file
            smtp.file = smtp.sock.makefile("rb")
        self._smtp = smtp
        self._pipelining = smtp.has_extn("pipelining")
        self._count = 0

    wire = True  # push() takes SMTP DATA: dot-stuffed, ending with the '.' line

    def push(self, sender: str, recipient: str, data: bytes | Callable[[], bytes]) -> str:
        """Send one message, given as SMTP DATA; return the server's reply.

        MAIL, RCPT and DATA go in one write where the server offers PIPELINING
        (RFC 2920); the data is sent as it is, without another pass over it.
        *data* may be a function: it is then called while the server answers the
        envelope, so preparing the message costs no time of its own.
        """
        if self._smtp is None or self._count >= self.per_connection:
            self.close()
            self.connect()
        smtp = self._smtp
        assert smtp is not None
        self._count += 1
        commands = (f"MAIL FROM:<{sender}>\r\n", f"RCPT TO:<{recipient}>\r\n", "DATA\r\n")
        try:
            sock, reader = smtp.sock, smtp.file
            if self._pipelining:
                sock.sendall("".join(commands).encode("ascii"))
                data = data() if callable(data) else data
                replies = [_read_reply(reader) for _ in commands]
            else:
                data = data() if callable(data) else data
                replies = []
                for command in commands:
                    sock.sendall(command.encode("ascii"))
                    replies.append(_read_reply(reader))
                    if replies[-1][0] >= 400:
                        break
            for (code, message), expected in zip(replies, (250, 250, 354), strict=False):
                if code != expected and not (expected == 250 and code == 251):
                    if replies[-1][0] == 354:  # the server waits for a body: end it empty
                        sock.sendall(b".\r\n")
                        _read_reply(reader)
                    self._reset()
                    self._classify(code, message)
            sock.sendall(data)
            code, message = _read_reply(reader)
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            self._drop()
            raise TemporaryFailure(f"connection lost: {e}") from None
        if code != 250:
            self._classify(code, message)
        return _reply(code, message)

    def _classify(self, code: int, message: bytes | str) -> None:
        if 400 <= code < 500:
            if code == 421:
                self._drop()
            raise TemporaryFailure(_reply(code, message))
        raise PermanentFailure(_reply(code, message))

    def _reset(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._drop()


class OutboxMessenger:
    """Write each message as an .eml file instead of sending it."""

    wire = False  # push() takes the message as it is written to a file

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server = f"outbox {folder}"

    def push(self, sender: str, recipient: str, data: bytes | Callable[[], bytes]) -> str:
        data = data() if callable(data) else data
        name = recipient.replace("/", "_").replace("@", "_at_")
        write_atomically({self.folder / f"{name}.eml": data})
        return "written"

    def close(self) -> None:
        pass
