"""SMTP replies: read off a connection as they arrive, and what a refusal means.

``Replies`` (an asyncio protocol) gives each reply as its code and its text (the
lines of a multi-line reply joined with newlines); a server that breaks the
protocol (a line over the limit, too many lines, no code) gets the connection
dropped with the reason. What a refusal means for the send is ``refusals.py``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ..errors import SendError

REPLY_LINE_LIMIT = 65536  # bytes; RFC 5321 allows 512, servers stay far below this
REPLY_LINES_LIMIT = 1000  # lines of one multi-line reply


class TemporaryFailure(Exception):
    """Try again later: a 4xx reply or a connection lost before the message was complete."""


class Throttled(TemporaryFailure):
    """A 4xx saying the server takes mail more slowly than it is given (a rate limit): the
    whole send slows down (``pace.Pace.throttled``), no reader is charged for it."""


class PermanentFailure(Exception):
    """The server refused this recipient or message for good (5xx).

    *command* is what the reply answered ("RCPT", "the message", ...), where a server said it.
    """

    def __init__(self, *args: object, command: str = "") -> None:
        super().__init__(*args)
        self.command = command


class Uncertain(Exception):
    """The final '.' was written but no reply came: the server may have accepted it."""


class Suppressed(Exception):
    """The message was not sent: its reader unsubscribed while the send ran."""


class SessionRefused(SendError):
    """A reply about the session, not the recipient (login required, sender refused).

    *reply* is the server's (code and text). *ambiguous*: a refusal given at RCPT that
    reads as the sender's but may be one reader's (a Postfix restriction class for that
    recipient): the send loop takes it as the session's only the first time (``loop``).
    """

    def __init__(self, message: str, *, hint: str = "", reply: str = "", ambiguous: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.reply = reply
        self.ambiguous = ambiguous


def reply_text(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}".strip()


def reply_code(reply: str) -> int:
    """The code of a reply as ``reply_text`` writes it (550 where it has none)."""
    return int(reply[:3]) if reply[:3].isdigit() else 550


class Replies(asyncio.BufferedProtocol):
    """One SMTP connection's reply reader.

    Complete replies go to ``on_reply`` while it is set (a message in flight), else
    they queue for ``await reply()`` (the session's setup, RSET, QUIT). Once the
    connection is lost or the server breaks the protocol, ``error`` says why.

    It reads into one buffer of its own (a BufferedProtocol): a plain Protocol has
    asyncio allocate 256 KiB for every read of a 20-byte reply.
    """

    READ_SIZE = 16384

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_reply: Callable[[int, bytes], None] | None = None
        self.on_lost: Callable[[Exception], None] | None = None
        self.error: Exception | None = None
        self._partial = b""  # an incomplete line
        self._lines: list[bytes] = []  # the lines so far of a multi-line reply
        self._code = b""  # and its code
        self._queue: deque[tuple[int, bytes]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = memoryview(bytearray(self.READ_SIZE))
        self._after: list[tuple[Callable[[object], None], object]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._buffer[:nbytes].tobytes())

    def after_read(self, callback: Callable[[object], None], arg: object) -> None:
        """Call ``callback(arg)`` once the rest of the current read is parsed.

        A message's outcome is reported so: a 421 right behind its 250 in the same
        read is seen first, so the next message finds the connection as it is. (A
        call_soon would do the same for a few µs more a message.)
        """
        self._after.append((callback, arg))

    def data_received(self, data: bytes) -> None:
        try:
            self._parse(data)
        finally:
            if self._after:
                after, self._after = self._after, []
                for callback, arg in after:
                    callback(arg)

    def _parse(self, data: bytes) -> None:
        if self._partial:
            data, self._partial = self._partial + data, b""
        *lines, rest = data.split(b"\n")
        if len(rest) > REPLY_LINE_LIMIT:
            self._broken(EOFError(f"a reply line longer than {REPLY_LINE_LIMIT} bytes"))
            return
        self._partial = rest
        for line in lines:
            if self.error is not None:
                return
            if len(line) > REPLY_LINE_LIMIT:
                self._broken(EOFError(f"a reply line longer than {REPLY_LINE_LIMIT} bytes"))
                return
            code = line[:3]
            # Three digits, the first 2 to 5 (RFC 5321 4.2), the same on every line of a reply.
            if not (len(code) == 3 and code.isdigit() and 50 <= code[0] <= 53) or (
                self._lines and code != self._code
            ):
                self._broken(EOFError(f"not an SMTP reply: {line[:40]!r}"))
                return
            self._code = code
            self._lines.append(line[4:].strip())
            if line[3:4] == b"-":  # more lines to come
                if len(self._lines) >= REPLY_LINES_LIMIT:
                    self._broken(EOFError(f"a reply of more than {REPLY_LINES_LIMIT} lines"))
                continue
            lines_of_reply, self._lines = self._lines, []
            message = lines_of_reply[0] if len(lines_of_reply) == 1 else b"\n".join(lines_of_reply)
            if self.on_reply is not None:
                self.on_reply(int(code), message)
            else:
                self._queue.append((int(code), message))
                self._wake()

    def pending(self) -> bool:
        """Whether the server sent anything not yet read (bytes or whole replies)."""
        return bool(self._partial or self._lines or self._queue)

    async def reply(self) -> tuple[int, bytes]:
        """Return the next reply, waiting for it; raise the connection's error."""
        while not self._queue:
            if self.error is not None:
                raise self.error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _broken(self, error: Exception) -> None:
        """The server broke the protocol: drop the connection with that reason."""
        self.error = error
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows, with self.error kept

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = exc if isinstance(exc, OSError) else EOFError("connection closed by the server")
        self._wake()
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost(self.error)
