"""Helpers for the bounce tests: a project with bounce_address, deliveries, VERP fixtures."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from digest import db
from digest.tokens import verp_address, verp_token

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bounces"
SECRET = "bounce-test-secret"
LIST_ID = "world-digest.worlddigest.example.org"
BOUNCE_ADDRESS = "bounces@worlddigest.example.org"
ISSUE = "2021-12-31"
_PLACEHOLDER = re.compile(rb"@@VERP:([^@\s]+@[^@\s]+?)@@")


def enable_bounces(project: Path, monkeypatch, threshold: float | None = None) -> None:
    """Add bounce_address (and a threshold) to digest.toml and set DIGEST_SECRET."""
    config = project / "digest.toml"
    text = config.read_text()
    extra = (
        "" if f'bounce_address = "{BOUNCE_ADDRESS}"' in text else f'bounce_address = "{BOUNCE_ADDRESS}"\n'
    ) + (f"bounce_threshold = {threshold}\n" if threshold is not None else "")
    config.write_text(text.replace("[newsletter]\n", "[newsletter]\n" + extra, 1))
    monkeypatch.setenv("DIGEST_SECRET", SECRET)


def connect(project: Path) -> sqlite3.Connection:
    return db.connect(project / ".digest" / db.DB_NAME)


def delivery(conn: sqlite3.Connection, email: str, issue: str = ISSUE) -> int:
    """Record a sent delivery of *issue* to *email* in the journal; return its id."""
    conn.execute("INSERT OR IGNORE INTO sends VALUES (?, 'hash', 0)", (issue,))
    conn.execute(
        "INSERT OR IGNORE INTO deliveries (issue, email_key, email, fields, state, "
        "updated_at) VALUES (?, ?, ?, '{}', 'sent', 0)",
        (issue, email.lower(), email),
    )
    return conn.execute(
        "SELECT id FROM deliveries WHERE issue = ? AND email_key = ?", (issue, email.lower())
    ).fetchone()[0]


def verp_for(conn: sqlite3.Connection, email: str, issue: str = ISSUE) -> str:
    """The VERP address the send gives the message of *issue* to *email*."""
    token = verp_token(SECRET, LIST_ID, delivery(conn, email, issue), issue, email)
    return verp_address(BOUNCE_ADDRESS, token)


def fixture(conn: sqlite3.Connection, name: str) -> bytes:
    """A fixture with its @@VERP:address@@ placeholders filled in."""
    raw = (FIXTURES / name).read_bytes()
    return _PLACEHOLDER.sub(lambda m: verp_for(conn, m.group(1).decode()).encode(), raw)


def maildir(folder: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return folder


def deliver(folder: Path, name: str, raw: bytes) -> Path:
    """Put a message into a Maildir's new/ as a delivery agent would."""
    (folder / "tmp" / name).write_bytes(raw)
    (folder / "tmp" / name).rename(folder / "new" / name)
    return folder / "new" / name
