"""The send loop: feed due deliveries to worker threads, each with its own messenger.

Per message the work is: take the prepared bytes (substitution only), mark
'sending', push, mark the outcome. Nothing else.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parseaddr

from ..errors import SendError
from ..message import MessageTemplate
from .journal import Delivery, Journal
from .transport import PermanentFailure, TemporaryFailure

log = logging.getLogger(__name__)

CHUNK = 16  # deliveries per hand-off to a worker


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
    """Counts of this run, updated by the workers."""

    total: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.deferred

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


class RateLimit:
    """A global pace: at most *rate* messages per second across all workers."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class SendLoop:
    def __init__(self, issue: str, template: MessageTemplate, journal: Journal,
                 messenger_factory: Callable[[], object], options: Options,
                 stop: threading.Event | None = None) -> None:
        self.issue = issue
        self.template = template
        self.journal = journal
        self.messenger_factory = messenger_factory
        self.options = options
        self.stop = stop or threading.Event()
        self.sender = parseaddr(template.newsletter.sender)[1]
        self.stats = Stats()
        self.fatal: SendError | None = None
        self._in_a_row = 0
        self._last_failure = ""
        self._rate = RateLimit(options.rate)

    def run(self, progress: Callable[[Stats], None] | None = None) -> Stats:
        """Send every due delivery; return the counts. Raises SendError on a fatal error."""
        states = ("pending", "deferred") + (("sending",) if self.options.resend_uncertain else ())
        self.stats.total = sum(self.journal.counts(self.issue)[s] for s in states)
        # Deliveries go to the workers in small chunks: one queue hand-off per chunk.
        work: queue.Queue[list[Delivery] | None] = queue.Queue(maxsize=self.options.workers * 2)
        threads = [threading.Thread(target=self._worker, args=(work,), name=f"send-{n}",
                                    daemon=True) for n in range(self.options.workers)]
        for t in threads:
            t.start()
        last_id = 0
        try:
            while not self.stop.is_set():
                batch = self.journal.due(self.issue, states, last_id, 512)
                if not batch:
                    break
                last_id = batch[-1].id
                for start in range(0, len(batch), CHUNK):
                    chunk = batch[start:start + CHUNK]
                    while not self.stop.is_set():
                        try:
                            work.put(chunk, timeout=0.2)
                            break
                        except queue.Full:
                            if progress:
                                progress(self.stats)
                if progress:
                    progress(self.stats)
        finally:
            for _ in threads:
                while True:
                    try:
                        work.put(None, timeout=0.2)
                        break
                    except queue.Full:
                        if self.stop.is_set():
                            self._drain(work)
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
                    if progress:
                        progress(self.stats)
        if self.fatal:
            raise self.fatal
        return self.stats

    @staticmethod
    def _drain(work: queue.Queue) -> None:
        try:
            while True:
                work.get_nowait()
        except queue.Empty:
            pass

    def _worker(self, work: queue.Queue) -> None:
        messenger = self.messenger_factory()
        # The last accepted message, recorded together with the start of the next one
        # (one journal commit per message), or at once when no message is waiting.
        accepted: tuple[int, str] | None = None
        try:
            while True:
                try:
                    chunk = work.get_nowait()
                except queue.Empty:
                    accepted = self._record(accepted)
                    chunk = work.get()
                if chunk is None:
                    return
                for delivery in chunk:
                    if self.stop.is_set():
                        break
                    accepted = self._deliver(messenger, delivery, accepted)
        finally:
            self._record(accepted)
            messenger.close()

    def _record(self, accepted: tuple[int, str] | None) -> None:
        if accepted is not None:
            self.journal.mark(accepted[0], "sent", accepted[1])
        return None

    def _deliver(self, messenger, delivery: Delivery,
                 accepted: tuple[int, str] | None) -> tuple[int, str] | None:
        """Send one message; return (id, reply) when accepted (recorded later).

        The journal entry and the message itself are made in ``prepare``, which
        the messenger calls while the server answers the envelope.
        """
        email = delivery.recipient.email
        wire = getattr(messenger, "wire", False)
        personal = self.template.rendered.personal
        message: bytes | None = None

        def prepare() -> bytes:
            nonlocal accepted, message
            self.journal.begin(delivery.id, accepted)  # 'sending' is recorded first
            accepted = None
            if message is None:
                message = (self.template.personalise(delivery.recipient, wire=wire) if personal
                           # one copy for a list address: the list's footer, no personal link
                           else self.template.personalise(None, to=email, wire=wire))
            return message

        delay = self.options.backoff
        try:
            for attempt in range(self.options.retries + 1):
                self._rate.wait()
                try:
                    reply = messenger.push(self.sender, email, prepare)
                except TemporaryFailure as e:
                    reply = str(e)
                    self.journal.mark(delivery.id, "deferred", reply)
                    if attempt < self.options.retries and not self.stop.is_set():
                        log.info("%s: %s; retrying in %.1fs", email, reply, delay)
                        self.stop.wait(delay)
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
            self._record(accepted)  # the previous message, if prepare() never ran

    def _count(self, outcome: str, reply: str = "") -> None:
        with self.stats.lock:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
            if outcome == "sent":
                self._in_a_row = 0
                return
            self._in_a_row += 1
            self._last_failure = reply
            if self._in_a_row >= self.options.max_failures_in_a_row and not self.fatal:
                self.fatal = SendError(
                    f"stopped after {self._in_a_row} failures in a row; last reply: {reply}",
                    hint="check the server and 'digest status'; run send again to resume")
                self.stop.set()
