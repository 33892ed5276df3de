"""Reading a Postfix log for what became of the uncertain messages (a real Postfix's log is
read in tests/test_send_postfix.py)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from digest.errors import ConfigError, DigestErrors
from digest.send.serverlog import Taken, read

A = "<3074f8a0a5d1b4fb91b3b4d274606e3d@worlddigest.example.org>"
B = "<46d3a338c14f23ee3e6e4c6909645dcb@worlddigest.example.org>"
C = "<99999999999999999999999999999999@worlddigest.example.org>"
D = "<dddddddddddddddddddddddddddddddd@worlddigest.example.org>"
SENDERS = {A: "b@w.org", B: "b@w.org", C: "a@b", D: "b@w.org"}  # the envelope sender of each

# A queued; B thrown away (its session lost in DATA); D received, not (yet) queued; C absent.
SYSLOG = f"""\
Nov 29 14:55:01 relay postfix/smtpd[1234]: connect from localhost[127.0.0.1]
Nov 29 14:55:01 relay postfix/smtpd[1234]: 4F3B21C0A2: client=localhost[127.0.0.1]
Nov 29 14:55:01 relay postfix/cleanup[1236]: 4F3B21C0A2: message-id={A}
Nov 29 14:55:01 relay postfix/qmgr[1200]: 4F3B21C0A2: from=<b@w.org>, size=15213, nrcpt=1 (queue active)
Nov 29 14:55:01 relay postfix/smtpd[1234]: 5A0C11C0A3: client=localhost[127.0.0.1]
Nov 29 14:55:02 relay postfix/cleanup[1236]: 5A0C11C0A3: message-id={B}
Nov 29 14:55:32 relay postfix/smtpd[1234]: lost connection after DATA (96256 bytes) from localhost[127.0.0.1]
Nov 29 14:55:33 relay postfix/smtpd[1299]: 6B1D22C0A4: client=localhost[127.0.0.1]
Nov 29 14:55:33 relay postfix/cleanup[1236]: 6B1D22C0A4: message-id={D}
Nov 29 14:55:34 relay postfix/smtp[1240]: 4F3B21C0A2: to=<r@x.org>, relay=x[127.0.0.1]:25, status=sent (250)
"""

QUEUED = "relay postfix/qmgr[1200]: 4F3B21C0A2: from=<b@w.org>, size=9, nrcpt=1 (queue active)"


def _log(tmp_path: Path, text: str, name: str = "mail.log", mtime: float | None = None) -> Path:
    path = tmp_path / name
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_queued_thrown_away_received_and_absent(tmp_path: Path) -> None:
    path = _log(tmp_path, SYSLOG)
    found = read([path], SENDERS)
    assert found.queued == {A: Taken("4F3B21C0A2", path)}
    assert found.thrown_away == {B}
    assert found.received - set(found.queued) - found.thrown_away == {D}  # not confirmed (yet)
    assert C not in found.received


def test_the_send_is_covered_only_if_one_of_its_messages_is_in_the_logs(tmp_path: Path) -> None:
    path = _log(tmp_path, SYSLOG)
    assert read([path], {C: "a@b"}, known=[A]).covers
    assert not read([path], {C: "a@b"}, known=["<other@x>"]).covers
    assert read([path], {D: "b@w.org"}).covers  # an uncertain one's line is enough


@pytest.mark.parametrize(
    "qmgr",
    [
        QUEUED.replace("from=<b@w.org>", "from=<x@w.org>"),
        QUEUED.replace("nrcpt=1", "nrcpt=2"),
        QUEUED.replace("relay postfix/", "other postfix/"),
        QUEUED.replace("postfix/qmgr", "postfix-out/qmgr"),
    ],
    ids=["another sender", "more recipients", "another host", "another instance"],
)
def test_a_queued_message_is_ours_only_with_our_sender_one_recipient_and_the_same_postfix(
    tmp_path: Path, qmgr: str
) -> None:
    """Anybody can write a message with a reader's Message-ID; the envelope sender digest
    used for that reader (a signed VERP address) and one recipient tell it is ours."""
    text = f"Nov 29 14:55:01 relay postfix/cleanup[1236]: 4F3B21C0A2: message-id={A}\nNov 29 14:55:01 {qmgr}\n"
    assert read([_log(tmp_path, text)], SENDERS).queued == {}


@pytest.mark.parametrize(
    "stamp, host",
    [
        ("2026-11-29T14:55:01.123456+00:00", "relay "),  # Postfix's maillog_file, rsyslog RFC 3339
        ("Nov 29 14:55:01.123456", "relay "),  # journalctl -o short-precise
        ("Nov  9 04:05:06", ""),  # a syslog without the host name
    ],
)
def test_time_stamps_and_a_second_instance(tmp_path: Path, stamp: str, host: str) -> None:
    text = (
        f"{stamp} {host}postfix-out/cleanup[77]: 4dLk2x0yKbz9Qn: message-id={B}\n"
        f"{stamp} {host}postfix-out/qmgr[70]: 4dLk2x0yKbz9Qn: from=<b@w.org>, size=9, nrcpt=1 (queue active)\n"
    )
    path = _log(tmp_path, text)
    assert read([path], SENDERS).queued == {B: Taken("4dLk2x0yKbz9Qn", path)}


def test_a_queue_id_used_again_for_another_message_is_not_ours(tmp_path: Path) -> None:
    text = (
        f"Nov  9 01:02:03 h postfix/cleanup[1]: 4F3B21C0A2: message-id={A}\n"
        f"Nov  9 01:02:03 h postfix/cleanup[1]: 4F3B21C0A2: message-id={C}\n"  # A's went; the id names C's now
        "Nov  9 01:02:03 h postfix/qmgr[2]: 4F3B21C0A2: from=<a@b>, size=9, nrcpt=1 (queue active)\n"
    )
    assert read([_log(tmp_path, text)], {A: "a@b"}).queued == {}


def test_rotated_logs_are_read_oldest_first_as_one_stream(tmp_path: Path) -> None:
    """A pair of lines that a rotation split is found, whatever the order the files are
    given in; a compressed file is known by its content, not its name."""
    lines = SYSLOG.splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if f"message-id={A}" in line) + 1
    older = tmp_path / "mail.log.1"
    with gzip.open(older, "wt") as f:  # compressed, though not named .gz
        f.write("".join(lines[:cut]))
    os.utime(older, (1000, 1000))
    newer = _log(tmp_path, "".join(lines[cut:]), mtime=2000)
    for order in ([older, newer], [newer, older]):
        assert read(order, SENDERS).queued == {A: Taken("4F3B21C0A2", newer)}


def test_a_later_attempt_that_reached_postfix_is_not_thrown_away(tmp_path: Path) -> None:
    """The first attempt was thrown away, the second got there and is not queued yet: it
    is received, not confirmed (not to be sent again), not thrown away."""
    text = SYSLOG.replace(f"message-id={D}", f"message-id={B}")
    found = read([_log(tmp_path, text)], SENDERS)
    assert B in found.received and B not in found.thrown_away and B not in found.queued


def test_text_a_client_gets_into_another_line_never_passes_for_postfixs(tmp_path: Path) -> None:
    """A HELO name or an address that Postfix logs in a reject line cannot forge a queued
    message: the program and queue id must begin the line's message."""
    forged = (
        "Nov 29 14:55:01 relay postfix/smtpd[5]: NOQUEUE: reject: RCPT from x[10.0.0.1]: 554 5.7.1 "
        f"<a@b>: Relay access denied; from=<x relay postfix/cleanup[1]: 99AA: message-id={A} y@z> to=<a@b> "
        "proto=ESMTP helo=<h>\n"
        "Nov 29 14:55:02 relay postfix/smtpd[5]: warning: helo=<relay postfix/qmgr[2]: 99AA: from=<b@w.org>, "
        "size=1, nrcpt=1 (queue active)>\n"
        f"Nov 29 14:55:03 relay postfix/cleanup[7]: 12BC: message-id={B}\n"
    )
    found = read([_log(tmp_path, forged)], SENDERS)
    assert found.queued == {} and A not in found.received


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"Nov 29 14:55:01 relay sshd[1]: Accepted publickey\n",
            "no message that Postfix received is logged in it",
        ),
        (None, "cannot read the server's log: No such file or directory"),
        (gzip.compress(SYSLOG.encode())[:-30] + b"\xff" * 30, "cannot read the server's log: "),
        ("dir", "cannot read the server's log: Is a directory"),
    ],
    ids=["not postfix", "missing", "corrupt gzip", "a folder"],
)
def test_a_log_that_is_not_postfixs_or_cannot_be_read(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "mail.log"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        read([path], SENDERS)
    assert e.value.path == path
    assert e.value.message.startswith(message), e.value.message
    assert "--server-log" in (e.value.hint or "") or "Postfix" in (e.value.hint or "")


def test_every_bad_log_is_reported_at_once(tmp_path: Path) -> None:
    good = _log(tmp_path, SYSLOG)
    with pytest.raises(DigestErrors) as e:
        read([tmp_path / "a.log", good, _log(tmp_path, "nothing\n", "b.log")], SENDERS)
    assert sorted((err.path.name, err.message[:20]) for err in e.value.errors) == [
        ("a.log", "cannot read the serv"),
        ("b.log", "no message that Post"),
    ]


def test_a_session_lost_before_cleanup_logs_the_message_id(tmp_path: Path) -> None:
    """Postfix's processes log apart: the tests' Postfix logged the loss of a session in
    DATA before cleanup logged the Message-ID of what it got. Still thrown away; and a later
    message that gets the same queue id again is not."""
    text = (
        "Nov 29 15:14:59 relay postfix/smtpd[17159]: D45892BE3D4: client=unknown[127.0.0.1]\n"
        "Nov 29 15:14:59 relay postfix/smtpd[17159]: lost connection after DATA (20692 bytes) from x[::1]\n"
        f"Nov 29 15:14:59 relay postfix/cleanup[17164]: D45892BE3D4: message-id={B}\n"
        "Nov 29 16:00:00 relay postfix/smtpd[17160]: D45892BE3D4: client=unknown[127.0.0.1]\n"
        f"Nov 29 16:00:00 relay postfix/cleanup[17164]: D45892BE3D4: message-id={D}\n"
    )
    found = read([_log(tmp_path, text)], SENDERS)
    assert found.thrown_away == {B}
    assert found.received == {B, D} and found.queued == {}  # D: received, not confirmed
