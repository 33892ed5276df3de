"""Messengers: where a prepared message goes. SMTP for real, an outbox folder for files.

A messenger has ``async push(sender, recipient, data)`` and ``async close()``; it
raises TemporaryFailure (4xx, dropped connection), PermanentFailure (5xx for this
recipient) or SendError (the send cannot go on: refused connection, bad login).
The SMTP messenger runs on asyncio: one thread drives every connection, so the
per-message work never waits for another thread.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..atomic import write_atomically
from ..config import Settings, is_loopback
from ..errors import ConfigError, SendError

log = logging.getLogger(__name__)

TIMEOUT = 60.0

Data = bytes | Callable[[], bytes] | Callable[[], Awaitable[bytes]]


async def _resolve(data: Data) -> bytes:
    """Return the message bytes: given, made by a function, or awaited from one."""
    if callable(data):
        data = data()
        if inspect.isawaitable(data):
            data = await data
    return data


class TemporaryFailure(Exception):
    """Try again later: a 4xx reply or a dropped connection."""


class PermanentFailure(Exception):
    """The server refused this recipient or message for good (5xx)."""


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}".strip()


def check_settings(settings: Settings) -> None:
    """Refuse SMTP settings that are missing or would send a password in the clear."""
    if not settings.smtp_host:
        raise ConfigError(
            "no SMTP server is configured",
            hint="set DIGEST_SMTP_HOST (and DIGEST_SMTP_PORT, DIGEST_SMTP_USERNAME, "
                 "DIGEST_SMTP_PASSWORD) in .env or the environment, or write files with --outbox DIR")
    if (settings.smtp_security == "none" and settings.smtp_username
            and not is_loopback(settings.smtp_host)):
        raise ConfigError(
            "DIGEST_SMTP_SECURITY=none would send the password unencrypted to "
            f"{settings.smtp_host}",
            hint="use starttls or tls; 'none' with a login is only allowed to this machine")


class SMTPMessenger:
    """One SMTP connection, opened on first use and renewed every *per_connection* messages."""

    wire = True  # push() takes SMTP DATA: dot-stuffed, ending with the '.' line

    def __init__(self, settings: Settings, per_connection: int = 100) -> None:
        check_settings(settings)
        self.settings = settings
        self.per_connection = per_connection
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._extensions: set[str] = set()
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

    # -- the connection ------------------------------------------------------------

    async def connect(self) -> None:
        s = self.settings
        host = s.smtp_host or ""
        try:
            async with asyncio.timeout(TIMEOUT):
                self._reader, self._writer = await asyncio.open_connection(
                    host, self._port(),
                    ssl=self._context() if s.smtp_security == "tls" else None)
                code, message = await self._read()
                if code != 220:
                    raise SendError(f"{host} refused the connection: {_reply(code, message)}",
                                    hint="check the server, or try again later")
                await self._ehlo()
                if s.smtp_security == "starttls":
                    if "starttls" not in self._extensions:
                        raise SendError(f"{host} does not offer STARTTLS",
                                        hint="set DIGEST_SMTP_SECURITY=tls (port 465), or fix "
                                             "the server")
                    await self._expect(b"STARTTLS\r\n", 220)
                    await self._writer.start_tls(self._context(), server_hostname=host)
                    await self._ehlo()
                if s.smtp_username:
                    await self._login(s.smtp_username, s.smtp_password or "")
        except SendError:
            await self._drop()
            raise
        except ssl.SSLError as e:
            await self._drop()
            raise SendError(f"TLS with {host} failed: {e.reason or e}",
                            hint="check DIGEST_SMTP_SECURITY and the server's certificate "
                                 "(DIGEST_SMTP_CAFILE for a private CA)") from None
        except (ConnectionRefusedError, socket.gaierror) as e:
            await self._drop()
            raise SendError(f"cannot connect to {self.server}: {e}",
                            hint="check DIGEST_SMTP_HOST and DIGEST_SMTP_PORT") from None
        except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError) as e:
            await self._drop()
            raise TemporaryFailure(f"connection failed: {e or type(e).__name__}") from None
        self._count = 0

    async def _ehlo(self) -> None:
        assert self._writer is not None
        self._writer.write(f"EHLO {socket.getfqdn() or 'localhost'}\r\n".encode())
        code, message = await self._read()
        if code != 250:
            raise SendError(f"the server refused EHLO: {_reply(code, message)}")
        self._extensions = {line.split()[0].lower().decode() for line in message.split(b"\n")[1:]
                            if line.strip()}

    async def _login(self, username: str, password: str) -> None:
        """AUTH PLAIN (or LOGIN); the password is never logged."""
        assert self._writer is not None
        if "auth" not in self._extensions and not any(e.startswith("auth")
                                                       for e in self._extensions):
            raise SendError("the SMTP server offers no login (AUTH)",
                            hint="leave DIGEST_SMTP_USERNAME empty, or check the security setting")
        plain = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        self._writer.write(f"AUTH PLAIN {plain}\r\n".encode())
        code, message = await self._read()
        if code == 504:  # PLAIN not offered: LOGIN
            self._writer.write(b"AUTH LOGIN\r\n")
            code, message = await self._read()
            for secret in (username, password):
                if code != 334:
                    break
                self._writer.write(base64.b64encode(secret.encode()) + b"\r\n")
                code, message = await self._read()
        if code != 235:
            raise SendError(f"the SMTP server refused the login: {_reply(code, message)}",
                            hint="check DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD")

    async def _expect(self, command: bytes, expected: int) -> None:
        assert self._writer is not None
        self._writer.write(command)
        code, message = await self._read()
        if code != expected:
            raise SendError(f"{command.decode().strip()} failed: {_reply(code, message)}")

    async def _read(self) -> tuple[int, bytes]:
        """Read one (possibly multi-line) reply."""
        assert self._reader is not None
        line = await self._reader.readline()
        if line[3:4] == b" " and line.endswith(b"\n"):  # the usual one-line reply
            try:
                return int(line[:3]), line[4:].strip()
            except ValueError:
                raise EOFError(f"not an SMTP reply: {line[:40]!r}") from None
        lines = []
        while True:
            if not line.endswith(b"\n"):
                raise EOFError("connection closed by the server")
            lines.append(line[4:].strip())
            if line[3:4] != b"-":
                try:
                    return int(line[:3]), b"\n".join(lines)
                except ValueError:
                    raise EOFError(f"not an SMTP reply: {line[:40]!r}") from None
            line = await self._reader.readline()

    # -- messages --------------------------------------------------------------------

    async def push(self, sender: str, recipient: str, data: Data) -> str:
        """Send one message, given as SMTP DATA; return the server's reply.

        MAIL, RCPT and DATA go in one write where the server offers PIPELINING
        (RFC 2920). *data* may be a function: it is then called while the server
        answers the envelope, so preparing the message costs no time of its own.
        """
        if self._writer is None or self._count >= self.per_connection:
            await self.close()
            await self.connect()
        writer = self._writer
        assert writer is not None
        self._count += 1
        commands = (f"MAIL FROM:<{sender}>\r\n", f"RCPT TO:<{recipient}>\r\n", "DATA\r\n")
        try:
            async with asyncio.timeout(TIMEOUT):
                if "pipelining" in self._extensions:
                    writer.write("".join(commands).encode("ascii"))
                    data = await _resolve(data)
                    replies = [await self._read() for _ in commands]
                else:
                    data = await _resolve(data)
                    replies = []
                    for command in commands:
                        writer.write(command.encode("ascii"))
                        replies.append(await self._read())
                        if replies[-1][0] >= 400:
                            break
                for (code, message), expected in zip(replies, (250, 250, 354), strict=False):
                    if code != expected and not (expected == 250 and code == 251):
                        if replies[-1][0] == 354:  # the server waits for a body: end it empty
                            writer.write(b".\r\n")
                            await self._read()
                        await self._reset()
                        await self._fail(code, message)
                writer.write(data)
                await writer.drain()
                code, message = await self._read()
        except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError) as e:
            await self._drop()
            raise TemporaryFailure(f"connection lost: {e or type(e).__name__}") from None
        if code != 250:
            await self._fail(code, message)
        return _reply(code, message)

    async def _fail(self, code: int, message: bytes | str) -> None:
        """Raise the failure a reply means (4xx temporary, 5xx permanent)."""
        if 400 <= code < 500:
            if code == 421:  # the server is closing the connection
                await self._drop()
            raise TemporaryFailure(_reply(code, message))
        raise PermanentFailure(_reply(code, message))

    async def _reset(self) -> None:
        try:
            assert self._writer is not None
            self._writer.write(b"RSET\r\n")
            await self._read()
        except (OSError, EOFError, AssertionError):
            await self._drop()

    async def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass

    async def close(self) -> None:
        if self._writer is not None:
            try:
                async with asyncio.timeout(5):
                    self._writer.write(b"QUIT\r\n")
                    await self._read()
            except (OSError, EOFError, TimeoutError):
                pass
            await self._drop()


class OutboxMessenger:
    """Write each message as an .eml file instead of sending it."""

    wire = False  # push() takes the message as it is written to a file

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server = f"outbox {folder}"

    async def push(self, sender: str, recipient: str, data: Data) -> str:
        data = await _resolve(data)
        name = recipient.replace("/", "_").replace("@", "_at_")
        write_atomically({self.folder / f"{name}.eml": data})
        return "written"

    async def close(self) -> None:
        pass
