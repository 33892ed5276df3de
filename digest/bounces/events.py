"""Bounce events in the project's database, the soft-bounce score, and what they change.

Each message is recorded once (keyed on its Message-ID and a hash of its body), with
one row per recipient it reports on: the kind, the issue, the status code, the
diagnostic line and where the message was (file name or IMAP UID). A hard bounce or
a complaint changes the subscriber's status at once; soft bounces add 0.5 a day at
most (Mailman's rule; a week without one starts the count again) and past the
threshold mark the subscriber bounced. The table is created by digest/db.py.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..db import address_hash, address_key
from .classify import COMPLAINT, HARD, SOFT, Event

SOFT_INCREMENT = 0.5  # per day with a soft bounce, at most once a day
STALE_AFTER = dt.timedelta(days=7)  # a week without a soft bounce starts the count again
DEFAULT_THRESHOLD = 3.0
REACTIVATED = "reactivated"


@dataclass(frozen=True)
class Change:
    """A subscriber status change a message causes (or would cause)."""

    email: str
    status: str
    reason: str


def already_recorded(conn: sqlite3.Connection, key: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM bounce_events WHERE message_key = ? LIMIT 1", (key,)).fetchone() is not None
    )


def record(conn: sqlite3.Connection, key: str, events: Iterable[Event], source: str, day: dt.date) -> int:
    """Insert the events of one message (nothing twice); return how many were new."""
    from ..subscribers import is_erased

    added = 0
    for event in events:
        email, email_key, diagnostic = event.email, address_key(event.email), event.diagnostic
        if (
            is_erased(conn, email)
            and not conn.execute("SELECT 1 FROM subscribers WHERE email_key = ?", (email_key,)).fetchone()
        ):  # a late bounce for an erased address: by its hash only
            digest = address_hash(email)
            email, email_key, diagnostic = f"erased:{digest[:12]}", f"erased:{digest}", None
        cur = conn.execute(
            "INSERT INTO bounce_events (message_key, kind, issue, email, email_key, status, "
            "diagnostic, source, day, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (
                key,
                event.kind,
                event.issue,
                email,
                email_key,
                event.status,
                diagnostic,
                source,
                day.isoformat(),
                time.time(),
            ),
        )
        added += cur.rowcount
    return added


def soft_score(conn: sqlite3.Connection, email: str, extra_day: dt.date | None = None) -> float:
    """Return the soft-bounce score: 0.5 per day in the latest run of days a week apart at most."""
    key = address_key(email)
    since = conn.execute(
        "SELECT coalesce(max(id), 0) FROM bounce_events WHERE email_key = ? AND kind = ?", (key, REACTIVATED)
    ).fetchone()[0]
    days = {
        dt.date.fromisoformat(d)
        for (d,) in conn.execute(
            "SELECT DISTINCT day FROM bounce_events WHERE email_key = ? AND kind = ? AND id > ?",
            (key, SOFT, since),
        )
    }
    if extra_day is not None:
        days.add(extra_day)
    return score_days(days)


def score_days(days: Iterable[dt.date]) -> float:
    """Mailman's rule over the days with a soft bounce: +0.5 a day, reset after a quiet week."""
    score, last = 0.0, None
    for day in sorted(set(days)):
        if last is not None and day - last > STALE_AFTER:
            score = 0.0
        score += SOFT_INCREMENT
        last = day
    return score


def changes(
    conn: sqlite3.Connection, events: Iterable[Event], day: dt.date, threshold: float, recorded: bool
) -> list[Change]:
    """Return the status changes the events call for (*recorded*: already in the table)."""
    out: list[Change] = []
    for event in events:
        what = (
            f"{event.status} {event.diagnostic}"
            if event.status and event.diagnostic
            else (event.diagnostic or event.status or "")
        )
        if event.kind == HARD:
            out.append(Change(event.email, "bounced", f"hard bounce: {what}".strip()))
        elif event.kind == COMPLAINT:
            out.append(Change(event.email, "complained", f"complaint: {what}".strip()))
        elif event.kind == SOFT:
            score = soft_score(conn, event.email, None if recorded else day)
            if score >= threshold:
                out.append(
                    Change(
                        event.email,
                        "bounced",
                        f"soft bounces (score {score:g}, threshold {threshold:g}): {what}".strip(),
                    )
                )
    return out


def reset_score(conn: sqlite3.Connection, email: str, source: str) -> None:
    """Start the soft-bounce count again (when an editor reactivates the address)."""
    conn.execute(
        "INSERT INTO bounce_events (message_key, kind, email, email_key, source, day, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            f"{REACTIVATED}:{time.time_ns()}",
            REACTIVATED,
            email,
            address_key(email),
            source,
            dt.date.today().isoformat(),
            time.time(),
        ),
    )


def issue_counts(conn: sqlite3.Connection, issue: str) -> dict[str, int]:
    """Return how many recipients of *issue* bounced (for good), soft-bounced (a full mailbox,
    say: still mailed) and complained."""
    counts = {"bounced": 0, "soft-bounced": 0, "complained": 0}
    for kind, n in conn.execute(
        "SELECT kind, count(DISTINCT email_key) FROM bounce_events WHERE issue = ? "
        "AND kind IN (?, ?, ?) GROUP BY kind",
        (issue, HARD, SOFT, COMPLAINT),
    ):
        counts[_LABELS[kind]] += n
    return counts


_LABELS = {HARD: "bounced", SOFT: "soft-bounced", COMPLAINT: "complained"}


def issue_bounces(conn: sqlite3.Connection, issue: str) -> list[tuple[str, str, str]]:
    """Return (email, 'bounced' | 'soft-bounced' | 'complained', status and diagnostic) per
    recipient of *issue*."""
    rows = conn.execute(
        "SELECT email, kind, status, diagnostic FROM bounce_events WHERE id IN (SELECT max(id) "
        "FROM bounce_events WHERE issue = ? AND kind IN (?, ?, ?) GROUP BY email_key) ORDER BY id",
        (issue, HARD, SOFT, COMPLAINT),
    ).fetchall()
    return [
        (
            email,
            _LABELS[kind],
            " ".join(
                x for x in (f"{kind} bounce" if kind != COMPLAINT else "complaint", status, diagnostic) if x
            ),
        )
        for email, kind, status, diagnostic in rows
    ]


def last_reason(conn: sqlite3.Connection, email: str, status: str = "bounced") -> str | None:
    """Return the latest bounce or complaint of a bounced or complained address, as one line."""
    if status not in ("bounced", "complained"):
        return None
    kinds = (COMPLAINT,) if status == "complained" else (HARD, SOFT)
    row = conn.execute(
        f"SELECT kind, status, diagnostic, issue, day FROM bounce_events WHERE email_key = ? AND "
        f"kind IN ({','.join('?' * len(kinds))}) ORDER BY id DESC LIMIT 1",
        (address_key(email), *kinds),
    ).fetchone()
    if row is None:
        return None
    kind, code, diagnostic, issue, day = row
    label = {HARD: "hard bounce", SOFT: "soft bounce", COMPLAINT: "complaint"}[kind]
    detail = " ".join(x for x in (code, diagnostic) if x)
    return f"{label} {day}" + (f" ({issue})" if issue else "") + (f": {detail}" if detail else "")
