"""Reading a Postfix log for the uncertain messages it took (the real Postfix's log is read
in tests/test_send_postfix.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from digest.errors import ConfigError
from digest.send.serverlog import Taken, taken

A = "<3074f8a0a5d1b4fb91b3b4d274606e3d@worlddigest.example.org>"
B = "<46d3a338c14f23ee3e6e4c6909645dcb@worlddigest.example.org>"
C = "<99999999999999999999999999999999@worlddigest.example.org>"

SYSLOG = f"""\
Nov 29 14:55:01 relay postfix/smtpd[1234]: connect from localhost[127.0.0.1]
Nov 29 14:55:01 relay postfix/smtpd[1234]: 4F3B21C0A2: client=localhost[127.0.0.1]
Nov 29 14:55:01 relay postfix/cleanup[1236]: 4F3B21C0A2: message-id={A}
Nov 29 14:55:01 relay postfix/qmgr[1200]: 4F3B21C0A2: from=<b@w.org>, size=15213, nrcpt=1 (queue active)
Nov 29 14:55:01 relay postfix/smtpd[1234]: 5A0C11C0A3: client=localhost[127.0.0.1]
Nov 29 14:55:02 relay postfix/cleanup[1236]: 5A0C11C0A3: message-id={B}
Nov 29 14:55:32 relay postfix/smtpd[1234]: lost connection after DATA (96256 bytes) from localhost[127.0.0.1]
Nov 29 14:55:32 relay postfix/smtp[1240]: 4F3B21C0A2: to=<r@x.org>, relay=x[127.0.0.1]:25, status=sent (250)
"""


def _log(tmp_path: Path, text: str, name: str = "mail.log") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_only_a_message_queued_after_its_cleanup_line_is_taken(tmp_path: Path) -> None:
    path = _log(tmp_path, SYSLOG)
    # B's cleanup line has no qmgr line after it (its client went away): not taken.
    assert taken([path], [A, B, C]) == {A: Taken("4F3B21C0A2", path)}


def test_postfixs_own_log_file_a_second_instance_and_long_queue_ids(tmp_path: Path) -> None:
    text = (
        f"2026-11-29T14:55:01.123456+00:00 relay postfix-out/cleanup[77]: 4dLk2x0yKbz9Qn: message-id={B}\n"
        "2026-11-29T14:55:01.223456+00:00 relay postfix-out/qmgr[70]: 4dLk2x0yKbz9Qn: from=<>, size=9, "
        "nrcpt=1 (queue active)\n"
    )
    path = _log(tmp_path, text)
    assert taken([path], [B]) == {B: Taken("4dLk2x0yKbz9Qn", path)}


def test_a_queue_id_used_again_for_another_message_is_not_ours(tmp_path: Path) -> None:
    text = (
        f"Nov  9 01:02:03 h postfix/cleanup[1]: 4F3B21C0A2: message-id={A}\n"
        f"Nov  9 01:02:03 h postfix/cleanup[1]: 4F3B21C0A2: message-id={C}\n"  # A's went; the id names C's now
        "Nov  9 01:02:03 h postfix/qmgr[2]: 4F3B21C0A2: from=<a@b>, size=9, nrcpt=1 (queue active)\n"
    )
    assert taken([_log(tmp_path, text)], [A]) == {}


def test_rotated_logs_gzip_included_are_read_in_turn(tmp_path: Path) -> None:
    older = tmp_path / "mail.log.2.gz"
    with gzip.open(older, "wt") as f:
        f.write(SYSLOG)
    newer = _log(
        tmp_path,
        f"2026-11-29T14:55:01Z h postfix/cleanup[9]: 77AA: message-id={C}\n"
        "2026-11-29T14:55:01Z h postfix/qmgr[8]: 77AA: from=<a@b>, size=1, nrcpt=1 (queue active)\n",
    )
    assert taken([older, newer], [A, B, C]) == {A: Taken("4F3B21C0A2", older), C: Taken("77AA", newer)}


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"Nov 29 14:55:01 relay sshd[1]: Accepted publickey\n",
            "no message that Postfix received is logged in it",
        ),
        (None, "cannot read the server's log: No such file or directory"),
        (b"not gzip at all", "cannot read the server's log: Not a gzipped file"),
    ],
    ids=["not postfix", "missing", "bad gzip"],
)
def test_a_log_that_is_not_postfixs_or_cannot_be_read(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / ("mail.log.1.gz" if content == b"not gzip at all" else "mail.log")
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        taken([path], [A])
    assert e.value.path == path
    assert e.value.message.startswith(message), e.value.message
    assert "--server-log" in (e.value.hint or "") or "Postfix" in (e.value.hint or "")


def test_every_bad_log_is_reported_at_once(tmp_path: Path) -> None:
    from digest.errors import DigestErrors

    good = _log(tmp_path, SYSLOG)
    with pytest.raises(DigestErrors) as e:
        taken([tmp_path / "a.log", good, _log(tmp_path, "nothing\n", "b.log")], [A])
    assert [(err.path.name, err.message[:20]) for err in e.value.errors] == [
        ("a.log", "cannot read the serv"),
        ("b.log", "no message that Post"),
    ]


def test_text_a_client_gets_into_another_line_never_passes_for_postfixs(tmp_path: Path) -> None:
    """A HELO name or an address that Postfix logs in a reject line cannot forge a queued
    message: the program and queue id must begin the line's message."""
    forged = (
        "Nov 29 14:55:01 relay postfix/smtpd[5]: NOQUEUE: reject: RCPT from x[10.0.0.1]: 554 5.7.1 "
        f"<a@b>: Relay access denied; from=<x relay postfix/cleanup[1]: 99AA: message-id={A} y@z> to=<a@b> "
        "proto=ESMTP helo=<h>\n"
        "Nov 29 14:55:02 relay postfix/smtpd[5]: warning: helo=<relay postfix/qmgr[2]: 99AA: from=<a@b>, "
        "size=1, nrcpt=1 (queue active)>\n"
        f"Nov 29 14:55:03 relay postfix/cleanup[7]: 12BC: message-id={B}\n"
    )
    assert taken([_log(tmp_path, forged)], [A, B]) == {}
