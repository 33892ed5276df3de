"""The send loop: one asyncio task per connection, fed from the journal in batches.

Per message the work is: fill in the prepared message (substitution only), record
'sending' in the transaction that checks the address is still subscribed, push,
record the outcome (committed at the end of the same event-loop turn, never held
back). One thread drives every connection, so that work never waits for another thread.
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
from ..subscribers import key_hash
from .journal import Delivery, Journal, JournalError
from .recipients import address_key, envelope_address
from .transport import PermanentFailure, Suppressed, TemporaryFailure, Uncertain

log = logging.getLogger(__name__)

BATCH = 512  # deliveries read from the journal at a time


class _Stopped(Exception):
    """The send stopped on a fatal error before this message was claimed."""


@dataclass
class Options:
    workers: int = 1
    rate: float | None = None  # messages per second, all workers together
    retries: int = 3
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    max_failures_in_a_row: int = 20
    resend_uncertain: bool = False
    retry_failed: bool = False


@dataclass
class Stats:
    """Counts of this run."""

    total: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    uncertain: int = 0
    suppressed: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.deferred + self.uncertain + self.suppressed

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
    def __init__(
        self,
        issue: str,
        template: MessageTemplate,
        journal: Journal,
        messenger_factory: Callable[[], object],
        options: Options,
        stop: threading.Event | None = None,
        envelope_sender: Callable[[Recipient, int], str] | None = None,
    ) -> None:
        self.issue = issue
        self.template = template
        self.journal = journal
        self.messenger_factory = messenger_factory
        self.options = options
        self.stop = stop or threading.Event()
        self.interrupted = False
        sender = envelope_address(parseaddr(template.newsletter.sender)[1])
        self.envelope_sender = envelope_sender or (lambda _recipient, _delivery_id: sender)
        self.stats = Stats()
        self.fatal: SendError | None = None
        self._in_a_row = 0
        self._rate = RateLimit(options.rate)
        self._states = (
            ("pending", "deferred")
            + (("sending",) if options.resend_uncertain else ())
            + (("failed",) if options.retry_failed else ())
        )
        self._due: deque[Delivery] = deque()
        # Group commit: the entries of the connections that get there in the same turn
        # of the event loop are committed together, at the end of that turn.
        self._entries: list[tuple[int, str, str | None]] = []
        self._claims: dict[int, str] = {}  # the new attempts among them, by address hash
        self._committed: asyncio.Future[set[int]] | None = None
        self._last_id = 0
        self._exhausted = False

    def run(self, progress: Callable[[Stats], None] | None = None) -> Stats:
        """Send every due delivery; return the counts.

        Raises SendError on a fatal error, and KeyboardInterrupt after Ctrl-C
        (or SIGTERM) once the messages in flight are finished and recorded.
        """
        counts = self.journal.counts(self.issue)
        self.stats.total = sum(counts[s] for s in self._states)
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
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            self._commit()  # whatever the last turn left
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
        try:
            while not self.stop.is_set():
                delivery = self._next()
                if delivery is None:
                    break
                await self._deliver(messenger, delivery)
        except SendError as e:  # the journal cannot be written: stop, record nothing more
            self._stop_with(e)
        except Exception as e:  # a bug must not leave the others running blind
            log.exception("send worker failed")
            self._stop_with(
                SendError(
                    f"the send stopped on an unexpected error: {e!r}",
                    hint="run the same command again to resume; 'digest status' shows where it stands",
                )
            )
        finally:
            try:
                await messenger.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing the connection failed", exc_info=True)

    def _stop_with(self, error: SendError) -> None:
        self.fatal = self.fatal or error
        self.stop.set()

    async def _deliver(self, messenger, delivery: Delivery) -> None:
        """Send one message and record the outcome.

        'sending' is committed in ``prepare``, which the messenger calls before it
        writes anything of the message: a message never goes out that the journal has
        not recorded as in flight, and one refused there leaves the session clean.
        """
        recipient = delivery.recipient
        email = recipient.email
        wire = getattr(messenger, "wire", False)
        personal = self.template.rendered.personal
        sender = envelope_address(self.envelope_sender(recipient, delivery.id))
        to = envelope_address(email)
        hashed = key_hash(delivery.key or address_key(email))

        async def prepare() -> bytes:
            # Called by the messenger before it writes anything of this message.
            if self.fatal:  # the send stopped while this connection was opening
                raise _Stopped
            try:
                message = (
                    self.template.personalise(recipient, wire=wire)
                    if personal
                    # one copy for a list address: the list's footer, no personal link
                    else self.template.personalise(None, to=to, wire=wire)
                )
            except (ValueError, UnicodeError) as e:  # one bad address never stops the send
                raise PermanentFailure(f"cannot be written as a message: {e}") from e
            await self._claim(delivery.id, hashed)  # 'sending' committed, or Suppressed
            return message

        delay = self.options.backoff
        for attempt in range(self.options.retries + 1):
            await self._rate.wait()
            if self.stop.is_set() and attempt:
                break
            try:
                reply = await messenger.push(sender, to, prepare)
            except Suppressed:  # unsubscribed while the send ran: the claim recorded it
                self.stats.suppressed += 1
                return
            except _Stopped:  # nothing claimed, nothing sent: it stays due
                return
            except TemporaryFailure as e:
                reply = str(e)
                self._record(delivery.id, "deferred", reply)
                if attempt < self.options.retries and not self.stop.is_set():
                    log.info("%s: %s; retrying in %.1fs", email, reply, delay)
                    await self._pause(delay)
                    delay *= 2
                    continue
                self._count("deferred", reply)
                return
            except Uncertain as e:  # never retried: the server may have it
                self._record(delivery.id, "sending", str(e))
                self._count("uncertain", str(e))
                return
            except PermanentFailure as e:
                self._record(delivery.id, "failed", str(e))
                self._count("failed", str(e))
                return
            except SendError as e:
                if isinstance(e, JournalError):
                    raise  # the journal failed: write nothing more
                # Nothing was accepted this time: the delivery keeps the state it had
                # (due again for pending and deferred; uncertain and failed stay so).
                before = delivery.state if delivery.state in ("sending", "failed") else "pending"
                if before != "sending":  # an uncertain one keeps its state and its reason
                    self._record(delivery.id, before, None)
                self._stop_with(e)
                return
            # Accepted: recorded 'sent' at the end of this turn of the event loop,
            # together with whatever else this turn records; never held back.
            self._record(delivery.id, "sent", reply)
            self._count("sent")
            return
        self._count("deferred", "stopped before the retry")

    def _record(self, delivery_id: int, state: str, reply: str | None) -> asyncio.Future[set[int]]:
        """Queue an entry for this turn's commit; return the commit's future."""
        self._entries.append((delivery_id, state, reply))
        committed = self._committed
        if committed is None:
            loop = asyncio.get_running_loop()
            committed = self._committed = loop.create_future()
            loop.call_soon(self._commit)
        return committed

    async def _claim(self, delivery_id: int, address_hash: str) -> None:
        """Commit 'sending' for a message about to go out; raise Suppressed if its reader left.

        The suppression check and the 'sending' record are one transaction (Journal.record).
        """
        self._claims[delivery_id] = address_hash
        # Shielded: the commit is shared by every connection of this turn; one waiter
        # cancelled (a timeout, say) must not cancel it for the others.
        refused = await asyncio.shield(self._record(delivery_id, "sending", None))
        if delivery_id in refused:
            raise Suppressed

    def _commit(self) -> None:
        entries, self._entries = self._entries, []
        claims, self._claims = self._claims, {}
        committed, self._committed = self._committed, None
        if not entries:
            return
        try:
            refused = self.journal.record(entries, claims)
        except SendError as e:
            self._stop_with(e)
            if committed is not None and not committed.done():
                committed.set_exception(e)
                committed.exception()  # seen here: no "never retrieved" noise at exit
        else:
            if committed is not None and not committed.done():
                committed.set_result(refused)

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
            self._stop_with(
                SendError(
                    f"stopped after {self._in_a_row} failures in a row; last reply: {reply}",
                    hint="check the server and 'digest status'; run send again to resume",
                )
            )
