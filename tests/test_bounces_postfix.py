"""The bounce loop end to end: digest sends through a private Postfix to a sink that rejects some
recipients (550 and 452); Postfix writes real DSNs to the VERP addresses and delivers them into a
Maildir (its virtual delivery agent); 'digest bounces' reads them from that Maildir, or through a
private Dovecot over IMAP, classifies each, and the next send skips the hard-bounced."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme

from digest import subscribers
from tests.bounceutil import ISSUE, SECRET, connect, enable_bounces, fixture
from tests.dovecot import require_dovecot, service_tmp, start_dovecot
from tests.postfix import require_postfix, start_postfix
from tests.smtpserver import Server

DOMAIN = "worlddigest.example.org"
HARD = ["gone1@example.net", "gone2@example.net", "gone3@example.com"]
SOFT = ["full1@example.net", "full2@example.com"]
GOOD = [f"reader{n}@example.org" for n in range(1, 6)]
NOBODY = 65534  # the Maildir belongs to 'nobody', as Postfix's virtual agent writes it


def digest(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "digest", *args],
        cwd=project,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def system_tmp():
    with service_tmp() as folder:
        yield folder


@pytest.fixture
def bounce_loop(project: Path, system_tmp: Path, tmp_path: Path, monkeypatch):
    """Send the example issue to 10 readers through Postfix; yield once its DSNs are delivered."""
    require_postfix()
    enable_bounces(project, monkeypatch)
    mail = system_tmp / "vmail"
    mail.mkdir()
    os.chown(mail, NOBODY, NOBODY)
    maildir = mail / "bounces" / "Maildir"
    with Server() as sink:
        for address in HARD:
            sink.recorder.faults[address] = [f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"]
        for address in SOFT:
            sink.recorder.faults[address] = [f"452 4.2.2 <{address}>: Mailbox full"]
        settings = {
            # Mail for the newsletter's domain (the VERP bounce addresses) stays here, in a
            # Maildir; everything else goes to the sink.
            "virtual_mailbox_domains": DOMAIN,
            "virtual_mailbox_base": str(mail),
            "virtual_mailbox_maps": "static:bounces/Maildir/",
            "virtual_uid_maps": f"static:{NOBODY}",
            "virtual_gid_maps": f"static:{NOBODY}",
            "recipient_delimiter": "+",
            # A 4xx reply is tried once, then returned: the soft bounces arrive in seconds.
            "maximal_queue_lifetime": "0",
            "bounce_queue_lifetime": "0",
            "notify_classes": "",
        }
        with start_postfix(system_tmp, relay=("127.0.0.1", sink.port), extra_main_cf=settings) as pf:
            monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
            monkeypatch.setenv("DIGEST_SMTP_PORT", str(pf.port))
            monkeypatch.setenv("DIGEST_SMTP_SECURITY", "none")
            csv = tmp_path / "list.csv"
            csv.write_text("email\n" + "\n".join(HARD + SOFT + GOOD) + "\n")
            sent = digest(project, "send", ISSUE, "--list", str(csv), "--yes")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            wait_for(
                lambda: (
                    len(list((maildir / "new").glob("*"))) >= len(HARD + SOFT)
                    if (maildir / "new").is_dir()
                    else False
                ),
                "Postfix's DSNs in the Maildir:\n" + pf.log_text()[-3000:],
            )
            pf.wait_until_empty()
            yield project, maildir, csv, sink, pf


def test_postfix_dsns_into_a_maildir_are_classified_and_the_next_send_skips_the_hard(bounce_loop):
    project, maildir, csv, sink, pf = bounce_loop
    dsns = sorted((maildir / "new").iterdir())
    assert len(dsns) == len(HARD + SOFT), pf.log_text()[-3000:]
    for path in dsns:  # real DSNs, to real VERP addresses
        raw = path.read_bytes()
        assert re.search(rb"(?m)^Delivered-To: bounces\+[0-9a-z]+\.[a-z2-7]{16}@" + DOMAIN.encode(), raw), raw[
            :600
        ]
        assert b"report-type=delivery-status" in raw
    result = digest(project, "bounces", "--maildir", str(maildir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    for address in HARD:
        assert re.search(
            rf"hard bounce {re.escape(address)} \({ISSUE}\): 5\.1\.1 550 5\.1\.1 "
            rf"<{re.escape(address)}>: Recipient address rejected",
            result.stdout,
        ), result.stdout
        assert f"marked {address} bounced" in result.stdout
    for address in SOFT:
        assert re.search(
            rf"soft bounce {re.escape(address)} \({ISSUE}\): 4\.2\.2 452 4\.2\.2", result.stdout
        ), result.stdout
        assert f"marked {address}" not in result.stdout
    assert "5 message(s): 3 hard, 2 soft\nmarked 3 bounced, 0 complained\n" in result.stdout
    assert not list((maildir / "new").iterdir())
    assert len(list((maildir / ".processed" / "cur").iterdir())) == 5
    conn = connect(project)
    try:
        assert {a: subscribers.get(conn, a).status for a in HARD} == dict.fromkeys(HARD, "bounced")
        assert not any(subscribers.is_suppressed(conn, a) for a in SOFT)  # one soft bounce each
        recorded = conn.execute("SELECT count(*) FROM bounce_events").fetchone()[0]
    finally:
        conn.close()
    assert recorded == 5
    # Twice: nothing new, nothing recorded twice (even with the messages put back).
    for path in (maildir / ".processed" / "cur").iterdir():
        shutil.copy(path, maildir / "new" / path.name.split(":")[0])
    again = digest(project, "bounces", "--maildir", str(maildir))
    assert again.returncode == 0 and again.stdout.count("already recorded") == 5, again.stdout
    conn = connect(project)
    assert conn.execute("SELECT count(*) FROM bounce_events").fetchone()[0] == recorded
    conn.close()
    status = digest(project, "status", ISSUE)
    assert status.stdout.splitlines()[0].startswith(
        f"{ISSUE}: 10 sent, 3 bounced, 2 soft-bounced, 0 complained"
    )
    # The next send (a new issue, the same list) skips the hard-bounced, and only them.
    folder = project / "issues" / "next"
    folder.mkdir()
    (folder / "issue.toml").write_text('subject = "The next issue"\n')
    (folder / "a.md").write_text("---\ntitle: A story\n---\nSome text.\n")
    sink.recorder.received.clear()
    sink.recorder.faults.clear()
    nxt = digest(project, "send", "next", "--list", str(csv), "--yes")
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    assert "Skipped:    3 (0 invalid, 3 unsubscribed, bounced or complained, 0 duplicate)" in nxt.stdout
    pf.wait_until_empty()
    wait_for(lambda: len(sink.recorder.received) >= len(SOFT + GOOD), "the next issue at the sink")
    assert sorted(r.recipient for r in sink.recorder.received) == sorted(SOFT + GOOD)


def test_real_dsns_arf_and_auto_replies_over_imap_only_ours_move(bounce_loop, system_tmp: Path):
    require_dovecot()
    project, maildir, csv, sink, pf = bounce_loop
    # Postfix also delivers a complaint, two auto-replies and two unrelated messages there.
    conn = connect(project)
    extra = {
        name: fixture(conn, name)
        for name in (
            "arf-abuse.eml",
            "vacation-rfc3834.eml",
            "vacation-outlook.eml",
            "unrelated.eml",
            "vacation-to-editors.eml",
        )
    }
    conn.close()
    import smtplib

    with smtplib.SMTP("127.0.0.1", pf.port) as smtp:
        for raw in extra.values():
            verp = re.search(rb"bounces\+[0-9a-z.]+@" + DOMAIN.encode(), raw)
            rcpt = verp.group(0).decode() if verp else f"bounces@{DOMAIN}"
            smtp.sendmail("someone@example.net", [rcpt], raw)
    wait_for(lambda: len(list((maildir / "new").iterdir())) >= 10, "the extra messages")
    pf.wait_until_empty()
    with start_dovecot(system_tmp, trustme.CA(), maildir=maildir) as dc:
        env = dc.environ()
        os.environ.update(env)
        try:
            result = digest(project, "bounces", "--imap")
        finally:
            for key in env:
                os.environ.pop(key, None)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (
            ": 10 message(s): 3 hard, 2 soft, 1 complaint(s), 2 auto-reply(ies), 2 not ours" in result.stdout
        ), result.stdout
        imap = dc.connect()
        try:
            imap.select("INBOX", readonly=True)
            left = imap.uid("SEARCH", None, "ALL")[1][0].split()
            flags = [imap.uid("FETCH", uid, "(FLAGS)")[1][0] for uid in left]
            imap.select("processed", readonly=True)
            moved = imap.uid("SEARCH", None, "ALL")[1][0].split()
        finally:
            imap.logout()
    assert len(left) == 2 and len(moved) == 8
    assert all(b"\\Seen" not in f for f in flags)  # the others are still unread
    conn = connect(project)
    try:
        assert subscribers.get(conn, "annoyed@mailbox.example").status == "complained"
        assert all(subscribers.get(conn, a).status == "bounced" for a in HARD)
    finally:
        conn.close()
    assert SECRET not in result.stdout + result.stderr
