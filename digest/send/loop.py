"""The send loop: one lane per connection, fed from the journal in batches.

Per message the work is: fill in the prepared message (substitution only; the
reader's own pieces are worked out a batch of readers at a time), check the
address is still subscribed and record 'sending' (one journal call), transmit,
record the outcome (within three event-loop turns of the reply, shared with the
other connections that got there meanwhile, never held back until the next
message). While a send runs, the journal appends its entries to the send's log
(sendlog.py). One thread drives every connection, and a message's steps are callbacks
(no task or coroutine per message), so that work never waits for another thread
and costs little beyond itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections import deque
from collections.abc import Callable
from email.errors import MessageError
from email.utils import parseaddr
from typing import NamedTuple

from ..errors import SendError
from ..message import MessageTemplate, Recipient
from ..subscribers import key_hash
from .aside import SetAside
from .journal import Delivery, Journal, JournalError
from .lane import Lane
from .options import Options, Stats
from .pace import Pace
from .recipients import address_key, envelope_address
from .refusals import alike_key
from .replies import SessionRefused
from .sendlog import FOLD_SECONDS
from .transport import PermanentFailure

log = logging.getLogger(__name__)

BATCH = 512  # deliveries read from the journal at a time


class Prepared(NamedTuple):
    """What one delivery's message needs from its reader alone (``SendLoop.next_delivery``)."""

    delivery: Delivery
    sender: str  # the envelope's addresses (IDNA domains)
    to: str
    hashed: str  # the address's suppression hash
    pieces: list[bytes] | None  # MessageTemplate.pieces
    error: Exception | None = None  # why the message cannot be written (reported at its turn)


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
        notice: Callable[[str], None] | None = None,
        held: frozenset[int] = frozenset(),
    ) -> None:
        """*held*: deliveries this run must not take (uncertain ones that the server's log
        shows received but not yet queued: ``serverlog``)."""
        self.issue = issue
        self.template = template
        self.journal = journal
        self.messenger_factory = messenger_factory
        self.options = options
        self.stop = stop or threading.Event()
        self.notice = notice  # tells the editor what a Ctrl-C does while messages finish
        self.interrupted = False
        sender = envelope_address(parseaddr(template.newsletter.sender)[1])
        self.envelope_sender = envelope_sender or (lambda _recipient, _delivery_id: sender)
        self.stats = Stats()
        self.fatal: SendError | None = None
        self._in_a_row: dict[str, int] = {}  # readers not delivered since the last delivery, by outcome
        self.pace = Pace(options.rate, first_pause=options.backoff)
        self._states = options.due_states
        self._due: deque[Prepared] = deque()
        self.wire = False  # SMTP DATA form (dot-stuffed), as the connections take it
        # Group commit: the entries of the lanes that get there before the commit (see
        # _commit_next_turn) are committed together; then the claims' callbacks run with
        # the ids refused as suppressed (or the journal's error).
        self._entries: list[tuple[int, str, str | None]] = []
        self._claims: dict[int, str] = {}  # the new attempts among them, by address hash
        self._message_ids: dict[int, str] = {}  # and the Message-IDs of their messages
        self._then: list[Callable[[set[int] | SendError], None]] = []
        self._scheduled = False
        self._last_id = 0
        self._exhausted = False
        self.lanes: list[Lane] = []
        self.aside = SetAside(self.record, self.stats, self.count)  # refused as everyone might be
        self._phases = _phases(self._states)  # never-tried readers first
        self._touched: set[int] = set(held)  # the readers this run took (or must not)
        self._held = held
        self._delivered_before = False

    def run(self, progress: Callable[[Stats], None] | None = None) -> Stats:
        """Send every due delivery; return the counts.

        Raises SendError on a fatal error, and KeyboardInterrupt after Ctrl-C
        (or SIGTERM) once the messages in flight are finished and recorded.
        """
        counts = self.journal.counts(self.issue)
        self.stats.total = self.options.due(counts, held=len(self._held))
        self._delivered_before = counts.get("sent", 0) > 0
        asyncio.run(self._run(progress))
        if self.stats.slowed:  # the pace it ended at, with the speed-ups since the last pause
            self.stats.pace = self.pace.rate
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
        self.lanes = [Lane(self, self.messenger_factory()) for _ in range(self.options.workers)]
        self.wire = self.lanes[0].wire if self.lanes else False
        reporter = asyncio.create_task(self._report(progress)) if progress else None
        folder = asyncio.create_task(self._fold_while_quiet())
        try:
            for lane in self.lanes:
                lane.take()
            await asyncio.gather(*(lane.finished for lane in self.lanes), return_exceptions=True)
        finally:
            folder.cancel()
            self._commit()  # whatever the last turn left
            if reporter:
                reporter.cancel()
                progress(self.stats)
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _interrupt(self) -> None:
        """Stop taking new recipients; those in flight finish. A second time: stop at once."""
        if self.interrupted:
            for lane in self.lanes:
                cut = getattr(lane.messenger, "cut", None)
                if cut is not None:
                    cut()
            return
        self.interrupted = True
        self._stop_now()
        for lane in self.lanes:  # a connection still opening (a server slow to greet) waits for nothing
            stop_opening = getattr(lane.messenger, "stop_opening", None)
            if stop_opening is not None:
                stop_opening()
        in_flight = sum(bool(getattr(lane.messenger, "in_flight", False)) for lane in self.lanes)
        if in_flight and self.notice is not None:
            one = in_flight == 1
            self.notice(
                f"Stopping: {in_flight} message{'' if one else 's'} in flight "
                "finishing (a server gets as long as --data-timeout to answer); Ctrl-C again "
                f"to stop at once, leaving {'it' if one else 'them'} uncertain"
            )

    def stop_with(self, error: SendError) -> None:
        """Stop the send on *error* (the first one is what the send raises)."""
        self.fatal = self.fatal or error
        self._stop_now()

    def _stop_now(self) -> None:
        self.stop.set()
        for lane in self.lanes:
            lane.wake()  # a lane waiting to retry gives up now

    async def _fold_while_quiet(self) -> None:
        """Fold the journal's log every half second even when no entry comes (a connection
        waiting for a slow reply, a --rate pause): 'digest status' stays current."""
        while True:
            await asyncio.sleep(FOLD_SECONDS)
            try:
                self.journal.fold_due()
            except SendError as e:  # the journal cannot be written: nothing more may go out
                self.stop_with(e)
                return
            except Exception as e:  # noqa: BLE001 - a bug must not leave the others running blind
                log.error("folding the send log failed", exc_info=e)
                self.stop_with(SendError(f"the send stopped on an unexpected error: {e!r}"))
                return

    async def _report(self, progress: Callable[[Stats], None]) -> None:
        while True:
            progress(self.stats)
            await asyncio.sleep(0.2)

    def next_delivery(self) -> Prepared | None:
        """Return the next due delivery, prepared: the journal is read a batch at a time."""
        while not self._due and not self._exhausted:
            states, *later = self._phases
            batch = self.journal.due(self.issue, states, self._last_id, BATCH)
            if batch:
                self._last_id = batch[-1].id
                # A later phase leaves out what this run already took (deferred here, say).
                touched = self._touched
                self._due.extend([self._prepare(d) for d in batch if d.id not in touched])
            elif later:
                self._phases, self._last_id = later, 0
            else:
                self._exhausted = True
        return self._due.popleft() if self._due else None

    def give_back(self, prepared: Prepared) -> None:
        """Put a delivery taken but never claimed back at the head of the queue."""
        self._due.appendleft(prepared)

    def others_carry_on(self, lane: Lane) -> bool:
        """Whether the send can go on without *lane*: another connection is open and has
        delivered (the server takes connections, just not this many)."""
        return any(other is not lane and not other.closing and other.delivered for other in self.lanes)

    def _prepare(self, delivery: Delivery) -> Prepared:
        """Work out a reader's envelope, hash and message pieces (the join waits for its turn).

        Done for a batch at a time, in one loop, the code and data stay in the CPU's
        caches: measured inside a send, the VERP sender alone took 23 µs a message
        when worked out between network events and 11 µs in a batch.
        """
        recipient = delivery.recipient
        email = recipient.email
        to = envelope_address(email)
        sender = envelope_address(self.envelope_sender(recipient, delivery.id))
        hashed = delivery.hash or key_hash(delivery.key or address_key(email))
        template = self.template
        try:
            pieces = (
                template.pieces(recipient, wire=self.wire)
                if template.rendered.personal
                # one copy for a list address: the list's footer, no personal link
                else template.pieces(None, to=to, wire=self.wire)
            )
        except (ValueError, UnicodeError, MessageError) as e:  # one bad reader never stops the send
            return Prepared(delivery, sender, to, hashed, None, e)
        return Prepared(delivery, sender, to, hashed, pieces)

    def record(
        self,
        delivery_id: int,
        state: str,
        reply: str | None,
        claim: str | None = None,
        then: Callable[[set[int] | SendError], None] | None = None,
        message_id: str | None = None,
    ) -> None:
        """Queue an entry for the next group commit.

        With *claim* (the address hash of a new attempt), the commit checks it against
        the suppression list as it records it, with the attempt's *message_id*; *then*
        is called after the commit with the ids refused as suppressed, or with the
        journal's error.
        """
        self._entries.append((delivery_id, state, reply))
        # Every reader this run took: a later phase must not take one again, even one whose
        # 'sent' is still on its way to the journal (an int each: about 70 bytes a reader).
        self._touched.add(delivery_id)
        if claim is not None:
            self._claims[delivery_id] = claim
            if message_id is not None:
                self._message_ids[delivery_id] = message_id
        if then is not None:
            self._then.append(then)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._commit_next_turn)

    def _commit_next_turn(self) -> None:
        """Commit after the next turn of the event loop has run its I/O callbacks.

        The replies that the next poll reads (other connections finishing) then join
        this commit: measured, 0.66 commits a message instead of 1.0 with 4
        connections, and about 8% less CPU a message. A record waits for one more
        turn (well under a millisecond while the send is busy), never for the next
        message.
        """
        asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        entries, self._entries = self._entries, []
        claims, self._claims = self._claims, {}
        message_ids, self._message_ids = self._message_ids, {}
        then, self._then = self._then, []
        self._scheduled = False
        if not entries:
            return
        outcome: set[int] | SendError
        try:
            outcome = self.journal.record(entries, claims, message_ids)
        except Exception as e:  # noqa: BLE001 - whatever it is, nothing more may go out
            log.debug("the journal's commit failed", exc_info=True)
            outcome = e if isinstance(e, SendError) else JournalError(f"cannot write the send journal: {e!r}")
            self.stop_with(outcome)
        for callback in then:  # each lane guards its own callback: one cannot stop the others
            callback(outcome)

    def message_refused(self, delivery: Delivery, failure: PermanentFailure) -> None:
        """Record a refusal for good, or set the reader aside (``aside``): a refusal of the
        end of the message in words that name no reader, while nothing was delivered."""
        reply = str(failure)
        key = None
        if failure.command == "the message" and not self.delivered and delivery.state != "sending":
            key = alike_key(reply, delivery.recipient.email)
        if key is None:
            self.record(delivery.id, "failed", reply)
            self.count("failed", reply)
            return
        if self.aside.refused(delivery.id, delivery.state, reply, ("the message", key)) and not self.fatal:
            self.stop_with(
                SendError(
                    f"the server refused the message itself, alike for {len(self.aside.readers)} "
                    f"readers and none delivered: {reply}",
                    hint="it refuses the issue, not the readers (Postfix: header_checks, body_checks, "
                    "a content filter): they were set aside, not failed; change the issue ('digest "
                    "check') or the server's checks, then run the same command again",
                )
            )

    def session_refused(self, delivery: Delivery, refusal: SessionRefused) -> None:
        """Set aside a reader refused at RCPT in the sender's words while nothing was
        delivered (``aside``); ALIKE of them stop the send with the refusal."""
        if self.aside.refused(delivery.id, delivery.state, refusal.reply, ("RCPT", refusal.hint)):
            self.stop_with(refusal)

    def throttled(self, reply: str, began: int) -> bool:
        """The server refused a message for the pace (``replies.Throttled``): slow the whole
        send down (``Pace.throttled``). Return whether to try the reader again after the
        pause; False once the server has let nothing through for --max-wait (the send stops)."""
        pace = self.pace
        refusing = pace.refusing()
        max_wait = self.options.max_wait
        if refusing > max_wait:
            if not self.fatal:
                took = f", below the {pace.rate:.3g} a second it took" if pace.rate else ""
                self.stop_with(
                    SendError(
                        f"the server refused every message for the pace for {refusing:.1f} s "
                        f"(--max-wait {max_wait:g}): {reply}",
                        hint="nobody was marked failed; the server limits how much this sender may "
                        "send: for a quota (per hour or day), run the same command once it resets; "
                        f"for a rate, run it again with --rate{took}",
                    )
                )
            return False
        # The last pause ends just past --max-wait: a refusal then stops the send on time.
        if pace.throttled(began, longest=max_wait - refusing + 0.01):
            self.stats.slowed += 1
            log.info("refused for the pace (%s): a pause of %.2fs, then %s/s", reply, pace.pause, pace.rate)
            if self.stats.slowed == 1 and self.notice is not None:
                self.notice(
                    f"Note: the server takes mail more slowly than this send gives it ({reply}); "
                    "slowing down to what it takes (--max-wait: how long it may let nothing through)"
                )
        return True

    @property
    def delivered(self) -> bool:
        """Whether a message of this send was delivered, in this run or an earlier one: then
        a refusal that reads as everyone's is its reader's own (``aside``)."""
        return bool(self.stats.sent) or self._delivered_before

    def count(self, outcome: str, reply: str = "") -> None:
        setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        if outcome == "sent":
            self._in_a_row.clear()
            if self.aside.readers and not self.fatal:  # set aside for their own reasons
                self.aside.resolve()
            return
        in_a_row = self._in_a_row
        in_a_row[outcome] = in_a_row.get(outcome, 0) + 1
        n = sum(in_a_row.values())
        # (Not once the send is stopping: the readers held for a retry count as deferred.)
        if n >= self.options.max_failures_in_a_row and not self.stop.is_set():
            kinds = ", ".join(f"{k} {o}" for o in ("failed", "deferred", "uncertain") if (k := in_a_row.get(o)))
            failed = in_a_row.get("failed")
            self.stop_with(
                SendError(
                    f"stopped after {n} readers in a row were not delivered ({kinds}); last reply: {reply}",
                    hint="check the server and 'digest status'; run the same command again to resume"
                    + (", with --retry-failed for the failed ones once the cause is fixed" if failed else ""),
                )
            )


def _phases(states: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The due states in the order a run takes them: readers never tried first, then those
    deferred, failed or uncertain before (a reader refused for its own reason, set aside
    by an earlier run, does not come first again)."""
    rest = tuple(s for s in states if s != "pending")
    return [("pending",), rest] if "pending" in states and rest else [states]
