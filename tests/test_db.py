"""The project's database: connection settings, schema versions, upgrading an old journal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest import db, subscribers
from digest.cli import cli

OLD_JOURNAL = """
CREATE TABLE sends (issue TEXT PRIMARY KEY, content_hash TEXT NOT NULL, started_at REAL NOT NULL);
CREATE TABLE deliveries (id INTEGER PRIMARY KEY, issue TEXT NOT NULL, email_key TEXT NOT NULL,
    email TEXT NOT NULL, fields TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, reply TEXT, updated_at REAL NOT NULL,
    UNIQUE (issue, email_key));
CREATE TABLE suppressed (email_key TEXT PRIMARY KEY, email TEXT NOT NULL, added_at REAL NOT NULL);
INSERT INTO sends VALUES ('2021-12-31', 'abc', 1640000000.0);
INSERT INTO deliveries VALUES (1, '2021-12-31', 'anna@example.com', 'anna@example.com',
    '{"name": "Anna"}', 'sent', 1, '250 OK', 1640000001.0);
INSERT INTO suppressed VALUES ('gone@example.com', 'Gone@example.com', 1640000002.0);
"""


def test_connect_sets_wal_busy_timeout_and_the_current_schema(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "state" / "journal.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == db.BUSY_TIMEOUT_MS
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 8  # 8: Message-IDs
    # The table migration 2 replaces left no free pages behind in a new file.
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"sends", "deliveries", "subscribers", "events", "suppression", "bounce_events"} <= tables


def test_an_old_journal_is_upgraded_in_place_losing_nothing(project: Path, runner: CliRunner) -> None:
    path = project / ".digest" / "journal.sqlite3"
    path.parent.mkdir()
    old = sqlite3.connect(path)
    old.executescript(OLD_JOURNAL)
    old.close()
    result = runner.invoke(cli, ["status", "2021-12-31"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("2021-12-31: 1 sent, 0 failed")
    conn = db.connect(path)
    assert conn.execute("SELECT email, fields, state, reply FROM deliveries").fetchall() == [
        ("anna@example.com", '{"name": "Anna"}', "sent", "250 OK")
    ]
    gone = subscribers.get(conn, "gone@example.com")
    assert (gone.email, gone.status, gone.created_at) == ("Gone@example.com", "unsubscribed", 1640000002.0)
    assert subscribers.is_suppressed(conn, "GONE@example.com")
    assert subscribers.events(conn, "gone@example.com")[0][:2] == ("unsubscribed", "digest unsubscribe")


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    db.connect(path).execute(f"PRAGMA user_version={db.SCHEMA_VERSION + 1}")
    with pytest.raises(sqlite3.DatabaseError, match="newer than this digest knows"):
        db.connect(path)


def test_a_failed_migration_leaves_the_database_as_it_was(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "journal.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_JOURNAL)
    conn.close()

    def broken(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE half (x)")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(db, "MIGRATIONS", [db.MIGRATIONS[0], broken])
    with pytest.raises(sqlite3.OperationalError):
        db.connect(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1  # migration 1 kept
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "half" not in names and "suppressed" in names


def test_replies_of_deliveries_erased_by_an_older_digest_are_redacted(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "journal.sqlite3"
    monkeypatch.setattr(db, "SCHEMA_VERSION", 3)
    conn = db.connect(path)
    conn.execute(
        "INSERT INTO deliveries (issue, email_key, email, fields, state, reply, updated_at) VALUES "
        "('2022-01-03', 'erased:ab12', 'erased:ab12', '{}', 'failed', '550 5.1.1 <bob@example.org>: no', 0), "
        "('2022-01-03', 'eve@example.org', 'eve@example.org', '{}', 'sent', '250 2.0.0 Ok', 0)"
    )
    conn.close()
    monkeypatch.undo()
    conn = db.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
    assert conn.execute("SELECT email, reply FROM deliveries ORDER BY id").fetchall() == [
        ("erased:ab12", "[erased]"),
        ("eve@example.org", "250 2.0.0 Ok"),
    ]


def test_a_new_database_and_its_folder_are_for_the_owner_alone(tmp_path: Path) -> None:
    # Readers' addresses and names: not for every user of the machine, whatever the umask.
    import os

    old = os.umask(0o022)
    try:
        conn = db.connect(tmp_path / "project" / ".digest" / db.DB_NAME)
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        folder = tmp_path / "project" / ".digest"
        modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
        conn.close()
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert modes[db.DB_NAME] == 0o600
    assert modes.get(db.DB_NAME + "-wal", 0o600) == 0o600 and modes.get(db.DB_NAME + "-shm", 0o600) == 0o600
    assert (db.DB_NAME + "-wal") in modes  # WAL: the check above saw it


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    # A deployment may share it with the web app's user through a group.
    path = tmp_path / db.DB_NAME
    db.connect(path).close()
    path.chmod(0o660)
    db.connect(path).close()
    assert path.stat().st_mode & 0o777 == 0o660
