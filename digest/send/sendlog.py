"""The send log: a running send's journal entries, appended to a file and folded into SQLite.

A send records two entries a message: 'sending' before anything of the message is
written, and the outcome once the server's reply is read. Committed to SQLite a group
at a time they cost about 50 µs a message, a sixth of all the send's work
(``benchmarks/send_breakdown.py``); appended to this file they cost a few µs. The log
is folded into the database in one transaction every ``FOLD_ENTRIES`` entries or
``FOLD_SECONDS``, before the journal is read, and when the send ends; then it is removed.

Only the process that holds the send's lock (``digest.send.only_sender``) writes or
folds a send's log. A log left by a killed send is folded by the next process that
takes the lock (``recover``), before anything reads the send's state.

The file, UTF-8, one entry a line, fields separated by tabs::

    digest-send-log 1 <log id>                                          (the first line)
    <n> <delivery id> <state> <new attempt: 1|0> <time> <reply> <crc>

``<reply>`` is empty for none, else ``=`` and the reply in Python's ``unicode_escape``
(no tab or newline is left in it); a new attempt's is the Message-ID of its message.
``<crc>`` is the CRC-32 (8 hex digits) of the line before its last tab. ``os.write``
hands each group of entries to the kernel before ``append`` returns, so a killed process
loses none (as with SQLite's synchronous=NORMAL, a power cut can lose the last ones). A
fold that lets the log's lines go (before the file is cut back or removed) is synced to
disk first (``_synced``): the database then holds for good what the log held. A
line cut short or damaged, and anything after it, is ignored: a claim is appended
before its message is written, so a message whose claim was lost never went out, and
one whose outcome was lost stays uncertain. Entries are numbered: a fold stores the
last number it applied in the same transaction (table ``send_logs``), so entries folded
just before a crash are not applied a second time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import time
import zlib
from pathlib import Path

from .. import db
from ..subscribers import ERASED_PREFIX

MAGIC = b"digest-send-log 1"
FOLD_ENTRIES = 4096  # entries held before a fold (two a message)
FOLD_SECONDS = 0.5  # and at most this long, so 'digest status' is never far behind
ROTATE_BYTES = 8 << 20  # a log over this size starts again after a fold

# (delivery id, state, whether it is a new attempt, time, reply or None); a new attempt has
# no reply, and carries the Message-ID of its message there instead (None in the log of a
# digest before 0.9)
Entry = tuple[int, str, bool, float, "str | None"]

# How entries change a delivery, for a fold and for Journal.record alike: one statement
# per delivery. A new attempt clears the reply (if it ends uncertain, the reason shown is
# its own, not an earlier deferral's) and counts one attempt more; any other entry keeps
# the last reply when it brings none. A new attempt records its message's Message-ID.
# A reader erased since the entry was written keeps '[erased]' in place of a reply, which
# may quote the address, and no Message-ID (a hash of the address).
_FOLD = (
    "UPDATE deliveries SET state = ?, "
    "reply = CASE WHEN ? = 0 THEN reply "
    f"WHEN ? IS NOT NULL AND substr(email_key, 1, {len(ERASED_PREFIX)}) = '{ERASED_PREFIX}' "
    "THEN '[erased]' ELSE ? END, "
    "updated_at = ?, attempts = attempts + ?, "
    "message_id = CASE WHEN ? = 0 THEN message_id "
    f"WHEN substr(email_key, 1, {len(ERASED_PREFIX)}) = '{ERASED_PREFIX}' THEN NULL ELSE ? END WHERE id = ?"
)


class SendLogError(OSError):
    """The log cannot be written: the send must stop before another message goes out."""


class _synced:
    """Commit the transactions of the block with a disk sync (``synchronous=FULL``).

    For the folds after which the log's lines go: the database's commits are not synced
    (WAL, ``synchronous=NORMAL``), and without this a power cut soon after a send
    could lose its whole record, the log being gone. One sync a send, or a rotation.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("PRAGMA synchronous=FULL")

    def __exit__(self, kind: object, *exc: object) -> None:
        if self.conn.in_transaction:  # a failed COMMIT/ROLLBACK: SQLite refuses the pragma now
            return
        try:
            self.conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:
            if kind is None:  # nothing else to report
                raise


def _unlink_durably(path: Path) -> None:
    """Remove a log and sync its folder, so that a power cut cannot bring it back after its
    row in send_logs is gone (its entries would then be applied a second time)."""
    path.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _folded(conn: sqlite3.Connection, log_id: str, number: int) -> None:
    """Store that the log's entries up to *number* are applied (in the fold's transaction)."""
    conn.execute(
        "INSERT INTO send_logs VALUES (?, ?) ON CONFLICT (log_id) DO UPDATE SET folded = excluded.folded",
        (log_id, number),
    )


def apply(conn: sqlite3.Connection, entries: list[Entry]) -> None:
    """Apply *entries*, in order, to the deliveries (inside the caller's transaction)."""
    rows: dict[int, list] = {}  # id -> [state, reply set?, reply, time, new attempts, Message-ID]
    for delivery_id, state, attempt, at, reply in entries:
        row = rows.get(delivery_id)
        if row is None:
            row = rows[delivery_id] = [state, 0, None, at, 0, None]
        row[0], row[3] = state, at
        if attempt:
            row[1], row[2], row[5] = 1, None, reply
            row[4] += 1
        elif reply is not None:
            row[1], row[2] = 1, reply
    conn.executemany(_FOLD, [(s, rs, r, r, at, n, n, m, i) for i, (s, rs, r, at, n, m) in rows.items()])


def _line(seq: int, entry: Entry) -> bytes:
    delivery_id, state, attempt, at, reply = entry
    line = b"%d\t%d\t%s\t%d\t%r\t%s" % (
        seq,
        delivery_id,
        state.encode("ascii"),
        1 if attempt else 0,
        at,
        b"" if reply is None else b"=" + reply.encode("unicode_escape"),
    )
    return b"%s\t%08x\n" % (line, zlib.crc32(line))


def parse(data: bytes) -> tuple[str | None, list[tuple[int, Entry]]]:
    """Return the log id and the numbered entries of a log, up to the first bad line."""
    lines = data.split(b"\n")
    head = lines[0].split(b"\t")
    if len(lines) < 2 or len(head) != 2 or head[0] != MAGIC:
        return None, []  # empty, or cut short before its first entry
    log_id = head[1].decode("ascii", "replace")
    entries: list[tuple[int, Entry]] = []
    last = 0
    for raw in lines[1:-1]:  # the last piece is what follows the last newline
        line, _, crc = raw.rpartition(b"\t")
        if not line or crc != b"%08x" % zlib.crc32(line):
            break
        try:
            seq, delivery_id, state, attempt, at, reply = line.split(b"\t")
            entry = (
                int(delivery_id),
                state.decode("ascii"),
                attempt == b"1",
                float(at),
                reply[1:].decode("unicode_escape") if reply[:1] == b"=" else None,
            )
            number = int(seq)
        except ValueError:  # UnicodeDecodeError included
            break
        if number <= last:
            break
        last = number
        entries.append((number, entry))
    return log_id, entries


def recover(path: Path, conn: sqlite3.Connection) -> int:
    """Fold the log a send left at *path*, if any, and remove it; return the entries applied.

    The caller holds the send's lock. If the fold fails, the log stays for the next try.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    log_id, numbered = parse(data)
    todo: list[Entry] = []
    if log_id is not None:
        with _synced(conn), db.transaction(conn):
            row = conn.execute("SELECT folded FROM send_logs WHERE log_id = ?", (log_id,)).fetchone()
            done = row[0] if row else 0
            todo = [entry for number, entry in numbered if number > done]
            if todo:
                apply(conn, todo)
            # Written even with nothing to apply: the commit syncs what earlier folds
            # committed, before the file goes. A crash before the unlink: not again.
            _folded(conn, log_id, max([done] + [number for number, _ in numbered[-1:]]))
    _unlink_durably(path)
    if log_id is not None:
        conn.execute("DELETE FROM send_logs WHERE log_id = ?", (log_id,))
    return len(todo)


class SendLog:
    """The open log of one running send (see the module's doc)."""

    def __init__(self, path: Path) -> None:
        """Start a new log at *path*; recover any earlier one first (``recover``)."""
        db.private_dir(path.parent)
        self.path = path
        self.log_id = secrets.token_hex(8)
        self.pending: list[Entry] = []  # appended, not yet folded
        self._seq = 0
        self._size = 0
        self._broken: OSError | None = None
        self._folded_at = time.monotonic()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        self._fd: int | None = os.open(path, flags, 0o600)
        try:
            self._write(b"%s\t%s\n" % (MAGIC, self.log_id.encode("ascii")))
        except SendLogError:
            os.close(self._fd)
            path.unlink(missing_ok=True)  # nothing in it
            raise

    def append(self, entries: list[Entry]) -> None:
        """Write *entries* to the log, in the kernel when this returns (raise SendLogError if not)."""
        seq = self._seq
        lines = []
        for entry in entries:
            seq += 1
            lines.append(_line(seq, entry))
        self._write(b"".join(lines))
        self._seq = seq
        self.pending += entries

    def due(self) -> bool:
        """Whether it is time to fold."""
        return bool(self.pending) and (
            len(self.pending) >= FOLD_ENTRIES or time.monotonic() - self._folded_at >= FOLD_SECONDS
        )

    def fold(self, conn: sqlite3.Connection, last: bool = False) -> None:
        """Apply the pending entries to the database in one transaction.

        Synced to disk when the log's lines go after it: the *last* fold, and one
        that the file's rotation follows.
        """
        if not self.pending and not last:
            return
        rotate = self._size > ROTATE_BYTES and self._fd is not None and self._broken is None
        with _synced(conn) if last or rotate else contextlib.nullcontext(), db.transaction(conn):
            if self.pending:
                apply(conn, self.pending)
            _folded(conn, self.log_id, self._seq)  # the last fold writes it even so: its sync
        self.pending = []
        self._folded_at = time.monotonic()
        if rotate:
            # Everything in the file is folded: start it again (the numbers go on).
            os.ftruncate(self._fd, 0)
            self._size = 0
            self._write(b"%s\t%s\n" % (MAGIC, self.log_id.encode("ascii")))

    def close(self, conn: sqlite3.Connection) -> None:
        """Fold what is pending and remove the log; if the fold fails, the log stays.

        After a failed write the log stays too: whole lines of the failed group may
        be in it (an outcome, say), and ``recover`` applies them.
        """
        try:
            self.fold(conn, last=True)
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        if self._broken is not None:
            return
        _unlink_durably(self.path)
        conn.execute("DELETE FROM send_logs WHERE log_id = ?", (self.log_id,))

    def _write(self, data: bytes) -> None:
        if self._broken is not None:  # after a failed write the rest of the file is ignored
            raise SendLogError(f"the send log cannot be written: {self._broken}")
        if self._fd is None:
            raise SendLogError("the send log is closed")
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes): is the disk full?")
        except OSError as e:
            self._broken = e
            raise SendLogError(f"the send log cannot be written: {e}") from e
        self._size += written
