"""One connection's deliveries, one after another, each step a callback (``Lane``).

The send loop (``loop.SendLoop``) runs a lane per connection and holds what they share:
the queue of prepared readers, the group commit, the counts and what a refusal means
over the run (``SendLoop.message_refused``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import SendError
from ..message import MESSAGE_ID_AT
from .journal import Delivery, JournalError
from .replies import SessionRefused, reply_code
from .transport import PermanentFailure, TemporaryFailure, Throttled, Uncertain

if TYPE_CHECKING:
    from .loop import Prepared, SendLoop

log = logging.getLogger(__name__)

# Refusals for the pace (replies.Throttled) a reader may meet before they count as its
# own temporary failures (a server that keeps saying so for one reader alone).
THROTTLED_RETRIES = 10


def _guarded(step: Callable[..., None]) -> Callable[..., None]:
    """A lane's step: an error stops the send cleanly instead of leaving the lane hanging.

    asyncio would only log an exception raised in a callback, and the lane would
    never finish. (A try block costs nothing on CPython 3.11 while nothing is raised.)
    """

    @functools.wraps(step)
    def guarded(self: Lane, *args: object) -> None:
        try:
            step(self, *args)
        except SendError as e:  # the journal cannot be read or written: stop here
            self.send.stop_with(e)
            self._finish()
        except Exception as e:  # noqa: BLE001 - a bug must not leave the others running blind
            self._crash(e)

    return guarded


class Lane:
    """One connection's deliveries, one after another, each step a callback.

    take -> (rate limit) -> attempt -> messenger ready -> personalise, claim (record of
    'sending' with the suppression check) -> transmit -> outcome -> take. 'sending' is
    recorded before anything of the message is written: a message never goes out
    that the journal has not recorded as in flight, and one refused at the claim
    leaves the session clean.
    """

    def __init__(self, send: SendLoop, messenger) -> None:
        self.send = send
        self.messenger = messenger
        self.wire = getattr(messenger, "wire", False)
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closing = False  # this lane's connection is closing or closed: it takes no more
        self._sleep: asyncio.TimerHandle | None = None
        self.delivery: Delivery | None = None
        self.prepared: Prepared | None = None
        self.data = b""
        self.delivered = 0  # messages this lane's connections delivered

    @_guarded
    def take(self) -> None:
        """Start the next due delivery, or finish."""
        send = self.send
        if send.stop.is_set():
            self._finish()
            return
        prepared = self.prepared = send.next_delivery()
        if prepared is None:
            self._finish()
            return
        self.delivery = prepared.delivery
        self.attempt = 0
        self.throttles = 0
        self.sent_at_throttle = -1  # the send's count of sent at this reader's last such refusal
        self.delay = send.options.backoff
        self._attempt()

    def _attempt(self) -> None:
        pace = self.send.pace
        self.began = pace.pauses
        wait = pace.reserve()
        if wait > 0:
            self._sleep = asyncio.get_running_loop().call_later(wait, self._go)
        else:
            self._go()

    def wake(self) -> None:
        """Cut a wait short (the send is stopping)."""
        if self._sleep is not None:
            self._sleep.cancel()
            self._sleep = None
            self._go()

    @_guarded
    def _go(self) -> None:
        self._sleep = None
        if self.send.stop.is_set():  # nothing of this message was claimed: it stays due
            if self.attempt or self.throttles:
                self.send.count("deferred", "stopped before the retry")
            self._finish()
            return
        if self.began != self.send.pace.pauses:  # a pause was decided while this waited for its slot
            self._attempt()
            return
        self.messenger.ready(self._ready)

    @_guarded
    def _ready(self, error: Exception | None) -> None:
        if error is not None:
            # A lane that never got a connection while others deliver is one more than the
            # server takes; one that delivered before is retried (a renewal may race the
            # server's count of the connection it just closed).
            if isinstance(error, TemporaryFailure) and not self.delivered and self.send.others_carry_on(self):
                self._retire(error)
                return
            self._outcome(error)
            return
        send = self.send
        if send.fatal:  # the send stopped while this connection was opening: claim nothing
            self._finish()
            return
        prepared = self.prepared
        try:
            self.messenger.check_envelope(prepared.sender, prepared.to)
        except PermanentFailure as e:
            self._outcome(e)
            return
        if prepared.error is not None:
            self._outcome(PermanentFailure(f"cannot be written as a message: {prepared.error}"))
            return
        self.data = send.template.assemble(prepared.pieces)
        check_size = getattr(self.messenger, "check_size", None)
        if check_size is not None:  # larger than the server takes: stops the send (SendError)
            check_size(self.data)
        send.record(
            self.delivery.id,
            "sending",
            None,
            claim=prepared.hashed,
            then=self._claimed,
            message_id=prepared.pieces[MESSAGE_ID_AT][12:-2].decode(),  # b"Message-ID: <…>\r\n"
        )

    @_guarded
    def _claimed(self, refused: set[int] | SendError) -> None:
        if isinstance(refused, SendError):  # the journal failed: nothing goes out
            self._finish()
            return
        if self.delivery.id in refused:  # unsubscribed while the send ran: recorded so
            self.data = b""
            self.send.stats.suppressed += 1
            self.take()
            return
        data, self.data = self.data, b""
        self.messenger.transmit(self.prepared.sender, self.prepared.to, data, self._outcome)

    @_guarded
    def _outcome(self, result: object) -> None:
        """Record what became of the message; go on to the next (or retry, or stop)."""
        send = self.send
        delivery = self.delivery
        if isinstance(result, str):  # accepted: 'sent' in the next group commit
            send.record(delivery.id, "sent", result)
            send.count("sent")
            send.pace.delivered_one()
            self.delivered += 1
            self.take()
            return
        loop = asyncio.get_running_loop()
        if isinstance(result, SessionRefused) and result.ambiguous:
            if delivery.state == "sending":  # uncertain before: it stays so, with this reply
                send.record(delivery.id, "sending", result.reply)
                send.count("uncertain", result.reply)
                loop.call_soon(self.take)
                return
            if not send.delivered:  # refused as everyone might be: set aside (aside.py)
                send.session_refused(delivery, result)
                loop.call_soon(self.take)
                return
            # The send got others through: the reader's own refusal.
            result = (
                PermanentFailure(result.reply, command="RCPT")
                if reply_code(result.reply) >= 500
                else TemporaryFailure(result.reply)
            )
        if isinstance(result, TemporaryFailure):
            reply = str(result)
            send.record(delivery.id, "deferred", reply)
            if isinstance(result, Throttled):
                send.stats.throttled += 1
                if self._for_the_pace() and send.throttled(reply, self.began):  # every lane waits
                    self._attempt()
                    return
            if self.attempt < send.options.retries and not send.stop.is_set():
                log.info("%s: %s; retrying in %.1fs", delivery.recipient.email, reply, self.delay)
                self.attempt += 1
                self._sleep = loop.call_later(self.delay, self._attempt)
                self.delay *= 2
                return
            send.count("deferred", reply)
        elif isinstance(result, Uncertain):  # never retried: the server may have it
            send.record(delivery.id, "sending", str(result))
            send.count("uncertain", str(result))
        elif isinstance(result, PermanentFailure):
            send.message_refused(delivery, result)
        elif isinstance(result, SendError):
            if not isinstance(result, JournalError) and delivery.state != "sending":
                # Nothing was accepted this time: the delivery keeps the state it had (a due
                # one is due again, a failed one stays so; an uncertain one keeps its state
                # and its reason, so nothing is recorded for it). A deferred or failed one
                # gets this attempt's reason: 'digest status' shows why it is still not sent.
                reason = str(result) if delivery.state in ("deferred", "failed") else None
                send.record(delivery.id, delivery.state, reason)
            send.stop_with(result)
            self._finish()
            return
        else:
            raise result if isinstance(result, BaseException) else TypeError(repr(result))
        loop.call_soon(self.take)  # not deeper: failures can come one after another

    def _for_the_pace(self) -> bool:
        """Whether a refusal for the pace (``Throttled``) is the send's, which slows down and
        tries this reader again, rather than this reader's own temporary failure: one refused
        so again although others got through meanwhile (a limit of its own), or too often."""
        send = self.send
        if send.stop.is_set() or self.throttles >= THROTTLED_RETRIES:
            return False
        if self.throttles and send.stats.sent > self.sent_at_throttle:
            return False
        self.throttles += 1
        self.sent_at_throttle = send.stats.sent
        return True

    def _retire(self, error: TemporaryFailure) -> None:
        """One connection more than the server takes (421 Too many connections, say) while
        others send: go on with those. This reader was not claimed: the next lane takes it,
        and it keeps its retries for its own failures."""
        send = self.send
        send.give_back(self.prepared)
        self.prepared = None
        alive = sum(not lane.closing for lane in send.lanes) - 1
        log.info("a connection could not be opened (%s); going on with %d", error, alive)
        if send.notice is not None:
            send.notice(
                f"Note: the server refused one more connection ({error}); going on with {alive}"
                f" (--workers {alive} avoids this)"
            )
        self._finish()

    def _crash(self, error: BaseException) -> None:
        log.error("send lane failed", exc_info=error)
        self.send.stop_with(
            SendError(
                f"the send stopped on an unexpected error: {error!r}",
                hint="run the same command again to resume; 'digest status' shows where it stands",
            )
        )
        self._finish()

    def _finish(self) -> None:
        if self.closing:
            return
        self.closing = True

        async def close() -> None:
            try:
                await self.messenger.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing the connection failed", exc_info=True)
            finally:
                if not self.finished.done():
                    self.finished.set_result(None)

        self._close = asyncio.ensure_future(close())  # referenced until the send ends
