"""The pace of a send (digest/send/pace.py): --rate, and slowing down when the server refuses
messages for coming too fast, end to end against aiosmtpd with a Postfix-like rate limit."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.send import pace as pace_module
from digest.send.pace import Pace

from . import test_send_faults
from .conftest import EXAMPLE
from .smtpserver import MAIL_LIMIT_REPLY, Server
from .test_send_faults import _env, _exactly_once, _list, _send, _spawn_send, _status, _wait_for


class Clock:
    """time.monotonic for Pace, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(pace_module.time, "monotonic", clock)
    return clock


def test_without_a_rate_or_a_refusal_nothing_waits(clock: Clock) -> None:
    pace = Pace(None)
    assert [pace.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pace.rate is None


def test_a_rate_spaces_the_messages(clock: Clock) -> None:
    pace = Pace(4.0)
    assert [pace.reserve() for _ in range(3)] == [0.0, 0.25, 0.5]


def test_one_burst_of_refusals_decides_one_pause(clock: Clock) -> None:
    pace = Pace(None, first_pause=2.0)
    began = pace.pauses  # four messages in flight when the server starts refusing
    for _ in range(100):
        pace.delivered_one()
    clock.now += 10  # 100 delivered in 10 s
    assert pace.throttled(began) is True
    assert [pace.throttled(began) for _ in range(3)] == [False, False, False]
    assert pace.pause == 2.0
    assert pace.rate == pytest.approx(7.5)  # three quarters of the 10 a second that got through
    assert pace.reserve() == pytest.approx(2.0)  # every connection waits out the pause
    assert pace.reserve() == pytest.approx(2.0 + 1 / 7.5)  # then at the new pace


def test_a_pause_after_which_nothing_got_through_doubles_up_to_a_minute(clock: Clock) -> None:
    pace = Pace(None, first_pause=1.0)
    pauses = []
    for _ in range(9):
        assert pace.throttled(pace.pauses)
        pauses.append(pace.pause)
        clock.now += pace.pause
    assert pauses == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert pace.rate is None  # nothing got through: no pace to slow


def test_a_pause_after_which_messages_got_through_is_halved(clock: Clock) -> None:
    pace = Pace(None, first_pause=1.0)
    for _ in range(4):
        pace.throttled(pace.pauses)
        clock.now += pace.pause
    assert pace.pause == 8.0
    pace.delivered_one()
    clock.now += 1
    assert pace.throttled(pace.pauses)
    assert pace.pause == 4.0
    for _ in range(3):
        pace.delivered_one()
        clock.now += 1
        pace.throttled(pace.pauses)
    assert pace.pause == 1.0  # never below the first


def test_the_pace_goes_up_an_eighth_every_fifty_delivered_never_above_the_rate(clock: Clock) -> None:
    pace = Pace(8.0)
    for _ in range(40):
        pace.delivered_one()
    clock.now += 10
    pace.throttled(pace.pauses)
    assert pace.rate == pytest.approx(3.0)  # 4 a second got through
    rates = []
    for _ in range(3):
        for _ in range(50):
            pace.delivered_one()
        rates.append(pace.rate)
    assert rates == pytest.approx([3.375, 3.796875, 4.271484375])
    for _ in range(50 * 8):
        pace.delivered_one()
    assert pace.rate == pytest.approx(8.0)  # --rate stays the ceiling


def test_refusing_counts_from_the_first_refusal_since_the_last_delivery(clock: Clock) -> None:
    pace = Pace(None)
    clock.now += 3600  # an hour of sending before the server first refuses
    pace.delivered_one()
    assert pace.refusing() == 0.0
    clock.now += 5
    assert pace.refusing() == 5.0
    pace.delivered_one()
    clock.now += 5
    assert pace.refusing() == 0.0  # a delivery starts it over
    clock.now += 2
    assert pace.refusing() == 2.0


def test_the_pace_never_drops_below_the_minimum(clock: Clock) -> None:
    pace = Pace(None)
    pace.delivered_one()
    clock.now += 3600
    pace.throttled(pace.pauses)
    assert pace.rate == Pace.MIN_RATE


# -- end to end: aiosmtpd refusing MAIL past a rate, as Postfix's anvil does ------------------


@pytest.fixture(params=[True, False], ids=["pipelined", "plain"])
def limited(request, project: Path, monkeypatch):
    """A server that takes 8 messages a second from this client, in windows of 0.5 s."""
    with Server(pipelining=request.param) as srv:
        srv.recorder.mail_limit = (4, 0.5)
        _env(monkeypatch, srv.port)
        yield srv


piped = test_send_faults.piped  # the pipelined server fixture


def test_a_rate_limited_server_gets_the_whole_list_once_in_one_run(limited, tmp_path: Path) -> None:
    runner = CliRunner()
    result = _send(
        runner, "--list", str(_list(tmp_path, 40)), "--yes", "--workers", "3", "--retry-delay", "0.2"
    )
    assert result.exit_code == 0, result.output
    assert "40 sent, 0 failed, 0 deferred" in result.stdout
    assert limited.recorder.throttled > 0  # it did refuse: the send slowed down for it
    assert f"Note: the server takes mail more slowly than this send gives it ({MAIL_LIMIT_REPLY})" in (
        result.stderr
    )
    summary = re.search(
        r"The server refused (\d+) messages? for the pace; the send paused (\d+) times? "
        r"and slowed down to at most ([0-9.]+) a second \(--rate \3 would stay below its limit\)\.",
        result.stdout,
    )
    assert summary, result.stdout
    assert int(summary[1]) == limited.recorder.throttled  # every refusal counted
    assert 1 <= int(summary[2]) <= int(summary[1])
    assert 0 < float(summary[3]) < 20  # the server takes 8 a second
    _exactly_once(limited, 40)
    assert _status(runner).startswith(f"{EXAMPLE}: 40 sent, 0 failed, 0 deferred, 0 pending, 0 uncertain")


def test_refusals_for_the_pace_do_not_count_as_failures_in_a_row(piped, tmp_path: Path) -> None:
    """24 refusals before anything is delivered (20 failures in a row would stop a send),
    none of them a reader's: the send pauses and delivers the whole list."""
    piped.recorder.mail_faults[:] = [MAIL_LIMIT_REPLY] * 24
    runner = CliRunner()
    result = _send(
        runner, "--list", str(_list(tmp_path, 10)), "--yes", "--workers", "4", "--retry-delay", "0.01"
    )
    assert result.exit_code == 0, result.output
    assert "10 sent, 0 failed, 0 deferred" in result.stdout
    assert "The server refused 24 messages for the pace;" in result.stdout
    _exactly_once(piped, 10)


def test_max_wait_counts_from_the_last_delivery_not_from_the_start(piped, tmp_path: Path) -> None:
    """Sending for longer than --max-wait before the server first refuses for the pace does
    not stop the send: the wait counts from the last message that got through."""
    piped.recorder.faults["reader00015@example.com"] = [MAIL_LIMIT_REPLY, "250 OK"]
    runner = CliRunner()
    path = str(_list(tmp_path, 20))
    result = _send(runner, "--list", path, "--yes", "--workers", "1", "--rate", "20", "--max-wait", "0.3")
    assert result.exit_code == 0, result.output
    assert "20 sent, 0 failed, 0 deferred" in result.stdout
    assert "The server refused 1 message for the pace; the send paused 1 time" in result.stdout


def test_one_readers_own_rate_refusal_does_not_hold_the_send(piped, tmp_path: Path) -> None:
    """A reader refused for the pace again after others got through meanwhile has a limit of its
    own: it is charged its retries and deferred; the send paused once for it, not each time."""
    piped.recorder.faults["reader00002@example.com"] = ["451 4.7.1 Rate limit exceeded, try again later"]
    runner = CliRunner()
    path = str(_list(tmp_path, 60))
    result = _send(runner, "--list", path, "--yes", "--workers", "2", "--retries", "2", "--retry-delay", "0.05")
    assert result.exit_code == 4, result.output
    assert "59 sent, 0 failed, 1 deferred" in result.stdout
    assert "the send paused 1 time" in result.stdout
    assert "reader00002@example.com: 451 4.7.1 Rate limit exceeded" in _status(runner)


def test_ctrl_c_while_every_connection_waits_out_a_pause(project: Path, tmp_path: Path, monkeypatch) -> None:
    """20 connections held by a pause when Ctrl-C comes: exit 130 (not "20 failures in a
    row"), the refused readers still due, and the same command completes the list once."""
    with Server(pipelining=True) as srv:
        _env(monkeypatch, srv.port)
        srv.recorder.mail_limit = (20, 60.0)
        path = str(_list(tmp_path, 60))
        proc = _spawn_send(project, path, "--workers", "20", "--retry-delay", "30")
        try:
            _wait_for(lambda: srv.recorder.throttled >= 20)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 130, out + err
        assert "Interrupted: 20 sent, 0 failed, 40 still due, 0 uncertain" in out, out
        assert "The server refused" in out and "failures in a row" not in out + err
        srv.recorder.mail_limit = None
        runner = CliRunner()
        again = _send(runner, "--list", path, "--yes")
        assert again.exit_code == 0, again.output
        _exactly_once(srv, 60)


def test_a_server_that_lets_nothing_through_stops_the_send_after_max_wait(piped, tmp_path: Path) -> None:
    """An exhausted quota (SES: 454 Throttling failure: Daily message quota exceeded): the
    send pauses, doubling, then stops with nobody failed; once the quota is back, the same
    command sends the list once."""
    quota = "454 4.7.0 Throttling failure: Daily message quota exceeded."
    piped.recorder.mail_faults[:] = [quota] * 200
    runner = CliRunner()
    path = str(_list(tmp_path, 12))
    result = _send(runner, "--list", path, "--yes", "--retry-delay", "0.05", "--max-wait", "0.5")
    assert result.exit_code == 3, result.output
    assert "refused every message for the pace for" in result.stderr
    assert "Daily message quota exceeded" in result.stderr
    assert "nobody was marked failed" in result.stderr and "once it resets" in result.stderr
    assert "The server refused" in result.stdout  # the pace line, on a stop too
    assert "Traceback" not in result.output
    assert re.match(rf"{EXAMPLE}: 0 sent, 0 failed, \d+ deferred, \d+ pending, 0 uncertain", _status(runner))
    assert piped.recorder.received == []
    piped.recorder.mail_faults[:] = []
    again = _send(runner, "--list", path, "--yes")
    assert again.exit_code == 0, again.output
    _exactly_once(piped, 12)


def test_a_readers_own_rate_refusal_stays_that_readers(piped, tmp_path: Path) -> None:
    """Gmail's 450 4.2.1 (the reader's mailbox gets too much mail) is the reader's temporary
    failure: retried, then deferred; the others are not held."""
    piped.recorder.faults["reader00002@example.com"] = [
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered."
    ] * 10
    runner = CliRunner()
    result = _send(
        runner, "--list", str(_list(tmp_path, 6)), "--yes", "--retries", "1", "--retry-delay", "0.05"
    )
    assert result.exit_code == 4, result.output
    assert "5 sent, 0 failed, 1 deferred" in result.stdout
    assert "for the pace" not in result.output
