"""Opening an SMTP session: connect, greet, EHLO (or HELO), STARTTLS and AUTH, with the
timeouts of RFC 5321; the check of the SMTP settings and the name digest greets with.

``SMTPSession`` holds one connection to the server; ``transport.SMTPMessenger`` sends
messages on it. A 4xx reply on the way (a 421 greeting, a 454 to STARTTLS or AUTH) or a
lost connection is a TemporaryFailure, retried by the send; a refused or unknown host,
a refused login and a broken TLS session are a SendError, which stops it.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import socket
import ssl
from dataclasses import dataclass

from ..errors import ConfigError, SendError
from ..headers import ascii_domain
from ..settings import Settings, all_loopback, is_loopback
from .replies import Replies, TemporaryFailure, reply_text


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
    try:
        host = ascii_domain(settings.smtp_host)
    except ValueError as e:
        raise ConfigError(
            f"DIGEST_SMTP_HOST is not a host name: {e}",
            hint="set DIGEST_SMTP_HOST to the server's name or address",
        ) from None
    if settings.smtp_cafile and not os.path.isfile(settings.smtp_cafile):
        raise ConfigError(
            f"DIGEST_SMTP_CAFILE is not a file: {settings.smtp_cafile}",
            hint="give the path of the PEM file of the CA that signed the server's certificate",
        )
    if settings.smtp_security == "none" and settings.smtp_username and not is_loopback(host):
        raise ConfigError(
            f"DIGEST_SMTP_SECURITY=none would send the password unencrypted to {settings.smtp_host}",
            hint="use starttls or tls; 'none' with a login is only allowed to this machine",
        )


def hide_login(text: bytes, username: str, password: str) -> bytes:
    """Return a server's reply with the login taken out, should the server echo it: AUTH
    PLAIN's and LOGIN's base64 forms (smtplib's too) and the password as it is."""
    secrets = [
        base64.b64encode(f"\0{username}\0{password}".encode()),
        base64.b64encode(f"{username}\0{username}\0{password}".encode()),
        *(base64.b64encode(s.encode()) for s in (username, password) if s),
        *([password.encode()] if len(password) >= 4 else []),
        # and as the repr of a reply's bytes shows it (smtplib's errors): b'p\xc3\xa4ss\\w'
        *(
            [repr(password.encode())[2:-1].encode(), repr(password.encode() + b'"')[2:-2].encode()]
            if len(password) >= 4
            else []
        ),
    ]
    for secret in secrets:
        text = text.replace(secret, b"[redacted]")
    return text


class SMTPSession:
    """One connection to the SMTP server, opened by ``connect``."""

    def __init__(self, settings: Settings, timeouts: Timeouts | None = None) -> None:
        check_settings(settings)
        self.settings = settings
        self.timeouts = timeouts or Timeouts()
        self._conn: Replies | None = None
        self._extensions: set[str] = set()
        self._auth: set[str] = set()  # the login methods offered (PLAIN, LOGIN, ...)
        self._size_limit = 0  # the largest message the server takes (SIZE, RFC 1870); 0: none given
        self._opened_before = False  # a session was opened (the server ran, at this address)

    @property
    def server(self) -> str:
        s = self.settings
        return f"{s.smtp_host}:{self._port()} ({s.smtp_security})"

    def _port(self) -> int:
        s = self.settings
        return s.smtp_port or {"tls": 465, "starttls": 587}.get(s.smtp_security, 25)

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.smtp_cafile)

    async def connect(self) -> None:
        """Open, greet, secure and log in.

        A 4xx reply on the way (421 greeting, 454 to STARTTLS or AUTH) or a lost
        connection raises TemporaryFailure; a refused or unknown host, a 5xx to the
        login and a broken TLS session raise SendError.
        """
        s = self.settings
        host = ascii_domain(s.smtp_host or "")  # checked by check_settings; IDNA 2008, as addresses
        t = self.timeouts
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(t.greeting):
                tls = self._context() if s.smtp_security == "tls" else None
                address = host
                if s.smtp_security == "none" and s.smtp_username:
                    address = await self._loopback_address(host)
                _, self._conn = await loop.create_connection(Replies, address, self._port(), ssl=tls)
                code, message = await self._conn.reply()
                self._check(code, message, 220, "the greeting")
            await self._ehlo()
            if s.smtp_security == "starttls":
                if "starttls" not in self._extensions:
                    raise SendError(
                        f"{host} does not offer STARTTLS",
                        hint="set DIGEST_SMTP_SECURITY=tls (port 465), or fix the server"
                        + (
                            "; for a server on this machine, DIGEST_SMTP_SECURITY=none"
                            if self._on_loopback()
                            else ""
                        ),
                    )
                async with asyncio.timeout(t.command):
                    conn = self._conn
                    conn.transport.write(b"STARTTLS\r\n")
                    code, message = await conn.reply()
                    self._check(code, message, 220, "STARTTLS")
                    if conn.pending():  # bytes that came in the clear after the 220
                        raise SendError(
                            f"{host} sent data in plain text after its 220 reply to STARTTLS; "
                            "the connection was closed (injected commands?)",
                            hint="something on the path to the server tampers with the "
                            "connection; use DIGEST_SMTP_SECURITY=tls if the server "
                            "offers it",
                        )
                    conn.transport = await loop.start_tls(
                        conn.transport, conn, self._context(), server_hostname=host
                    )
                await self._ehlo()
            if s.smtp_username:
                async with asyncio.timeout(t.command):
                    await self._login(s.smtp_username, s.smtp_password or "")
            self._opened_before = True
        except (SendError, TemporaryFailure):
            self._abandon()
            raise
        except ssl.SSLError as e:
            self._abandon()
            raise SendError(
                f"TLS with {host} failed: {e.reason or e}",
                hint="check DIGEST_SMTP_SECURITY and the server's certificate "
                "(DIGEST_SMTP_CAFILE for a private CA)",
            ) from None
        except (ConnectionRefusedError, socket.gaierror) as e:
            self._abandon()
            if self._opened_before:  # it took connections earlier in this send
                raise SendError(
                    f"{self.server} stopped taking connections during the send: {e}",
                    hint="the server stopped or is restarting; once it runs again, run the same "
                    "command (the send resumes where it stopped)",
                ) from None
            raise SendError(
                f"cannot connect to {self.server}: {e}",
                hint="check DIGEST_SMTP_HOST and DIGEST_SMTP_PORT, and that the "
                "server runs; then run the same command again (a send resumes where it stopped)",
            ) from None
        except (OSError, EOFError, TimeoutError) as e:
            self._abandon()
            reason = str(e) or ("no reply in time" if isinstance(e, TimeoutError) else type(e).__name__)
            raise TemporaryFailure(f"connection failed: {reason}") from None

    async def _loopback_address(self, host: str) -> str:
        """Resolve *host* once and return an address of this machine to connect to: a login
        without TLS goes only there, even if the name resolved elsewhere since it was checked."""
        infos = await asyncio.get_running_loop().getaddrinfo(host, self._port(), type=socket.SOCK_STREAM)
        addresses = [info[4][0] for info in infos]
        if not all_loopback(addresses):
            raise SendError(
                f"DIGEST_SMTP_SECURITY=none would send the password unencrypted to {host} "
                f"({', '.join(sorted(set(addresses))) or 'no address'})",
                hint="use starttls or tls; 'none' with a login is only allowed to this machine",
            )
        return addresses[0]

    def _check(self, code: int, message: bytes, expected: int, what: str) -> None:
        """Raise for an unexpected reply while connecting: 4xx temporary, 5xx fatal."""
        if code == expected:
            return
        if 400 <= code < 500:
            raise TemporaryFailure(f"{what}: {reply_text(code, message)}")
        raise SendError(
            f"{self.settings.smtp_host} refused {what}: {reply_text(code, message)}",
            hint="check the server and its settings for this client",
        )

    async def _command(self, line: bytes) -> tuple[int, bytes]:
        """Write one command and return its reply (outside the per-message path)."""
        assert self._conn is not None and self._conn.transport is not None
        self._conn.transport.write(line)
        return await self._conn.reply()

    def _on_loopback(self) -> bool:
        """Whether the open connection's peer is this machine (its address, no lookup)."""
        transport = self._conn.transport if self._conn is not None else None
        peer = transport.get_extra_info("peername") if transport is not None else None
        return bool(peer) and all_loopback([peer[0]])

    async def _ehlo(self) -> None:
        assert self._conn is not None and self._conn.transport is not None
        name = helo_name()
        if not name:  # an address literal: no DNS lookup of our own name
            address = self._conn.transport.get_extra_info("sockname")[0]
            name = f"[IPv6:{address}]" if ":" in address else f"[{address}]"
        async with asyncio.timeout(self.timeouts.command):
            code, message = await self._command(f"EHLO {name}\r\n".encode())
            if code in (500, 502):  # RFC 5321 3.2: a server without EHLO gets HELO, no extensions
                code, message = await self._command(f"HELO {name}\r\n".encode())
                self._check(code, message, 250, "HELO")
                self._extensions, self._auth, self._size_limit = set(), set(), 0
                return
        self._check(code, message, 250, "EHLO")
        lines = [line.split() for line in message.split(b"\n")[1:]]
        self._extensions = {words[0].lower().decode("ascii", "replace") for words in lines if words}
        # SIZE 10240000: the limit; SIZE alone or SIZE 0: the server names none.
        self._size_limit = next(
            (
                int(words[1])
                for words in lines
                if len(words) > 1 and words[0].upper() == b"SIZE" and words[1].isdigit()
            ),
            0,
        )
        # The login methods offered (AUTH PLAIN LOGIN; AUTH=... of older servers).
        self._auth = {
            word.decode("ascii", "replace").upper()
            for words in lines
            if words and words[0].upper().split(b"=")[0] == b"AUTH"
            for word in [*words[0].split(b"=")[1:], *words[1:]]
            if word
        }

    async def _login(self, username: str, password: str) -> None:
        """AUTH PLAIN, or LOGIN where only that is offered; the password is never logged.

        A server's reply is shown without the encoded credentials, should it echo them.
        """
        if not self._auth and not any(e.startswith("auth") for e in self._extensions):
            raise SendError(
                "the SMTP server offers no login (AUTH)",
                hint="leave DIGEST_SMTP_USERNAME empty, or check the security setting",
            )
        plain = base64.b64encode(f"\0{username}\0{password}".encode())
        steps = [base64.b64encode(s.encode()) for s in (username, password)]  # AUTH LOGIN's

        def shown(code: int, message: bytes) -> str:
            return reply_text(code, hide_login(message, username, password))

        login = "LOGIN" in self._auth and "PLAIN" not in self._auth  # only LOGIN offered
        if not login:
            code, message = await self._command(b"AUTH PLAIN " + plain + b"\r\n")
            login = code == 504 and "LOGIN" in self._auth  # PLAIN refused, LOGIN offered
        if login:
            code, message = await self._command(b"AUTH LOGIN\r\n")
            for step in steps:
                if code != 334:
                    break
                code, message = await self._command(step + b"\r\n")
        if 400 <= code < 500:
            raise TemporaryFailure(f"AUTH: {shown(code, message)}")
        if code != 235:
            raise SendError(
                f"the SMTP server refused the login: {shown(code, message)}",
                hint="check DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD",
            )

    def _abandon(self) -> None:
        """Close the connection now, without waiting."""
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.on_reply = conn.on_lost = None
            conn.transport.abort()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.on_reply = conn.on_lost = None
            conn.transport.close()
            try:
                async with asyncio.timeout(5):
                    await conn.closed
            except TimeoutError:
                conn.transport.abort()
