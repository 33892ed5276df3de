"""Reading a Postfix log for what became of the uncertain messages (a real Postfix's log is
read in tests/test_send_postfix.py)."""

from __future__ import annotations

import gzip
import os
import threading
import time
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
Nov 29 14:55:32 relay postfix/smtpd[1234]: disconnect from localhost[127.0.0.1] ehlo=1 mail=2 rcpt=2 data=1/2
Nov 29 14:55:33 relay postfix/smtpd[1299]: connect from localhost[127.0.0.1]
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


def test_taken_thrown_away_held_and_absent(tmp_path: Path) -> None:
    path = _log(tmp_path, SYSLOG)
    found = read([path], SENDERS)
    assert found.taken == {A: Taken("4F3B21C0A2", path)}
    assert found.thrown_away == {B}
    assert found.held == {D}  # received, not (yet) queued
    assert C not in set(found.taken) | found.held | found.thrown_away  # absent


def test_the_send_is_in_the_logs_only_if_one_of_its_messages_is(tmp_path: Path) -> None:
    path = _log(tmp_path, SYSLOG)
    assert read([path], {C: "a@b"}, known={A: 0.0}).has_the_send
    assert not read([path], {C: "a@b"}, known={"<other@x>": 0.0}).has_the_send
    assert read([path], {D: "b@w.org"}).has_the_send  # an uncertain one's line is enough


def test_an_absent_message_never_got_there_only_where_the_logs_cover_its_time(tmp_path: Path) -> None:
    """No line of a message says it never got there only in logs of its time (from a minute
    before it was last recorded to 2 after), whose clock agrees with this machine's: the
    send's delivered messages tell, their cleanup lines against when they were recorded."""
    now = time.time()

    def stamp(t: float) -> str:
        return time.strftime("%b %e %H:%M:%S", time.localtime(t))

    around = f"{stamp(now - 900)} relay postfix/anvil[9]: statistics\n" + SYSLOG
    around += f"{stamp(now + 300)} relay postfix/anvil[9]: statistics\n"
    path = _log(tmp_path, around.replace("Nov 29 14:55", stamp(now)[:-3]))
    found = read([path], {C: "a@b"}, known={A: now, B: now})
    assert abs(found.clock_off) < 60
    assert found.covers(now) and found.covers(now, before=720)  # a claim; why no reply came in time
    assert not found.covers(now - 900) and not found.covers(now + 200)
    assert not found.covers(now - 300, before=720)
    # The same log read by a machine whose clock (or time zone) is an hour off: not known.
    skewed = read([path], {C: "a@b"}, known={A: now + 3600, B: now + 3600})
    assert abs(skewed.clock_off + 3600) < 60 and not skewed.covers(now + 3600) and not skewed.covers(now)
    assert read([path], {C: "a@b"}).clock_off is None  # nothing of the send to tell by
    iso = "%Y-%m-%dT%H:%M:%S+00:00"
    rfc3339 = f"{time.strftime(iso, time.gmtime(now - 800))} relay postfix/cleanup[1]: 1: message-id={A}\n"
    rfc3339 += f"{time.strftime(iso, time.gmtime(now + 200))} relay postfix/anvil[9]: statistics\n"
    assert read([_log(tmp_path, rfc3339, "rfc.log")], {C: "a@b"}, known={A: now - 800}).covers(now)


@pytest.mark.parametrize(
    "qmgr",
    [
        QUEUED.replace("from=<b@w.org>", "from=<x@w.org>"),
        QUEUED.replace("nrcpt=1", "nrcpt=2"),
    ],
    ids=["another sender", "more recipients"],
)
def test_a_queued_message_with_another_envelope_is_held_back(tmp_path: Path, qmgr: str) -> None:
    """Anybody can write a message with a reader's Message-ID; the envelope sender digest
    used for that reader (a signed VERP address) and one recipient tell it is ours. One
    with another envelope may be ours rewritten (sender_canonical_maps, always_bcc): held."""
    text = f"Nov 29 14:55:01 relay postfix/cleanup[1236]: 4F3B21C0A2: message-id={A}\nNov 29 14:55:01 {qmgr}\n"
    found = read([_log(tmp_path, text)], SENDERS)
    assert found.taken == {} and found.held == {A} and found.other_envelope == {A}


@pytest.mark.parametrize(
    "qmgr",
    [QUEUED.replace("relay postfix/", "other postfix/"), QUEUED.replace("postfix/qmgr", "postfix-out/qmgr")],
    ids=["another host", "another instance"],
)
def test_a_queue_id_counts_on_one_host_and_instance(tmp_path: Path, qmgr: str) -> None:
    text = f"Nov 29 14:55:01 relay postfix/cleanup[1236]: 4F3B21C0A2: message-id={A}\nNov 29 14:55:01 {qmgr}\n"
    found = read([_log(tmp_path, text)], SENDERS)
    assert found.taken == {} and found.held == {A} and not found.other_envelope


@pytest.mark.parametrize(
    "stamp, host",
    [
        ("2026-11-29T14:55:01.123456+00:00", "relay "),  # rsyslog's RFC 3339
        ("Nov 29 14:55:01", "relay "),  # syslog, journalctl, Postfix's maillog_file
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
    assert read([path], SENDERS).taken == {B: Taken("4dLk2x0yKbz9Qn", path)}


@pytest.mark.parametrize(
    "action, fate",
    [("hold", "taken"), ("discard", "taken"), ("reject", "thrown_away"), ("milter-reject", "thrown_away")],
)
def test_cleanups_own_actions(tmp_path: Path, action: str, fate: str) -> None:
    """header_checks and milters: hold and discard answer 250 (Postfix keeps or drops the
    message by its rules), reject refuses it; no qmgr line ever comes for any of them."""
    text = (
        f"Nov 29 14:55:01 relay postfix/cleanup[1]: 77AA: message-id={A}\n"
        f"Nov 29 14:55:01 relay postfix/cleanup[1]: 77AA: {action}: header Subject: x from x[127.0.0.1]\n"
    )
    found = read([_log(tmp_path, text)], SENDERS)
    assert (A in found.taken) == (fate == "taken") and (A in found.thrown_away) == (fate == "thrown_away")


def test_a_queue_id_used_again_for_another_message_is_not_ours(tmp_path: Path) -> None:
    text = (
        f"Nov  9 01:02:03 h postfix/cleanup[1]: 4F3B21C0A2: message-id={A}\n"
        f"Nov  9 01:02:03 h postfix/cleanup[1]: 4F3B21C0A2: message-id={C}\n"  # A's went; the id names C's now
        "Nov  9 01:02:03 h postfix/qmgr[2]: 4F3B21C0A2: from=<b@w.org>, size=9, nrcpt=1 (queue active)\n"
    )
    found = read([_log(tmp_path, text)], SENDERS)
    assert found.taken == {} and A in found.held and A not in found.other_envelope


def test_a_lost_session_is_the_last_message_of_that_session_only(tmp_path: Path) -> None:
    """Found in a review against a real Postfix: smtpd processes serve one session after
    another, and a spam bot whose recipient was refused pipelines DATA and hangs up. Its
    'lost connection after DATA' is not our message's, which that process took before."""
    text = (
        "Nov 29 15:00:00 relay postfix/smtpd[40]: connect from localhost[127.0.0.1]\n"
        "Nov 29 15:00:00 relay postfix/smtpd[40]: 651832D8121: client=localhost[127.0.0.1]\n"
        f"Nov 29 15:00:00 relay postfix/cleanup[41]: 651832D8121: message-id={A}\n"
        "Nov 29 15:00:00 relay postfix/smtpd[40]: disconnect from localhost[127.0.0.1] commands=5\n"
        "Nov 29 15:00:01 relay postfix/smtpd[40]: connect from unknown[10.0.0.9]\n"
        "Nov 29 15:00:01 relay postfix/smtpd[40]: NOQUEUE: reject: RCPT from unknown[10.0.0.9]: 554 5.7.1 no\n"
        "Nov 29 15:00:01 relay postfix/smtpd[40]: lost connection after DATA from unknown[10.0.0.9]\n"
        # the same session goes on after a refused recipient: not ours either
        "Nov 29 15:00:02 relay postfix/submission/smtpd[50]: connect from localhost[127.0.0.1]\n"
        "Nov 29 15:00:02 relay postfix/submission/smtpd[50]: 7C0D2E3F4A5: client=localhost[127.0.0.1]\n"
        f"Nov 29 15:00:02 relay postfix/cleanup[41]: 7C0D2E3F4A5: message-id={D}\n"
        "Nov 29 15:00:02 relay postfix/submission/smtpd[50]: NOQUEUE: reject: RCPT from x: 550 no such user\n"
        "Nov 29 15:00:02 relay postfix/submission/smtpd[50]: lost connection after DATA from x[127.0.0.1]\n"
    )
    found = read([_log(tmp_path, text)], SENDERS)
    assert found.thrown_away == set() and found.held == {A, D}


def test_a_session_lost_before_cleanup_logs_the_message_id(tmp_path: Path) -> None:
    """Postfix's processes log apart: the tests' Postfix logged the loss of a session in
    DATA before cleanup logged the Message-ID of what it got. Still thrown away; and a later
    message that gets the same queue id again is not (through port 587 too)."""
    text = (
        "Nov 29 15:14:59 relay postfix/smtpd[17159]: connect from unknown[127.0.0.1]\n"
        "Nov 29 15:14:59 relay postfix/smtpd[17159]: D45892BE3D4: client=unknown[127.0.0.1]\n"
        "Nov 29 15:14:59 relay postfix/smtpd[17159]: lost connection after DATA (20692 bytes) from x[::1]\n"
        f"Nov 29 15:14:59 relay postfix/cleanup[17164]: D45892BE3D4: message-id={B}\n"
        "Nov 29 16:00:00 relay postfix/submission/smtpd[17160]: D45892BE3D4: client=unknown[127.0.0.1]\n"
        f"Nov 29 16:00:00 relay postfix/cleanup[17164]: D45892BE3D4: message-id={D}\n"
    )
    found = read([_log(tmp_path, text)], SENDERS)
    assert found.thrown_away == {B}
    assert found.held == {D}  # received, not confirmed


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
        assert read(order, SENDERS).taken == {A: Taken("4F3B21C0A2", older)}


def test_a_later_attempt_that_reached_postfix_is_held_not_thrown_away(tmp_path: Path) -> None:
    """The first attempt was thrown away, the second got there and is not queued yet: held
    (not to be sent again), not thrown away."""
    text = SYSLOG.replace(f"message-id={D}", f"message-id={B}")
    found = read([_log(tmp_path, text)], SENDERS)
    assert B in found.held and B not in found.thrown_away and B not in found.taken


def test_a_pipe_an_overlong_line_and_nuls_left_by_a_crash(tmp_path: Path) -> None:
    """<(journalctl ...) is a pipe: peeking for gzip loses nothing of it. A line over
    MAX_LINE is skipped whole (its rest is no line of its own, whatever it holds)."""
    forged_rest = f"Nov 29 14:55:01 relay postfix/cleanup[1]: 99: message-id={C}\n"
    text = "Nov 29 14:55:00 relay postfix/smtpd[5]: x" + "y" * (64 << 10) + forged_rest + "\0\0\0" + SYSLOG
    read_fd, write_fd = os.pipe()

    def write() -> None:
        with os.fdopen(write_fd, "wb") as f:
            f.write(text.encode())

    writer = threading.Thread(target=write)
    writer.start()
    found = read([Path(f"/dev/fd/{read_fd}")], SENDERS)
    writer.join()
    os.close(read_fd)
    assert set(found.taken) == {A} and found.thrown_away == {B} and found.held == {D}


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
    assert found.taken == {} and A not in found.held


@pytest.mark.parametrize(
    "content, message",
    [
        (b"Nov 29 14:55:01 relay sshd[1]: Accepted publickey\n", "no line of Postfix's is in it"),
        (b"Nov 29 14:55:01 relay systemd[1]: Started postfix.service\n", "no line of Postfix's is in it"),
        (b"Nov 29 14:55:01 relay postfix/anvil[1]: statistics\n", "no message that Postfix received is logged"),
        (None, "cannot read the server's log: No such file or directory"),
        (gzip.compress(SYSLOG.encode())[:-30] + b"\xff" * 30, "cannot read the server's log: "),
        ("dir", "cannot read the server's log: Is a directory"),
    ],
    ids=["not postfix", "systemd", "no cleanup", "missing", "corrupt gzip", "a folder"],
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
        ("b.log", "no line of Postfix's"),
    ]


def test_a_missing_file_in_the_middle_leaves_a_hole_in_what_the_logs_cover(tmp_path: Path) -> None:
    """Found in a trial: given mail.log and mail.log.2.gz but not mail.log.1.gz, a message of
    the missing file's time looked as if it never got there, and would have gone twice."""
    now = time.time()

    def at(t: float, rest: str) -> str:
        return f"{time.strftime('%b %e %H:%M:%S', time.localtime(t))} relay postfix/{rest}\n"

    older = _log(
        tmp_path, at(now - 3600, "anvil[9]: x") + at(now - 30, f"cleanup[1]: 1: message-id={A}"), "2.log", 1
    )
    middle = _log(tmp_path, at(now - 10, "anvil[9]: x") + at(now + 590, "anvil[9]: x"), "1.log", 2)
    newer = _log(tmp_path, at(now + 600, "anvil[9]: x") + at(now + 3600, "anvil[9]: x"), "0.log", 3)
    known = {A: now - 30}  # delivered: the clocks agree
    assert not read([older, newer], {C: "a@b"}, known).covers(now)
    assert read([older, middle, newer], {C: "a@b"}, known).covers(now)


def test_a_file_without_a_cleanup_line_is_read_with_the_others(tmp_path: Path) -> None:
    """Found in a trial: a rotation right after a message's cleanup line left the next file
    with its qmgr line only; it is Postfix's log all the same, and the pair is found."""
    lines = SYSLOG.splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if f"message-id={D}" in line) + 1
    older = _log(tmp_path, "".join(lines[:cut]), "mail.log.1", mtime=1000)
    queued = QUEUED.replace("4F3B21C0A2", "6B1D22C0A4")
    newer = _log(tmp_path, f"Nov 29 14:55:40 {queued}\n", mtime=2000)
    assert "cleanup" not in newer.read_text()
    assert set(read([newer, older], SENDERS).taken) == {A, D}


@pytest.mark.parametrize(
    "stamp",
    ["9999-12-31T23:59:59", "0001-01-01T00:00:00+01:00", "1970-01-01T00:00:05+00:00", "Feb 30 01:02:03"],
)
def test_an_odd_time_stamp_is_no_time(tmp_path: Path, stamp: str) -> None:
    """Found in a review: a year 9999 stamp raised west of UTC; a clock not set at boot
    (1970) made a file seem to cover everything."""
    text = f"{stamp} relay postfix/anvil[9]: x\n" + SYSLOG
    found = read([_log(tmp_path, text)], SENDERS)
    assert all(first.year >= 2000 for first, _ in found.spans)


def test_files_are_read_in_the_order_of_their_lines_not_of_their_copies(tmp_path: Path) -> None:
    """Found in a review: a rotated file copied without -p is newer by its modification
    time; read last, its cleanup line came after the newer file's qmgr line."""
    lines = SYSLOG.splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if f"message-id={A}" in line) + 1
    older = _log(tmp_path, "".join(lines[:cut]), "mail.log.1", mtime=3000)  # copied later
    newer = _log(tmp_path, "".join(lines[cut:]).replace("Nov 29 14:55:01", "Nov 29 14:55:02"), mtime=2000)
    assert read([older, newer], SENDERS).taken == {A: Taken("4F3B21C0A2", older)}
