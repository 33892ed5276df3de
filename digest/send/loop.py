"""The send loop: one asyncio task per connection, fed from the journal in batches.

Per message the work is: fill in the prepared message (substitution only),
record 'sending', push, record the outcome. One thread drives every connection,
so that work never waits for another thread.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parseaddr

from ..errors import SendError
from ..message import MessageTemplate, Recipient
from .journal import Delivery, Journal
from .transport import PermanentFailure, TemporaryFailure

log = logging.getLogger(__name__)

BATCH = 512  # deliveries read from the journal at a time


@dataclass
class Options:
    workers: int = 1
    rate: float | None = None  # messages per second, all workers together
    retries: int = 3
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    max_failures_in_a_row: int = 20
    resend_uncertain: bool = False


@dataclass
class Stats:
    """Counts of this run."""

    total: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.deferred

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


class RateLimit:
    """A global pace: at most *rate* messages per second across all connections."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class SendLoop:
    def __init__(self, issue: str, template: MessageTemplate, journal: Journal,
                 messenger_factory: Callable[[], object], options: Options,
                 stop: threading.Event | None = None,
                 envelope_sender: Callable[[Recipient], str] | None = None) -> None:
        self.issue = issue
        self.template = template
        self.journal = journal
        self.messenger_factory = messenger_factory
        self.options = options
        self.stop = stop or threading.Event()
        self.interrupted = False
        self.sender = parseaddr(template.newsletter.sender)[1]
        self.envelope_sender = envelope_sender or (lambda _recipient: self.sender)
        self.stats = Stats()
        self.fatal: SendError | None = None
        self._in_a_row = 0
        self._rate = RateLimit(options.rate)
        self._states = ("pending", "deferred") + (
            ("sending",) if options.resend_uncertain else ())
        self._due: deque[Delivery] = deque()
        # Group commit: 'sending' entries of the connections that reach that point in
        # the same turn of the event loop are committed together.
        self._begins: list[tuple[int, tuple[int, str] | None]] = []
        self._committed: asyncio.Future[None] | None = None
        self._last_id = 0
        self._exhausted = False

    def run(self, progress: Callable[[Stats], None] | None = None) -> Stats:
        """Send every due delivery; return the counts.

        Raises SendError on a fatal error, and KeyboardInterrupt after Ctrl-C
        (or SIGTERM) once the messages in flight are finished and recorded.
        """
        self.stats.total = sum(self.journal.counts(self.issue)[s] for s in self._states)
        asyncio.run(self._run(progress))
        if self.fatal:
            raise self.fatal
        if self.interrupted:
            raise KeyboardInterrupt
        return self.stats

    async def _run(self, progress: Callable[[Stats], None] | None) -> None:
        loop = asyncio.get_running_loop()
        handled = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._interrupt)
                handled.append(sig)
        workers = [asyncio.create_task(self._worker()) for _ in range(self.options.workers)]
        reporter = asyncio.create_task(self._report(progress)) if progress else None
        try:
            await asyncio.gather(*workers)
        finally:
            if reporter:
                reporter.cancel()
                progress(self.stats)
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _interrupt(self) -> None:
        """Stop taking new recipients; those in flight finish."""
        self.interrupted = True
        self.stop.set()

    async def _report(self, progress: Callable[[Stats], None]) -> None:
        while True:
            progress(self.stats)
            await asyncio.sleep(0.2)

    def _next(self) -> Delivery | None:
        """Return the next due delivery, reading the journal a batch at a time."""
        if not self._due and not self._exhausted:
            batch = self.journal.due(self.issue, self._states, self._last_id, BATCH)
            if batch:
                self._last_id = batch[-1].id
                self._due.extend(batch)
            else:
                self._exhausted = True
        return self._due.popleft() if self._due else None

    async def _worker(self) -> None:
        messenger = self.messenger_factory()
        # The last accepted message, recorded together with the start of the next one
        # (one journal commit per message), or when this worker stops.
        accepted: tuple[int, str] | None = None
        try:
            while not self.stop.is_set():
                delivery = self._next()
                if delivery is None:
                    break
                accepted = await self._deliver(messenger, delivery, accepted)
        finally:
            if accepted is not None:
                self.journal.mark(accepted[0], "sent", accepted[1])
            await messenger.close()

    async def _deliver(self, messenger, delivery: Delivery,
                       accepted: tuple[int, str] | None) -> tuple[int, str] | None:
        """Send one message; return (id, reply) when accepted (recorded later).

        The journal entry and the message itself are made in ``prepare``, which
        the messenger calls while the server answers the envelope.
        """
        email = delivery.recipient.email
        wire = getattr(messenger, "wire", False)
        personal = self.template.rendered.personal
        message: bytes | None = None

        async def prepare() -> bytes:
            nonlocal accepted, message
            done, accepted = accepted, None
            await self._begin(delivery.id, done)  # 'sending' is recorded first
            if message is None:
                message = (self.template.personalise(delivery.recipient, wire=wire) if personal
                           # one copy for a list address: the list's footer, no personal link
                           else self.template.personalise(None, to=email, wire=wire))
            return message

        delay = self.options.backoff
        try:
            for attempt in range(self.options.retries + 1):
                await self._rate.wait()
                if self.journal.is_suppressed(delivery.recipient.email):
                    return None  # unsubscribed while this send ran: not sent, never due again
                try:
                    reply = await messenger.push(self.envelope_sender(delivery.recipient), email,
                                                 prepare)
                except TemporaryFailure as e:
                    reply = str(e)
                    self.journal.mark(delivery.id, "deferred", reply)
                    if attempt < self.options.retries and not self.stop.is_set():
                        log.info("%s: %s; retrying in %.1fs", email, reply, delay)
                        await self._pause(delay)
                        delay *= 2
                        continue
                    self._count("deferred", reply)
                    return None
                except PermanentFailure as e:
                    self.journal.mark(delivery.id, "failed", str(e))
                    self._count("failed", str(e))
                    return None
                except SendError as e:
                    # Nothing was accepted: the delivery is due again next time.
                    self.journal.mark(delivery.id, "pending", None)
                    self.fatal = self.fatal or e
                    self.stop.set()
                    return None
                self._count("sent")
                return (delivery.id, reply)
            return None
        finally:
            if accepted is not None:  # the previous message, when prepare() never ran
                self.journal.mark(accepted[0], "sent", accepted[1])

    async def _begin(self, delivery_id: int, done: tuple[int, str] | None) -> None:
        """Record 'sending' (and the previous message's 'sent'); return once committed."""
        self._begins.append((delivery_id, done))
        committed = self._committed
        if committed is None:
            loop = asyncio.get_running_loop()
            committed = self._committed = loop.create_future()
            loop.call_soon(self._commit_begins)
        await committed

    def _commit_begins(self) -> None:
        entries, self._begins = self._begins, []
        committed, self._committed = self._committed, None
        try:
            self.journal.begin(entries)
        except Exception as e:  # surfaces in every connection waiting on it
            committed.set_exception(e)
        else:
            committed.set_result(None)

    async def _pause(self, seconds: float) -> None:
        """Sleep before a retry; wake early when the send is stopping."""
        end = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < end:
            await asyncio.sleep(min(0.05, end - time.monotonic()))

    def _count(self, outcome: str, reply: str = "") -> None:
        setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        if outcome == "sent":
            self._in_a_row = 0
            return
        self._in_a_row += 1
        if self._in_a_row >= self.options.max_failures_in_a_row and not self.fatal:
            self.fatal = SendError(
                f"stopped after {self._in_a_row} failures in a row; last reply: {reply}",
                hint="check the server and 'digest status'; run send again to resume")
            self.stop.set()
