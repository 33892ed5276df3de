"""The delivery fault matrix: each fault against aiosmtpd, with and without PIPELINING.

Every run must end with a clear summary, the right exit code (0 done, 3 stopped,
4 some left for a rerun) and a journal from which a rerun completes the list exactly once.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import pty
import re
import select
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner

from digest.cli import cli

from .conftest import EXAMPLE
from .smtpserver import PASSWORD, USER, Server, free_port

SECRET = "test-secret-0123456789"
DIGEST = [sys.executable, "-m", "digest"]


def _env(monkeypatch, port: int, **extra: str) -> None:
    values = {
        "DIGEST_SMTP_HOST": "127.0.0.1",
        "DIGEST_SMTP_PORT": str(port),
        "DIGEST_SMTP_SECURITY": "none",
        "DIGEST_SECRET": SECRET,
        **extra,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(params=[True, False], ids=["pipelined", "plain"])
def server(request, project: Path, monkeypatch):
    """An aiosmtpd server with faults on demand, with and without PIPELINING."""
    with Server(pipelining=request.param) as srv:
        _env(monkeypatch, srv.port)
        yield srv


@pytest.fixture
def piped(project: Path, monkeypatch):
    """The pipelined server only (for the slower tests)."""
    with Server(pipelining=True) as srv:
        _env(monkeypatch, srv.port)
        yield srv


def _list(tmp_path: Path, n: int, name: str = "list.csv") -> Path:
    path = tmp_path / name
    lines = ["email,name"] + [f"reader{i:05d}@example.com,Reader {i}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _send(runner: CliRunner, *args: str):
    return runner.invoke(cli, ["send", EXAMPLE, *args])


def _status(runner: CliRunner) -> str:
    return runner.invoke(cli, ["status", EXAMPLE]).stdout


def _exactly_once(srv: Server, n: int) -> None:
    got = srv.recorder.by_recipient()
    assert sorted(got) == [f"reader{i:05d}@example.com" for i in range(n)]
    assert all(len(copies) == 1 for copies in got.values())


def _parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


# -- connection faults: retried with backoff, the send goes on --------------------------


def test_a_421_greeting_on_the_first_connection_is_retried(
    server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    server.recorder.greeting_faults.append("421 4.3.2 too busy, try later")
    result = _send(
        runner, "--list", str(_list(tmp_path, 5)), "--yes", "--workers", "1", "--retry-delay", "0.05"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("5 sent, 0 failed, 0 deferred")
    _exactly_once(server, 5)


@pytest.mark.parametrize("stage, reply", [("EHLO", "421 4.3.2 busy"), ("EHLO", "451 4.3.0 local error")])
def test_a_4xx_to_ehlo_is_retried(
    server: Server, runner: CliRunner, tmp_path: Path, monkeypatch, stage: str, reply: str
) -> None:
    calls = {"n": 0}
    original = server.recorder.handle_EHLO

    async def failing_once(srv, session, envelope, hostname, responses):
        calls["n"] += 1
        if calls["n"] == 1:
            return [reply]
        return await original(srv, session, envelope, hostname, responses)

    monkeypatch.setattr(server.recorder, "handle_EHLO", failing_once)
    result = _send(
        runner, "--list", str(_list(tmp_path, 3)), "--yes", "--workers", "1", "--retry-delay", "0.05"
    )
    assert result.exit_code == 0, result.output
    _exactly_once(server, 3)


def test_connections_beyond_the_servers_limit_are_given_up_and_the_rest_send_everything(
    server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """A relay that takes 2 connections at once (Postfix's smtpd_client_connection_count_limit,
    Office 365 takes 3) and --workers 4: the 2 more connections are refused with 421 again and
    again. They are given up with a note, and nobody is deferred for them: the 2 that work
    send the whole list (before, each refused connection deferred a reader every few seconds)."""
    server.recorder.max_connections = 2
    n = 300
    result = _send(
        runner,
        "--list",
        str(_list(tmp_path, n)),
        "--yes",
        "--workers",
        "4",
        "--retry-delay",
        "0.05",
        "--retries",
        "6",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith(f"{n} sent, 0 failed, 0 deferred")
    notes = [
        line for line in result.stderr.splitlines() if line.startswith("Note: the server refused one more")
    ]
    assert 1 <= len(notes) <= 2, result.stderr
    assert "421 4.7.0 Error: too many connections" in notes[0]
    _exactly_once(server, n)


def test_a_421_after_mail_is_retried(server: Server, runner: CliRunner, tmp_path: Path) -> None:
    server.recorder.mail_faults[:] = ["250 OK", "421 4.7.0 closing, too many errors"]
    result = _send(
        runner, "--list", str(_list(tmp_path, 6)), "--yes", "--workers", "1", "--retry-delay", "0.05"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("6 sent, 0 failed, 0 deferred")
    _exactly_once(server, 6)


def test_a_refused_connection_stops_with_code_3(
    project: Path, runner: CliRunner, monkeypatch, tmp_path: Path
) -> None:
    _env(monkeypatch, free_port())
    result = _send(runner, "--list", str(_list(tmp_path, 3)), "--yes")
    assert result.exit_code == 3
    assert result.stdout.splitlines()[-1] == (
        "Stopped: 0 sent, 0 failed, 3 still due, 0 uncertain; fix the cause and run the same command to resume."
    )
    assert "Traceback" not in result.output


def test_every_message_deferred_is_not_success(server: Server, runner: CliRunner, tmp_path: Path) -> None:
    for i in range(3):
        server.recorder.faults[f"reader{i:05d}@example.com"] = ["451 4.3.0 try later"]
    result = _send(
        runner, "--list", str(_list(tmp_path, 3)), "--yes", "--retries", "1", "--retry-delay", "0.01"
    )
    assert result.exit_code == 4
    assert result.stdout.splitlines()[-1].startswith("Left for a rerun: 3 deferred, 0 uncertain")
    server.recorder.faults.clear()
    again = _send(runner, "--list", str(_list(tmp_path, 3)), "--yes")
    assert again.exit_code == 0, again.output
    _exactly_once(server, 3)


# -- after the final dot: uncertain, never retried by itself ----------------------------


def test_a_connection_closed_after_the_final_dot_is_uncertain(
    server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    server.recorder.drop_in_data.add("reader00002@example.com")
    path = _list(tmp_path, 5)
    result = _send(runner, "--list", str(path), "--yes", "--workers", "1")
    assert result.exit_code == 4, result.output
    assert "4 sent, 0 failed, 0 deferred, 1 uncertain" in result.stdout
    assert server.recorder.rcpt_seen["reader00002@example.com"] == 1  # never retried
    [dropped] = server.recorder.dropped  # read by the server, then no reply
    message_id = email.message_from_bytes(dropped.data)["Message-ID"]
    assert _status(runner).splitlines() == [
        f"{EXAMPLE}: 4 sent, 0 failed, 0 deferred, 0 pending, 1 uncertain",
        "  uncertain reader00002@example.com: no reply after the message was sent: "
        f"connection closed by the server; its message: Message-ID {message_id}",
    ]
    plain = _send(runner, "--list", str(path), "--yes")
    assert plain.exit_code == 4 and "Nothing to send." in plain.stdout
    final = _send(runner, "--list", str(path), "--yes", "--resend-uncertain")
    assert final.exit_code == 0, final.output
    _exactly_once(server, 5)


def test_a_second_ctrl_c_stops_at_once_and_leaves_the_message_in_flight_uncertain(
    piped: Server, project: Path, tmp_path: Path
) -> None:
    piped.recorder.hang_in_data.add("reader00001@example.com")  # RFC 5321's 10 minutes to wait
    proc = _spawn_send(project, str(_list(tmp_path, 4)), "--workers", "1")
    _wait_for(lambda: "reader00001@example.com" not in piped.recorder.hang_in_data)  # its dot is out
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # the first Ctrl-C waits for the message in flight
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert (
        "Stopping: 1 message in flight finishing (a server gets as long as --data-timeout to "
        "answer); Ctrl-C again to stop at once, leaving it uncertain" in err
    )
    assert out.splitlines()[-1] == (
        "Interrupted: 1 sent, 0 failed, 2 still due, 1 uncertain; run the same command to resume "
        f"(or 'digest cancel {EXAMPLE}' to stop it for good)."
    )
    status = subprocess.run([*DIGEST, "status", EXAMPLE], cwd=project, capture_output=True, text=True).stdout
    assert (
        "  uncertain reader00001@example.com: no reply after the message was sent: "
        "stopped at once (a second Ctrl-C)" in status
    )


def test_after_ctrl_c_with_only_uncertain_ones_left_the_summary_names_resend_uncertain(
    piped: Server, project: Path, tmp_path: Path
) -> None:
    piped.recorder.hang_in_data.add("reader00001@example.com")  # the last of the list
    proc = _spawn_send(project, str(_list(tmp_path, 2)), "--workers", "1")
    _wait_for(lambda: "reader00001@example.com" not in piped.recorder.hang_in_data)  # its dot is out
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    # The same command would send nothing: the summary says what would, not "resume".
    assert out.splitlines()[-1] == (
        "Interrupted: 1 sent, 0 failed, 0 still due, 1 uncertain; the uncertain are sent again only "
        f"with --resend-uncertain (they may then get two copies); 'digest cancel {EXAMPLE}' sets them "
        "aside for good."
    )


def test_status_is_current_while_a_send_waits_for_a_slow_reply(
    piped: Server, project: Path, tmp_path: Path
) -> None:
    # The log is folded every half second even when no entry comes: the others' 'sent'
    # shows while one connection waits (up to 10 minutes) for its reply.
    piped.recorder.hang_in_data.add("reader00001@example.com")
    proc = _spawn_send(project, str(_list(tmp_path, 4)), "--workers", "2")
    try:
        _wait_for(lambda: len(piped.recorder.received) == 3)
        time.sleep(1.5)
        status = subprocess.run([*DIGEST, "status", EXAMPLE], cwd=project, capture_output=True, text=True)
        assert status.stdout.startswith(
            f"{EXAMPLE}: 3 sent, 0 failed, 0 deferred, 0 pending, 0 uncertain, 1 in flight (sending now"
        )
    finally:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_ctrl_c_while_a_server_never_greets_stops_at_once(project: Path, tmp_path: Path, monkeypatch) -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never says 220
    _env(monkeypatch, listener.getsockname()[1])
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
    accepting.start()
    try:
        proc = _spawn_send(project, str(_list(tmp_path, 3)), "--workers", "1")
        _wait_for(lambda: bool(held))  # connected, waiting for a greeting (5 minutes by RFC 5321)
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)  # one Ctrl-C is enough: nothing was claimed
        stopped_in = time.monotonic() - started
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert out.splitlines()[-1].startswith("Interrupted: 0 sent, 0 failed, 3 still due, 0 uncertain")
    assert stopped_in < 10  # not the greeting's 5 minutes


def test_a_server_that_never_answers_the_final_dot(piped: Server, runner: CliRunner, tmp_path: Path) -> None:
    piped.recorder.hang_in_data.add("reader00001@example.com")
    started = time.monotonic()
    result = _send(
        runner, "--list", str(_list(tmp_path, 4)), "--yes", "--workers", "1", "--data-timeout", "0.5"
    )
    # The 0.5 s took effect, not the 5-minute command timeout armed before it.
    assert time.monotonic() - started < 60
    assert result.exit_code == 4, result.output
    assert "3 sent, 0 failed, 0 deferred, 1 uncertain" in result.stdout
    assert (
        "uncertain reader00001@example.com: no reply after the message was sent: "
        "no reply in time" in _status(runner)
    )


def test_the_data_timeout_defaults_to_rfc_5321() -> None:
    from digest.send.transport import Timeouts

    t = Timeouts()
    assert (t.greeting, t.command, t.data_end) == (300, 300, 600)
    assert Timeouts.scaled(5, 9).data_end == 9 and Timeouts.scaled(5).command == 5


def test_a_server_that_vanishes_mid_send_and_comes_back(project: Path, tmp_path: Path, monkeypatch) -> None:
    port = free_port()
    _env(monkeypatch, port)
    path = _list(tmp_path, 400)
    first = Server(pipelining=True, port=port)
    with first:
        proc = _spawn_send(project, str(path), "--workers", "3", "--retry-delay", "0.05")
        _wait_for(lambda: len(first.recorder.received) >= 60)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, out + err
    assert "Traceback" not in err
    assert err.startswith(f"Error: 127.0.0.1:{port} (none) stopped taking connections during the send"), err
    assert "once it runs again, run the same command" in err  # not "check DIGEST_SMTP_HOST"
    assert out.splitlines()[-1].startswith("Stopped: ")
    with Server(pipelining=True, port=port) as second:
        rerun = subprocess.run(
            [*DIGEST, "send", EXAMPLE, "--list", str(path), "--yes"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=60,
        )
        uncertain = _uncertain(project)
        assert rerun.returncode == (4 if uncertain else 0), rerun.stdout + rerun.stderr
        _no_duplicates_and_missing_is_uncertain([first, second], 400, uncertain)


# -- the sender's faults stop the send; nobody is marked failed -------------------------


@pytest.fixture
def auth_server(project: Path, tmp_path: Path, monkeypatch):
    """STARTTLS with a test certificate and a login required (530 at MAIL without it)."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with Server(context, pipelining=True) as srv:
        srv.controller.SMTP_kwargs["auth_require_tls"] = True
        _env(monkeypatch, srv.port, DIGEST_SMTP_SECURITY="starttls", DIGEST_SMTP_CAFILE=str(ca_file))
        yield srv


def test_530_at_mail_stops_then_credentials_and_retry_failed_complete(
    auth_server: Server, runner: CliRunner, tmp_path: Path, monkeypatch
) -> None:
    path = _list(tmp_path, 6)
    first = _send(runner, "--list", str(path), "--yes")  # no login configured
    assert first.exit_code == 3, first.output
    assert "Error: the server refused the send at MAIL: 530" in first.stderr
    assert "hint: nobody was marked failed" in first.stderr
    assert _status(runner).startswith(f"{EXAMPLE}: 0 sent, 0 failed, 0 deferred, 6 pending")
    monkeypatch.setenv("DIGEST_SMTP_USERNAME", USER)
    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", PASSWORD)
    for i in (1, 4):  # two recipients refused for a reason of their own
        auth_server.recorder.faults[f"reader{i:05d}@example.com"] = ["550 5.1.1 no such user"]
    second = _send(runner, "--list", str(path), "--yes")
    assert second.exit_code == 0, second.output  # failed for their own reason: done
    assert second.stdout.splitlines()[-2].startswith("4 sent, 2 failed")
    auth_server.recorder.faults.clear()
    plain = _send(runner, "--list", str(path), "--yes")
    assert "Failed:     2 failed before; not sent again without --retry-failed" in plain.stdout
    assert plain.stdout.splitlines()[-1] == "Nothing to send."
    retry = _send(runner, "--list", str(path), "--yes", "--retry-failed")
    assert retry.exit_code == 0, retry.output
    assert (
        "Retrying:   2 that failed before: reader00001@example.com, reader00004@example.com"
    ) in retry.stdout
    assert retry.stdout.splitlines()[-1].startswith("2 sent, 0 failed")
    _exactly_once(auth_server, 6)


def test_retry_failed_sends_nothing_to_a_reader_erased_since(
    piped: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """An erased reader's past delivery keeps only a hash: a retry records it suppressed."""
    path = _list(tmp_path, 3)
    piped.recorder.faults["reader00001@example.com"] = ["550 5.1.1 no such user"]
    assert _send(runner, "--list", str(path), "--yes").exit_code == 0
    piped.recorder.faults.clear()
    erased = runner.invoke(cli, ["subscribers", "rm", "reader00001@example.com"])
    assert erased.exit_code == 0, erased.output
    retry = _send(runner, "--list", str(path), "--yes", "--retry-failed")
    assert retry.exit_code == 0, retry.output
    assert sorted(piped.recorder.by_recipient()) == ["reader00000@example.com", "reader00002@example.com"]
    assert not [r for r in piped.recorder.received if "erased" in r.recipient]
    assert _status(runner).startswith(f"{EXAMPLE}: 2 sent, 0 failed, 0 deferred, 0 pending")


def test_550_to_the_sender_at_mail_stops(server: Server, runner: CliRunner, tmp_path: Path) -> None:
    server.recorder.mail_faults[:] = ["553 5.7.1 sender not allowed"]
    result = _send(runner, "--list", str(_list(tmp_path, 3)), "--yes", "--workers", "1")
    assert result.exit_code == 3
    assert "Error: the server refused the send at MAIL: 553 5.7.1 sender not allowed" in (result.stderr)
    assert _status(runner).startswith(f"{EXAMPLE}: 0 sent, 0 failed, 0 deferred, 3 pending")


def test_a_deferred_reader_refused_for_the_sender_shows_that_reason(
    server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """A reader deferred by a 421 greeting, then refused at MAIL for the sender: status said
    'no reply recorded (in flight when the send stopped)', though nothing was in flight."""
    path = _list(tmp_path, 1)
    server.recorder.greeting_faults[:] = ["421 4.3.2 busy, try later"] * 10
    first = _send(runner, "--list", str(path), "--yes", "--retries", "0")
    assert first.exit_code == 4, first.output
    assert "deferred  reader00000@example.com: the greeting: 421 4.3.2 busy, try later" in _status(runner)
    server.recorder.greeting_faults.clear()
    server.recorder.mail_faults[:] = ["550 5.7.1 Sender address rejected"]
    second = _send(runner, "--list", str(path), "--yes")
    assert second.exit_code == 3, second.output
    status = _status(runner)
    assert "in flight" not in status
    assert "deferred  reader00000@example.com: the server refused the send at MAIL: 550 5.7.1 Sender" in status


def test_a_used_up_sending_quota_stops_with_nobody_failed(
    server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """Gmail's '550 5.4.5 Daily user sending quota exceeded' after 5 messages: the sender's
    quota, not the readers' addresses. The send stops (before: every later reader failed
    until 20 in a row), nobody failed; once the quota resets the same command completes it."""
    path = str(_list(tmp_path, 12))
    quota = "550 5.4.5 Daily user sending quota exceeded."
    for i in range(5, 12):
        server.recorder.faults[f"reader{i:05d}@example.com"] = [quota]
    result = _send(runner, "--list", path, "--yes", "--workers", "1")
    assert result.exit_code == 3, result.output
    assert f"Error: the server refused the send at RCPT: {quota}" in result.stderr
    assert "run the same command once it resets" in result.stderr
    assert "Stopped: 5 sent, 0 failed, 7 still due, 0 uncertain" in result.stdout
    server.recorder.faults.clear()  # the quota resets
    again = _send(runner, "--list", path, "--yes")
    assert again.exit_code == 0, again.output
    _exactly_once(server, 12)


@pytest.mark.parametrize("code", ["554 5.7.1", "454 4.7.1"])
def test_a_refusal_to_relay_stops_with_nobody_failed(
    server: Server, runner: CliRunner, tmp_path: Path, code: str
) -> None:
    """'554 5.7.1 <reader>: Relay access denied' (Postfix without the login it wants; 454 with
    its default defer_unauth_destination) is the sender's setting, not the reader's: the send
    stops, nobody failed or deferred, a rerun completes.
    (Through a real Postfix with a login: tests/test_send_postfix.py.)"""
    path = _list(tmp_path, 5)
    for i in range(5):
        address = f"reader{i:05d}@example.com"
        server.recorder.faults[address] = [f"{code} <{address}>: Relay access denied"]
    first = _send(runner, "--list", str(path), "--yes", "--workers", "1")
    assert first.exit_code == 3, first.output
    assert (
        f"Error: the server refused the send at RCPT: {code} <reader00002@example.com>: Relay access denied"
    ) in first.stderr
    assert "hint: nobody was marked failed; the server does not pass mail on for this connection" in (
        first.stderr
    )
    # The readers refused are set aside (due again), 3 of them before the send stops.
    assert _status(runner).startswith(f"{EXAMPLE}: 0 sent, 0 failed, 3 deferred, 2 pending")
    server.recorder.faults.clear()  # the login is set, or this machine may relay
    second = _send(runner, "--list", str(path), "--yes")
    assert second.exit_code == 0, second.output
    assert second.stdout.splitlines()[-1].startswith("5 sent, 0 failed")
    _exactly_once(server, 5)


def test_a_message_larger_than_the_servers_size_stops_with_nobody_failed(
    project: Path, runner: CliRunner, tmp_path: Path, monkeypatch
) -> None:
    """The server's SIZE (RFC 1870) is below the issue's size: the send stops at the first
    reader, nobody failed or sent, and the error names both sizes."""
    with Server(pipelining=True, size_limit=5000) as srv:
        _env(monkeypatch, srv.port)
        result = _send(runner, "--list", str(_list(tmp_path, 3)), "--yes")
        assert srv.recorder.received == [] and srv.recorder.mail_options == []  # not even a MAIL
    assert result.exit_code == 3, result.output
    assert re.search(
        rf"Error: the message is [0-9,]+ bytes and the server 127\.0\.0\.1:{srv.port} "
        r"takes at most 5,000 \(its SIZE\)",
        result.stderr,
    ), result.stderr
    assert "hint: nobody was marked failed; make the issue smaller" in result.stderr
    assert _status(runner).startswith(f"{EXAMPLE}: 0 sent, 0 failed, 0 deferred, 3 pending")


def test_a_size_refusal_claims_nobody_so_a_failed_reader_keeps_its_reason(
    piped: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """The size is checked before the reader is claimed: --retry-failed against a server
    whose SIZE became too small leaves the failed reader as it was, reason and all."""
    path = _list(tmp_path, 3)
    piped.recorder.faults["reader00001@example.com"] = ["550 5.7.1 spam policy X"]
    assert _send(runner, "--list", str(path), "--yes").exit_code == 0
    piped.controller.SMTP_kwargs["data_size_limit"] = 5000
    retry = _send(runner, "--list", str(path), "--yes", "--retry-failed")
    assert retry.exit_code == 3, retry.output
    assert "takes at most 5,000 (its SIZE)" in retry.stderr
    status = _status(runner)
    assert status.startswith(f"{EXAMPLE}: 2 sent, 1 failed")
    assert "failed    reader00001@example.com: 550 5.7.1 spam policy X" in status


def test_a_too_large_reply_at_the_end_stops_and_the_size_is_declared(
    server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """A server that finds the message too large only at its end (552 5.3.4) stops the send,
    nobody failed; MAIL FROM carries SIZE= where the server offers SIZE (RFC 1870)."""
    path = _list(tmp_path, 3)
    for i in range(3):
        server.recorder.data_faults[f"reader{i:05d}@example.com"] = "552 5.3.4 Message size exceeds fixed limit"
    first = _send(runner, "--list", str(path), "--yes", "--workers", "1")
    assert first.exit_code == 3, first.output
    assert (
        "the server refused the send at the message: 552 5.3.4 Message size exceeds fixed limit" in first.stderr
    )
    assert "hint: nobody was marked failed; make the issue smaller" in first.stderr
    assert _status(runner).startswith(f"{EXAMPLE}: 0 sent, 0 failed, 0 deferred, 3 pending")
    server.recorder.data_faults.clear()
    server.recorder.mail_options.clear()
    assert _send(runner, "--list", str(path), "--yes").exit_code == 0
    _exactly_once(server, 3)
    declared = [
        int(o[5:]) for options in server.recorder.mail_options for o in options if o.startswith("SIZE=")
    ]
    # The message as it goes on the wire: with its final '.' line and any dot-stuffing.
    received = sorted(len(r.data) for r in server.recorder.received)
    assert len(declared) == 3 and all(0 < d - r < 20 for d, r in zip(sorted(declared), received, strict=True))


def test_the_message_refused_alike_for_the_first_readers_stops_with_nobody_failed(
    server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """A header or body check refuses the issue itself (Postfix header_checks REJECT: 550 5.7.1
    at the end of every message): the first 3 readers refused alike, nothing delivered, stop
    the send; nobody is failed, everyone still due, and the same command completes the list
    once the check is gone. (Before: every reader failed, 20 in a row, exit 0 for a short list.)"""
    n = 8
    path = _list(tmp_path, n)
    for i in range(n):
        server.recorder.data_faults[f"reader{i:05d}@example.com"] = "550 5.7.1 newsletters are not allowed here"
    first = _send(runner, "--list", str(path), "--yes", "--workers", "2")
    assert first.exit_code == 3, first.output
    assert (
        "Error: the server refused the message itself, alike for 3 readers and none delivered: "
        "550 5.7.1 newsletters are not allowed here"
    ) in first.stderr
    assert "hint: it refuses the issue, not the readers" in first.stderr
    assert "they were set aside, not failed" in first.stderr
    status = _status(runner)  # set aside: the 3, and any in flight on the other connection
    assert re.match(rf"{EXAMPLE}: 0 sent, 0 failed, ([34]) deferred, ([45]) pending", status), status
    assert "deferred  reader00000@example.com: 550 5.7.1 newsletters are not allowed here" in status
    server.recorder.data_faults.clear()
    second = _send(runner, "--list", str(path), "--yes")
    assert second.exit_code == 0, second.output
    _exactly_once(server, n)


def test_the_first_readers_refused_each_for_their_own_address_do_not_stop_the_send(
    piped: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """Refusals at the end of the message that name the reader (Postfix's end-of-data
    check_recipient_access) are the readers' own, even for the first readers of a run:
    a stop there would stop every rerun at the same readers."""
    path = _list(tmp_path, 6)
    for i in range(3):
        address = f"reader{i:05d}@example.com"
        piped.recorder.data_faults[address] = (
            f"554 5.7.1 <{address}>: Recipient address rejected: Access denied"
        )
    result = _send(runner, "--list", str(path), "--yes", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-2].startswith("3 sent, 3 failed")


def test_a_message_refused_after_others_were_delivered_fails_that_reader(
    piped: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """Once a message was delivered, refusals of the message are the readers' own."""
    path = _list(tmp_path, 6)
    for i in range(1, 6):
        piped.recorder.data_faults[f"reader{i:05d}@example.com"] = "550 5.7.1 content refused"
    result = _send(runner, "--list", str(path), "--yes", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-2].startswith("1 sent, 5 failed")


@pytest.mark.parametrize("refused", [0, 2], ids=["first-reader", "later-reader"])
def test_a_sender_refusal_for_one_reader_only_is_that_readers(
    piped: Server, runner: CliRunner, tmp_path: Path, refused: int
) -> None:
    """Postfix's restriction class for one recipient ('Sender address rejected: bulk mail not
    accepted for this mailbox', given at RCPT): set aside while nothing is delivered, then,
    as the next reader gets through, that reader's own refusal. One run completes the list."""
    path = _list(tmp_path, 5)
    address = f"reader{refused:05d}@example.com"
    refusal = "554 5.7.1 <bounces@worlddigest.example.org>: Sender address rejected: bulk mail not accepted"
    piped.recorder.faults[address] = [refusal]
    result = _send(runner, "--list", str(path), "--yes", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-2].startswith("4 sent, 1 failed")
    assert f"failed    {address}: 554 5.7.1" in _status(runner)


def test_a_refusal_of_the_sender_left_unfixed_fails_nobody_however_often_the_send_is_run(
    piped: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """Every reader refused in the sender's words: each run sets 3 aside and stops; nobody is
    ever failed, and once the cause is fixed the same command sends everyone once."""
    n = 8
    path = _list(tmp_path, n)
    for i in range(n):
        piped.recorder.faults[f"reader{i:05d}@example.com"] = [
            "554 5.7.1 <bounces@worlddigest.example.org>: Sender address rejected: Access denied"
        ]
    for _ in range(4):
        run = _send(runner, "--list", str(path), "--yes", "--workers", "1")
        assert run.exit_code == 3, run.output
        assert re.match(rf"{EXAMPLE}: 0 sent, 0 failed, \d+ deferred", _status(runner))
    piped.recorder.faults.clear()
    done = _send(runner, "--list", str(path), "--yes")
    assert done.exit_code == 0, done.output
    _exactly_once(piped, n)


def test_readers_set_aside_come_after_those_never_tried_so_their_own_refusals_fail_them(
    piped: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """The first 3 readers refused alike at the end of the message for their own reason (a
    per-recipient header check whose text names nobody): the first run sets them aside and
    stops; the next takes the readers never tried first, they get through, and the 3 refused
    again are failed as their own. No stall at the head of the list."""
    n = 8
    path = _list(tmp_path, n)
    for i in range(3):
        piped.recorder.data_faults[f"reader{i:05d}@example.com"] = "550 5.7.1 mailbox closed"
    first = _send(runner, "--list", str(path), "--yes", "--workers", "1")
    assert first.exit_code == 3, first.output
    assert _status(runner).startswith(f"{EXAMPLE}: 0 sent, 0 failed, 3 deferred, 5 pending")
    second = _send(runner, "--list", str(path), "--yes", "--workers", "1")
    assert second.exit_code == 0, second.output
    assert second.stdout.splitlines()[-2].startswith("5 sent, 3 failed")
    order = [r.recipient for r in piped.recorder.received]
    assert order == [f"reader{i:05d}@example.com" for i in range(3, n)]  # never tried, first


def test_refusals_of_the_issue_that_differ_only_by_an_id_are_alike(
    piped: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """amavisd-new behind Postfix: '554 5.7.0 Reject, id=12345-01 - SPAM', a new id each time.
    The ids do not make the refusals differ: the send stops with nobody failed."""
    n = 12
    path = _list(tmp_path, n)
    for i in range(n):
        piped.recorder.data_faults[f"reader{i:05d}@example.com"] = (
            f"554 5.7.0 Reject, id={4000 + i}-0{i % 3} - SPAM"
        )
    result = _send(runner, "--list", str(path), "--yes", "--workers", "1")
    assert result.exit_code == 3, result.output
    assert "the server refused the message itself, alike for 3 readers" in result.stderr
    assert _status(runner).startswith(f"{EXAMPLE}: 0 sent, 0 failed, 3 deferred, {n - 3} pending")


def test_an_uncertain_reader_refused_in_the_senders_words_stays_uncertain(
    piped: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """--resend-uncertain, and the server refuses that reader at RCPT in the sender's words:
    it may still have the first copy, so it stays uncertain, with the reply; nothing stops."""
    path = _list(tmp_path, 3)
    piped.recorder.drop_in_data.add("reader00001@example.com")
    assert _send(runner, "--list", str(path), "--yes", "--workers", "1").exit_code == 4
    piped.recorder.faults["reader00001@example.com"] = [
        "554 5.7.1 <bounces@worlddigest.example.org>: Sender address rejected: Access denied"
    ]
    again = _send(runner, "--list", str(path), "--yes", "--resend-uncertain")
    assert again.exit_code == 4, again.output
    status = _status(runner)
    assert status.startswith(f"{EXAMPLE}: 2 sent, 0 failed, 0 deferred, 0 pending, 1 uncertain")
    assert "Sender address rejected" in status


def test_a_policy_refusal_of_one_message_fails_that_reader_only(
    server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """5.7.x at RCPT or at the final dot concerns that message: the send goes on, and a rerun
    does not stop at the same reader again."""
    server.recorder.faults["reader00001@example.com"] = ["550 5.7.1 recipient refused by policy"]
    server.recorder.data_faults["reader00003@example.com"] = "550 5.7.0 message content rejected"
    result = _send(runner, "--list", str(_list(tmp_path, 5)), "--yes")
    assert result.exit_code == 0, result.output  # failed for a reason of their own: done
    assert result.stdout.splitlines()[-2].startswith("3 sent, 2 failed")
    status = _status(runner)
    assert "failed    reader00001@example.com: 550 5.7.1 recipient refused by policy" in status
    assert "failed    reader00003@example.com: 550 5.7.0 message content rejected" in status
    assert _send(runner, "--list", str(_list(tmp_path, 5)), "--yes").stdout.splitlines()[-1] == (
        "Nothing to send."
    )


def test_plain_text_injected_after_the_starttls_220_aborts(
    project: Path, runner: CliRunner, tmp_path: Path, monkeypatch
) -> None:
    """A server (or an attacker on the path) sends a reply in the clear after '220 go ahead'."""
    received: list[tuple[bytes, bytes]] = []

    async def handle(reader, writer):
        writer.write(b"220 evil ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-evil\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        first = await reader.readline()
        writer.write(b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
        received.append((first, await reader.read(100)))
        writer.close()

    ready = threading.Event()
    port = free_port()
    stop: list = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", port))
        stop.append((loop, server))
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        _env(monkeypatch, port, DIGEST_SMTP_SECURITY="starttls")
        result = _send(runner, "--list", str(_list(tmp_path, 2)), "--yes")
    finally:
        loop, _ = stop[0]
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    assert result.exit_code == 3
    assert result.stderr.startswith(
        "Error: 127.0.0.1 sent data in plain text after its 220 reply to STARTTLS; "
        "the connection was closed (injected commands?)"
    )
    # Each connection said STARTTLS and then nothing more (no EHLO, no login in the clear).
    assert received and set(received) == {(b"STARTTLS\r\n", b"")}


def test_no_dns_lookup_of_the_local_name(
    server: Server, runner: CliRunner, tmp_path: Path, monkeypatch
) -> None:
    import socket

    from digest.send import transport

    def no_dns(*args):
        raise AssertionError("a blocking DNS lookup inside the event loop")

    monkeypatch.setattr(socket, "getfqdn", no_dns)
    monkeypatch.setattr(socket, "gethostbyaddr", no_dns)
    monkeypatch.setattr(socket, "gethostname", lambda: "sender-host")  # not a domain
    transport.helo_name.cache_clear()
    names: list[str] = []
    original = server.recorder.handle_EHLO

    async def record(srv, session, envelope, hostname, responses):
        names.append(hostname)
        return await original(srv, session, envelope, hostname, responses)

    monkeypatch.setattr(server.recorder, "handle_EHLO", record)
    try:
        result = _send(runner, "--list", str(_list(tmp_path, 2)), "--yes", "--workers", "1")
    finally:
        transport.helo_name.cache_clear()
    assert result.exit_code == 0, result.output
    assert names == ["[127.0.0.1]"]  # the connection's address literal


# -- addresses ---------------------------------------------------------------------------


def test_an_idn_domain_goes_in_ascii_form(server: Server, runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "idn.csv"
    path.write_text("email,name\nuser@bücher.de,Bücherwurm\nanna@example.com,Anna\n")
    result = _send(runner, "--list", str(path), "--yes")
    assert result.exit_code == 0, result.output
    got = server.recorder.by_recipient()
    assert sorted(got) == ["anna@example.com", "user@xn--bcher-kva.de"]
    assert _parse(got["user@xn--bcher-kva.de"][0].data)["To"].addresses[0].addr_spec == (
        "user@xn--bcher-kva.de"
    )


@pytest.mark.parametrize("smtputf8", [True, False], ids=["smtputf8", "no-smtputf8"])
def test_a_utf8_local_part(
    project: Path, runner: CliRunner, tmp_path: Path, monkeypatch, smtputf8: bool
) -> None:
    path = tmp_path / "utf8.csv"
    path.write_text("email,name\njörg@bücher.de,Jörg\nanna@example.com,Anna\n")
    with Server(pipelining=True, smtputf8=smtputf8) as srv:
        _env(monkeypatch, srv.port)
        result = _send(runner, "--list", str(path), "--yes")
        got = srv.recorder.by_recipient()
    assert result.exit_code == 0, result.output  # a failure of its own still counts as done
    if smtputf8:
        assert sorted(got) == ["anna@example.com", "jörg@xn--bcher-kva.de"]
        data = got["jörg@xn--bcher-kva.de"][0].data  # a UTF-8 header (RFC 6532)
        to = next(line for line in data.split(b"\r\n") if line.startswith(b"To: "))
        assert to.endswith(" <jörg@xn--bcher-kva.de>".encode())  # the address as UTF-8
        parsed = email.message_from_bytes(to + b"\r\n\r\n", policy=email.policy.SMTPUTF8)
        assert parsed["To"].addresses[0].display_name == "Jörg"
    else:
        assert sorted(got) == ["anna@example.com"]
        assert result.stdout.splitlines()[-2].startswith("1 sent, 1 failed")
        status = _status(runner)
        assert (
            f"failed    jörg@bücher.de: not sent: the address has a non-ASCII local part and the server "
            f"127.0.0.1:{srv.port} "
            "does not offer SMTPUTF8 (RFC 6531)"
        ) in status
        assert "553" not in status  # digest's own reason, not a server's reply


# -- the journal: nothing before yes, a write failure is one clear error -----------------


def test_answering_no_records_nothing(piped: Server, project: Path, tmp_path: Path) -> None:
    path = _list(tmp_path, 3)
    out = _run_in_a_terminal(project, [*DIGEST, "send", EXAMPLE, "--list", str(path)], "n\n")
    assert "Send to 3 recipients? [y/N]: n" in out
    assert "Not sent; nothing was recorded." in out
    assert piped.recorder.received == []
    assert not (project / ".digest" / "journal.sqlite3").exists()
    needs = subprocess.run(
        [*DIGEST, "send", EXAMPLE, "--list", str(path)],
        cwd=project,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert needs.returncode == 1 and "a real send needs confirmation" in needs.stderr
    # Ctrl-D (or Ctrl-C) at the prompt is a no too, not click's bare "Aborted!"
    eof = _run_in_a_terminal(project, [*DIGEST, "send", EXAMPLE, "--list", str(path)], "\x04")
    assert "Not sent; nothing was recorded." in eof and "Aborted" not in eof
    assert not (project / ".digest" / "journal.sqlite3").exists()
    again = subprocess.run(
        [*DIGEST, "send", EXAMPLE, "--list", str(path), "--yes"], cwd=project, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert "Recipients: 3 to send" in again.stdout
    _exactly_once(piped, 3)


def test_dry_run_and_outbox_leave_no_copy_of_the_list(
    project: Path, runner: CliRunner, tmp_path: Path, monkeypatch
) -> None:
    import tempfile

    monkeypatch.setenv("DIGEST_SECRET", SECRET)
    # A temporary folder of this test's own: other processes' files in /tmp are not ours.
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    before = set(os.listdir(tempfile.gettempdir()))
    path = _list(tmp_path, 5)
    assert _send(runner, "--list", str(path), "--dry-run").exit_code == 0
    assert _send(runner, "--list", str(path), "--outbox", str(tmp_path / "out")).exit_code == 0
    assert set(os.listdir(tempfile.gettempdir())) - before == set()
    assert [p.name for p in (project / ".digest").iterdir()] in ([], ["journal.sqlite3"])
    assert len(list((tmp_path / "out").iterdir())) == 5


def _limit_journal(monkeypatch, when: str, pragma: str) -> None:
    """Make SQLite itself refuse writes: a full disk (max_page_count) or read-only."""
    from digest.send import journal as journal_module

    original_add = journal_module.Journal.add

    def add(self, issue, recipients, batch=2000):
        if when == "loading":
            self._db.execute(pragma)
        yield from original_add(self, issue, recipients, batch=50)
        if when == "sending":
            self._db.execute(pragma)

    monkeypatch.setattr(journal_module.Journal, "add", add)


@pytest.mark.parametrize("when", ["loading", "sending"])
@pytest.mark.parametrize(
    "fault, pragma",
    [
        # SQLite never lowers max_page_count below the pages in use: the file cannot grow.
        ("database or disk is full", "PRAGMA max_page_count = 1"),
        ("attempt to write a readonly database", "PRAGMA query_only = 1"),
    ],
    ids=["full", "read-only"],
)
def test_a_journal_that_cannot_be_written(
    piped: Server,
    runner: CliRunner,
    tmp_path: Path,
    project: Path,
    monkeypatch,
    when: str,
    fault: str,
    pragma: str,
) -> None:
    from digest.send import journal as journal_module

    original_add = journal_module.Journal.add
    path = _list(tmp_path, 300)
    _limit_journal(monkeypatch, when, pragma)
    result = _send(runner, "--list", str(path), "--yes", "--workers", "3")
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"cannot write the send journal: {fault}" in errors[0]
    assert "hint: check the disk" in result.stderr
    stopped = result.stdout.splitlines()[-1]
    assert stopped.startswith("Stopped: ")
    from digest.send import journal as journal_module

    monkeypatch.setattr(journal_module.Journal, "add", original_add)
    # What went out while SQLite refused the fold is in the send's log: status folds it in.
    _status(runner)
    assert list((project / ".digest").glob("send-logs/*.log")) == []
    db = sqlite3.connect(project / ".digest" / "journal.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    states = dict(db.execute("SELECT email, state FROM deliveries").fetchall())
    db.close()
    received = {r.recipient for r in piped.recorder.received}
    # Never a message sent that the journal cannot record: each one is 'sending' or 'sent'.
    assert all(states.get(r) in ("sending", "sent") for r in received)
    # The summary counted the log's entries too.
    assert stopped.startswith(f"Stopped: {list(states.values()).count('sent')} sent, ")
    if when == "loading":
        assert received == set() and states == {}
    rerun = _send(runner, "--list", str(path), "--yes", "--resend-uncertain")
    assert rerun.exit_code == 0, rerun.output
    got = piped.recorder.by_recipient()
    assert len(got) == 300
    duplicates = {r for r, copies in got.items() if len(copies) > 1}
    uncertain = {e for e, s in states.items() if s == "sending"}
    assert duplicates <= uncertain  # only those in flight at the failure can come twice


def test_status_tells_a_running_send_from_a_stopped_one(
    piped: Server, runner: CliRunner, tmp_path: Path, project: Path
) -> None:
    from digest.config import load_project
    from digest.send import only_sender

    assert _send(runner, "--list", str(_list(tmp_path, 5)), "--yes").exit_code == 0
    db = sqlite3.connect(project / ".digest" / "journal.sqlite3")
    # reader00004: left uncertain by an earlier run, before the running send began.
    db.execute(
        "UPDATE deliveries SET state = 'sending', reply = NULL, updated_at = 1 WHERE email LIKE 'reader00004@%'"
    )
    db.commit()
    with only_sender(load_project(project), EXAMPLE):  # as a send of this issue would
        # reader00000 and reader00001: claimed by the running send, not answered yet.
        db.execute(
            "UPDATE deliveries SET state = 'sending', reply = NULL, updated_at = ? "
            "WHERE email LIKE 'reader0000_@%' AND id <= 2",
            (time.time() + 1,),
        )
        db.commit()
        running = _status(runner)
    db.close()
    assert "1 uncertain, 2 in flight (sending now; the counts can be half a second behind)" in running
    assert "reader00000" not in running and "reader00001" not in running  # in flight is no problem
    assert "uncertain reader00004@example.com: no reply recorded (in flight when the send stopped)" in running
    stopped = _status(runner)
    assert "3 uncertain" in stopped and "in flight (sending" not in stopped
    assert "uncertain reader00000@example.com: no reply recorded (in flight when the send stopped)" in stopped


def test_status_reads_the_lock_of_an_older_digest_by_its_time(
    piped: Server, runner: CliRunner, tmp_path: Path, project: Path
) -> None:
    import fcntl

    from digest.config import load_project
    from digest.send.state import _lock_path

    assert _send(runner, "--list", str(_list(tmp_path, 3)), "--yes").exit_code == 0
    db = sqlite3.connect(project / ".digest" / "journal.sqlite3")
    db.execute("UPDATE deliveries SET state = 'sending', reply = NULL, updated_at = 1 WHERE id = 1")
    db.commit()
    lock = _lock_path(load_project(project), EXAMPLE)
    with lock.open("w") as f:  # an older digest's lock: its pid only; its time is the file's
        f.write("4242\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX)
        db.execute(
            "UPDATE deliveries SET state = 'sending', reply = NULL, updated_at = ? WHERE id = 2",
            (time.time() + 1,),
        )
        db.commit()
        running = _status(runner)
    db.close()
    assert "1 uncertain, 1 in flight (sending now" in running  # id 1 from before it, id 2 its own


def test_status_warns_and_counts_when_a_killed_sends_log_cannot_be_folded(
    piped: Server, runner: CliRunner, tmp_path: Path, project: Path, monkeypatch
) -> None:
    from digest.send import journal as journal_module
    from digest.send import sendlog

    assert _send(runner, "--list", str(_list(tmp_path, 3)), "--yes").exit_code == 0
    journal = journal_module.Journal(project / ".digest" / "journal.sqlite3")
    [(first, email0), (second, email1), _] = journal._db.execute(
        "SELECT id, email FROM deliveries ORDER BY id"
    ).fetchall()
    journal.mark(first, "sending")  # as the database had it when the send was killed
    journal.close()
    # What the killed send logged after its last fold: the first was delivered, the second
    # was claimed again (a resend) and no reply came.
    logs = project / ".digest" / "send-logs"
    logs.mkdir(exist_ok=True)
    lines = [
        sendlog._line(1, (first, "sent", False, 1.0, "250 2.0.0 queued")),
        sendlog._line(2, (second, "sending", True, 2.0, None)),
    ]
    (logs / "send-0123456789abcdef.log").write_bytes(b"digest-send-log 1\tabc\n" + b"".join(lines))

    def refuses(self, path):
        raise journal_module.JournalError(
            "cannot write the send journal: database or disk is full", path=self.path
        )

    monkeypatch.setattr(journal_module.Journal, "recover", refuses)
    result = runner.invoke(cli, ["status", EXAMPLE])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("Warning: ") and "database or disk is full" in result.stderr
    assert "hint: the figures below include what a killed send logged last" in result.stderr
    # The log's word, not the database's: the first is sent, the second uncertain.
    assert result.stdout.startswith(f"{EXAMPLE}: 2 sent, 0 failed, 0 deferred, 0 pending, 1 uncertain")
    assert result.stdout.splitlines()[1:] == [
        f"  uncertain {email1}: no reply recorded (in flight when the send stopped)"
    ]
    assert email0 not in result.stdout


def test_a_dry_run_plans_with_what_a_killed_send_logged_last(
    piped: Server, runner: CliRunner, tmp_path: Path, project: Path
) -> None:
    """A dry run reads a killed send's log without folding it, as the real send's plan folds
    it: a reader the log has as sent is not 'to send', one it has as claimed is uncertain
    (found in a trial: a dry run said 9 to send where the real send said 8)."""
    from digest.send import journal as journal_module
    from digest.send import sendlog

    path = str(_list(tmp_path, 4))
    assert _send(runner, "--list", path, "--yes").exit_code == 0
    journal = journal_module.Journal(project / ".digest" / "journal.sqlite3")
    ids = [i for (i,) in journal._db.execute("SELECT id FROM deliveries ORDER BY id")]
    for i in ids[:3]:  # the database as the send was killed: the last fold before these
        journal.mark(i, "pending")
    journal.mark(ids[3], "sending")
    failed = journal.in_state(EXAMPLE, "failed")
    journal.close()
    logs = project / ".digest" / "send-logs"
    logs.mkdir(exist_ok=True)
    lines = [  # then: the first delivered, the second claimed (no reply), the fourth failed
        sendlog._line(1, (ids[0], "sending", True, 1.0, None)),
        sendlog._line(2, (ids[0], "sent", False, 1.1, "250 2.0.0 queued")),
        sendlog._line(3, (ids[1], "sending", True, 1.2, None)),
        sendlog._line(4, (ids[3], "failed", False, 1.3, "550 5.1.1 no such user")),
    ]
    log = logs / "send-0123456789abcdef.log"
    log.write_bytes(b"digest-send-log 1\tabc\n" + b"".join(lines))
    before = log.read_bytes()
    dry = _send(runner, "--list", path, "--dry-run", "--retry-failed")
    assert dry.exit_code == 0, dry.output
    assert log.read_bytes() == before  # read only: the real send folds it
    assert failed == []
    assert "Recipients: 2 to send, 1 already sent" in dry.stdout, dry.stdout
    assert "Uncertain:  1" in dry.stdout, dry.stdout
    assert "reader00003@example.com" in dry.stdout  # named as the failed one --retry-failed sends
    real = _send(runner, "--list", path, "--retry-failed")  # no terminal: the plan, then no
    assert real.exit_code == 1
    for line in dry.stdout.splitlines():
        if line.startswith(("Recipients:", "Uncertain:", "Retrying:")):
            assert line in real.stdout.splitlines(), (line, real.stdout)


# -- the server's log (--server-log; a real Postfix's in test_send_postfix.py) --------------


def _postfix_log(tmp_path: Path, messages: list[tuple[str, str, str]]) -> Path:
    """A Postfix log with, for each (Message-ID, envelope sender, fate), the lines Postfix
    writes: fate 'queued', 'thrown away' (its session lost in DATA) or 'received' (not yet
    queued)."""
    now = time.time()
    at = time.strftime("%b %e %H:%M:%S", time.localtime(now))
    # Lines from before and after the send: the log covers its time.
    lines = [f"{time.strftime('%b %e %H:%M:%S', time.localtime(now - 900))} relay postfix/anvil[9]: statistics"]
    for n, (message_id, sender, fate) in enumerate(messages):
        stamp, queue_id = f"{at} relay postfix", f"4F3B21C0A{n}"
        lines.append(f"{stamp}/smtpd[9{n}]: {queue_id}: client=localhost[127.0.0.1]")
        lines.append(f"{stamp}/cleanup[12]: {queue_id}: message-id={message_id}")
        if fate == "queued":
            lines.append(f"{stamp}/qmgr[11]: {queue_id}: from=<{sender}>, size=1, nrcpt=1 (queue active)")
        elif fate == "thrown away":
            lines.append(
                f"{stamp}/smtpd[9{n}]: lost connection after DATA (512 bytes) from localhost[127.0.0.1]"
            )
    lines.append(
        f"{time.strftime('%b %e %H:%M:%S', time.localtime(now + 300))} relay postfix/anvil[9]: statistics"
    )
    path = tmp_path / "mail.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def _uncertain_ids(runner: CliRunner) -> dict[str, str]:
    return dict(
        re.findall(r"^  uncertain (\S+): .*; its message: Message-ID (<[^>]+>)$", _status(runner), re.M)
    )


def _dropped(srv: Server, runner: CliRunner, fates: dict[str, str]) -> list[tuple[str, str, str]]:
    """(Message-ID, envelope sender, fate) of the messages the server read and dropped."""
    ids = _uncertain_ids(runner)
    by_reader = {r.recipient: r.sender for r in srv.recorder.dropped}
    return [(ids[reader], by_reader[reader], fate) for reader, fate in fates.items()]


def test_the_server_log_records_the_queued_uncertain_as_sent_after_yes(
    piped: Server, runner: CliRunner, tmp_path: Path, project: Path
) -> None:
    """Without --resend-uncertain, --server-log only records what the log shows queued: the
    plan says so, a 'no' at the prompt records nothing, a yes records it; the one the log
    shows thrown away stays uncertain (exit 4) until --resend-uncertain sends it."""
    piped.recorder.drop_in_data.update({"reader00001@example.com", "reader00002@example.com"})
    path = str(_list(tmp_path, 4))
    assert _send(runner, "--list", path, "--yes", "--workers", "1").exit_code == 4
    fates = {"reader00001@example.com": "queued", "reader00002@example.com": "thrown away"}
    log = _postfix_log(tmp_path, _dropped(piped, runner, fates))
    argv = [*DIGEST, "send", EXAMPLE, "--list", path, "--server-log", str(log)]
    no = _run_in_a_terminal(project, argv, "n\n")
    assert (
        "Server log: of the 2 uncertain, 1 was queued by the server (4F3B21C0A0): it counts as sent, "
        "not sent again\n"
        "            1 never got there, or was thrown away by the server: not sent again without "
        "--resend-uncertain\n"
    ) in no, no
    assert "Uncertain:  1 was in flight" in no and "Recipients: 0 to send" in no
    assert "Record 1 as sent (the server's log)? [y/N]: n" in no
    assert "Not sent; nothing was recorded." in no
    assert sorted(_uncertain_ids(runner)) == ["reader00001@example.com", "reader00002@example.com"]
    yes = _send(runner, "--list", path, "--server-log", str(log), "--yes")
    assert yes.exit_code == 4, yes.output  # reader00002 is still uncertain
    assert "Recorded 1 as sent: the server's log shows the server queued it." in yes.stdout
    assert "Left for a rerun: 0 deferred, 1 uncertain" in yes.stdout
    assert sorted(_uncertain_ids(runner)) == ["reader00002@example.com"]
    assert _status(runner).startswith(f"{EXAMPLE}: 3 sent, 0 failed, 0 deferred, 0 pending, 1 uncertain")
    reply = (
        sqlite3.connect(project / ".digest" / "journal.sqlite3")
        .execute("SELECT reply FROM deliveries WHERE email = 'reader00001@example.com'")
        .fetchone()[0]
    )
    assert reply.startswith("queued by the server as 4F3B21C0A0 (its log ") and str(log) in reply
    again = _send(runner, "--list", path, "--server-log", str(log), "--resend-uncertain", "--yes")
    assert again.exit_code == 0, again.output
    assert "Server log: the uncertain reader never got there, or was thrown away by the server: sent again" in (
        again.stdout
    )
    assert sorted(piped.recorder.by_recipient()) == [f"reader{i:05d}@example.com" for i in (0, 2, 3)]


def test_one_the_server_received_but_has_not_queued_yet_is_held_back(
    piped: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """Postfix's queue manager can log a message queued a while after it took it (its queue
    is full): a message with only its cleanup line is not sent again, even with
    --resend-uncertain, until a later log says what became of it. An unsubscribed reader
    the log shows queued does not count twice (found in a review: a new reader went unsent)."""
    piped.recorder.drop_in_data.update({f"reader0000{i}@example.com" for i in (1, 2)})
    assert _send(runner, "--list", str(_list(tmp_path, 3)), "--yes", "--workers", "1").exit_code == 4
    messages = _dropped(
        piped, runner, {"reader00001@example.com": "queued", "reader00002@example.com": "received"}
    )
    log = _postfix_log(tmp_path, messages)
    assert runner.invoke(cli, ["unsubscribe", "reader00001@example.com"]).exit_code == 0
    path = str(_list(tmp_path, 4))  # and a new reader
    result = _send(runner, "--list", path, "--server-log", str(log), "--resend-uncertain", "--yes")
    assert result.exit_code == 4, result.output
    assert (
        "            1 was received by the server, but its log does not show it queued (yet): not sent again "
        "now (see 'mailq'; run again later)"
    ) in result.stdout
    assert (
        "Uncertain:  1 was in flight when an earlier send stopped; sending 0 again, 1 held back"
        in result.stdout
    )
    assert "Recipients: 1 to send" in result.stdout, result.stdout
    assert "Recorded 1 as sent" in result.stdout
    assert sorted(piped.recorder.by_recipient()) == ["reader00000@example.com", "reader00003@example.com"]
    # Later the log shows it queued: recorded sent, never sent twice.
    log = _postfix_log(tmp_path, [messages[1][:2] + ("queued",)])
    later = _send(runner, "--list", path, "--server-log", str(log), "--resend-uncertain", "--yes")
    assert later.exit_code == 0, later.output
    assert "Recorded 1 as sent" in later.stdout
    assert "reader00002@example.com" not in piped.recorder.by_recipient()


def test_one_with_no_line_in_logs_of_its_time_never_got_there(
    piped: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """No line of a message in logs that cover its time: it never got there, and
    --resend-uncertain sends it; in logs that end before it, it is held back."""
    piped.recorder.drop_in_data.update({"reader00001@example.com", "reader00002@example.com"})
    path = str(_list(tmp_path, 3))
    assert _send(runner, "--list", path, "--yes", "--workers", "1").exit_code == 4
    [queued, _absent] = _dropped(
        piped, runner, {"reader00001@example.com": "queued", "reader00002@example.com": ""}
    )
    # reader00002's message left no line; reader00000's, delivered, tells the clocks agree
    delivered = [
        (email.message_from_bytes(r.data)["Message-ID"], r.sender, "queued") for r in piped.recorder.received
    ]
    log = _postfix_log(tmp_path, [queued, *delivered])
    old = tmp_path / "old.log"
    old.write_text("\n".join(log.read_text().splitlines()[:-1]) + "\n")  # ends before the send
    held = _send(runner, "--list", path, "--server-log", str(old), "--resend-uncertain", "--yes")
    assert held.exit_code == 4, held.output
    assert re.search(
        r"^            1 is not in the logs given, which do not cover the time of its send \(they cover "
        r"\w{3} \d\d \d\d:\d\d to \w{3} \d\d \d\d:\d\d\): not sent again; give the log of that time too "
        r"\(or run again once the log has gone 2 minutes past it\)$",
        held.stdout,
        re.M,
    ), held.stdout
    assert (
        "Left for a rerun: 0 deferred, 1 uncertain.\nHeld back: 1 uncertain that the logs given cannot tell of"
        in held.stdout
    )
    assert "reader00002@example.com" not in piped.recorder.by_recipient()
    sent = _send(runner, "--list", path, "--server-log", str(log), "--resend-uncertain", "--yes")
    assert sent.exit_code == 0, sent.output
    assert "Server log: the uncertain reader never got there, or was thrown away by the server: sent again" in (
        sent.stdout
    )
    assert len(piped.recorder.by_recipient()["reader00002@example.com"]) == 1
    assert "reader00001@example.com" not in piped.recorder.by_recipient()


def test_a_server_log_of_another_time_is_an_error(piped: Server, runner: CliRunner, tmp_path: Path) -> None:
    piped.recorder.drop_in_data.add("reader00001@example.com")
    path = str(_list(tmp_path, 2))
    assert _send(runner, "--list", path, "--yes").exit_code == 4
    log = _postfix_log(tmp_path, [("<another@message>", "x@y", "queued")])
    result = _send(runner, "--list", path, "--server-log", str(log), "--resend-uncertain", "--yes")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0].endswith(
        f"mail.log: none of the messages of {EXAMPLE} is logged in it: the log of another server, or of "
        "another time?"
    )
    assert "hint: give the log of the Postfix instance this issue was sent through" in result.stderr
    assert list(_uncertain_ids(runner)) == ["reader00001@example.com"]
    assert len(piped.recorder.received) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--outbox", "out"), "Error: --server-log cannot go with --outbox"),
        (("--test", "editor@example.org"), "Error: --test sends only test copies, outside the journal"),
        ((), "mail.log: cannot read the server's log: No such file or directory"),
    ],
    ids=["outbox", "test", "missing"],
)
def test_a_server_log_that_cannot_be_used_is_one_clear_error(
    piped: Server, runner: CliRunner, tmp_path: Path, project: Path, extra: tuple[str, ...], message: str
) -> None:
    args = ["--server-log", str(tmp_path / "mail.log"), *extra]
    if "--test" not in extra:
        args += ["--list", str(_list(tmp_path, 2))]
    result = _send(runner, *args, "--yes")
    assert result.exit_code == 1, result.output
    assert message in result.stderr.splitlines()[0], result.stderr
    assert "\n  hint: " in result.stderr and "Traceback" not in result.stderr
    assert piped.recorder.received == []
    assert not (project / ".digest" / "journal.sqlite3").exists()


def test_a_server_log_with_nothing_uncertain_says_so(piped: Server, runner: CliRunner, tmp_path: Path) -> None:
    log = _postfix_log(tmp_path, [("<x@y>", "a@b", "queued")])
    result = _send(runner, "--list", str(_list(tmp_path, 2)), "--server-log", str(log), "--yes")
    assert result.exit_code == 0, result.output
    assert "Server log: no reader is uncertain; nothing to look up" in result.stdout
    _exactly_once(piped, 2)


# -- the list ------------------------------------------------------------------------------


def test_a_csv_with_an_unclosed_quote(piped: Server, runner: CliRunner, project: Path, tmp_path: Path) -> None:
    path = tmp_path / "quote.csv"
    path.write_text('email,name\na@example.com,"unclosed\nb@example.com,B\n')
    result = _send(runner, "--list", str(path), "--yes")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0].endswith(
        "quote.csv:2: malformed CSV: unexpected end of data (an unclosed quote?)"
    )
    assert piped.recorder.received == []
    assert not (project / ".digest" / "journal.sqlite3").exists()
    path.write_text('email,name\na@example.com,"unclosed\nb@example.com,B\nc@example.com,C"\n')
    result = _send(runner, "--list", str(path), "--yes")
    assert result.exit_code == 1
    assert "quote.csv:2: a quoted field runs from line 2 to line 4 (an unclosed quote?)" in (result.stderr)


@pytest.mark.parametrize(
    "content, message",
    [
        ("email;name\na@example.com;A\n", "the list is separated by semicolons, not commas"),
        ("a@example.com,A\nb@example.com,B\n", "the first row holds an address, not the column"),
    ],
)
def test_a_list_with_the_wrong_delimiter_or_no_header(
    project: Path, runner: CliRunner, tmp_path: Path, monkeypatch, content: str, message: str
) -> None:
    _env(monkeypatch, free_port())
    path = tmp_path / "bad.csv"
    path.write_text(content)
    result = _send(runner, "--list", str(path), "--yes")
    assert result.exit_code == 1
    assert f"bad.csv:1: {message}" in result.stderr


# -- test copies ---------------------------------------------------------------------------


def test_test_copies_get_a_fresh_message_id(server: Server, runner: CliRunner) -> None:
    for _ in range(2):
        assert _send(runner, "--test", "editor@example.org").exit_code == 0
    ids = {_parse(r.data)["Message-ID"] for r in server.recorder.received}
    assert len(ids) == 2


def test_test_with_a_list_is_an_error(server: Server, runner: CliRunner, tmp_path: Path) -> None:
    result = _send(runner, "--test", "editor@example.org", "--list", str(_list(tmp_path, 2)))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --test sends only test copies; it cannot go with --list or --to")
    assert server.recorder.received == []


# -- unsubscribed during a running send, and a kill between rate-limited messages -----------


def test_an_address_unsubscribed_during_the_send_is_skipped(
    piped: Server, project: Path, tmp_path: Path
) -> None:
    path = _list(tmp_path, 100)
    proc = _spawn_send(project, str(path), "--rate", "40", "--workers", "1")
    _wait_for(lambda: len(piped.recorder.received) >= 5)
    # Another process (the readers' web app, say) records the unsubscription meanwhile.
    from digest.send.journal import Journal

    other = Journal(project / ".digest" / "journal.sqlite3")
    other.suppress(["reader00095@example.com"])
    other.close()
    assert len(piped.recorder.received) < 90  # still running
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "99 sent, 0 failed, 0 deferred, 1 unsubscribed meanwhile" in out
    assert "reader00095@example.com" not in piped.recorder.by_recipient()
    status = subprocess.run([*DIGEST, "status", EXAMPLE], cwd=project, capture_output=True, text=True).stdout
    assert status.splitlines()[0].endswith(", 1 unsubscribed meanwhile")


def test_a_kill_between_rate_limited_messages_leaves_nothing_uncertain(
    piped: Server, project: Path, tmp_path: Path
) -> None:
    path = _list(tmp_path, 30)
    proc = subprocess.Popen(
        [*DIGEST, "send", EXAMPLE, "--list", str(path), "--yes", "--rate", "5", "--workers", "1"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for(lambda: len(piped.recorder.received) >= 3)
    time.sleep(0.1)  # the last 250 was read well before; the next message is 0.2 s away
    proc.kill()
    proc.communicate()
    assert _uncertain(project) == set()
    rerun = subprocess.run(
        [*DIGEST, "send", EXAMPLE, "--list", str(path), "--yes"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rerun.returncode == 0, rerun.stderr
    _exactly_once(piped, 30)


# -- helpers ---------------------------------------------------------------------------------


def _spawn_send(project: Path, list_path: str, *extra: str) -> subprocess.Popen:
    """``digest send EXAMPLE --list LIST --yes EXTRA`` in a process of its own (text output)."""
    return subprocess.Popen(
        [*DIGEST, "send", EXAMPLE, "--list", list_path, "--yes", *extra],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


def _uncertain(project: Path) -> set[str]:
    """The addresses `digest status` reports as uncertain."""
    status = subprocess.run(
        [*DIGEST, "status", EXAMPLE], cwd=project, capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[1].rstrip(":") for line in status.splitlines()[1:] if line.split()[0] == "uncertain"}


def _no_duplicates_and_missing_is_uncertain(servers: list[Server], n: int, uncertain: set[str]) -> None:
    counts: dict[str, int] = {}
    for srv in servers:
        for r in srv.recorder.received:
            counts[r.recipient.lower()] = counts.get(r.recipient.lower(), 0) + 1
    assert {a for a, c in counts.items() if c > 1} == set()
    everyone = {f"reader{i:05d}@example.com" for i in range(n)}
    assert everyone - set(counts) <= uncertain


def _run_in_a_terminal(cwd: Path, argv: list[str], answer: str) -> str:
    """Run a command with a pseudo-terminal as stdin/stdout, typing *answer* at the prompt."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        argv, cwd=cwd, stdin=child, stdout=child, stderr=child, close_fds=True, start_new_session=True
    )
    os.close(child)
    output = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N]" in output:
                os.write(main, answer.encode())
                answered = True
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(main)
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    return output.decode(errors="replace").replace("\r\n", "\n")
