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
reason: a 5xx fails them, a 4xx leaves them deferred. A later run takes the readers never
tried first (``loop.SendLoop.next_delivery``), so a reader refused for its own reason
does not come first again.
"""

from __future__ import annotations

from collections.abc import Callable

from .options import Stats

ALIKE = 3  # readers set aside alike, nothing delivered: the send stops

Record = Callable[[int, str, "str | None"], None]  # SendLoop.record(delivery id, state, reply)


class SetAside:
    """The readers of this run set aside, and what refused them."""

    def __init__(self, record: Record, stats: Stats) -> None:
        self._record = record
        self._stats = stats
        self.readers: list[tuple[int, int, str]] = []  # (delivery id, reply code, reply)
        self._key: object = None

    def refused(self, delivery_id: int, reply: str, key: object) -> bool:
        """Set a reader aside; return True once ALIKE are set aside alike (the send stops).

        *key* says what refused it: readers refused differently are not alike, and the
        earlier ones were refused for their own reasons.
        """
        if self.readers and key != self._key:
            self.resolve()
        self._key = key
        code = int(reply[:3]) if reply[:3].isdigit() else 550
        self.readers.append((delivery_id, code, reply))
        self._record(delivery_id, "deferred", reply)
        self._stats.deferred += 1
        return len(self.readers) >= ALIKE

    def resolve(self) -> None:
        """A message was delivered (or the refusals differ): the readers set aside were
        refused for their own reasons. A 5xx fails them; a 4xx leaves them deferred."""
        for delivery_id, code, reply in self.readers:
            if code >= 500:
                self._record(delivery_id, "failed", reply)
                self._stats.deferred -= 1
                self._stats.failed += 1
        self.readers = []
