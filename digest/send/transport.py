"""Messengers: where a prepared message goes. SMTP for real, an outbox folder for files.

A messenger has ``async push(sender, recipient, data)`` and ``async close()``; it
raises TemporaryFailure (4xx, connection lost before the message was complete),
PermanentFailure (5xx for this recipient), Uncertain (the final '.' went out, no
reply came) or SendError (the send cannot go on: refused connection, bad login, a
reply that refuses the session).
The SMTP messenger runs on asyncio: one thread drives every connection, so the
per-message work never waits for another thread.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomically
from ..config import Settings, is_loopback
from ..errors import ConfigError, SendError

log = logging.getLogger(__name__)

REPLY_LINE_LIMIT = 65536  # bytes; RFC 5321 allows 512, servers stay far below this
REPLY_LINES_LIMIT = 1000  # lines of one multi-line reply

Data = bytes | Callable[[], bytes] | Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for each reply; the defaults are RFC 5321 section 4.5.3.2's.

    The RFC's 2 minutes for DATA's 354 are covered by the envelope's (pipelined) 5, and
    its 3 minutes per written block by the 10 minutes for the message and its reply.
    """

    greeting: float = 300.0  # the 220 on connect (5 minutes)
    command: float = 300.0  # EHLO, STARTTLS, AUTH, MAIL, RCPT and DATA's 354 (5 minutes)
    data_end: float = 600.0  # writing the message and the reply to its final '.' (10 minutes)

    @classmethod
    def scaled(cls, command: float | None = None, data_end: float | None = None) -> Timeouts:
        """Return the defaults with the command timeouts and/or the final-dot one replaced."""
        t = cls()
        if command is not None:
            t = cls(command, command, t.data_end)
        if data_end is not None:
            t = cls(t.greeting, t.command, data_end)
        return t


async def _resolve(data: Data) -> bytes:
    """Return the message bytes: given, made by a function, or awaited from one."""
    if callable(data):
        data = data()
        if inspect.isawaitable(data):
            data = await data
    return data


class TemporaryFailure(Exception):
    """Try again later: a 4xx reply or a connection lost before the message was complete."""


class PermanentFailure(Exception):
    """The server refused this recipient or message for good (5xx)."""


class Uncertain(Exception):
    """The final '.' was written but no reply came: the server may have accepted it."""


class Suppressed(Exception):
    """The message was not sent: its reader unsubscribed while the send ran."""


class SessionRefused(SendError):
    """A reply about the session, not the recipient (login required, sender refused)."""


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}".strip()


def _about_the_session(code: int, message: bytes, command: str) -> bool:
    """Whether a 5xx reply concerns the sender or the session rather than the recipient."""
    if code in (530, 535):
        return True  # authentication required / refused, whatever the command
    # A policy reply (5.7.x) to RCPT or to the message concerns that one message: failing the
    # session for it would stop every rerun at the same reader.
    return command == "MAIL" and code >= 500  # the server refuses our sender (or needs a login)


@functools.cache
def helo_name() -> str:
    """Return the name to greet with: this host's name if it is a domain, else ''.

    Only the local name is used, never a DNS lookup (which would block the event loop);
    '' means "use the connection's address literal".
    """
    name = socket.gethostname()
    if "." in name and all(
        part and part.replace("-", "").isalnum() and part.isascii() for part in name.split(".")
    ):
        return name
    return ""


def check_settings(settings: Settings) -> None:
    """Refuse SMTP settings that are missing or would send a password in the clear."""
    if not settings.smtp_host:
        raise ConfigError(
            "no SMTP server is configured",
            hint="set DIGEST_SMTP_HOST (and DIGEST_SMTP_PORT, DIGEST_SMTP_USERNAME, "
            "DIGEST_SMTP_PASSWORD) in .env or the environment, or write files with --outbox DIR",
        )
    if settings.smtp_security == "none" and settings.smtp_username and not is_loopback(settings.smtp_host):
        raise ConfigError(
            f"DIGEST_SMTP_SECURITY=none would send the password unencrypted to {settings.smtp_host}",
            hint="use starttls or tls; 'none' with a login is only allowed to this machine",
        )


class SMTPMessenger:
    """One SMTP connection, opened on first use and renewed every *per_connection* messages."""

    wire = True  # push() takes SMTP DATA: dot-stuffed, ending with the '.' line

    def __init__(self, settings: Settings, per_connection: int = 100, timeouts: Timeouts | None = None) -> None:
        check_settings(settings)
        self.settings = settings
        self.per_connection = per_connection
        self.timeouts = timeouts or Timeouts()
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
        """Open, greet, secure and log in.

        A 4xx reply on the way (421 greeting, 454 to STARTTLS or AUTH) or a lost
        connection raises TemporaryFailure; a refused or unknown host, a 5xx to the
        login and a broken TLS session raise SendError.
        """
        s = self.settings
        host = s.smtp_host or ""
        t = self.timeouts
        try:
            async with asyncio.timeout(t.greeting):
                self._reader, self._writer = await asyncio.open_connection(
                    host,
                    self._port(),
                    limit=REPLY_LINE_LIMIT,
                    ssl=self._context() if s.smtp_security == "tls" else None,
                )
                code, message = await self._read()
                self._check(code, message, 220, "the greeting")
            await self._ehlo()
            if s.smtp_security == "starttls":
                if "starttls" not in self._extensions:
                    raise SendError(
                        f"{host} does not offer STARTTLS",
                        hint="set DIGEST_SMTP_SECURITY=tls (port 465), or fix the server",
                    )
                async with asyncio.timeout(t.command):
                    self._writer.write(b"STARTTLS\r\n")
                    code, message = await self._read()
                    self._check(code, message, 220, "STARTTLS")
                    if self._reader._buffer:  # noqa: SLF001 - bytes that came in the clear
                        raise SendError(
                            f"{host} sent data in plain text after its 220 reply to STARTTLS; "
                            "the connection was closed (injected commands?)",
                            hint="something on the path to the server tampers with the "
                            "connection; use DIGEST_SMTP_SECURITY=tls if the server "
                            "offers it",
                        )
                    await self._writer.start_tls(self._context(), server_hostname=host)
                await self._ehlo()
            if s.smtp_username:
                async with asyncio.timeout(t.command):
                    await self._login(s.smtp_username, s.smtp_password or "")
        except SendError:
            await self._drop()
            raise
        except TemporaryFailure:
            await self._drop()
            raise
        except ssl.SSLError as e:
            await self._drop()
            raise SendError(
                f"TLS with {host} failed: {e.reason or e}",
                hint="check DIGEST_SMTP_SECURITY and the server's certificate "
                "(DIGEST_SMTP_CAFILE for a private CA)",
            ) from None
        except (ConnectionRefusedError, socket.gaierror) as e:
            await self._drop()
            raise SendError(
                f"cannot connect to {self.server}: {e}",
                hint="check DIGEST_SMTP_HOST and DIGEST_SMTP_PORT, and that the "
                "server runs; run the same command again to resume",
            ) from None
        except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError) as e:
            await self._drop()
            reason = str(e) or ("no reply in time" if isinstance(e, TimeoutError) else type(e).__name__)
            raise TemporaryFailure(f"connection failed: {reason}") from None
        self._count = 0

    def _check(self, code: int, message: bytes, expected: int, what: str) -> None:
        """Raise for an unexpected reply while connecting: 4xx temporary, 5xx fatal."""
        if code == expected:
            return
        if 400 <= code < 500:
            raise TemporaryFailure(f"{what}: {_reply(code, message)}")
        raise SendError(
            f"{self.settings.smtp_host} refused {what}: {_reply(code, message)}",
            hint="check the server and its settings for this client",
        )

    async def _ehlo(self) -> None:
        assert self._writer is not None
        name = helo_name()
        if not name:  # an address literal: no DNS lookup of our own name
            address = self._writer.get_extra_info("sockname")[0]
            name = f"[IPv6:{address}]" if ":" in address else f"[{address}]"
        async with asyncio.timeout(self.timeouts.command):
            self._writer.write(f"EHLO {name}\r\n".encode())
            code, message = await self._read()
        self._check(code, message, 250, "EHLO")
        self._extensions = {
            line.split()[0].lower().decode() for line in message.split(b"\n")[1:] if line.strip()
        }

    async def _login(self, username: str, password: str) -> None:
        """AUTH PLAIN (or LOGIN); the password is never logged."""
        assert self._writer is not None
        if "auth" not in self._extensions and not any(e.startswith("auth") for e in self._extensions):
            raise SendError(
                "the SMTP server offers no login (AUTH)",
                hint="leave DIGEST_SMTP_USERNAME empty, or check the security setting",
            )
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
        if 400 <= code < 500:
            raise TemporaryFailure(f"AUTH: {_reply(code, message)}")
        if code != 235:
            raise SendError(
                f"the SMTP server refused the login: {_reply(code, message)}",
                hint="check DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD",
            )

    async def _read(self) -> tuple[int, bytes]:
        """Read one (possibly multi-line) reply."""
        assert self._reader is not None
        try:
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
                if len(lines) >= REPLY_LINES_LIMIT:
                    raise EOFError(f"a reply of more than {REPLY_LINES_LIMIT} lines")
                line = await self._reader.readline()
        except ValueError as e:  # LimitOverrunError: a line longer than the stream's limit
            raise EOFError(f"a reply line longer than {REPLY_LINE_LIMIT} bytes") from e

    # -- messages --------------------------------------------------------------------

    async def push(self, sender: str, recipient: str, data: Data) -> str:
        """Send one message, given as SMTP DATA; return the server's reply.

        MAIL, RCPT and DATA go in one write where the server offers PIPELINING
        (RFC 2920). *data* may be a function (or coroutine function): it is called
        before anything of this message is written, so it may refuse the message
        (raise, e.g. Suppressed or PermanentFailure) and leave the session clean.
        Addresses are envelope forms (IDNA domains); a UTF-8 local part needs the
        server's SMTPUTF8, else that recipient fails (PermanentFailure).
        Raises Uncertain when the final '.' was written and no reply came.
        """
        if self._writer is None or self._count >= self.per_connection:
            await self.close()
            await self.connect()
        writer = self._writer
        assert writer is not None
        utf8 = not (sender.isascii() and recipient.isascii())
        if utf8 and "smtputf8" not in self._extensions:
            raise PermanentFailure(
                "553 5.6.7 the address has a non-ASCII local part and the server does not offer SMTPUTF8"
            )
        commands = (
            f"MAIL FROM:<{sender}>{' SMTPUTF8' if utf8 else ''}\r\n",
            f"RCPT TO:<{recipient}>\r\n",
            "DATA\r\n",
        )
        t = self.timeouts
        written = False  # whether the message (and its final dot) went out
        try:
            async with asyncio.timeout(t.command) as deadline:
                # Made (and recorded) before any command of this message goes out: a
                # message refused here leaves the session as it was.
                data = await _resolve(data)
                self._count += 1  # a refused message used no turn of the connection
                if "pipelining" in self._extensions:
                    writer.write("".join(commands).encode("utf-8" if utf8 else "ascii"))
                    replies = [await self._read() for _ in commands]
                else:
                    replies = []
                    for command in commands:
                        writer.write(command.encode("utf-8" if utf8 else "ascii"))
                        replies.append(await self._read())
                        if replies[-1][0] >= 400:
                            break
                for (code, message), expected, name in zip(
                    replies, (250, 250, 354), ("MAIL", "RCPT", "DATA"), strict=False
                ):
                    if code != expected and not (expected == 250 and code == 251):
                        if replies[-1][0] == 354:
                            # The server waits for a body although it refused part of the
                            # envelope (RFC 2920 says it must not): ending it with '.' could
                            # deliver an empty message, closing the connection cannot.
                            await self._drop()
                        else:
                            await self._reset()
                        await self._fail(code, message, name)
                # One deadline for writing the message and reading the final reply.
                deadline.reschedule(asyncio.get_running_loop().time() + t.data_end)
                written = True
                writer.write(data)
                await writer.drain()
                code, message = await self._read()
        except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError) as e:
            await self._drop()
            reason = str(e) or ("no reply in time" if isinstance(e, TimeoutError) else type(e).__name__)
            if written:
                raise Uncertain(f"no reply after the message was sent: {reason}") from None
            raise TemporaryFailure(f"connection lost: {reason}") from None
        if code != 250:
            await self._fail(code, message, "the message")
        return _reply(code, message)

    async def _fail(self, code: int, message: bytes, command: str = "") -> None:
        """Raise the failure a reply means (4xx temporary, 5xx permanent or the session's)."""
        if 400 <= code < 500:
            if code == 421:  # the server is closing the connection
                await self._drop()
            raise TemporaryFailure(_reply(code, message))
        if _about_the_session(code, message, command):
            await self._drop()
            raise SessionRefused(
                f"the server refused the send at {command}: {_reply(code, message)}",
                hint="nobody was marked failed; check the login (DIGEST_SMTP_USERNAME, "
                "DIGEST_SMTP_PASSWORD) and the sender address the server allows, then "
                "run the same command again",
            )
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
