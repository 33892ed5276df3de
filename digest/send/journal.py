"""The send journal: every (issue, recipient) and its state, in SQLite.

pending -> sending -> sent | failed (permanent, with the reply) | deferred (temporary)
| suppressed (unsubscribed while the send ran). A row left in 'sending' is uncertain:
the final '.' went out (or the process died) before the server's reply was recorded,
so the server may or may not have accepted it; only --resend-uncertain sends it again.
WAL with synchronous=NORMAL keeps every committed state
through a killed process without a disk sync per message. While a send runs, its
entries go to an append-only log first (``sendlog.py``), folded in every half second.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from .. import db, subscribers
from ..errors import DigestError, SendError
from ..message import Recipient
from . import sendlog
from .recipients import address_key
from .reports import JournalReports
from .suppression import SuppressionCache

# What is left of a send, that a later run could send (Journal.left): each part, its
# states, and the state 'digest cancel' makes of them (Journal.cancel).
_LEFT = (
    ("due", ("pending", "deferred"), "cancelled"),
    ("uncertain", ("sending",), "cancelled_uncertain"),
    ("failed", ("failed",), "cancelled_failed"),
)
# What a cancelled delivery becomes when a later list names its reader again (Journal.add):
# due again; uncertain again (it may have the message); failed again (for --retry-failed).
REVIVED = {"cancelled": "pending", "cancelled_uncertain": "sending", "cancelled_failed": "failed"}
_SUPPRESSED = "unsubscribed while the send ran"


def _entries(
    entries: list[tuple[int, str, str | None]],
    refused: set[int],
    now: float,
    message_ids: dict[int, str] | None = None,
) -> list[sendlog.Entry]:
    """Return Journal.record's entries as the send log's (how they change a delivery:
    ``sendlog.apply``). 'sending' without a reply is a new attempt, with its message's
    Message-ID from *message_ids*; a refused claim is recorded 'suppressed'."""
    rows: list[sendlog.Entry] = []
    for i, state, reply in entries:
        if state != "sending" or reply is not None:
            rows.append((i, state, False, now, reply))
        elif i in refused:  # its reader is on the suppression list
            rows.append((i, "suppressed", False, now, _SUPPRESSED))
        else:
            rows.append((i, "sending", True, now, message_ids.get(i) if message_ids else None))
    return rows


class JournalError(SendError):
    """The journal cannot be read or written: the send stops and writes nothing more."""


def _journal_errors(doing: str):
    """Turn a failed read or write (disk full, read-only folder) into one clear error."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except (sqlite3.Error, OSError) as e:  # OSError: the send log (sendlog.py)
                raise JournalError(
                    f"cannot {doing} the send journal: {e}",
                    path=self.path,
                    hint="check the disk and the project's .digest/ folder; "
                    "run the same command again to resume",
                ) from e

        return wrapper

    return decorate


_writes = _journal_errors("write")
_reads = _journal_errors("read")


class Delivery(NamedTuple):  # a tuple: read a batch at a time, several µs cheaper than a dataclass
    id: int
    recipient: Recipient
    state: str
    key: str = ""
    hash: str = ""  # the suppression hash of the key (subscribers.key_hash)


class Journal(JournalReports):
    """One SQLite database, shared by the send loop's threads behind a lock (what it
    says of a send: ``reports.JournalReports``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        try:
            self._db = db.connect(path)  # WAL, synchronous=NORMAL, busy timeout, migrated
            self._db.execute("PRAGMA wal_autocheckpoint=20000")  # checkpoint (and sync) rarely
        except sqlite3.Error as e:
            raise DigestError(
                f"cannot open the send journal: {e}",
                path=path,
                hint="check the project's .digest/ folder is writable",
            ) from e
        self._lock = threading.Lock()
        self._log: sendlog.SendLog | None = None
        self._suppression: SuppressionCache | None = None
        self._unfolded: list[sendlog.Entry] = []  # a log's entries that could not be folded

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the send log ------------------------------------------------------------

    @_writes
    def recover(self, log_path: Path) -> int:
        """Fold the log a killed send left at *log_path* (hold the send's lock); return its entries."""
        with self._lock:
            return sendlog.recover(log_path, self._db)

    @contextlib.contextmanager
    def logging_to(self, log_path: Path) -> Iterator[None]:
        """Record entries in an append-only log at *log_path* while the block runs (a send).

        The caller holds the send's lock. A log left there by a killed send is folded
        first. At the end the log is folded and removed; if that fails, it stays for the
        next run, and ``counts`` still includes its entries.
        """
        self.recover(log_path)
        self._open_log(log_path)
        try:
            yield
        except BaseException:
            with contextlib.suppress(JournalError):  # the error in flight is the one to report
                self._close_log()
            raise
        else:
            self._close_log()

    @_writes
    def _open_log(self, log_path: Path) -> None:
        self._log = sendlog.SendLog(log_path)
        self._suppression = SuppressionCache(self._db)

    @_writes
    def _close_log(self) -> None:
        log, self._log, self._suppression = self._log, None, None
        if log is None:
            return
        with self._lock:
            try:
                log.close(self._db)
            except BaseException:
                self._unfolded = log.pending
                raise

    @_writes
    def fold_due(self) -> None:
        """Fold the log if it is time (``sendlog.FOLD_SECONDS``): a send calls this while it
        waits too (a hung message, --rate), so that 'digest status' is never far behind."""
        with self._lock:
            if self._log is not None and self._log.due():
                self._log.fold(self._db)

    @_writes
    def _fold(self) -> None:
        """Fold the log's pending entries (the lock is held)."""
        if self._log is not None and self._log.pending:
            self._log.fold(self._db)

    # -- the send as a whole --------------------------------------------------

    def content_hash(self, issue: str) -> str | None:
        row = self._db.execute("SELECT content_hash FROM sends WHERE issue = ?", (issue,)).fetchone()
        return row[0] if row else None

    @_writes
    def start(self, issue: str, content_hash: str, replace: bool = False) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO sends VALUES (?, ?, ?) ON CONFLICT(issue) DO "
                + ("UPDATE SET content_hash = excluded.content_hash" if replace else "NOTHING"),
                (issue, content_hash, time.time()),
            )

    def add(
        self, issue: str, recipients: Iterable[Recipient], batch: int = 2000
    ) -> Iterator[tuple[Recipient, str]]:
        """Record recipients as pending; yield (recipient, 'new'|'duplicate'|'suppressed'|state)."""
        rows: list[Recipient] = []
        # A row that already exists with an id above this was added by this very list.
        baseline = self._db.execute("SELECT coalesce(max(id), 0) FROM deliveries").fetchone()[0]

        def flush() -> list[tuple[Recipient, str]]:
            with self._lock, db.transaction(self._db):
                return [(r, self._add_one(issue, r, baseline)) for r in rows]

        for recipient in recipients:
            rows.append(recipient)
            if len(rows) >= batch:
                yield from self._write(flush)
                rows = []
        if rows:
            yield from self._write(flush)

    @_writes
    def _write(self, function):
        return function()

    def _add_one(self, issue: str, r: Recipient, baseline: int) -> str:
        key = address_key(r.email)
        if self._is_suppressed(key):
            return "suppressed"
        cur = self._db.execute(
            "INSERT INTO deliveries (issue, email_key, email, fields, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (issue, key, r.email, json.dumps(dict(r.fields), ensure_ascii=False), time.time()),
        )
        if cur.rowcount:
            return "new"
        row = self._db.execute(
            "SELECT id, state FROM deliveries WHERE issue = ? AND email_key = ?", (issue, key)
        ).fetchone()
        if row[1] in REVIVED:  # a list names a cancelled reader again (see REVIVED)
            again = REVIVED[row[1]]
            # updated_at stays: an uncertain one is not claimed again by this (status tells
            # a running send's claims by their time).
            self._db.execute(
                "UPDATE deliveries SET state = ?, email = ?, fields = ? WHERE id = ?",
                (again, r.email, json.dumps(dict(r.fields), ensure_ascii=False), row[0]),
            )
            return "new" if again == "pending" else f"known:{again}"
        return "duplicate" if row[0] > baseline else f"known:{row[1]}"

    @_reads
    def left(self, issue: str) -> dict[str, int]:
        """What is left of the send of *issue*, that a later run could send: the deliveries
        still due, uncertain and failed (``_LEFT``; the log's entries included)."""
        counts = self.counts(issue)
        return {what: sum(counts[state] for state in states) for what, states, _ in _LEFT}

    @_reads
    def left_fingerprint(self, issue: str) -> str:
        """A digest of which deliveries of *issue* are left (``left``) and in which state: it
        changes when any of them does, even if the counts stay the same."""
        states = [state for _, of, _ in _LEFT for state in of]
        digest = hashlib.sha256()
        for delivery_id, state in self._db.execute(
            f"SELECT id, state FROM deliveries WHERE issue = ? AND state IN ({','.join('?' * len(states))}) "
            "ORDER BY id",
            (issue, *states),
        ):
            digest.update(b"%d:%s\n" % (delivery_id, state.encode()))
        return digest.hexdigest()

    def withdrawn(self, slug: str) -> bool:
        """Whether the issue *slug* has sends and none of their messages can have reached a
        reader: every delivery cancelled while due or after failing, or unsubscribed before
        its message went out (or none left: erased before they were sent)."""
        keys = self.sends(slug)
        if not keys or self._logged():
            return False
        marks = ",".join("?" * len(keys))
        states = {
            state
            for (state,) in self._db.execute(
                f"SELECT DISTINCT state FROM deliveries WHERE issue IN ({marks})", keys
            )
        }
        return states <= {"cancelled", "cancelled_failed", "suppressed"}

    @_writes
    def cancel(self, issue: str) -> dict[str, int]:
        """Cancel what is left of the send of *issue* (``left``); return how many of each.

        Those still due become 'cancelled', the uncertain ones (in flight when a send
        stopped) 'cancelled_uncertain', the failed ones 'cancelled_failed' (``_LEFT``),
        each keeping its reply. No run sends to them again, not even with --resend-uncertain or
        --retry-failed, unless a later list names them again (``REVIVED``). Call it
        holding the send's lock.
        """
        now = time.time()
        cancelled = {}
        with self._lock, db.transaction(self._db):
            for what, states, state in _LEFT:
                cancelled[what] = self._db.execute(
                    f"UPDATE deliveries SET state = ?, updated_at = ? WHERE issue = ? "
                    f"AND state IN ({','.join('?' * len(states))})",
                    (state, now, issue, *states),
                ).rowcount
        return cancelled

    @_reads
    def due(self, issue: str, states: tuple[str, ...], after_id: int, limit: int) -> list[Delivery]:
        """Return the next deliveries in *states*, by id.

        Suppressed addresses are not filtered here: ``record`` checks each message's
        address when it records it 'sending', right before it goes out.
        """
        marks = ",".join("?" * len(states))
        with self._lock:
            self._fold()
            rows = self._db.execute(
                f"SELECT id, email, fields, state, email_key FROM deliveries WHERE issue = ? "
                f"AND state IN ({marks}) AND id > ? ORDER BY id LIMIT ?",
                (issue, *states, after_id, limit),
            ).fetchall()
            key_hash = subscribers.key_hash
            batch = [Delivery(i, Recipient(e, json.loads(f)), s, k, key_hash(k)) for i, e, f, s, k in rows]
            if self._suppression is not None and batch:
                self._suppression.expect([d.hash for d in batch])
        return batch

    @_writes
    def record(
        self,
        entries: list[tuple[int, str, str | None]],
        claims: dict[int, str] | None = None,
        message_ids: dict[int, str] | None = None,
    ) -> set[int]:
        """Record (delivery id, state, reply) entries in one commit; return the refused claims.

        The send loop gathers the entries of every connection that gets there in the
        same turn of its event loop (group commit). 'sending' without a reply is a new
        attempt; 'sending' with one is an uncertain attempt and its reason.
        *claims* maps the ids of new attempts among the entries to their address hashes:
        in the same transaction, each is checked against the suppression list, so the
        check and the 'sending' record are one step, right before the message goes out.
        A suppressed one is recorded 'suppressed' instead, and its id returned.
        *message_ids* gives the Message-ID of a new attempt's message (kept with it, for
        ``digest status`` to show if the attempt ends uncertain).

        While a send logs (``logging_to``), the entries are appended to the log
        instead (folded in later by the same ``sendlog.apply``), and the claims are
        checked against answers read ahead, read again whenever another process has
        written since (``suppression.SuppressionCache``): the same outcome.
        """
        now = time.time()
        log = self._log
        with self._lock:
            if log is None:
                with db.transaction(self._db):
                    refused = self._refused(claims) if claims else set()
                    sendlog.apply(self._db, _entries(entries, refused, now, message_ids))
                return refused
            refused = self._suppression.refused(claims) if claims else set()
            if log.due():  # first: a failed fold then records nothing of this group
                log.fold(self._db)
            log.append(_entries(entries, refused, now, message_ids))
        return refused

    def _refused(self, claims: dict[int, str]) -> set[int]:
        """Return the claims whose address is suppressed (the write transaction is open).

        Read from the table each time: the web app may have committed an unsubscribe
        a moment ago.
        """
        found = subscribers.suppressed_among(self._db, claims.values())
        return {i for i, h in claims.items() if h in found} if found else set()

    @_writes
    def record_taken(self, issue: str, taken: list[tuple[int, str, str]]) -> int:
        """Record as sent the uncertain deliveries of *taken* (id, Message-ID, reply), whose
        message the server's log shows queued; return how many. One still uncertain with
        that Message-ID only: one sent again meanwhile is left as it is."""
        now = time.time()
        with self._lock, db.transaction(self._db):
            return sum(
                self._db.execute(
                    "UPDATE deliveries SET state = 'sent', reply = ?, updated_at = ? "
                    "WHERE id = ? AND issue = ? AND state = 'sending' AND message_id = ?",
                    (reply, now, delivery_id, issue, message_id),
                ).rowcount
                for delivery_id, message_id, reply in taken
            )

    def mark(self, delivery_id: int, state: str, reply: str | None = None) -> None:
        """Record a delivery's new state; committed before this returns."""
        self.record([(delivery_id, state, reply)])

    def is_suppressed(self, email_key: str) -> bool:
        """Whether the address is on the suppression list."""
        with self._lock:
            return self._is_suppressed(email_key)

    def _is_suppressed(self, email_key: str) -> bool:
        """The one place that reads the suppression list (the lock is held)."""
        return subscribers.is_suppressed(self._db, email_key)

    @_reads
    def read_logs(self, paths: Iterable[Path]) -> int:
        """Take in, read only, what killed sends logged and could not be folded (``counts`` and
        ``problems`` include it); return how many entries. For ``digest status`` when the
        journal cannot be written."""
        taken = 0
        for path in paths:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            log_id, numbered = sendlog.parse(data)
            if log_id is None:
                continue
            row = self._db.execute("SELECT folded FROM send_logs WHERE log_id = ?", (log_id,)).fetchone()
            done = row[0] if row else 0
            entries = [entry for number, entry in numbered if number > done]
            self._unfolded += entries
            taken += len(entries)
        return taken

    # -- suppression list ------------------------------------------------------

    @_writes
    def suppress(self, addresses: Iterable[str], source: str = "digest unsubscribe") -> int:
        """Unsubscribe addresses (recorded in the subscriber store); return how many were new."""
        with self._lock:
            return sum(subscribers.set_status(self._db, a, "unsubscribed", source) for a in addresses)

    def suppressed_hashes(self) -> list[str]:
        return [h for (h,) in self._db.execute("SELECT email_hash FROM suppression")]

    @_writes
    def add_suppressed_hashes(self, hashes: Iterable[str]) -> None:
        """Copy a suppression list (for a scratch journal)."""
        with self._lock:
            self._db.executemany(
                "INSERT INTO suppression VALUES (?, 'copied', 'copy', 0) ON CONFLICT DO NOTHING",
                [(h,) for h in hashes],
            )
