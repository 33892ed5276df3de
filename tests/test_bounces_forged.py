"""Forged and back-dated reports: only a verified VERP token changes a status, and only its recipient's."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

import digest.bounces
from digest import subscribers
from digest.cli import cli
from tests.bounceutil import BOUNCE_ADDRESS, connect, deliver, enable_bounces, fixture, maildir, verp_for

READERS = [f"reader{n}@example.net" for n in range(1, 8)]
LIST_ID_HEADER = "List-Id: The World Digest <world-digest.worlddigest.example.org>"


def dsn(
    to: str, recipients: list[str], *, message_id: str, date: str = "Mon, 3 Jan 2022 06:00:00 +0000"
) -> bytes:
    """A Postfix-shaped DSN to *to* with one failed block per recipient, about a message with our List-Id."""
    blocks = "".join(
        f"\nFinal-Recipient: rfc822; {r}\nAction: failed\nStatus: 5.1.1\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{r}>: User unknown\n"
        for r in recipients
    )
    return (
        f"Return-Path: <>\nDelivered-To: {to}\nTo: {to}\nDate: {date}\n"
        "From: MAILER-DAEMON@relay.example.org (Mail Delivery System)\n"
        f"Subject: Undelivered Mail Returned to Sender\nMessage-Id: <{message_id}>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; relay.example.org\n"
        f"{blocks}\n"
        "--b\nContent-Type: text/rfc822-headers\n\n"
        f"From: The World Digest <digest@worlddigest.example.org>\nTo: {recipients[0]}\n"
        f"Subject: Putin and Biden talk again\n{LIST_ID_HEADER}\n\n--b--\n"
    ).encode()


def arf(recipient: str) -> bytes:
    """A feedback report naming *recipient*, sent to the editors, about a message with our List-Id."""
    return (
        "From: <fbl@isp.example>\nTo: <digest@worlddigest.example.org>\nSubject: Abuse report\n"
        "Date: Thu, 13 Jan 2022 09:00:00 -0500\nMessage-ID: <forged-arf@isp.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="a"\n\n'
        "--a\nContent-Type: text/plain\n\nAn abuse report.\n\n"
        "--a\nContent-Type: message/feedback-report\n\n"
        f"Feedback-Type: abuse\nUser-Agent: Forger/1.0\nVersion: 1\nOriginal-Rcpt-To: {recipient}\n\n"
        "--a\nContent-Type: text/rfc822-headers\n\n"
        f"From: The World Digest <digest@worlddigest.example.org>\nTo: {recipient}\n{LIST_ID_HEADER}\n\n--a--\n"
    ).encode()


@pytest.fixture
def readers(project: Path, monkeypatch) -> Path:
    enable_bounces(project, monkeypatch)
    conn = connect(project)
    for address in READERS:
        subscribers.add(conn, address)
    conn.close()
    return project


def statuses(project: Path) -> dict[str, str]:
    conn = connect(project)
    try:
        return {a: subscribers.get(conn, a).status for a in READERS}
    finally:
        conn.close()


def events(project: Path) -> list[tuple[str, str]]:
    conn = connect(project)
    try:
        return conn.execute("SELECT kind, email FROM bounce_events ORDER BY id").fetchall()
    finally:
        conn.close()


def test_a_report_without_a_valid_token_changes_nobody_and_stays(readers, runner: CliRunner):
    box = maildir(readers.parent / "Maildir")
    forged = {
        # One report naming the whole list, to the plain bounce address and to the From address.
        "forged-dsn": dsn(BOUNCE_ADDRESS, READERS, message_id="forged-1@relay.example.org"),
        "forged-dsn-from": dsn("digest@worlddigest.example.org", READERS, message_id="forged-2@x"),
        # A well-formed VERP address whose token does not verify.
        "forged-token": dsn(
            "bounces+1.aaaaaaaaaaaaaaaaaaaa@worlddigest.example.org", READERS[:1], message_id="forged-3@x"
        ),
        "forged-arf": arf(READERS[1]),
    }
    before = {name: deliver(box, name, raw).read_bytes() for name, raw in forged.items()}
    result = runner.invoke(cli, ["bounces", "--maildir", str(box)])
    assert result.exit_code == 0, result.output
    assert statuses(readers) == {a: "active" for a in READERS}
    assert events(readers) == []  # nothing recorded: nothing for a later run to count
    for name, raw in before.items():  # left where they were, byte for byte
        assert (box / "new" / name).read_bytes() == raw
    assert not (box / ".processed").exists()
    assert "Warning: new/forged-dsn: unverified report: " in result.stderr
    assert "names reader1@example.net, reader2@example.net, reader3@example.net and 4 more" in result.stderr
    assert "Warning: new/forged-arf: unverified report: " in result.stderr
    assert "reader2@example.net" in result.stderr.split("new/forged-arf")[1]
    assert result.stdout.endswith(f"Maildir {box}: 4 message(s): 4 unverified\n")
    assert "marked" not in result.stdout and "Traceback" not in result.output


def test_a_verified_report_marks_only_the_recipient_its_token_names(readers, runner: CliRunner):
    box = maildir(readers.parent / "Maildir")
    conn = connect(readers)
    verp = verp_for(conn, READERS[0])
    conn.close()
    # Sent to reader1's VERP address, but its blocks name everyone else first.
    deliver(box, "verified", dsn(verp, READERS[1:] + READERS[:1], message_id="verified-1@relay.example.org"))
    result = runner.invoke(cli, ["bounces", "--maildir", str(box)])
    assert result.exit_code == 0, result.output
    assert statuses(readers) == {a: "bounced" if a == READERS[0] else "active" for a in READERS}
    assert events(readers) == [("hard", READERS[0])]
    assert "marked 1 bounced, 0 complained" in result.stdout


def test_back_dated_soft_bounces_count_on_the_day_they_are_processed(project, monkeypatch, runner: CliRunner):
    enable_bounces(project, monkeypatch)  # threshold 3: six days of soft bounces
    box = maildir(project.parent / "Maildir")
    conn = connect(project)
    subscribers.add(conn, "full@example.net")
    raw = fixture(conn, "postfix-mailbox-full.eml")
    conn.close()
    for n in range(7):  # dated a week back, one a day: 3.5 by their Date headers
        date = f"{n + 1} Jan 2022 07:00:00".encode()
        deliver(
            box,
            f"soft-{n}",
            raw.replace(b"Tue,  4 Jan 2022 07:00:00", date).replace(b"20220104070000.B00F1", f"s{n}".encode()),
        )
    monkeypatch.setattr(digest.bounces, "processing_day", lambda: dt.date(2022, 1, 8))
    result = runner.invoke(cli, ["bounces", "--maildir", str(box)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("soft bounce full@example.net") == 7
    assert "marked" not in result.stdout
    conn = connect(project)
    try:
        assert subscribers.get(conn, "full@example.net").status == "active"
        days = {d for (d,) in conn.execute("SELECT day FROM bounce_events")}
    finally:
        conn.close()
    assert days == {"2022-01-08"}
