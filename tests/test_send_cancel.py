"""digest cancel: a send stopped part way is stopped for good, and a later list is sent on its own."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import cli

from . import test_send
from .conftest import EXAMPLE
from .smtpserver import Server
from .test_send import _list, _send, _spawn_send, _wait_for

plain_server = test_send.plain_server  # the fixture: an aiosmtpd server that digest sends to


def _record_earlier_run(project: Path, tmp_path: Path, n: int, uncertain: int = 0, failed: int = 0) -> Path:
    """An earlier run with the wrong list: recorded, then stopped (as if interrupted) with
    its first *uncertain* readers in flight and the next *failed* ones refused for good."""
    from digest.config import load_project
    from digest.send import plan_send

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("email\n" + "".join(f"wrong{i}@example.com\n" for i in range(n)))
    journal = plan_send(load_project(project), EXAMPLE, list_path=wrong).record()
    deliveries = journal.due(EXAMPLE, ("pending",), 0, n)
    for d in deliveries[:uncertain]:
        journal.mark(d.id, "sending")
    for d in deliveries[uncertain : uncertain + failed]:
        journal.mark(d.id, "failed", "550 5.1.1 no such user")
    journal.close()
    return wrong


def _status(runner: CliRunner) -> str:
    result = runner.invoke(cli, ["status", EXAMPLE])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_cancelled_send_is_not_resumed_and_a_later_list_is_sent_on_its_own(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    _record_earlier_run(project, tmp_path, 3)
    result = runner.invoke(cli, ["cancel", EXAMPLE, "--yes"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Left of {EXAMPLE}: 3 readers still due\n"
        f"Cancelled: 3 readers still due. No later run sends {EXAMPLE} to them unless it names them "
        "again (its list, the store's subscribers, or --to); its plan then says so.\n"
    )
    assert _status(runner) == f"{EXAMPLE}: 0 sent, 0 failed, 0 deferred, 0 pending, 0 uncertain, 3 cancelled\n"
    assert plain_server.recorder.received == []

    # The right list: two new readers, and one of the cancelled ones, named again.
    right = tmp_path / "right.csv"
    right.write_text("email,name\nwrong1@example.com,Named Again\nnew0@example.com,A\nnew1@example.com,B\n")
    result = _send(runner, "--list", str(right), "--yes")
    assert result.exit_code == 0, result.output
    assert "Recipients: 3 to send\n" in result.stdout
    assert (
        f"Cancelled:  1 of them was set aside by 'digest cancel {EXAMPLE}'; this send takes it up again\n"
        in (result.stdout)
    )
    assert "Earlier:" not in result.stdout  # the cancelled ones are not due any more
    got = plain_server.recorder.by_recipient()
    assert sorted(got) == ["new0@example.com", "new1@example.com", "wrong1@example.com"]
    assert all(len(copies) == 1 for copies in got.values())
    assert b"Named Again" in got["wrong1@example.com"][0].data  # the fields of the list that named it
    assert _status(runner) == f"{EXAMPLE}: 3 sent, 0 failed, 0 deferred, 0 pending, 0 uncertain, 2 cancelled\n"

    again = runner.invoke(cli, ["cancel", EXAMPLE, "--yes"])
    assert again.exit_code == 0, again.output
    assert (
        again.stdout
        == f"Nothing to cancel: nothing of {EXAMPLE} is left to send (see 'digest status {EXAMPLE}').\n"
    )


def test_uncertain_and_failed_readers_are_cancelled_too_and_stay_so_with_the_resend_options(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    # wrong0, wrong1 in flight when the wrong send stopped; wrong2 refused; wrong3..5 due.
    _record_earlier_run(project, tmp_path, 6, uncertain=2, failed=1)
    result = runner.invoke(cli, ["cancel", EXAMPLE, "--yes"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Left of {EXAMPLE}: 6 readers (3 still due, 2 uncertain, 1 failed)\n")
    assert _status(runner).endswith(", 0 uncertain, 6 cancelled\n")

    # The right list names wrong1 (uncertain: it may have the message) and wrong3 (was due).
    right = tmp_path / "right.csv"
    right.write_text("email\nwrong1@example.com\nwrong3@example.com\nnew0@example.com\n")
    result = _send(runner, "--list", str(right), "--yes", "--retry-failed")
    assert result.exit_code == 4, result.output  # wrong1 is uncertain again: left for a rerun
    assert "Recipients: 2 to send\n" in result.stdout
    assert "Uncertain:  1 was in flight when an earlier send stopped" in result.stdout
    assert "Earlier:" not in result.stdout and "Retrying:" not in result.stdout  # wrong2 stays cancelled
    assert sorted(plain_server.recorder.by_recipient()) == ["new0@example.com", "wrong3@example.com"]

    # Only --resend-uncertain sends wrong1 again; wrong0 (not in the list) never.
    result = _send(runner, "--list", str(right), "--yes", "--resend-uncertain")
    assert result.exit_code == 0, result.output
    assert "Recipients: 1 to send, 2 already sent\n" in result.stdout
    got = plain_server.recorder.by_recipient()
    assert sorted(got) == ["new0@example.com", "wrong1@example.com", "wrong3@example.com"]
    assert all(len(copies) == 1 for copies in got.values())
    assert _status(runner) == f"{EXAMPLE}: 3 sent, 0 failed, 0 deferred, 0 pending, 0 uncertain, 4 cancelled\n"


def test_cancel_and_status_take_the_issue_as_a_folder_too(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    _record_earlier_run(project, tmp_path, 2)
    status = runner.invoke(cli, ["status", f"issues/{EXAMPLE}"])
    assert status.stdout == f"{EXAMPLE}: 0 sent, 0 failed, 0 deferred, 2 pending, 0 uncertain\n"
    result = runner.invoke(cli, ["cancel", str(project / "issues" / EXAMPLE), "--yes"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Left of {EXAMPLE}: 2 readers still due\nCancelled: ")
    assert _status(runner).endswith(", 2 cancelled\n")


def test_the_plan_counts_as_already_sent_the_readers_of_this_list(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    first = _list(tmp_path, 4, "first.csv")
    assert _send(runner, "--list", str(first), "--yes").exit_code == 0
    second = tmp_path / "second.csv"
    second.write_text("email\nreader00001@example.com\nother@example.com\n")
    result = _send(runner, "--list", str(second), "--yes")
    assert result.exit_code == 0, result.output
    assert (
        "Recipients: 1 to send, 1 already sent (besides 3 sent to readers not among these)\n" in result.stdout
    )


def test_cancel_asks_first_and_needs_yes_without_a_terminal(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    _record_earlier_run(project, tmp_path, 2)
    result = runner.invoke(cli, ["cancel", EXAMPLE])  # CliRunner's stdin is no terminal
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: cancelling a send needs confirmation\n  hint: pass --yes to cancel without a terminal\n"
    )
    assert ", 2 pending," in _status(runner)  # nothing cancelled


def test_cancel_refuses_a_send_that_is_running_before_asking_and_cancels_nothing(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    sending = _spawn_send(project, _list(tmp_path, 40), "--rate", "5", "--workers", "1")  # about 8 s
    try:
        _wait_for(lambda: len(plain_server.recorder.received) >= 2)
        result = runner.invoke(cli, ["cancel", EXAMPLE])  # no --yes: refused for the send, not the prompt
        assert result.exit_code == 1
        assert f"is being sent by another digest process (pid {sending.pid})" in result.stderr
        assert "hint: stop that send first (Ctrl-C where it runs" in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert "cancelled" not in _status(runner)
    finally:
        sending.send_signal(signal.SIGINT)  # stops after the message in flight
        sending.communicate(timeout=60)
    # Stopped by Ctrl-C, the rest still due: now it can be cancelled, and nothing more goes out.
    sent = len(plain_server.recorder.received)
    result = runner.invoke(cli, ["cancel", EXAMPLE, "--yes"])
    assert result.exit_code == 0, result.output
    assert f"Cancelled: {40 - sent} readers still due." in result.stdout
    status = _status(runner)
    assert f"{EXAMPLE}: {sent} sent, " in status and status.endswith(f", {40 - sent} cancelled\n")


def test_what_changed_while_the_editor_was_asked_is_not_cancelled(
    plain_server: Server, project: Path, tmp_path: Path
) -> None:
    from digest.config import load_project
    from digest.errors import SendError
    from digest.send import cancel_sends, left_by_send
    from digest.send.state import open_journal

    _record_earlier_run(project, tmp_path, 3)
    loaded = load_project(project)
    shown = left_by_send(loaded, EXAMPLE)
    assert shown[EXAMPLE].counts == {"due": 3, "uncertain": 0, "failed": 0}
    # Meanwhile a send with another list recorded 3 readers and delivered the 3 shown: the
    # counts are the same, the readers are not. Cancelling those would cancel readers never shown.
    journal = open_journal(loaded)
    for d in journal.due(EXAMPLE, ("pending",), 0, 3):
        journal.mark(d.id, "sent", "250 ok")
    from digest.message import Recipient

    list(journal.add(EXAMPLE, [Recipient(f"other{i}@example.com") for i in range(3)]))
    journal.close()
    assert left_by_send(loaded, EXAMPLE)[EXAMPLE].counts == shown[EXAMPLE].counts
    with pytest.raises(SendError, match="changed while you were asked"):
        cancel_sends(loaded, shown)
    assert left_by_send(loaded, EXAMPLE)[EXAMPLE].counts["due"] == 3  # nothing cancelled


def test_erasing_a_reader_deletes_their_cancelled_delivery(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    from digest.send.journal import Journal

    _record_earlier_run(project, tmp_path, 2)
    assert runner.invoke(cli, ["cancel", EXAMPLE, "--yes"]).exit_code == 0
    result = runner.invoke(cli, ["subscribers", "rm", "wrong0@example.com"])
    assert result.exit_code == 0, result.output
    journal = Journal(project / ".digest" / "journal.sqlite3")
    try:
        rows = journal._db.execute("SELECT email, state FROM deliveries ORDER BY id").fetchall()
    finally:
        journal.close()
    assert rows == [("wrong1@example.com", "cancelled")]  # never sent: nothing of it kept


def test_cancel_of_an_issue_never_sent_or_unknown(project: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["cancel", EXAMPLE, "--yes"])
    assert result.exit_code == 0 and result.stdout == f"{EXAMPLE}: not sent yet; nothing to cancel\n"
    assert not (project / ".digest" / "journal.sqlite3").exists()  # asking creates nothing
    result = runner.invoke(cli, ["cancel", "2099-01-01", "--yes"])
    assert result.exit_code == 1
    assert result.stderr == "Error: issues: no issue '2099-01-01'\n  hint: known issues: 2021-12-31\n"


def test_an_issue_cancelled_before_any_message_went_out_is_not_published(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    from digest.send.journal import Journal

    _record_earlier_run(project, tmp_path, 3, failed=1)
    assert runner.invoke(cli, ["cancel", EXAMPLE, "--yes"]).exit_code == 0
    result = runner.invoke(cli, ["publish"])
    assert result.exit_code == 0, result.output
    assert not (project / "site" / EXAMPLE).exists()  # nobody can have it: no page for it
    # One of them did get it (say, a send whose log is folded in later): the page is published.
    journal = Journal(project / ".digest" / "journal.sqlite3")
    journal.mark(journal.due(EXAMPLE, ("cancelled",), 0, 1)[0].id, "sent", "250 ok")
    journal.close()
    assert runner.invoke(cli, ["publish"]).exit_code == 0
    assert (project / "site" / EXAMPLE / "index.html").is_file()


def test_a_reader_uncertain_before_the_cancel_is_uncertain_not_in_flight_when_named_again(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    from digest.config import load_project
    from digest.send import only_sender, plan_send

    _record_earlier_run(project, tmp_path, 2, uncertain=1)  # wrong0 was in flight when it stopped
    assert runner.invoke(cli, ["cancel", EXAMPLE, "--yes"]).exit_code == 0
    right = tmp_path / "right.csv"
    right.write_text("email\nwrong0@example.com\nnew0@example.com\n")
    plan = plan_send(load_project(project), EXAMPLE, list_path=right)
    with only_sender(load_project(project), EXAMPLE):  # the next send, as it records its list
        plan.record().close()
        status = _status(runner)
    assert ", 1 pending, 1 uncertain, 0 in flight, 1 cancelled (sending now" in status
    assert "  uncertain wrong0@example.com: no reply recorded" in status


def test_a_to_send_names_a_reader_whose_list_send_was_cancelled_in_flight(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    _record_earlier_run(project, tmp_path, 3, uncertain=1, failed=1)
    assert runner.invoke(cli, ["cancel", EXAMPLE, "--yes"]).exit_code == 0
    uncertain = _send(runner, "--to", "wrong0@example.com", "--dry-run")
    assert (
        "Also:       wrong0@example.com was in flight in the list send (uncertain; it was cancelled "
        "since); this sends another copy\n" in uncertain.stdout
    )
    for reader in ("wrong1@example.com", "wrong2@example.com"):  # failed, and due: never reached
        assert "Also:" not in _send(runner, "--to", reader, "--dry-run").stdout


def test_an_issue_whose_cancelled_readers_were_all_erased_stays_unpublished(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    _record_earlier_run(project, tmp_path, 2)
    assert runner.invoke(cli, ["cancel", EXAMPLE, "--yes"]).exit_code == 0
    assert runner.invoke(cli, ["subscribers", "rm", "wrong0@example.com", "wrong1@example.com"]).exit_code == 0
    assert runner.invoke(cli, ["publish"]).exit_code == 0
    assert not (project / "site" / EXAMPLE).exists()
