"""The send log: entries appended while a send runs, folded into the journal, recovered after a kill."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest import subscribers
from digest.db import address_hash
from digest.message import Recipient
from digest.send import journal as journal_module
from digest.send import sendlog
from digest.send.journal import Journal
from digest.send.reports import STATES

ISSUE = "2026-11-29"


def _journal(path: Path, count: int) -> tuple[Journal, list[int]]:
    journal = Journal(path)
    journal.start(ISSUE, "hash")
    readers = (Recipient(f"r{i}@example.org", {}) for i in range(count))
    assert all(outcome == "new" for _, outcome in journal.add(ISSUE, readers))
    return journal, [d.id for d in journal.due(ISSUE, ("pending",), 0, count)]


def _rows(journal: Journal) -> list[tuple]:
    return journal._db.execute("SELECT id, state, reply, attempts FROM deliveries ORDER BY id").fetchall()


def _claims(ids: list[int], entries: list[tuple[int, str, str | None]]) -> dict[int, str]:
    return {
        i: address_hash(f"r{ids.index(i)}@example.org") for i, s, r in entries if s == "sending" and r is None
    }


# -- the file ------------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(
            st.integers(1, 2**40),
            st.sampled_from(STATES),
            st.booleans(),
            st.floats(0, 2e9),
            st.none() | st.text(),
        ),
        max_size=20,
    )
)
def test_entries_read_back_as_written(entries) -> None:
    data = b"%s\tabc\n" % sendlog.MAGIC + b"".join(sendlog._line(n + 1, e) for n, e in enumerate(entries))
    assert sendlog.parse(data) == ("abc", [(n + 1, e) for n, e in enumerate(entries)])


def test_a_line_cut_short_or_damaged_ends_the_log_there() -> None:
    entries = [
        (1, "sent", False, 1.5, "250 ok"),
        (2, "sending", True, 2.5, None),
        (3, "sent", False, 3.5, "250"),
    ]
    lines = [sendlog._line(n + 1, e) for n, e in enumerate(entries)]
    head = b"%s\tabc\n" % sendlog.MAGIC
    whole = head + b"".join(lines)
    assert [n for n, _ in sendlog.parse(whole)[1]] == [1, 2, 3]
    assert [n for n, _ in sendlog.parse(whole[:-1])[1]] == [1, 2]  # no newline: cut short
    damaged = head + lines[0] + lines[1].replace(b"sending", b"sendinh") + lines[2]
    assert [n for n, _ in sendlog.parse(damaged)[1]] == [1]
    out_of_order = head + lines[1] + lines[0]
    assert [n for n, _ in sendlog.parse(out_of_order)[1]] == [2]
    assert sendlog.parse(b"") == (None, [])
    assert sendlog.parse(head[:-3]) == (None, [])  # the first line itself cut short


# -- folding -------------------------------------------------------------------------------

_entries = st.lists(
    st.lists(
        st.tuples(
            st.integers(0, 4),
            st.sampled_from(["sending", "sent", "failed", "deferred", "pending"]),
            st.none() | st.sampled_from(["250 ok", "451 later", "550 no\nsuch user", ""]),
        ),
        min_size=1,
        max_size=4,
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(_entries)
def test_a_logged_send_leaves_the_journal_a_direct_one_would(groups) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        direct, ids = _journal(Path(tmp) / "direct.sqlite3", 5)
        logged, _ = _journal(Path(tmp) / "logged.sqlite3", 5)
        with logged.logging_to(Path(tmp) / "send.log"):
            for group in groups:
                entries = [(ids[n], state, reply) for n, state, reply in group]
                claims = _claims(ids, entries)
                assert logged.record(entries, claims) == direct.record(entries, claims)
        assert not (Path(tmp) / "send.log").exists()
        assert _rows(logged) == _rows(direct)
        assert logged.counts(ISSUE) == direct.counts(ISSUE)


def test_a_killed_sends_log_is_folded_once(tmp_path: Path) -> None:
    journal, ids = _journal(tmp_path / "journal.sqlite3", 3)
    path = tmp_path / "send.log"
    log = sendlog.SendLog(path)
    log.append([(ids[0], "sending", True, time.time(), None), (ids[1], "sending", True, time.time(), None)])
    log.fold(journal._db)  # folded, then killed before the log was removed
    log.append([(ids[0], "sent", False, time.time(), "250 ok")])
    os.close(log._fd)  # the process ends here
    assert journal.recover(path) == 1  # the folded two are not applied again
    assert not path.exists()
    assert _rows(journal) == [
        (ids[0], "sent", "250 ok", 1),
        (ids[1], "sending", None, 1),
        (ids[2], "pending", None, 0),
    ]
    assert journal.recover(path) == 0


def test_a_reader_erased_while_the_send_ran_keeps_no_reply(tmp_path: Path) -> None:
    journal, ids = _journal(tmp_path / "journal.sqlite3", 2)
    with journal.logging_to(tmp_path / "send.log"):
        for n in (0, 1):
            journal.record([(ids[n], "sending", None)], _claims(ids, [(ids[n], "sending", None)]))
            if n == 0:
                journal.due(ISSUE, ("pending",), ids[-1], 10)  # a fold: r0 is 'sending' in SQLite
        other = sqlite3.connect(tmp_path / "journal.sqlite3", isolation_level=None)
        subscribers.erase(other, "r0@example.org")
        subscribers.erase(other, "r1@example.org")  # still 'pending' in SQLite: its row goes
        other.close()
        for n in (0, 1):
            journal.record([(ids[n], "failed", f"550 5.1.1 <r{n}@example.org> no such user")])
    assert _rows(journal) == [(ids[0], "failed", "[erased]", 1)]
    assert "r1@example.org" not in str(journal._db.execute("SELECT * FROM deliveries").fetchall())


def test_a_log_that_cannot_be_written_refuses_every_entry_after(tmp_path: Path, monkeypatch) -> None:
    journal, ids = _journal(tmp_path / "journal.sqlite3", 2)
    path = tmp_path / "send.log"

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    with pytest.raises(journal_module.JournalError) as failed:  # noqa: PT012 - the block is the send
        with journal.logging_to(path):
            journal.record([(ids[0], "sending", None)])
            monkeypatch.setattr(sendlog.os, "write", full)
            journal.record([(ids[0], "sent", "250 ok")])
    assert "cannot write the send journal: the send log cannot be written" in failed.value.message
    assert "No space left on device" in failed.value.message
    monkeypatch.undo()
    # What was written before is folded in: the message is uncertain, not lost.
    assert _rows(journal)[0] == (ids[0], "sending", None, 1)


def test_whole_lines_of_a_group_cut_short_are_recovered(tmp_path: Path, monkeypatch) -> None:
    journal, ids = _journal(tmp_path / "journal.sqlite3", 2)
    path = tmp_path / "send.log"
    real_write = os.write

    def short(fd: int, data: bytes) -> int:  # the disk fills up after the group's first line
        return real_write(fd, data[: data.index(b"\n") + 1])

    with pytest.raises(journal_module.JournalError, match="short write"):  # noqa: PT012
        with journal.logging_to(path):
            journal.record([(ids[0], "sending", None), (ids[1], "sending", None)])
            monkeypatch.setattr(sendlog.os, "write", short)
            journal.record([(ids[0], "sent", "250 ok"), (ids[1], "sent", "250 ok")])
    monkeypatch.undo()
    assert path.exists()  # kept: its whole lines are not all in the journal yet
    assert journal.recover(path) == 1
    assert _rows(journal) == [(ids[0], "sent", "250 ok", 1), (ids[1], "sending", None, 1)]


def test_counts_include_what_could_not_be_folded(tmp_path: Path) -> None:
    journal, ids = _journal(tmp_path / "journal.sqlite3", 2)
    path = tmp_path / "send.log"
    with pytest.raises(journal_module.JournalError):  # noqa: PT012 - the block is the send
        with journal.logging_to(path):
            journal.record([(ids[0], "sending", None), (ids[1], "sending", None)])
            journal.record([(ids[0], "sent", "250 ok")])
            journal._db.execute("PRAGMA query_only = 1")  # SQLite refuses the fold
    assert journal.counts(ISSUE) == dict.fromkeys(STATES, 0) | {"sent": 1, "sending": 1}
    assert path.exists()
    journal._db.execute("PRAGMA query_only = 0")
    fresh = Journal(tmp_path / "journal.sqlite3")
    assert fresh.recover(path) == 3
    assert fresh.counts(ISSUE) == dict.fromkeys(STATES, 0) | {"sent": 1, "sending": 1}


# -- suppression while logging --------------------------------------------------------------


def test_an_unsubscribe_committed_before_a_claim_stops_it(tmp_path: Path) -> None:
    db_path = tmp_path / "journal.sqlite3"
    journal, ids = _journal(db_path, 3)
    queries: list[str] = []
    with journal.logging_to(tmp_path / "send.log"):
        journal.due(ISSUE, ("pending",), 0, 10)  # read ahead: nobody suppressed
        journal._db.set_trace_callback(queries.append)
        claim = [(ids[0], "sending", None)]
        assert journal.record(claim, _claims(ids, claim)) == set()
        assert not [q for q in queries if "suppression" in q]  # answered from the batch's read
        other = sqlite3.connect(db_path, isolation_level=None)
        subscribers.set_status(other, "r1@example.org", "unsubscribed", "web: one-click")
        other.close()
        claim = [(ids[1], "sending", None)]
        assert journal.record(claim, _claims(ids, claim)) == {ids[1]}  # read again: another wrote
        journal._db.set_trace_callback(None)
    assert [s for _, s, _, _ in _rows(journal)] == ["sending", "suppressed", "pending"]


def test_a_long_log_starts_again_after_a_fold_and_recovers_only_what_followed(
    tmp_path: Path, monkeypatch
) -> None:
    journal, ids = _journal(tmp_path / "journal.sqlite3", 3)
    monkeypatch.setattr(sendlog, "ROTATE_BYTES", 50)
    path = tmp_path / "send.log"
    log = sendlog.SendLog(path)
    log.append([(ids[0], "sending", True, 1.0, None), (ids[0], "sent", False, 2.0, "250 ok")])
    log.fold(journal._db)
    assert path.read_bytes() == b"%s\t%s\n" % (sendlog.MAGIC, log.log_id.encode())  # started again
    log.append([(ids[1], "sending", True, 3.0, None)])
    os.close(log._fd)  # killed
    assert [n for n, _ in sendlog.parse(path.read_bytes())[1]] == [3]  # the numbers go on
    assert journal.recover(path) == 1
    assert _rows(journal) == [
        (ids[0], "sent", "250 ok", 1),
        (ids[1], "sending", None, 1),
        (ids[2], "pending", None, 0),
    ]


def test_a_fold_that_fails_before_a_read_is_a_write_error(tmp_path: Path) -> None:
    journal, ids = _journal(tmp_path / "journal.sqlite3", 2)
    with pytest.raises(journal_module.JournalError):  # noqa: PT012 - the block is the send
        with journal.logging_to(tmp_path / "send.log"):
            journal.record([(ids[0], "sending", None)])
            journal._db.execute("PRAGMA query_only = 1")
            with pytest.raises(journal_module.JournalError, match="cannot write the send journal"):
                journal.due(ISSUE, ("pending",), ids[0], 10)


def _sync_trace(journal: Journal, monkeypatch) -> list[tuple[str, bool]]:
    """Record the journal's commits (and whether synchronous=FULL was on) and the log's drops."""
    events: list[tuple[str, bool]] = []
    full = [False]

    def trace(statement: str) -> None:
        text = statement.strip().upper()
        if text.startswith("PRAGMA SYNCHRONOUS="):
            full[0] = text.endswith("FULL")
        elif text == "COMMIT":
            events.append(("commit", full[0]))

    journal._db.set_trace_callback(trace)
    real_unlink, real_truncate = Path.unlink, os.ftruncate

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".log":
            events.append(("drop", False))
        real_unlink(self, missing_ok=missing_ok)

    def ftruncate(fd: int, length: int) -> None:
        events.append(("drop", False))
        real_truncate(fd, length)

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        events.append(("dirsync", False))
        real_fsync(fd)

    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(os, "ftruncate", ftruncate)
    monkeypatch.setattr(os, "fsync", fsync)
    return events


def test_the_log_goes_only_after_a_synced_commit(tmp_path: Path, monkeypatch) -> None:
    # The folds are not synced (WAL, synchronous=NORMAL): without a sync before the log's
    # lines go, a power cut soon after could lose what the log held, all of it.
    journal, ids = _journal(tmp_path / "journal.sqlite3", 3)
    events = _sync_trace(journal, monkeypatch)
    log = sendlog.SendLog(tmp_path / "send.log")
    log.append([(ids[0], "sending", True, 1.0, None), (ids[0], "sent", False, 2.0, "250 ok")])
    log.fold(journal._db)  # a periodic fold: not synced, the log keeps its lines
    assert events == [("commit", False)]
    log.close(journal._db)  # nothing pending: the last fold still commits, synced
    # The folder is synced after the unlink, before the log's row goes: a power cut cannot
    # bring the file back without the row that says how far it was applied.
    assert events[1:] == [("commit", True), ("drop", False), ("dirsync", False)]

    events.clear()
    monkeypatch.setattr(sendlog, "ROTATE_BYTES", 50)
    log = sendlog.SendLog(tmp_path / "send.log")
    log.append([(ids[1], "sending", True, 3.0, None), (ids[1], "sent", False, 4.0, "250 ok")])
    log.fold(journal._db)  # followed by the rotation
    assert events == [("commit", True), ("drop", False)]

    events.clear()
    monkeypatch.setattr(sendlog, "ROTATE_BYTES", 8 << 20)
    log.append([(ids[2], "sending", True, 5.0, None)])
    log.fold(journal._db)  # small again: not synced
    os.close(log._fd)  # killed; everything in the log was folded already
    assert journal.recover(tmp_path / "send.log") == 0
    assert events == [("commit", False), ("commit", True), ("drop", False), ("dirsync", False)]
    assert journal._db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL again
    assert _rows(journal)[2] == (ids[2], "sending", None, 1)


@pytest.mark.parametrize("logged", [True, False], ids=["send log", "direct"])
def test_a_new_attempt_records_its_message_id_and_erasure_clears_it(tmp_path: Path, logged: bool) -> None:
    """The Message-ID of a claim is kept with the delivery (status shows it for an uncertain
    one): through the send log and its fold as through a direct record, kept by the
    outcome, replaced by the next attempt's; a log of a digest before 0.9 has none."""
    journal, ids = _journal(tmp_path / "journal.sqlite3", 3)

    def message_ids() -> list[tuple]:
        return journal._db.execute("SELECT id, state, message_id FROM deliveries ORDER BY id").fetchall()

    with journal.logging_to(tmp_path / "send.log") if logged else contextlib.nullcontext():
        for n, mid in ((0, "<a@x>"), (1, "<b@x>"), (2, None)):
            claim = [(ids[n], "sending", None)]
            journal.record(claim, _claims(ids, claim), {ids[n]: mid} if mid else None)
        journal.record([(ids[0], "sent", "250 ok"), (ids[1], "sending", "no reply in time")])
        assert journal.message_ids(ISSUE, ids) == {ids[0]: "<a@x>", ids[1]: "<b@x>"}  # before a fold too
        claim = [(ids[0], "sending", None)]  # sent again (--resend-uncertain, say): its own
        journal.record(claim, _claims(ids, claim), {ids[0]: "<c@x>"})
    assert message_ids() == [
        (ids[0], "sending", "<c@x>"),
        (ids[1], "sending", "<b@x>"),
        (ids[2], "sending", None),
    ]
    assert journal.message_ids(ISSUE, ids) == {ids[0]: "<c@x>", ids[1]: "<b@x>"}
    subscribers.erase(journal._db, "r1@example.org")
    assert message_ids()[1] == (ids[1], "sending", None)


def test_a_claim_folded_after_its_reader_was_erased_keeps_no_message_id(tmp_path: Path) -> None:
    """Found in a review: an uncertain reader sent again (its claim still in the log) and
    erased meanwhile got its Message-ID (a hash of the address) back at the fold."""
    journal, ids = _journal(tmp_path / "journal.sqlite3", 1)
    claim = [(ids[0], "sending", None)]
    journal.record(claim, _claims(ids, claim), {ids[0]: "<first@x>"})  # uncertain, in SQLite
    with journal.logging_to(tmp_path / "send.log"):
        journal.record(claim, _claims(ids, claim), {ids[0]: "<again@x>"})  # --resend-uncertain
        other = sqlite3.connect(tmp_path / "journal.sqlite3", isolation_level=None)
        subscribers.erase(other, "r0@example.org")
        other.close()
    assert journal._db.execute("SELECT state, message_id FROM deliveries").fetchall() == [("sending", None)]
