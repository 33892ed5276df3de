"""The SMTP messenger: where a prepared message goes (``outbox.py`` writes files instead).

A messenger sends one message at a time, driven by callbacks so a send needs no
task and no coroutine per message:

- ``ready(callback)`` calls back with None once the messenger can take a message
  (an SMTP connection opened, greeted, secured and logged in; renewed every
  *per_connection* messages or after it was lost), or with the error that stopped it;
- ``check_envelope(sender, recipient)`` raises PermanentFailure for an address the
  server cannot take (a UTF-8 local part without SMTPUTF8), before anything is recorded;
- ``transmit(sender, recipient, data, done)`` sends it and calls ``done`` with the
  server's reply, or with the failure: TemporaryFailure (4xx, connection lost before
  the message was complete), PermanentFailure (5xx for this recipient), Uncertain
  (the final '.' went out, no reply came) or SendError (the send cannot go on: a
  refused connection or login, a reply that refuses the session);
- ``push(sender, recipient, data)`` does all three as one coroutine (``--test``
  copies, tests), and ``close()`` ends the session.

One thread drives every connection; the connection's setup (``session.py``) and
its rare failure paths (RSET after a refused envelope, QUIT) are coroutines, the
per-message path is callbacks on the connection's protocol.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable

from ..errors import SendError
from ..settings import Settings
from .refusals import TOO_BIG_HINT, failure_of
from .replies import PermanentFailure, SessionRefused, TemporaryFailure, Throttled, Uncertain, reply_text
from .session import SMTPSession, Timeouts, check_settings, helo_name

__all__ = [
    "Data",
    "PermanentFailure",
    "SMTPMessenger",
    "TemporaryFailure",
    "Throttled",
    "Timeouts",
    "Uncertain",
    "check_settings",
    "helo_name",
]

log = logging.getLogger(__name__)

# What an envelope address can never hold: it would end or split the MAIL/RCPT command.
_NOT_IN_ENVELOPE = re.compile(r"[\x00-\x20<>\x7f]")

Data = bytes | Callable[[], bytes] | Callable[[], Awaitable[bytes]]


async def _resolve(data: Data) -> bytes:
    """Return the message bytes: given, made by a function, or awaited from one."""
    if callable(data):
        data = data()
        if inspect.isawaitable(data):
            data = await data
    return data


Done = Callable[[object], None]  # called with the server's reply (str) or the failure


class SMTPMessenger(SMTPSession):
    """One SMTP connection, opened on first use and renewed every *per_connection* messages."""

    wire = True  # messages are SMTP DATA: dot-stuffed, ending with the '.' line

    def __init__(self, settings: Settings, per_connection: int = 100, timeouts: Timeouts | None = None) -> None:
        super().__init__(settings, timeouts)
        self.per_connection = per_connection
        self._count = 0  # messages on this connection
        self._opening: asyncio.Task[None] | None = None
        self._cleanup: asyncio.Task[None] | None = None  # RSET after a refused envelope
        self._tasks: set[asyncio.Task[None]] = set()
        # The message in flight: its callback, what it waits for, its deadline.
        self._done: Done | None = None
        self._stage = ""  # "envelope" (pipelined), "MAIL", "RCPT", "DATA" (one by one) or "dot"
        self._commands: tuple[bytes, ...] = ()
        self._replies: list[tuple[int, bytes]] = []
        self._data = b""
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- the connection ------------------------------------------------------------

    async def connect(self) -> None:
        """Open, greet, secure and log in (``SMTPSession.connect``); a fresh count of messages."""
        await super().connect()
        self._count = 0

    def _broken(self) -> str:
        """Why the connection cannot carry a message as it is, or '' if it can."""
        conn = self._conn
        if conn is None or conn.transport is None:
            return "not connected"
        if conn.error is not None:
            return str(conn.error) or type(conn.error).__name__
        if conn.pending():  # the server spoke unasked (a 421 before closing, say)
            return "the server spoke out of turn"
        return ""

    def _usable(self) -> bool:
        """Whether the open connection can take the next message as it is."""
        return not self._broken() and self._count < self.per_connection

    def ready(self, callback: Callable[[Exception | None], None]) -> None:
        """Call back with None once a message can go, or with what prevented it."""
        if self._usable():
            callback(None)
            return

        def opened(task: asyncio.Task[None]) -> None:
            self._opening = None
            callback(TemporaryFailure("the send stopped") if task.cancelled() else task.exception())

        self._opening = self._background(self._reopen())
        self._opening.add_done_callback(opened)

    def _background(self, work: Awaitable[None]) -> asyncio.Task[None]:
        """Run *work* as a task, referenced until it ends (asyncio keeps only a weak one)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _reopen(self) -> None:
        await self.close()
        await self.connect()

    # -- messages --------------------------------------------------------------------

    def check_envelope(self, sender: str, recipient: str) -> None:
        """Raise PermanentFailure for addresses this server cannot take (call after ready).

        An address that would break the command line (CR, LF, NUL, a space, '<' or '>')
        never reaches it: for the sender that stops the send (every message has it).
        """
        if _NOT_IN_ENVELOPE.search(sender):
            raise SendError(
                f"the envelope sender {sender!r} cannot be written in an SMTP command",
                hint="check 'from' and 'bounce_address' in digest.toml: one plain address each",
            )
        # The reasons are digest's own, not a server's reply: they carry no reply code.
        if _NOT_IN_ENVELOPE.search(recipient):
            raise PermanentFailure(
                "not sent: the address cannot be written in an SMTP command "
                "(a space, '<', '>' or a control character)"
            )
        if not (sender.isascii() and recipient.isascii()) and "smtputf8" not in self._extensions:
            raise PermanentFailure(
                f"not sent: the address has a non-ASCII local part and the server "
                f"{self.settings.smtp_host}:{self._port()} does not "
                "offer SMTPUTF8 (RFC 6531); a server that does can take it (Postfix: smtputf8_enable = yes)"
            )

    def transmit(self, sender: str, recipient: str, data: bytes, done: Done) -> None:
        """Send one message (SMTP DATA) on the ready connection; call *done* with the outcome.

        MAIL, RCPT and DATA go in one write where the server offers PIPELINING
        (RFC 2920). Addresses are envelope forms (IDNA domains); a UTF-8 local part
        goes with SMTPUTF8 (see check_envelope).
        """
        conn = self._conn
        broken = self._broken()
        if broken:  # lost, or the server spoke, while the message was claimed: write nothing
            self._abandon()
            asyncio.get_running_loop().call_soon(done, TemporaryFailure(f"connection lost: {broken}"))
            return
        utf8 = not (sender.isascii() and recipient.isascii())
        encoding = "utf-8" if utf8 else "ascii"
        # SIZE= (RFC 1870): a server that takes less refuses at MAIL, before the message goes.
        # The size leaves out the final '.' line (and, an estimate, counts a stuffed dot).
        size = f" SIZE={len(data) - 3}" if "size" in self._extensions else ""
        self._commands = (
            f"MAIL FROM:<{sender}>{size}{' SMTPUTF8' if utf8 else ''}\r\n".encode(encoding),
            f"RCPT TO:<{recipient}>\r\n".encode(encoding),
            b"DATA\r\n",
        )
        self._count += 1
        self._done, self._data, self._replies = done, data, []
        conn.on_reply, conn.on_lost = self._on_reply, self._on_lost
        self._arm(self.timeouts.command)
        if "pipelining" in self._extensions:
            self._stage = "envelope"
            conn.transport.write(b"".join(self._commands))
        else:
            self._stage = "MAIL"
            conn.transport.write(self._commands[0])

    def check_size(self, data: bytes) -> None:
        """Raise SessionRefused if the message (SMTP DATA) is larger than the server's SIZE.

        Call after ready, before the message is claimed: the message of every reader is
        about as large, so the send stops with nobody failed. The size is RFC 1870's:
        without the final '.' line and the dots that stuffing added.
        """
        limit = self._size_limit
        if limit and len(data) - 3 > limit:
            size = len(data) - 3 - data.count(b"\r\n..")
            if size > limit:
                raise self._too_big(size)

    def _too_big(self, size: int) -> SendError:
        return SessionRefused(
            f"the message is {size:,} bytes and the server {self.settings.smtp_host}:{self._port()} "
            f"takes at most {self._size_limit:,} (its SIZE)",
            hint=TOO_BIG_HINT,
        )

    def _on_reply(self, code: int, message: bytes) -> None:
        if self._stage == "dot":
            self._finish(code, message)
            return
        replies = self._replies
        replies.append((code, message))
        if self._stage != "envelope" and code < 400 and len(replies) < 3:  # one by one
            self._stage = ("MAIL", "RCPT", "DATA")[len(replies)]
            self._conn.transport.write(self._commands[len(replies)])
            return
        if self._stage == "envelope" and len(replies) < 3:
            return
        for (got, text), expected, name in zip(
            replies, (250, 250, 354), ("MAIL", "RCPT", "DATA"), strict=False
        ):
            if got != expected and not (expected == 250 and got == 251):
                self._refused(got, text, name, replies[-1][0] == 354)
                return
        # One deadline for writing the message and reading the reply to its final dot.
        self._stage = "dot"
        self._arm(self.timeouts.data_end)
        self._conn.transport.write(self._data)

    def _finish(self, code: int, message: bytes) -> None:
        """The reply to the final dot.

        Reported once the rest of this read is parsed (Replies.after_read): a 421
        right behind the 250, say, is seen first, so the next message sees the
        connection as it is.
        """
        conn = self._conn
        done = self._end()
        if 200 <= code < 300:  # 250; any other 2xx is a success too, never to be sent again
            conn.after_read(done, reply_text(code, message))
            return
        failure, drop = failure_of(code, message, "the message")
        if drop:
            self._abandon()
            conn.after_read(done, failure)
            return
        # RSET before the next message, as smtplib does: Postfix keeps the transaction open
        # after a refusal by smtpd_end_of_data_restrictions, and the next MAIL would get
        # "503 5.5.1 Error: nested MAIL command".
        self._clean_up_then(done, failure, drop=False)

    def _refused(self, code: int, message: bytes, command: str, waiting_for_data: bool) -> None:
        """A refused envelope: leave the session clean (or close it), then report."""
        done = self._end()
        failure, drop = failure_of(code, message, command)
        # A server that waits for a body although it refused part of the envelope (RFC 2920
        # says it must not): ending it with '.' could deliver an empty message, closing the
        # connection cannot.
        self._clean_up_then(done, failure, drop=waiting_for_data or drop)

    def _clean_up_then(self, done: Done, failure: Exception, drop: bool) -> None:
        """RSET the session (or close it, with *drop*), then report *failure* to *done*."""

        async def clean_up() -> None:
            try:
                if drop:
                    await self._drop()
                else:
                    await self._reset()
            finally:
                done(failure)

        self._cleanup = self._background(clean_up())

    def _on_lost(self, error: Exception) -> None:
        """The connection was lost with a message in flight."""
        self._conn = None
        self._report_lost(error)

    def _report_lost(self, error: Exception) -> None:
        written = self._stage == "dot"
        done = self._end()
        reason = str(error) or type(error).__name__
        if written:
            done(Uncertain(f"no reply after the message was sent: {reason}"))
        else:
            done(TemporaryFailure(f"connection lost: {reason}"))

    def _end(self) -> Done:
        """Detach the message in flight from the connection; return its callback."""
        done, self._done, self._data = self._done, None, b""
        assert done is not None
        if self._conn is not None:
            self._conn.on_reply = self._conn.on_lost = None
        return done

    # A single timer per connection, moved lazily: a message only sets the deadline;
    # the timer, when it fires early, re-arms itself for the deadline now in force.
    # Only a deadline earlier than the timer (a short --data-timeout) moves it at once.
    def _arm(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = self._deadline = loop.time() + seconds
        timer = self._timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._done is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._expire)
            return
        self._abandon()
        self._report_lost(TimeoutError("no reply in time"))

    @property
    def in_flight(self) -> bool:
        """Whether a message is on its way (written, or being written, and not yet answered)."""
        return self._done is not None

    def stop_opening(self) -> None:
        """Give up a connection still being opened (Ctrl-C): no message was claimed for it."""
        if self._opening is not None:
            self._opening.cancel()

    def cut(self) -> None:
        """Drop the connection at once (a second Ctrl-C): a message whose final '.' went
        out ends uncertain, one not yet complete deferred, as when the connection is lost."""
        self.stop_opening()
        in_flight = self.in_flight
        self._abandon()
        if in_flight:
            self._report_lost(ConnectionAbortedError("stopped at once (a second Ctrl-C)"))

    async def push(self, sender: str, recipient: str, data: Data) -> str:
        """Send one message as a coroutine; return the server's reply or raise the failure.

        *data* may be a function (or coroutine function): it is called before anything
        of this message is written, so it may refuse the message (raise, e.g.
        Suppressed or PermanentFailure) and leave the session clean.
        """
        if not self._usable():
            await self._reopen()
        self.check_envelope(sender, recipient)
        data = await _resolve(data)
        self.check_size(data)
        outcome: asyncio.Future[object] = asyncio.get_running_loop().create_future()

        def deliver(result: object) -> None:
            if not outcome.done():
                outcome.set_result(result)

        self.transmit(sender, recipient, data, deliver)
        try:
            result = await outcome
        except asyncio.CancelledError:
            if self._done is not None:  # still in flight: stop it where it is
                self._end()
                self._abandon()
            raise
        if isinstance(result, BaseException):
            raise result
        return str(result)

    async def _reset(self) -> None:
        try:
            async with asyncio.timeout(self.timeouts.command):
                await self._command(b"RSET\r\n")
        except (OSError, EOFError, TimeoutError, AssertionError):
            await self._drop()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._done is not None:  # a message in flight (a cancelled push): no QUIT now
            self._end()
            self._abandon()
        if self._cleanup is not None and not self._cleanup.done():
            await asyncio.wait([self._cleanup], timeout=5)
        if self._conn is not None and self._conn.error is None:
            try:
                async with asyncio.timeout(5):
                    await self._command(b"QUIT\r\n")
            except (OSError, EOFError, TimeoutError):
                pass
        await self._drop()
