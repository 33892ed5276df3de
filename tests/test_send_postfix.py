"""Interop: `digest send` through a private Postfix (PIPELINING, STARTTLS, a login checked by
a private Dovecot) to a sink behind it."""

from __future__ import annotations

import difflib
import email
import email.policy
import os
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import trustme

from digest.message import verify_unsubscribe_token

from .conftest import EXAMPLE
from .cutproxy import CutProxy
from .dovecot import start_dovecot
from .postfix import start_postfix
from .smtpserver import Server

SECRET = "postfix-interop-secret-0123456789"
LIST_ID = "world-digest.worlddigest.example.org"
N = 500


def _tls_files(tmp_path: Path, ca: trustme.CA | None = None) -> tuple[Path, Path]:
    ca = ca or trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain = tmp_path / "relay.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    chain.chmod(0o644)  # Postfix's smtpd reads it as root at start, then drops privileges
    return chain, ca_file


def _parts(data: bytes) -> dict[str, str]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    return {kind: message.get_body((kind,)).get_content().replace("\r\n", "\n") for kind in ("plain", "html")}


def _only_personal_lines_differ(exported: str, received: str, address: str) -> None:
    """The received part is the exported one but for lines that carry this reader's address."""
    old, new = exported.splitlines(), received.splitlines()
    marks = (address, quote(address, safe="@"))
    changed = 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        changed += j2 - j1
        assert op == "replace" and i2 - i1 == j2 - j1, (op, old[i1:i2], new[j1:j2])
        for line in new[j1:j2]:
            assert any(m in line for m in marks), line
    assert 0 < changed <= 4


def test_send_through_a_local_postfix(project: Path, tmp_path: Path) -> None:
    chain, ca_file = _tls_files(tmp_path)
    rows = ["email,name"] + [f"reader{i:04d}@example.com,Reader {i} Ünïcode" for i in range(N)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    export = subprocess.run(
        [sys.executable, "-m", "digest", "export", EXAMPLE, "--out", str(tmp_path / "export")],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert export.returncode == 0, export.stderr
    exported = {
        "plain": (tmp_path / "export" / f"{EXAMPLE}.txt").read_text(),
        "html": (tmp_path / "export" / f"{EXAMPLE}.html").read_text(),
    }
    with Server() as sink, start_postfix(tmp_path, relay=("127.0.0.1", sink.port), tls=(chain, chain)) as relay:
        with smtplib.SMTP("127.0.0.1", relay.port) as probe:  # what digest is offered
            probe.starttls(context=ssl.create_default_context(cafile=str(ca_file)))
            probe.ehlo()
            assert {"pipelining", "smtputf8"} <= set(probe.esmtp_features)
        env = _env(relay.port, "starttls") + f"DIGEST_SMTP_CAFILE={ca_file}\n"
        result = _send(project, tmp_path, env, "--workers", "4")
        assert result.returncode == 0, result.stdout + result.stderr + relay.log_text()[-2000:]
        assert result.stdout.splitlines()[-1].startswith(f"{N} sent, 0 failed, 0 deferred")
        log, got = _delivered(sink, relay, N, timeout=180)
    assert "TLS connection established from" in log
    assert "improper command pipelining" not in log
    assert sorted(got) == [f"reader{i:04d}@example.com" for i in range(N)]
    assert all(len(copies) == 1 for copies in got.values())
    for i in (0, 1, 137, N - 1):
        address = f"reader{i:04d}@example.com"
        data = got[address][0].data
        assert data.startswith(b"Received: from ")  # it went through Postfix
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert message["To"].addresses[0].display_name == f"Reader {i} Ünïcode"
        # The example newsletter sets bounce_address: a VERP envelope sender per reader.
        assert re.fullmatch(r"bounces\+[0-9a-z.]+@worlddigest\.example\.org", got[address][0].sender)
        parts = _parts(data)
        for kind in ("plain", "html"):
            _only_personal_lines_differ(exported[kind], parts[kind], address)
        token = message["List-Unsubscribe"].split(",")[0].strip(" <>").rsplit("token=", 1)[1]
        assert verify_unsubscribe_token(SECRET, LIST_ID, address, token)


def _delivered(sink: Server, relay, n: int, timeout: float = 60) -> tuple[str, dict]:
    """Wait until the sink behind Postfix has *n* messages and Postfix's queue is empty;
    return Postfix's log and the sink's messages by recipient."""
    deadline = time.monotonic() + timeout
    while len(sink.recorder.received) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    relay.wait_until_empty()
    time.sleep(0.5)  # nothing more arrives
    return relay.log_text(), sink.recorder.by_recipient()


def _env(port: int, security: str = "none") -> str:
    """A .env for a send through the private Postfix at *port*."""
    return (
        f"DIGEST_SMTP_HOST=127.0.0.1\nDIGEST_SMTP_PORT={port}\nDIGEST_SMTP_SECURITY={security}\n"
        f"DIGEST_SECRET={SECRET}\n"
    )


def _nobody_failed(status: str, n: int) -> None:
    """Nobody sent or failed: every reader due, those refused set aside as deferred."""
    counts = re.match(rf"{EXAMPLE}: 0 sent, 0 failed, (\d+) deferred, (\d+) pending, 0 uncertain", status)
    assert counts and int(counts[1]) + int(counts[2]) == n, status


def _write_list(tmp_path: Path, n: int) -> None:
    rows = "".join(f"reader{i}@example.com,R {i}\n" for i in range(n))
    (tmp_path / "list.csv").write_text("email,name\n" + rows)


def _send(project: Path, tmp_path: Path, env: str, *options: str) -> subprocess.CompletedProcess:
    (project / ".env").write_text(env)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "digest",
            "send",
            EXAMPLE,
            "--list",
            str(tmp_path / "list.csv"),
            "--yes",
            *options,
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_login_through_postfix_checked_by_dovecot(project: Path, tmp_path: Path) -> None:
    """The submission setup: Postfix relays only for a client that logged in (SASL, checked
    by Dovecot), over STARTTLS. Without the login Postfix refuses to relay ('554 5.7.1
    Relay access denied' at RCPT): the send stops with nobody failed. A wrong password
    stops it too, never printed. With the login every reader gets one copy."""
    n = 30
    (tmp_path / "list.csv").write_text(
        "email,name\n" + "".join(f"reader{i:02d}@example.com,R {i}\n" for i in range(n))
    )
    ca = trustme.CA()
    chain, ca_file = _tls_files(tmp_path, ca)
    socket_path = tmp_path / "sasl" / "auth"
    socket_path.parent.mkdir()
    socket_path.parent.chmod(0o755)
    sasl = {
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": str(socket_path),
        "smtpd_tls_auth_only": "yes",
        "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
    }
    with (
        start_dovecot(tmp_path, ca, auth_socket=socket_path) as dovecot,
        Server() as sink,
        start_postfix(
            tmp_path, relay=("127.0.0.1", sink.port), tls=(chain, chain), extra_main_cf=sasl
        ) as relay,
    ):
        base = _env(relay.port, "starttls") + f"DIGEST_SMTP_CAFILE={ca_file}\n"
        anonymous = _send(project, tmp_path, base)
        assert anonymous.returncode == 3, anonymous.stdout + anonymous.stderr
        assert "the server refused the send at RCPT: 554 5.7.1" in anonymous.stderr
        assert "Relay access denied" in anonymous.stderr
        assert "hint: nobody was marked failed; the server does not pass mail on" in anonymous.stderr

        wrong = _send(
            project,
            tmp_path,
            base + f"DIGEST_SMTP_USERNAME={dovecot.user}\nDIGEST_SMTP_PASSWORD=not-the-Pa55\n",
        )
        assert wrong.returncode == 3, wrong.stdout + wrong.stderr
        assert "535" in wrong.stderr
        assert "not-the-Pa55" not in wrong.stdout + wrong.stderr

        status = subprocess.run(
            [sys.executable, "-m", "digest", "status", EXAMPLE], cwd=project, capture_output=True, text=True
        )
        _nobody_failed(status.stdout, n)

        right = _send(
            project,
            tmp_path,
            base + f"DIGEST_SMTP_USERNAME={dovecot.user}\nDIGEST_SMTP_PASSWORD={dovecot.password}\n",
            "--workers",
            "4",
        )
        assert right.returncode == 0, right.stdout + right.stderr + relay.log_text()[-2000:]
        assert right.stdout.splitlines()[-1].startswith(f"{n} sent, 0 failed, 0 deferred")
        log, got = _delivered(sink, relay, n, timeout=120)
    assert f"sasl_method=PLAIN, sasl_username={dovecot.user}" in log
    assert "Relay access denied" in log  # the refusal came from Postfix itself
    assert sorted(got) == [f"reader{i:02d}@example.com" for i in range(n)]
    assert all(len(copies) == 1 for copies in got.values())
    assert all(copies[0].data.startswith(b"Received: from ") for copies in got.values())


def test_an_issue_larger_than_postfixs_message_size_limit(project: Path, tmp_path: Path) -> None:
    """Postfix offers SIZE (its message_size_limit): an issue larger than that stops at the
    first reader, before any MAIL, with nobody failed; raising the limit completes the list."""
    (tmp_path / "list.csv").write_text(
        "email,name\n" + "".join(f"reader{i}@example.com,R {i}\n" for i in range(5))
    )
    with (
        Server() as sink,
        start_postfix(
            tmp_path, relay=("127.0.0.1", sink.port), extra_main_cf={"message_size_limit": "10000"}
        ) as relay,
    ):
        env = _env(relay.port)
        small = _send(project, tmp_path, env)
        assert small.returncode == 3, small.stdout + small.stderr
        assert re.search(
            r"the message is [0-9,]+ bytes and the server 127\.0\.0\.1:\d+ takes at most 10,000", small.stderr
        )
        assert "message_size_limit" in small.stderr
        assert "client=" not in relay.log_text()  # no message was begun
        relay.postconf("-e", "message_size_limit=10240000")
        subprocess.run(["postfix", "-c", str(relay.config_dir), "reload"], check=True, capture_output=True)
        time.sleep(1)
        done = _send(project, tmp_path, env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[-1].startswith("5 sent, 0 failed")
        relay.wait_until_empty()
        deadline = time.monotonic() + 60
        while len(sink.recorder.received) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert sorted(sink.recorder.by_recipient()) == [f"reader{i}@example.com" for i in range(5)]


def test_more_workers_than_postfix_takes_connections(project: Path, tmp_path: Path) -> None:
    """Postfix takes 2 connections at once from this client (smtpd_client_connection_count_limit,
    no exception for loopback) and digest opens 4: the 2 refused (421) are given up with a
    note, nobody is deferred for them, and the 2 that work send the whole list."""
    n = 600
    _write_list(tmp_path, n)
    limit = {"smtpd_client_connection_count_limit": "2", "smtpd_client_event_limit_exceptions": ""}
    with (
        Server() as sink,
        start_postfix(tmp_path, relay=("127.0.0.1", sink.port), extra_main_cf=limit) as relay,
    ):
        env = _env(relay.port)
        result = _send(project, tmp_path, env, "--workers", "4", "--retry-delay", "0.1", "--retries", "6")
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[-1].startswith(f"{n} sent, 0 failed, 0 deferred")
        assert "Note: the server refused one more connection" in result.stderr
        assert "too many connections" in result.stderr
        assert "Connection concurrency limit exceeded" in relay.log_text()
        relay.wait_until_empty()
        deadline = time.monotonic() + 60
        while len(sink.recorder.received) < n and time.monotonic() < deadline:
            time.sleep(0.2)
    got = sink.recorder.by_recipient()
    assert len(got) == n and all(len(copies) == 1 for copies in got.values())


@pytest.mark.parametrize(
    "settings,reply,hint",
    [
        (  # Postfix's default smtpd_delay_reject = yes gives this at RCPT
            {"smtpd_sender_restrictions": "check_sender_access inline:{ worlddigest.example.org=REJECT }"},
            "Sender address rejected",
            "bounce_address",
        ),
        ({"smtpd_client_restrictions": "reject"}, "Client host rejected", "smtpd_client_restrictions"),
        ({"smtpd_tls_security_level": "encrypt"}, "530 5.7.0 Must issue a STARTTLS command first", "starttls"),
    ],
    ids=["sender", "client", "tls-first"],
)
def test_postfix_refusing_the_sender_stops_with_nobody_failed(
    project: Path, tmp_path: Path, settings: dict[str, str], reply: str, hint: str
) -> None:
    """Refusals of the sender, this client or a session without TLS come from Postfix at RCPT
    or MAIL, whoever the reader: the send stops, nobody failed, everyone still due."""
    n = 6
    _write_list(tmp_path, n)
    chain, _ = _tls_files(tmp_path)
    with (
        Server() as sink,
        start_postfix(
            tmp_path, relay=("127.0.0.1", sink.port), tls=(chain, chain), extra_main_cf=settings
        ) as relay,
    ):
        env = _env(relay.port)
        result = _send(project, tmp_path, env)
        log = relay.log_text()
    assert result.returncode == 3, result.stdout + result.stderr + log[-2000:]
    assert reply in result.stderr
    if "rejected" in reply:  # given at RCPT, though it concerns the session (smtpd_delay_reject)
        assert "the server refused the send at RCPT" in result.stderr
        assert "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1" in log and reply in log
    assert "hint: nobody was marked failed" in result.stderr and hint in result.stderr
    status = subprocess.run(
        [sys.executable, "-m", "digest", "status", EXAMPLE], cwd=project, capture_output=True, text=True
    )
    _nobody_failed(status.stdout, n)
    assert sink.recorder.received == []


def test_postfix_refusing_the_issue_itself_stops_with_nobody_failed(project: Path, tmp_path: Path) -> None:
    """header_checks REJECT on the issue's Subject: Postfix refuses every message at its end
    (550 5.7.1). The first readers refused alike stop the send with nobody failed."""
    n = 10
    _write_list(tmp_path, n)
    checks_dir = Path(tempfile.mkdtemp(prefix="digest-checks-"))  # readable by Postfix's cleanup
    try:
        checks_dir.chmod(0o755)
        checks = checks_dir / "header_checks"
        checks.write_text("/^Subject:/ REJECT newsletters are not allowed here\n")
        checks.chmod(0o644)
        with (
            Server() as sink,
            start_postfix(
                tmp_path, relay=("127.0.0.1", sink.port), extra_main_cf={"header_checks": f"regexp:{checks}"}
            ) as relay,
        ):
            env = (
                f"DIGEST_SMTP_HOST=127.0.0.1\nDIGEST_SMTP_PORT={relay.port}\nDIGEST_SMTP_SECURITY=none\n"
                f"DIGEST_SECRET={SECRET}\n"
            )
            result = _send(project, tmp_path, env, "--workers", "2")
            log = relay.log_text()
    finally:
        shutil.rmtree(checks_dir, ignore_errors=True)
    assert result.returncode == 3, result.stdout + result.stderr + log[-2000:]
    assert (
        "the server refused the message itself, alike for 3 readers and none delivered: 550 5.7.1"
        in result.stderr
    )
    assert "newsletters are not allowed here" in log  # Postfix's own refusal
    status = subprocess.run(
        [sys.executable, "-m", "digest", "status", EXAMPLE], cwd=project, capture_output=True, text=True
    )
    _nobody_failed(status.stdout, n)
    assert sink.recorder.received == []


def test_postfixs_message_rate_limit_slows_the_send_down(project: Path, tmp_path: Path) -> None:
    """Postfix takes 10 messages per 2 s from this client (anvil: smtpd_client_message_rate_limit,
    no exception for loopback) and refuses more with 450 4.7.1 too much mail: the send slows
    down and gets the whole list through in one run, nobody deferred, once each."""
    n = 45
    _write_list(tmp_path, n)
    limit = {
        "smtpd_client_message_rate_limit": "10",
        "anvil_rate_time_unit": "2s",
        "smtpd_client_event_limit_exceptions": "",
    }
    with (
        Server() as sink,
        start_postfix(tmp_path, relay=("127.0.0.1", sink.port), extra_main_cf=limit) as relay,
    ):
        result = _send(project, tmp_path, _env(relay.port), "--workers", "2", "--retry-delay", "0.25")
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"\n{n} sent, 0 failed, 0 deferred" in result.stdout, result.stdout
        assert "Note: the server takes mail more slowly than this send gives it (450 4.7.1" in result.stderr
        assert "too much mail from" in result.stderr
        assert re.search(r"The server refused \d+ messages? for the pace; the send paused", result.stdout)
        assert "Message delivery request rate limit exceeded" in relay.log_text()
        log, got = _delivered(sink, relay, n)
    assert sorted(got) == sorted(f"reader{i}@example.com" for i in range(n))
    assert all(len(copies) == 1 for copies in got.values())


def test_the_uncertain_that_postfix_queued_are_found_in_its_log(project: Path, tmp_path: Path) -> None:
    """Two messages left uncertain through a real Postfix: one it queued (its reply to the
    final dot was lost), one whose end never reached it. `--server-log` finds the first in
    Postfix's log and records it sent; `--resend-uncertain` sends only the second again.
    Every reader ends with exactly one copy."""
    _write_list(tmp_path, 3)
    with Server() as sink, start_postfix(tmp_path, relay=("127.0.0.1", sink.port)) as relay:
        with CutProxy(relay.port, "reply") as proxy:
            first = _send(project, tmp_path, _env(proxy.port), "--workers", "1", "--retry-delay", "0.1")
        assert proxy.cut.is_set()
        assert first.returncode == 4, first.stdout + first.stderr
        assert "2 sent, 0 failed, 0 deferred, 1 uncertain" in first.stdout
        _write_list(tmp_path, 6)
        with CutProxy(relay.port, "dot") as proxy:
            second = _send(project, tmp_path, _env(proxy.port), "--workers", "1", "--retry-delay", "0.1")
        assert proxy.cut.is_set()
        assert second.returncode == 4, second.stdout + second.stderr
        assert "2 sent, 0 failed, 0 deferred, 1 uncertain" in second.stdout
        _, got = _delivered(sink, relay, 5)
        assert sorted(got) == [f"reader{i}@example.com" for i in (0, 1, 2, 4, 5)]  # Postfix took reader0's
        status = subprocess.run(
            [sys.executable, "-m", "digest", "status", EXAMPLE], cwd=project, capture_output=True, text=True
        ).stdout
        ids = dict(re.findall(r"^  uncertain (\S+): .*; its message: Message-ID (<[^>]+>)$", status, re.M))
        assert sorted(ids) == ["reader0@example.com", "reader3@example.com"], status
        log = relay.log_text()
        assert f"message-id={ids['reader0@example.com']}" in log  # what the README says to look for
        # reader3's message reached Postfix's cleanup too, and was thrown away: a cleanup line
        # alone is no proof; the qmgr line after it is.
        assert f"message-id={ids['reader3@example.com']}" in log
        assert "lost connection after DATA" in log
        assert (
            email.message_from_bytes(got["reader0@example.com"][0].data)["Message-ID"]
            == ids["reader0@example.com"]
        )

        env = _env(relay.port)
        dry = _send(project, tmp_path, env, "--resend-uncertain", "--server-log", str(relay.log), "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        queue_id = re.search(rf"(\w+): message-id={re.escape(ids['reader0@example.com'])}", log)[1]
        assert (
            f"Server log: of the 2 uncertain, 1 was queued by the server ({queue_id}): it counts as sent, not "
            "sent again\n"
            "            1 never got there, or was thrown away by the server: sent again\n"
        ) in dry.stdout, dry.stdout
        assert "Uncertain:  1 was in flight when an earlier send stopped; sending again" in dry.stdout
        assert "Recipients: 1 to send" in dry.stdout
        real = _send(project, tmp_path, env, "--resend-uncertain", "--server-log", str(relay.log))
        assert real.returncode == 0, real.stdout + real.stderr
        assert "Recorded 1 as sent: the server's log shows the server queued it." in real.stdout
        assert real.stdout.splitlines()[-1].startswith("1 sent, 0 failed, 0 deferred")
        _, got = _delivered(sink, relay, 6)
    assert sorted(got) == [f"reader{i}@example.com" for i in range(6)]
    assert all(len(copies) == 1 for copies in got.values())
    status = subprocess.run(
        [sys.executable, "-m", "digest", "status", EXAMPLE], cwd=project, capture_output=True, text=True
    ).stdout
    assert status.splitlines() == [f"{EXAMPLE}: 6 sent, 0 failed, 0 deferred, 0 pending, 0 uncertain"]


def test_an_uncertain_message_postfix_has_not_logged_queued_yet_is_held_back(
    project: Path, tmp_path: Path
) -> None:
    """Postfix's queue manager can log a message queued well after Postfix took it. With
    it paused, a message whose reply was lost has its cleanup line only: --resend-uncertain
    with the log holds it back instead of sending a second copy (a new user's trial got two
    copies before); once the queue manager logs it queued, the next run records it sent."""
    _write_list(tmp_path, 2)
    with Server() as sink, start_postfix(tmp_path, relay=("127.0.0.1", sink.port)) as relay:
        [qmgr] = relay.pids_of("qmgr")
        os.kill(qmgr, signal.SIGSTOP)
        try:
            with CutProxy(relay.port, "reply") as proxy:
                first = _send(project, tmp_path, _env(proxy.port), "--workers", "1", "--retry-delay", "0.1")
            assert first.returncode == 4, first.stdout + first.stderr
            env = _env(relay.port)
            held = _send(project, tmp_path, env, "--resend-uncertain", "--server-log", str(relay.log))
            assert held.returncode == 4, held.stdout + held.stderr
            assert (
                "Server log: the uncertain reader was received by the server, but its log does not show it "
                "queued (yet): not sent again now"
            ) in held.stdout, held.stdout
            assert "Nothing to send." in held.stdout
        finally:
            os.kill(qmgr, signal.SIGCONT)
        _, got = _delivered(sink, relay, 2)
        assert sorted(got) == ["reader0@example.com", "reader1@example.com"]
        later = _send(project, tmp_path, env, "--resend-uncertain", "--server-log", str(relay.log))
        assert later.returncode == 0, later.stdout + later.stderr
        assert "Recorded 1 as sent: the server's log shows the server queued it." in later.stdout
        time.sleep(1)
    assert all(len(copies) == 1 for copies in sink.recorder.by_recipient().values())
    assert len(sink.recorder.received) == 2
