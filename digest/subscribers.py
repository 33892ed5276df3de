"""The subscriber store: statuses, consent records, import and export, suppression.

Every change of status is an event (address hash, status, source, reason,
time): the consent record. Unsubscribed, bounced and complained addresses are
also suppressed, by the SHA-256 of the address, so the suppression outlives an
erasure and nothing (an import, a ``--list`` send) can mail them again; only
``reactivate`` (a confirmed opt-in) lifts it. Each function is one transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .db import address_hash, address_key, transaction
from .message import Recipient

if TYPE_CHECKING:
    from .send.recipients import RowProblem

ERASED_PREFIX = "erased:"  # what erasure leaves of a key: the prefix and the address's hash

STATUSES = ("unconfirmed", "active", "unsubscribed", "bounced", "complained")
SUPPRESSING = frozenset({"unsubscribed", "bounced", "complained"})


@dataclass(frozen=True)
class Subscriber:
    email: str
    fields: Mapping[str, str]
    status: str
    source: str
    created_at: float
    updated_at: float


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    suppressed: int = 0
    problems: list = field(default_factory=list)  # RowProblem: line and message
    duplicates: list = field(default_factory=list)  # (line, line of its first row): skipped


# The columns `digest subscribers export` adds: a backup imports back with its statuses.
EXPORT_COLUMNS = frozenset({"status", "created", "updated", "source"})


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")


def _event(
    conn: sqlite3.Connection, address: str, status: str, source: str, reason: str | None, now: float
) -> None:
    conn.execute(
        "INSERT INTO events (email_hash, email_key, status, source, reason, at) VALUES (?, ?, ?, ?, ?, ?)",
        (address_hash(address), address_key(address), status, source, reason, now),
    )


def _suppress(conn: sqlite3.Connection, address: str, reason: str, source: str, now: float) -> None:
    conn.execute(
        "INSERT INTO suppression VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (address_hash(address), reason, source, now),
    )


def add(
    conn: sqlite3.Connection,
    address: str,
    fields: Mapping[str, str] | None = None,
    status: str = "active",
    source: str = "cli",
) -> str:
    """Add a subscriber; return 'added', 'updated' (fields of a known one) or 'suppressed'.

    A known subscriber keeps their status: adding never re-activates anyone. An
    unconfirmed one (the subscribe form's) added as active becomes active ('added').
    A suppressed address (unsubscribed, bounced, complained, erased) is not added
    and its fields are left as they are.
    """
    _check_status(status)
    with transaction(conn):
        return _add(conn, address, fields, status, source)


def _add(
    conn: sqlite3.Connection, address: str, fields: Mapping[str, str] | None, status: str, source: str
) -> str:
    key, now = address_key(address), time.time()
    data = json.dumps(dict(fields or {}), ensure_ascii=False, sort_keys=True)
    row = conn.execute("SELECT fields, status FROM subscribers WHERE email_key = ?", (key,)).fetchone()
    if row is not None:
        if row[1] in SUPPRESSING:
            return "suppressed"
        if row[1] == "unconfirmed" and status == "active":
            # The editor's own add or import: someone who only typed the address into the
            # subscribe form (or a stranger who typed it) must not keep the reader off the
            # list, nor get them deleted with the unconfirmed a week later.
            conn.execute(
                "UPDATE subscribers SET status = 'active', source = ?, updated_at = ?"
                + (", fields = ?" if fields else "")
                + " WHERE email_key = ?",
                (source, now, data, key) if fields else (source, now, key),
            )
            _event(conn, address, "active", source, None, now)
            return "added"
        if fields and row[0] != data:
            conn.execute(
                "UPDATE subscribers SET fields = ?, updated_at = ? WHERE email_key = ?", (data, now, key)
            )
            return "updated"
        return "known"
    if _is_suppressed(conn, address):
        return "suppressed"
    conn.execute(
        "INSERT INTO subscribers VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key, address.strip(), data, status, source, now, now),
    )
    _event(conn, address, status, source, None, now)
    if status in SUPPRESSING:
        _suppress(conn, address, status, source, now)
    return "added"


def set_status(
    conn: sqlite3.Connection, address: str, status: str, source: str, reason: str | None = None
) -> bool:
    """Record a change of status (creating the subscriber if unknown); return whether it changed.

    Unsubscribed, bounced and complained also suppress the address. Setting the
    same status again changes nothing and records nothing (idempotent). Only
    ``reactivate`` lifts a suppression: setting 'active' here does not.
    """
    _check_status(status)
    key, now = address_key(address), time.time()
    with transaction(conn):
        row = conn.execute("SELECT status FROM subscribers WHERE email_key = ?", (key,)).fetchone()
        if row is not None and row[0] == status:
            if status in SUPPRESSING:
                _suppress(conn, address, status, source, now)
            return False
        if row is None and is_erased(conn, address):
            return _record_erased(conn, address, status, source, reason, now)
        if row is None:
            conn.execute(
                "INSERT INTO subscribers VALUES (?, ?, '{}', ?, ?, ?, ?)",
                (key, address.strip(), status, source, now, now),
            )
        else:
            conn.execute(
                "UPDATE subscribers SET status = ?, source = ?, updated_at = ? WHERE email_key = ?",
                (status, source, now, key),
            )
        _event(conn, address, status, source, reason, now)
        if status in SUPPRESSING:
            _suppress(conn, address, status, source, now)
    return True


def is_erased(conn: sqlite3.Connection, address: str) -> bool:
    """Return whether the address was erased (its hash is suppressed as 'erased')."""
    row = conn.execute(
        "SELECT reason FROM suppression WHERE email_hash = ?", (address_hash(address),)
    ).fetchone()
    return row is not None and row[0] == "erased"


def _record_erased(
    conn: sqlite3.Connection, address: str, status: str, source: str, reason: str | None, now: float
) -> bool:
    """Record a change for an erased address by its hash only: no row, no address, no quoting reason."""
    digest = address_hash(address)
    last = conn.execute(
        "SELECT status FROM events WHERE email_hash = ? ORDER BY id DESC LIMIT 1", (digest,)
    ).fetchone()
    if last is not None and last[0] == status:
        return False
    if reason is not None and address_key(address) in reason.lower():
        reason = "[erased]"
    conn.execute(
        "INSERT INTO events (email_hash, email_key, status, source, reason, at) VALUES (?, NULL, ?, ?, ?, ?)",
        (digest, status, source, reason, now),
    )
    return True


def reactivate(
    conn: sqlite3.Connection,
    address: str,
    source: str,
    fields: Mapping[str, str] | None = None,
    reason: str = "confirmed opt-in",
) -> bool:
    """Make the address active and lift its suppression; return if it changed.

    *reason* goes on the consent record: a confirmed opt-in (the reader's link), or an
    editor's undoing of a wrong bounce or complaint.

    *fields* are given to a new subscriber, or to one still unconfirmed; a known
    subscriber of any other status keeps theirs.
    """
    key, now = address_key(address), time.time()
    data = json.dumps(dict(fields or {}), ensure_ascii=False, sort_keys=True)
    with transaction(conn):
        row = conn.execute("SELECT status FROM subscribers WHERE email_key = ?", (key,)).fetchone()
        lifted = conn.execute("DELETE FROM suppression WHERE email_hash = ?", (address_hash(address),)).rowcount
        if row is not None and row[0] == "active" and not lifted:
            return False
        if row is None:
            conn.execute(
                "INSERT INTO subscribers VALUES (?, ?, ?, 'active', ?, ?, ?)",
                (key, address.strip(), data, source, now, now),
            )
        elif row[0] == "unconfirmed" and fields:
            conn.execute(
                "UPDATE subscribers SET status = 'active', fields = ?, source = ?, updated_at = ? "
                "WHERE email_key = ?",
                (data, source, now, key),
            )
        else:
            conn.execute(
                "UPDATE subscribers SET status = 'active', source = ?, updated_at = ? WHERE email_key = ?",
                (source, now, key),
            )
        _event(conn, address, "active", source, reason, now)
    return True


def get(conn: sqlite3.Connection, address: str) -> Subscriber | None:
    """Return the subscriber with this address (any spelling), or None."""
    row = conn.execute(
        "SELECT email, fields, status, source, created_at, updated_at FROM subscribers WHERE email_key = ?",
        (address_key(address),),
    ).fetchone()
    return _subscriber(row) if row else None


def _subscriber(row) -> Subscriber:
    email, fields, status, source, created, updated = row
    return Subscriber(email, json.loads(fields), status, source, created, updated)


def subscribers(conn: sqlite3.Connection, status: str | None = None, batch: int = 1000) -> Iterator[Subscriber]:
    """Yield subscribers by address (optionally of one status), read a batch at a time."""
    if status is not None:
        _check_status(status)
    last = ""
    while True:
        rows = conn.execute(
            "SELECT email, fields, status, source, created_at, updated_at, email_key FROM "
            "subscribers WHERE email_key > ? AND (? IS NULL OR status = ?) ORDER BY email_key "
            "LIMIT ?",
            (last, status, status, batch),
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield _subscriber(row[:6])
        last = rows[-1][6]


def active_recipients(conn: sqlite3.Connection) -> Iterator[Recipient]:
    """Yield every active, unsuppressed subscriber as a Recipient, a batch at a time."""
    for s in subscribers(conn, "active"):
        if not is_suppressed(conn, s.email):
            yield Recipient(s.email, s.fields)


def has_active(conn: sqlite3.Connection) -> bool:
    """Return whether the store has at least one active subscriber."""
    return conn.execute("SELECT 1 FROM subscribers WHERE status = 'active' LIMIT 1").fetchone() is not None


def stream_active(path: Path) -> Iterator[Recipient]:
    """Yield the active subscribers of the database at *path* on a connection of their own."""
    from . import db

    conn = db.connect(path)
    try:
        yield from active_recipients(conn)
    finally:
        conn.close()


def is_suppressed(conn: sqlite3.Connection, address: str) -> bool:
    """Return whether no message may go to this address (one indexed query)."""
    return _is_suppressed(conn, address)


def _is_suppressed(conn: sqlite3.Connection, address: str) -> bool:
    return bool(suppressed_among(conn, [key_hash(address_key(address))]))


def key_hash(email_key: str) -> str:
    """Return the suppression hash of an address key, or of the key an erasure left.

    An erased row's key is ``erased:<hash>``: its hash is the one on the suppression
    list (a real address cannot start so: a colon in a local part must be quoted).
    """
    if email_key.startswith(ERASED_PREFIX):
        return email_key[len(ERASED_PREFIX) :]
    return address_hash(email_key)


def _among_query(count: int) -> str:
    return f"SELECT email_hash FROM suppression WHERE email_hash IN ({','.join('?' * count)})"


_AMONG_CHUNK = 500  # hashes per query: well under SQLite's limit on parameters
# The queries for a few hashes (the send loop checks one to a few per commit), built
# once: the same string each call, which the connection's statement cache finds by
# the hash the string keeps. Only the SQL text is kept, never an answer.
_AMONG_SMALL = tuple(_among_query(n) for n in range(1, 17))


def suppressed_among(conn: sqlite3.Connection, hashes: Iterable[str]) -> set[str]:
    """Return which of these address hashes (``db.address_hash``) are suppressed, in one query."""
    wanted = tuple(set(hashes))  # in any order: IN does not care
    if len(wanted) <= len(_AMONG_SMALL):
        if not wanted:
            return set()
        return {h for (h,) in conn.execute(_AMONG_SMALL[len(wanted) - 1], wanted)}
    found: set[str] = set()
    for start in range(0, len(wanted), _AMONG_CHUNK):
        chunk = wanted[start : start + _AMONG_CHUNK]
        found.update(h for (h,) in conn.execute(_among_query(len(chunk)), chunk))
    return found


def erase(conn: sqlite3.Connection, address: str, source: str = "cli") -> bool:
    """Delete the address and its fields everywhere; keep only its hash, suppressed.

    The consent events keep their hash, status, source and time, not the address;
    the journal's pending deliveries to it are dropped and its past ones keep the
    hash in place of the address. Return whether anything held the address.
    """
    key, digest, now = address_key(address), address_hash(address), time.time()
    conn.execute("PRAGMA secure_delete=ON")  # deleted content is overwritten, not left free
    try:
        found = _erase(conn, key, digest, source, now)
    finally:
        conn.execute("PRAGMA secure_delete=OFF")
    # Old versions of the pages stay in the write-ahead log until a checkpoint.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return found


def _erase(conn: sqlite3.Connection, key: str, digest: str, source: str, now: float) -> bool:
    with transaction(conn):
        found = conn.execute("DELETE FROM subscribers WHERE email_key = ?", (key,)).rowcount
        # A reason (a bounce's diagnostic line, say) that quotes the address loses it too.
        found += conn.execute(
            "UPDATE events SET email_key = NULL, reason = CASE WHEN "
            "instr(lower(reason), ?) THEN '[erased]' ELSE reason END "
            "WHERE email_hash = ?",
            (key, digest),
        ).rowcount
        found += conn.execute(
            # Never sent: nothing of them to keep (a cancelled one was due when it was cancelled).
            "DELETE FROM deliveries WHERE email_key = ? AND state IN ('pending', 'deferred', 'cancelled')",
            (key,),
        ).rowcount
        found += conn.execute(
            "UPDATE deliveries SET email_key = ?, email = ?, fields = '{}', message_id = NULL, "
            "reply = CASE WHEN reply IS NULL THEN NULL ELSE '[erased]' END WHERE email_key = ?",
            (f"{ERASED_PREFIX}{digest}", f"{ERASED_PREFIX}{digest[:12]}", key),
        ).rowcount
        # Bounce records keep their kind, status and date; the address (and the diagnostic
        # line, which often quotes it) goes.
        found += conn.execute(
            "UPDATE bounce_events SET email = ?, email_key = ?, diagnostic = NULL WHERE email_key = ?",
            (f"erased:{digest[:12]}", f"erased:{digest}", key),
        ).rowcount
        conn.execute(
            "INSERT INTO suppression VALUES (?, 'erased', ?, ?) ON CONFLICT DO UPDATE SET reason = 'erased'",
            (digest, source, now),
        )
        conn.execute(
            "INSERT INTO events (email_hash, email_key, status, source, reason, at) "
            "VALUES (?, NULL, 'erased', ?, NULL, ?)",
            (digest, source, now),
        )
    return bool(found)


def purge_unconfirmed(conn: sqlite3.Connection, older_than: float, now: float | None = None) -> int:
    """Delete the unconfirmed subscribers asked for more than *older_than* seconds ago; return how many.

    Their consent events keep the hash (who asked, when) but no longer the address.
    """
    cutoff = (time.time() if now is None else now) - older_than
    with transaction(conn):
        keys = [
            k
            for (k,) in conn.execute(
                "SELECT email_key FROM subscribers WHERE status = 'unconfirmed' AND updated_at < ?", (cutoff,)
            )
        ]
        for key in keys:
            conn.execute("DELETE FROM subscribers WHERE email_key = ?", (key,))
            conn.execute("UPDATE events SET email_key = NULL WHERE email_hash = ?", (address_hash(key),))
    return len(keys)


def events(conn: sqlite3.Connection, address: str) -> list[tuple[str, str, str | None, float]]:
    """Return the consent record of an address: (status, source, reason, time), oldest first."""
    return conn.execute(
        "SELECT status, source, reason, at FROM events WHERE email_hash = ? ORDER BY id",
        (address_hash(address),),
    ).fetchall()


def last_suppressing_event(conn: sqlite3.Connection, address: str) -> float | None:
    """Return when the address was last unsubscribed, bounced, complained or erased."""
    row = conn.execute(
        "SELECT max(at) FROM events WHERE email_hash = ? AND status IN "
        "('unsubscribed', 'bounced', 'complained', 'erased')",
        (address_hash(address),),
    ).fetchone()
    return row[0]


def _restore_record(conn: sqlite3.Connection, address: str, backup: Mapping[str, str]) -> None:
    """Give a subscriber restored from a backup the backup's dates and source (where it
    says when and how they subscribed, the consent record's start), not the import's."""
    dates = []
    for column in ("created", "updated"):
        try:
            moment = dt.datetime.fromisoformat(backup[column])
            # An export writes UTC ('…Z'); a time edited without its zone is UTC too.
            dates.append((moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp())
        except (ValueError, OverflowError, OSError):
            return  # a cell edited into something else: the import's own time stands
    conn.execute(
        "UPDATE subscribers SET created_at = ?, updated_at = ?, source = ? WHERE email_key = ?",
        (*dates, backup["source"] or "import", address_key(address)),
    )


def csv_problems(path: Path) -> list[RowProblem]:
    """Every bad row of a CSV list (with its line), read before anything is opened or written."""
    from .send.recipients import RowProblem, read_recipients

    return [r for r in read_recipients(path) if isinstance(r, RowProblem)]


def import_csv(
    conn: sqlite3.Connection,
    path: Path,
    source: str | None = None,
    skip_invalid: bool = False,
    batch: int = 1000,
    problems: list[RowProblem] | None = None,
) -> ImportReport:
    """Add every row of a CSV list as active; report bad rows with their line numbers.

    With a bad row and without *skip_invalid*, nothing is imported (the report
    lists every problem). Never re-activates anyone: a known subscriber keeps
    their status (their fields are updated), a suppressed address is skipped.
    *problems*: the file's ``csv_problems``, where the caller read them already.
    """
    from .send.recipients import RowProblem, read_recipients

    report = ImportReport()
    report.problems = csv_problems(path) if problems is None else problems
    if report.problems and not skip_invalid:
        return report
    source = source or f"import {path.name}"
    rows = (r for r in read_recipients(path) if not isinstance(r, RowProblem))
    first_line: dict[str, int] = {}
    while True:
        chunk = [r for _, r in zip(range(batch), rows, strict=False)]
        if not chunk:
            return report
        with transaction(conn):
            for row in chunk:
                key = address_key(row.email)
                if key in first_line:  # the first row of an address wins, as in a send
                    report.duplicates.append((row.line or 0, first_line[key]))
                    continue
                first_line[key] = row.line or 0
                fields, status, backup = row.fields, "active", None
                if EXPORT_COLUMNS <= fields.keys():  # a backup made by `subscribers export`
                    backup = fields
                    status = fields["status"] if fields["status"] in STATUSES else "active"
                    # Every row of an export has every reader's columns: an empty cell is a
                    # field this reader did not have, so the store reads back as it was.
                    fields = {k: v for k, v in fields.items() if k not in EXPORT_COLUMNS and v != ""}
                outcome = _add(conn, row.email, fields, status, source)
                if outcome == "added" and backup is not None:
                    _restore_record(conn, row.email, backup)
                if outcome == "added":
                    report.added += 1
                elif outcome == "updated":
                    report.updated += 1
                elif outcome == "suppressed":
                    report.suppressed += 1
