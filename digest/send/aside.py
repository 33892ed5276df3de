"""Refusals that read as everyone's but may be one reader's, decided within one run.

Two kinds of refusal name no fault of the reader's and yet may be one reader's:

- at RCPT, in the sender's words: Postfix's "Sender address rejected", "Client host
  rejected", "Helo command rejected", a refusal to relay (``refusals``: *ambiguous*). For
  everyone it is the sender's setting; in a Postfix restriction class for one
  recipient it is that reader's;
- at the end of the message, in words that name no reader (``refusals.alike_key``): a
  header or body check refusing the issue, or one reader's per-recipient check.

Until the run delivers a message, a reader refused so is set aside: recorded deferred,
with the reply (due again), neither sent nor failed, and the send goes on. ALIKE readers
set aside alike with nothing delivered stop the send: it is the sender's or the issue's,
and nobody was failed for it, however often the same command is run before the cause is
fixed. Once a message is delivered, the readers set aside were refused for their own
reason: a 5xx fails them, a 4xx leaves them deferred. So does a message delivered by an
earlier run of the send: readers are set aside only while the send has delivered none. A
later run takes the readers never tried first (``loop.SendLoop.next_delivery``), so a
reader refused for its own reason does not come first again.
"""

from __future__ import annotations

from collections.abc import Callable

from .options import Stats
from .replies import reply_code

ALIKE = 3  # readers set aside alike, nothing delivered: the send stops

Record = Callable[[int, str, "str | None"], None]  # SendLoop.record(delivery id, state, reply)
Count = Callable[[str, str], None]  # SendLoop.count(outcome, reply): failures in a row


class SetAside:
    """The readers of this run set aside, and what refused them."""

    def __init__(self, record: Record, stats: Stats, count: Count) -> None:
        self._record = record
        self._stats = stats
        self._count = count
        self.readers: list[tuple[int, str, int, str]] = []  # (delivery id, state kept, code, reply)
        self._key: object = None

    def refused(self, delivery_id: int, state: str, reply: str, key: object) -> bool:
        """Set a reader aside; return True once ALIKE are set aside alike (the send stops).

        *state* is the reader's before this run: one failed before (--retry-failed) stays
        failed, any other is deferred. *key* says what refused it: readers refused
        differently are not alike, and the earlier ones were refused for their own reasons.
        """
        if self.readers and key != self._key:
            self.resolve()
        self._key = key
        code = reply_code(reply)
        kept = "failed" if state == "failed" else "deferred"
        self.readers.append((delivery_id, kept, code, reply))
        self._record(delivery_id, kept, reply)
        if kept == "deferred":
            self._stats.deferred += 1
        else:
            self._stats.failed += 1
        return len(self.readers) >= ALIKE

    def resolve(self) -> None:
        """A message was delivered (or the refusals differ): the readers set aside were
        refused for their own reasons. A 5xx fails them; a 4xx leaves them deferred. Each
        counts as a failure in a row (20 stop the send)."""
        for delivery_id, kept, code, reply in self.readers:
            if code >= 500 and kept == "deferred":
                self._record(delivery_id, "failed", reply)
                self._stats.deferred -= 1
                self._count("failed", reply)
            elif kept == "failed":
                self._stats.failed -= 1
                self._count("failed", reply)
        self.readers = []
