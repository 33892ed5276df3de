"""Rate limits kept in the database, so they hold across processes and restarts."""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass

from ..db import transaction


@dataclass(frozen=True)
class Limit:
    """At most *count* events per *window* seconds (a fixed window)."""

    count: int
    window: float


def allow(conn: sqlite3.Connection, bucket: str, limit: Limit, now: float | None = None) -> bool:
    """Count one event in *bucket*; return False (counting nothing) when over the limit."""
    now = time.time() if now is None else now
    with transaction(conn):
        row = conn.execute("SELECT window_start, count FROM rate_limits WHERE bucket = ?", (bucket,)).fetchone()
        if row is None or now - row[0] >= limit.window:
            if row is None:  # a new bucket: drop the long-expired ones now and then
                conn.execute("DELETE FROM rate_limits WHERE window_start < ?", (now - 86400,))
            conn.execute(
                "INSERT INTO rate_limits VALUES (?, ?, 1) ON CONFLICT(bucket) DO UPDATE "
                "SET window_start = excluded.window_start, count = 1",
                (bucket, now),
            )
            return True
        if row[1] >= limit.count:
            return False
        conn.execute("UPDATE rate_limits SET count = count + 1 WHERE bucket = ?", (bucket,))
        return True


def refund(conn: sqlite3.Connection, bucket: str) -> None:
    """Take back one event that ``allow`` counted (what it allowed did not happen)."""
    with transaction(conn):
        conn.execute("UPDATE rate_limits SET count = count - 1 WHERE bucket = ? AND count > 0", (bucket,))


def seconds_left(conn: sqlite3.Connection, bucket: str, limit: Limit, now: float | None = None) -> int:
    """Seconds until *bucket*'s window ends and ``allow`` counts afresh (at least 1)."""
    now = time.time() if now is None else now
    row = conn.execute("SELECT window_start FROM rate_limits WHERE bucket = ?", (bucket,)).fetchone()
    left = limit.window - (now - row[0]) if row is not None else 0
    return max(1, math.ceil(left))
