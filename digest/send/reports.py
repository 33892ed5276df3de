"""What a send's journal says: the counts by state, the readers with a problem or in flight,
a send's keys, for ``digest status``, the plan and the send loop. A running send's entries
not yet folded into the database (``sendlog.py``) are counted as they are."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator

from . import sendlog
from .recipients import address_key

STATES = (  # of a delivery (journal.py says what each means)
    "pending",
    "sending",
    "sent",
    "failed",
    "deferred",
    "suppressed",
    "cancelled",
    "cancelled_uncertain",
    "cancelled_failed",
)


class JournalReports:
    """The journal's reads (``journal.Journal`` holds the database and writes)."""

    _db: sqlite3.Connection
    _lock: threading.Lock
    _log: sendlog.SendLog | None
    _unfolded: list[sendlog.Entry]
    _unfolded_cache: tuple[list[sendlog.Entry], int, dict[int, str]] | None = None

    def state_of(self, issue: str, email_key: str) -> str | None:
        """Return the state of one recipient of a send, or None if it is not recorded (with
        the entries of killed sends' logs taken in by ``read_logs``, as ``counts``)."""
        row = self._db.execute(
            "SELECT id, state FROM deliveries WHERE issue = ? AND email_key = ?", (issue, email_key)
        ).fetchone()
        if row is None:
            return None
        return self._unfolded_states().get(row[0], row[1]) if self._unfolded else row[1]

    def in_state(self, issue: str, state: str, limit: int = 10) -> list[str]:
        """Return up to *limit* addresses of a send in *state*, in list order (with the
        entries taken in by ``read_logs``)."""
        final = self._unfolded_states() if self._unfolded else {}
        if not final:
            return [
                e
                for (e,) in self._db.execute(
                    "SELECT email FROM deliveries WHERE issue = ? AND state = ? ORDER BY id LIMIT ?",
                    (issue, state, limit),
                )
            ]
        found = {
            i: e
            for i, e in self._db.execute(
                "SELECT id, email FROM deliveries WHERE issue = ? AND state = ? ORDER BY id", (issue, state)
            )
            if i not in final
        }
        found.update(self._by_id(issue, "email", [i for i, s in final.items() if s == state]))
        return [found[i] for i in sorted(found)[:limit]]

    def _unfolded_states(self) -> dict[int, str]:
        """The last state of each delivery in the unfolded entries, worked out once for them
        (a plan asks for every reader of its list)."""
        cached = self._unfolded_cache
        if cached is None or cached[0] is not self._unfolded or cached[1] != len(self._unfolded):
            states = {entry[0]: entry[1] for entry in self._unfolded}
            cached = self._unfolded_cache = (self._unfolded, len(self._unfolded), states)
        return cached[2]

    def counts(self, issue: str) -> dict[str, int]:
        """Return the number of deliveries of a send in each state (with the log's entries)."""
        counts = dict.fromkeys(STATES, 0)
        for state, n in self._db.execute(
            "SELECT state, count(*) FROM deliveries WHERE issue = ? GROUP BY state", (issue,)
        ):
            counts[state] = n
        final = {entry[0]: entry[1] for entry in self._logged()}  # the last state of each
        for i, state in self._by_id(issue, "state", final):
            counts[state] -= 1
            counts[final[i]] += 1
        return counts

    def _logged(self) -> list[sendlog.Entry]:
        """The entries not yet in the database: a running send's pending ones, and those of
        logs that could not be folded (``read_logs``, a failed last fold)."""
        return (self._log.pending if self._log is not None else []) + self._unfolded

    def _by_id(self, issue: str, column: str, ids: Iterable[int]) -> Iterator[tuple]:
        """Yield (id, *column*) of the deliveries of *issue* among *ids*, 500 ids a query."""
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            yield from self._db.execute(
                f"SELECT id, {column} FROM deliveries WHERE issue = ? AND id IN ({','.join('?' * len(chunk))})",
                (issue, *chunk),
            )

    def delivery_id(self, issue: str, email: str) -> int | None:
        """Return the id of the delivery of *issue* to *email* (it names the VERP address)."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM deliveries WHERE issue = ? AND email_key = ?", (issue, address_key(email))
            ).fetchone()
        return row[0] if row else None

    def in_flight(self, issue: str, since: float) -> set[int]:
        """The deliveries of *issue* claimed at or after *since* and not answered yet: the
        messages in flight of a send running since then (``state.running_since``)."""
        return {
            i
            for (i,) in self._db.execute(
                "SELECT id FROM deliveries WHERE issue = ? AND state = 'sending' AND reply IS NULL "
                "AND updated_at >= ?",
                (issue, since),
            )
        }

    def problems(self, issue: str) -> list[tuple[int, str, str, str | None]]:
        """Return (id, email, state, reply) of failed, deferred and uncertain deliveries (with
        the log's entries, as ``counts``)."""
        wanted = ("failed", "deferred", "sending")
        rows = self._db.execute(
            "SELECT id, email, state, reply FROM deliveries WHERE issue = ? AND state IN "
            "('failed', 'deferred', 'sending') ORDER BY id",
            (issue,),
        ).fetchall()
        logged = self._logged()
        if not logged:
            return rows
        final: dict[int, tuple[str, str | None, bool]] = {}  # id -> state, reply, reply known
        for delivery_id, state, attempt, _at, reply in logged:
            _, last, known = final.get(delivery_id, ("", None, False))
            if attempt:
                last, known = None, True
            elif reply is not None:
                last, known = reply, True
            final[delivery_id] = (state, last, known)
        by_id = {i: (i, e, s, r) for i, e, s, r in rows if i not in final}
        ids = [i for i, (state, _, _) in final.items() if state in wanted]
        for i, e, r in self._by_id(issue, "email, reply", ids):
            state, last, known = final[i]
            by_id[i] = (i, e, state, last if known else r)
        return [by_id[i] for i in sorted(by_id)]

    def message_ids(self, issue: str, ids: Iterable[int]) -> dict[int, str]:
        """Return the Message-ID of the last message of each of the deliveries *ids* that has
        one recorded (with the log's entries, as ``counts``)."""
        ids = list(ids)
        found = {i: m for i, m in self._by_id(issue, "message_id", ids) if m is not None}
        wanted = set(ids)
        for delivery_id, _state, attempt, _at, message_id in self._logged():
            if attempt and delivery_id in wanted:
                if message_id is None:  # an older digest's log: not known
                    found.pop(delivery_id, None)
                else:
                    found[delivery_id] = message_id
        return found

    def last_recorded(self, issue: str, ids: Iterable[int]) -> dict[int, float]:
        """Return when each of the deliveries *ids* was last recorded (with the log's entries)."""
        ids = list(ids)
        times = dict(self._by_id(issue, "updated_at", ids))
        wanted = set(ids)
        for delivery_id, _state, _attempt, at, _reply in self._logged():
            if delivery_id in wanted:
                times[delivery_id] = at
        return times

    def sent_message_ids(self, issue: str) -> dict[str, float]:
        """Return the Message-ID of every message of a send that was delivered, with when
        that was recorded (in the database: enough to tell whether a server's log holds the
        send, and whether its clock is this machine's)."""
        return dict(
            self._db.execute(
                "SELECT message_id, updated_at FROM deliveries WHERE issue = ? AND state = 'sent' "
                "AND message_id IS NOT NULL",
                (issue,),
            )
        )

    def sends(self, issue: str) -> list[str]:
        """Return the journal keys of an issue: its list send and any --to sends."""
        return [
            key
            for (key,) in self._db.execute(
                # A prefix compare, not LIKE: '_' and '%' in a slug are not wildcards.
                "SELECT issue FROM sends WHERE issue = ? OR substr(issue, 1, ?) = ? ORDER BY issue",
                (issue, len(f"{issue} to "), f"{issue} to "),
            )
        ]
