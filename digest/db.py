"""The project's one SQLite database: open it (WAL, busy timeout), version and migrate its schema.

Everything a project keeps between runs lives in ``.digest/journal.sqlite3``: the
send journal, the subscribers, their consent records and the suppression list.
The schema version is ``PRAGMA user_version``; ``MIGRATIONS[n]`` takes the
database from version n to n + 1, in one transaction. Migration 1 is the
journal's original tables (created with IF NOT EXISTS, so a journal written
before versioning is upgraded in place and loses nothing).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

DB_NAME = "journal.sqlite3"
BUSY_TIMEOUT_MS = 10_000


def address_key(address: str) -> str:
    """Return the key that makes two spellings of one address the same (case-insensitive)."""
    return address.strip().lower()


def address_hash(address: str) -> str:
    """Return the SHA-256 of an address's key: what suppression keeps after an erasure."""
    return hashlib.sha256(address_key(address).encode("utf-8")).hexdigest()


class _Transaction:
    """The context manager of ``transaction``: a class, not a generator, since the send
    journal enters one for about every message (a generator costs a few µs more)."""

    __slots__ = ("db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        if kind is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:  # SQLite may have rolled back already (a full disk)
            self.db.execute("ROLLBACK")


def transaction(db: sqlite3.Connection) -> _Transaction:
    """Run a write transaction (BEGIN IMMEDIATE: waits on the busy timeout, never half-done).

    On an error it rolls back, unless SQLite already did (a full disk, say): a second
    ROLLBACK would fail and hide the error that matters.
    """
    return _Transaction(db)


def _script(db: sqlite3.Connection, sql: str) -> None:
    """Run statements one by one (executescript would commit the migration's transaction)."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


def _journal_tables(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE IF NOT EXISTS sends (
            issue TEXT PRIMARY KEY,
            content_hash TEXT NOT NULL,
            started_at REAL NOT NULL
        );
        CREATE TABLE IF NOT EXISTS deliveries (
            id INTEGER PRIMARY KEY,
            issue TEXT NOT NULL,
            email_key TEXT NOT NULL,
            email TEXT NOT NULL,
            fields TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            reply TEXT,
            updated_at REAL NOT NULL,
            UNIQUE (issue, email_key)
        );
        CREATE TABLE IF NOT EXISTS suppressed (
            email_key TEXT PRIMARY KEY,
            email TEXT NOT NULL,
            added_at REAL NOT NULL
        );
    """,
    )


def _subscriber_tables(db: sqlite3.Connection) -> None:
    """Subscribers, their consent events, and suppression by hash (the old list moves in)."""
    _script(
        db,
        """
        CREATE TABLE subscribers (
            email_key TEXT PRIMARY KEY,
            email TEXT NOT NULL,
            fields TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL CHECK (status IN
                ('unconfirmed', 'active', 'unsubscribed', 'bounced', 'complained')),
            source TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX subscribers_status ON subscribers (status, email_key);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            email_hash TEXT NOT NULL,
            email_key TEXT,
            status TEXT NOT NULL,
            source TEXT NOT NULL,
            reason TEXT,
            at REAL NOT NULL
        );
        CREATE INDEX events_hash ON events (email_hash, id);
        CREATE TABLE suppression (
            email_hash TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            source TEXT NOT NULL,
            added_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE rate_limits (
            bucket TEXT PRIMARY KEY,
            window_start REAL NOT NULL,
            count INTEGER NOT NULL
        ) WITHOUT ROWID;
    """,
    )
    rows = db.execute("SELECT email_key, email, added_at FROM suppressed").fetchall()
    for key, email, added in rows:
        digest = address_hash(key)
        db.execute(
            "INSERT OR IGNORE INTO suppression VALUES (?, 'unsubscribed', 'digest unsubscribe', ?)",
            (digest, added),
        )
        db.execute(
            "INSERT OR IGNORE INTO subscribers VALUES (?, ?, '{}', 'unsubscribed', 'digest unsubscribe', ?, ?)",
            (key, email, added, added),
        )
        db.execute(
            "INSERT INTO events (email_hash, email_key, status, source, reason, at) "
            "VALUES (?, ?, 'unsubscribed', 'digest unsubscribe', 'suppression list "
            "before version 2', ?)",
            (digest, key, added),
        )
    db.execute("DROP TABLE suppressed")


def _bounce_tables(db: sqlite3.Connection) -> None:
    """Bounce events: one row per message (Message-ID + body hash) and recipient (issue 12)."""
    _script(
        db,
        """
        CREATE TABLE bounce_events (
            id INTEGER PRIMARY KEY,
            message_key TEXT NOT NULL,
            kind TEXT NOT NULL,
            issue TEXT,
            email TEXT NOT NULL,
            email_key TEXT NOT NULL,
            status TEXT,
            diagnostic TEXT,
            source TEXT NOT NULL,
            day TEXT NOT NULL,
            recorded_at REAL NOT NULL,
            UNIQUE (message_key, email_key)
        );
        CREATE INDEX bounce_events_email ON bounce_events (email_key, id);
        CREATE INDEX bounce_events_issue ON bounce_events (issue, kind);
    """,
    )


def _redact_erased_replies(db: sqlite3.Connection) -> None:
    """Redact the server replies of deliveries erased before erasure did (they quote the address)."""
    db.execute("UPDATE deliveries SET reply = '[erased]' WHERE email_key LIKE 'erased:%' AND reply IS NOT NULL")


def _deliveries_in_order(db: sqlite3.Connection) -> None:
    """Index a send's deliveries by id: the send loop reads them a batch at a time, in order.

    Without it every batch sorted all of the issue's rows (a temporary B-tree), so reading a
    list of n readers cost n squared over 512.
    """
    db.execute("CREATE INDEX deliveries_in_order ON deliveries (issue, id)")


def _sends_take_a_lock(db: sqlite3.Connection) -> None:
    """Nothing to change in the tables: a send now holds a lock (``.digest/locks/``).

    An older digest takes none, so two of them (a newer send and an older one run by
    cron, say) could take the same readers. Raising the version makes an older digest
    refuse this database instead.
    """


def _send_logs(db: sqlite3.Connection) -> None:
    """How far each running send's log (``digest/send/sendlog.py``) has been folded in.

    An older digest would neither fold a log a killed send left nor keep out of a send
    that writes one: the new version makes it refuse this database.
    """
    db.execute("CREATE TABLE send_logs (log_id TEXT PRIMARY KEY, folded INTEGER NOT NULL) WITHOUT ROWID")


def _message_ids(db: sqlite3.Connection) -> None:
    """The Message-ID of each delivery's last message, recorded with its claim: ``digest
    status`` gives it for an uncertain reader, to be looked up in the server's log."""
    db.execute("ALTER TABLE deliveries ADD COLUMN message_id TEXT")


# MIGRATIONS[n] takes the schema from version n to n + 1. Only ever append.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _journal_tables,
    _subscriber_tables,
    _bounce_tables,
    _redact_erased_replies,
    _deliveries_in_order,
    _sends_take_a_lock,
    _send_logs,
    _message_ids,
]

SCHEMA_VERSION = len(MIGRATIONS)


def private_dir(path: Path) -> None:
    """Create *path* and every missing folder above it for the owner alone (0700).

    ``mkdir(mode=..., parents=True)`` gives the mode to the last folder only: a first
    send that made .digest/locks/ left .digest/ readable by every user. Existing
    folders keep their mode.
    """
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)


def create_private(path: Path) -> None:
    """Create the database file, and its folder, for the owner alone (0600 and 0700).

    It holds readers' addresses and names; SQLite gives its -wal and -shm files the
    same mode. An existing file or folder keeps the mode it has (a deployment may share
    it with the web app's user through a group).
    """
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass


def connect(path: Path | str) -> sqlite3.Connection:
    """Open the database (creating its folder), migrated to the current schema.

    The connection is in autocommit mode (transactions are explicit ``BEGIN``),
    usable from any thread (callers serialise), in WAL mode with
    ``synchronous=NORMAL`` and a busy timeout, so the web app and a running send
    share it without "database is locked".
    """
    if isinstance(path, Path):
        create_private(path)
    db = sqlite3.connect(
        str(path), check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
    )
    try:
        db.create_function("address_hash", 1, address_hash, deterministic=True)
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
            # A new file (before WAL writes its header): a migration that drops a table
            # gives its pages back instead of leaving them free in the file.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if migrate(db) and db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            for _ in range(db.execute("PRAGMA freelist_count").fetchone()[0]):
                db.execute("PRAGMA incremental_vacuum(1)")  # sqlite3 runs one step a call
    except BaseException:
        db.close()
        raise
    return db


def migrate(db: sqlite3.Connection) -> int:
    """Apply the migrations the database lacks, each in its own transaction; return how many."""
    version = start = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"the database has schema version {version}, newer than this digest knows "
            f"({SCHEMA_VERSION}); upgrade digest"
        )
    while version < SCHEMA_VERSION:
        with transaction(db):
            # Another process may have migrated while this one waited for the lock.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                MIGRATIONS[version](db)
                version += 1
                db.execute(f"PRAGMA user_version={version}")
    return version - start
