"""The send journal: claims checked against suppression in their own transaction, the due list in order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from digest import subscribers
from digest.db import address_hash
from digest.message import Recipient
from digest.send.journal import Journal

ISSUE = "2026-11-28"


def _journal(tmp_path: Path, count: int) -> tuple[Journal, list[int]]:
    journal = Journal(tmp_path / "journal.sqlite3")
    journal.start(ISSUE, "hash")
    readers = (Recipient(f"r{i}@example.org", {}) for i in range(count))
    assert all(outcome == "new" for _, outcome in journal.add(ISSUE, readers))
    return journal, [d.id for d in journal.due(ISSUE, ("pending",), 0, count)]


def _states(journal: Journal) -> list[tuple[str, str, str | None, int]]:
    return journal._db.execute("SELECT email, state, reply, attempts FROM deliveries ORDER BY id").fetchall()


def test_a_claim_is_refused_in_the_same_transaction_once_its_reader_left(tmp_path: Path) -> None:
    journal, ids = _journal(tmp_path, 3)
    # Another process (the web app) unsubscribes r1 after the list was recorded.
    other = sqlite3.connect(tmp_path / "journal.sqlite3")
    subscribers.set_status(other, "R1@example.org", "unsubscribed", "web: one-click")
    other.commit()
    other.close()
    claims = {i: address_hash(f"r{n}@example.org") for n, i in enumerate(ids)}
    refused = journal.record([(i, "sending", None) for i in ids], claims)
    assert refused == {ids[1]}
    assert _states(journal) == [
        ("r0@example.org", "sending", None, 1),
        ("r1@example.org", "suppressed", "unsubscribed while the send ran", 0),
        ("r2@example.org", "sending", None, 1),
    ]


def test_entries_keep_their_order_in_one_commit(tmp_path: Path) -> None:
    # A deferral and the retry's claim of the same reader can meet in one commit
    # (a retry with no backoff): the claim, recorded second, wins.
    journal, ids = _journal(tmp_path, 1)
    journal.record([(ids[0], "sending", None)], {ids[0]: address_hash("r0@example.org")})
    refused = journal.record(
        [(ids[0], "deferred", "451 4.3.0 try later"), (ids[0], "sending", None)],
        {ids[0]: address_hash("r0@example.org")},
    )
    assert refused == set()
    # The new attempt's reply is its own: none yet (an uncertain end would not show the 451).
    assert _states(journal) == [("r0@example.org", "sending", None, 2)]


def test_outcomes_without_claims_check_nothing(tmp_path: Path) -> None:
    journal, ids = _journal(tmp_path, 2)
    assert journal.record([(ids[0], "sent", "250 ok"), (ids[1], "failed", "550 no")]) == set()
    assert [s for _, s, _, _ in _states(journal)] == ["sent", "failed"]


def test_the_due_list_is_read_in_order_through_an_index(tmp_path: Path) -> None:
    """Each batch seeks to where the last one ended: no sort of the whole issue per batch."""
    journal, ids = _journal(tmp_path, 1200)
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    journal.due(ISSUE, ("pending", "deferred"), 0, 512)
    journal._db.set_trace_callback(None)
    (query,) = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
    details = " ".join(row[-1] for row in journal._db.execute("EXPLAIN QUERY PLAN " + query))
    assert "deliveries_in_order" in details and "TEMP B-TREE" not in details, details
    seen, last = [], 0
    while batch := journal.due(ISSUE, ("pending", "deferred"), last, 512):
        seen += [d.id for d in batch]
        last = batch[-1].id
    assert seen == ids
