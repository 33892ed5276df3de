"""digest cancel: a send stopped part way is stopped for good, and a later list is sent on its own."""

from __future__ import annotations

import signal
from pathlib import Path

from click.testing import CliRunner

from digest.cli import cli

from . import test_send
from .conftest import EXAMPLE
from .smtpserver import Server
from .test_send import _list, _send, _spawn_send, _wait_for

plain_server = test_send.plain_server  # the fixture: an aiosmtpd server that digest sends to


def _record_earlier_run(project: Path, tmp_path: Path, n: int) -> Path:
    """An earlier run that recorded its list and stopped before sending (as if interrupted)."""
    from digest.config import load_project
    from digest.send import plan_send

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("email\n" + "".join(f"wrong{i}@example.com\n" for i in range(n)))
    plan_send(load_project(project), EXAMPLE, list_path=wrong).record().close()
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
        f"{EXAMPLE}: 3 still due\nCancelled: 3 readers of {EXAMPLE} will not be sent it. "
        "A later send sends to those its list names again.\n"
    )
    assert _status(runner) == f"{EXAMPLE}: 0 sent, 0 failed, 0 deferred, 0 pending, 0 uncertain, 3 cancelled\n"
    assert plain_server.recorder.received == []

    # The right list: two new readers, and one of the cancelled ones, named again.
    right = tmp_path / "right.csv"
    right.write_text("email,name\nwrong1@example.com,Named Again\nnew0@example.com,A\nnew1@example.com,B\n")
    result = _send(runner, "--list", str(right), "--yes")
    assert result.exit_code == 0, result.output
    assert "Recipients: 3 to send\n" in result.stdout
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
        == f"Nothing to cancel: no reader of {EXAMPLE} is still due (see 'digest status {EXAMPLE}').\n"
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


def test_cancel_refuses_a_send_that_is_running_and_cancels_nothing(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    sending = _spawn_send(project, _list(tmp_path, 40), "--rate", "5", "--workers", "1")  # about 8 s
    try:
        _wait_for(lambda: len(plain_server.recorder.received) >= 2)
        result = runner.invoke(cli, ["cancel", EXAMPLE, "--yes"])
        assert result.exit_code == 1
        assert f"is being sent by another digest process (pid {sending.pid})" in result.stderr
        assert "Traceback" not in result.stderr
        assert "cancelled" not in _status(runner)
    finally:
        sending.send_signal(signal.SIGINT)  # stops after the message in flight
        sending.communicate(timeout=60)
    # Stopped by Ctrl-C, the rest still due: now it can be cancelled, and nothing more goes out.
    sent = len(plain_server.recorder.received)
    result = runner.invoke(cli, ["cancel", EXAMPLE, "--yes"])
    assert result.exit_code == 0, result.output
    assert f"Cancelled: {40 - sent} readers" in result.stdout
    status = _status(runner)
    assert f"{EXAMPLE}: {sent} sent, " in status and status.endswith(f", {40 - sent} cancelled\n")


def test_cancel_of_an_issue_never_sent_or_unknown(project: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["cancel", EXAMPLE, "--yes"])
    assert result.exit_code == 0 and result.stdout == f"{EXAMPLE}: not sent yet; nothing to cancel\n"
    assert not (project / ".digest" / "journal.sqlite3").exists()  # asking creates nothing
    result = runner.invoke(cli, ["cancel", "2099-01-01", "--yes"])
    assert result.exit_code == 1
    assert result.stderr == "Error: issues: no issue '2099-01-01'\n  hint: known issues: 2021-12-31\n"
