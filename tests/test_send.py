"""Sending against a real SMTP server on loopback (aiosmtpd): STARTTLS, AUTH, faults, crashes."""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import subprocess
import sys
import time
from email.header import decode_header, make_header
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner

from digest.cli import cli
from digest.message import verify_unsubscribe_token

from .conftest import EXAMPLE, FIXTURES
from .smtpserver import PASSWORD, USER, Server

LIST_ID = "world-digest.worlddigest.example.org"
SECRET = "test-secret-0123456789"
VALID = ["anna@example.com", "BORIS@example.com", "dmitri@example.org"]


@pytest.fixture
def tls_server(project: Path, tmp_path: Path, monkeypatch):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    with Server(context) as server:
        env = {
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(server.port),
            "DIGEST_SMTP_USERNAME": USER,
            "DIGEST_SMTP_PASSWORD": PASSWORD,
            "DIGEST_SMTP_SECURITY": "starttls",
            "DIGEST_SMTP_CAFILE": str(ca_file),
            "DIGEST_SECRET": SECRET,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield server


def test_send_over_implicit_tls(project: Path, tmp_path: Path, monkeypatch, runner: CliRunner) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with Server(context, implicit_tls=True) as server:
        for key, value in {
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(server.port),
            "DIGEST_SMTP_USERNAME": USER,
            "DIGEST_SMTP_PASSWORD": PASSWORD,
            "DIGEST_SMTP_SECURITY": "tls",
            "DIGEST_SMTP_CAFILE": str(ca_file),
            "DIGEST_SECRET": SECRET,
        }.items():
            monkeypatch.setenv(key, value)
        result = _send(runner, "--list", str(_list(tmp_path, 3)), "--yes")
        assert result.exit_code == 0, result.output
        assert len(server.recorder.received) == 3


def test_an_untrusted_certificate_is_refused(
    tls_server: Server, runner: CliRunner, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DIGEST_SMTP_CAFILE")
    result = _send(runner, "--list", str(_list(tmp_path, 2)), "--yes")
    assert result.exit_code == 3  # stopped
    assert result.stderr.startswith("Error: TLS with 127.0.0.1 failed: CERTIFICATE_VERIFY_FAILED")
    assert tls_server.recorder.received == []


@pytest.fixture
def plain_server(project: Path, monkeypatch):
    with Server() as server:
        for key, value in {
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(server.port),
            "DIGEST_SMTP_SECURITY": "none",
            "DIGEST_SECRET": SECRET,
        }.items():
            monkeypatch.setenv(key, value)
        yield server


def _send(runner: CliRunner, *args: str):
    return runner.invoke(cli, ["send", EXAMPLE, *args])


def _list(tmp_path: Path, n: int, name: str = "list.csv") -> Path:
    path = tmp_path / name
    lines = ["email,name"] + [f"reader{i:05d}@example.com,Reader {i}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def test_send_over_starttls_with_auth(tls_server: Server, runner: CliRunner) -> None:
    result = _send(runner, "--list", str(FIXTURES / "subscribers.csv"), "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:5] == [
        "From:       The World Digest <digest@worlddigest.example.org>",
        "Subject:    Putin and Biden talk again: what was said",
        f"Server:     127.0.0.1:{tls_server.port} (starttls)",
        "Recipients: 4 to send",
        "Skipped:    2 (1 invalid, 0 unsubscribed, bounced or complained, 1 duplicate)",
    ]
    # chloé@ has a UTF-8 local part: sent with SMTPUTF8, which this server offers.
    assert result.stdout.splitlines()[-1].startswith("4 sent, 0 failed, 0 deferred")
    assert "subscribers.csv:4: invalid address 'not-an-address'" in result.stderr
    assert "subscribers.csv:5: the address of line 2 again (skipped)" in result.stderr
    got = tls_server.recorder.by_recipient()
    assert sorted(got) == sorted([a.lower() for a in VALID] + ["chloé@example.com"])
    assert all(len(copies) == 1 for copies in got.values())
    boris = _parse(got["boris@example.com"][0].data)
    assert boris["To"].addresses[0].display_name == "Борис Петров"
    assert boris["To"].addresses[0].addr_spec == "BORIS@example.com"
    assert boris["List-Id"] == f"The World Digest <{LIST_ID}>"
    assert boris["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https = boris["List-Unsubscribe"].split(",")[0].strip(" <>")
    token = https.rsplit("token=", 1)[1]
    assert verify_unsubscribe_token(SECRET, LIST_ID, "boris@example.com", token)
    for kind in ("plain", "html"):
        body = boris.get_body((kind,)).get_content()
        assert "We remind our readers that publication of articles" in " ".join(body.split())
        assert "BORIS@example.com" in body
    # The envelope sender is the delivery's signed VERP address (bounce_address, issue 12).
    assert re.fullmatch(
        r"bounces\+[0-9a-z]+\.[a-z2-7]{16}@worlddigest\.example\.org", got["anna@example.com"][0].sender
    )


def test_a_second_run_sends_nobody_twice(tls_server: Server, runner: CliRunner) -> None:
    args = ["--list", str(FIXTURES / "subscribers.csv"), "--yes"]
    assert _send(runner, *args).exit_code == 0
    again = _send(runner, *args)
    assert again.exit_code == 0
    assert "Recipients: 0 to send, 4 already sent" in again.stdout
    assert again.stdout.splitlines()[-1] == "Nothing to send."
    assert len(tls_server.recorder.received) == 4


def test_faults_retry_fail_and_go_on(
    plain_server: Server, runner: CliRunner, tmp_path: Path, monkeypatch
) -> None:
    rec = plain_server.recorder
    rec.faults["reader00001@example.com"] = ["451 4.3.0 try later", "250 OK"]
    rec.faults["reader00002@example.com"] = ["550 5.1.1 no such user"]
    rec.faults["reader00003@example.com"] = ["421 4.7.0 busy, closing", "250 OK"]
    rec.faults["reader00004@example.com"] = ["452 4.2.2 mailbox full"]  # never clears
    rec.drop_in_data.add("reader00005@example.com")  # dropped after the final dot
    result = _send(
        runner, "--list", str(_list(tmp_path, 8)), "--yes", "--workers", "2", "--retry-delay", "0.05"
    )
    assert result.exit_code == 4, result.output  # some left for a rerun
    assert result.stdout.splitlines()[-3].startswith("5 sent, 1 failed, 1 deferred, 1 uncertain")
    assert result.stdout.splitlines()[-1] == (
        "Left for a rerun: 1 deferred, 1 uncertain (sent again only with --resend-uncertain; "
        "they may then get two copies)."
    )
    got = rec.by_recipient()
    assert sorted(got) == [f"reader{i:05d}@example.com" for i in (0, 1, 3, 6, 7)]
    assert all(len(v) == 1 for v in got.values())
    status = runner.invoke(cli, ["status", EXAMPLE])
    # The uncertain one's line gives the Message-ID its message went out with (the server read
    # it, then dropped the connection): to look up in the server's log.
    [dropped] = rec.dropped
    assert status.stdout.splitlines()[:4] == [
        f"{EXAMPLE}: 5 sent, 1 failed, 1 deferred, 0 pending, 1 uncertain",
        "  failed    reader00002@example.com: 550 5.1.1 no such user",
        "  deferred  reader00004@example.com: 452 4.2.2 mailbox full",
        "  uncertain reader00005@example.com: no reply after the message was sent: "
        f"connection closed by the server; its message: Message-ID {_parse(dropped.data)['Message-ID']}",
    ]
    # The deferred one goes again on the next run; the failed and the uncertain do not.
    rec.faults.clear()
    again = _send(runner, "--list", str(_list(tmp_path, 8)), "--yes")
    assert again.stdout.splitlines()[-3].startswith("1 sent, 0 failed"), again.output
    assert again.exit_code == 4  # the uncertain one is still left
    assert len(rec.by_recipient()["reader00004@example.com"]) == 1
    assert "reader00005@example.com" not in rec.by_recipient()
    last = _send(runner, "--list", str(_list(tmp_path, 8)), "--yes", "--resend-uncertain")
    assert last.exit_code == 0, last.output
    assert len(rec.by_recipient()["reader00005@example.com"]) == 1


def test_refused_login_stops_with_nothing_marked_sent(
    tls_server: Server, runner: CliRunner, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "wrong-password-xyz")
    result = runner.invoke(cli, ["--verbose", "send", EXAMPLE, "--list", str(_list(tmp_path, 5)), "--yes"])
    assert result.exit_code == 3
    assert "Error: the SMTP server refused the login: 535" in result.stderr
    assert "hint: check DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD" in result.stderr
    assert "wrong-password-xyz" not in result.output
    assert tls_server.recorder.received == []
    status = runner.invoke(cli, ["status", EXAMPLE]).stdout
    assert status.startswith(f"{EXAMPLE}: 0 sent, 0 failed, 0 deferred, 5 pending, 0 uncertain")


def test_password_is_never_printed(tls_server: Server, runner: CliRunner, tmp_path: Path, caplog) -> None:
    caplog.set_level("DEBUG")
    result = runner.invoke(cli, ["--verbose", "send", EXAMPLE, "--list", str(_list(tmp_path, 3)), "--yes"])
    assert result.exit_code == 0
    assert PASSWORD not in result.output and PASSWORD not in caplog.text
    assert SECRET not in result.output and SECRET not in caplog.text


def test_refused_connection(project: Path, runner: CliRunner, monkeypatch, tmp_path) -> None:
    from .smtpserver import free_port

    port = free_port()
    for key, value in {
        "DIGEST_SMTP_HOST": "127.0.0.1",
        "DIGEST_SMTP_PORT": str(port),
        "DIGEST_SMTP_SECURITY": "none",
        "DIGEST_SECRET": SECRET,
    }.items():
        monkeypatch.setenv(key, value)
    result = _send(runner, "--list", str(_list(tmp_path, 3)), "--yes")
    assert result.exit_code == 3
    assert result.stderr.startswith(f"Error: cannot connect to 127.0.0.1:{port} (none):")


def test_too_many_failures_in_a_row_stop_the_send(
    plain_server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    for i in range(25):
        plain_server.recorder.faults[f"reader{i:05d}@example.com"] = ["550 5.7.1 blocked"]
    result = _send(runner, "--list", str(_list(tmp_path, 40)), "--yes", "--workers", "1")
    assert result.exit_code == 3
    assert (
        "Error: stopped after 20 readers in a row were not delivered (20 failed); "
        "last reply: 550 5.7.1 blocked" in result.stderr
    )
    assert "--retry-failed" in result.stderr
    assert plain_server.recorder.received == []


def test_readers_deferred_in_a_row_stop_without_naming_retry_failed(
    plain_server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """A server deferring everyone (Postfix: smtpd_recipient_restrictions = defer): the stop
    says they are left for a rerun, not failed (a new user read '--retry-failed' and looked
    for failed readers that did not exist)."""
    for i in range(25):
        plain_server.recorder.faults[f"reader{i:05d}@example.com"] = ["450 4.3.2 try again later"]
    result = _send(runner, "--list", str(_list(tmp_path, 30)), "--yes", "--workers", "1", "--retries", "0")
    assert result.exit_code == 3
    assert (
        "Error: stopped after 20 readers in a row were not delivered (20 deferred); "
        "last reply: 450 4.3.2 try again later" in result.stderr
    )
    assert "--retry-failed" not in result.stderr
    assert "Stopped: 0 sent, 0 failed, 30 still due" in result.stdout


def test_no_smtp_settings(project: Path, runner: CliRunner, tmp_path: Path) -> None:
    result = _send(runner, "--list", str(_list(tmp_path, 1)), "--yes")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: no SMTP server is configured\n"
        "  hint: set DIGEST_SMTP_HOST (and DIGEST_SMTP_PORT, DIGEST_SMTP_USERNAME, "
        "DIGEST_SMTP_PASSWORD) in .env or the environment, or write files with --outbox DIR\n"
    )


def test_no_password_in_the_clear_to_another_host(project: Path, runner: CliRunner, tmp_path: Path) -> None:
    (project / ".env").write_text(
        "DIGEST_SMTP_HOST=192.0.2.10\nDIGEST_SMTP_SECURITY=none\nDIGEST_SMTP_USERNAME=u\n"
        "DIGEST_SMTP_PASSWORD=pw-never-shown\nDIGEST_SECRET=x\n"
    )
    result = _send(runner, "--list", str(_list(tmp_path, 1)), "--yes")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: DIGEST_SMTP_SECURITY=none would send the password unencrypted to 192.0.2.10"
    )
    assert "pw-never-shown" not in result.output


def test_a_real_send_needs_yes_without_a_terminal(
    plain_server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    result = _send(runner, "--list", str(_list(tmp_path, 2)))
    assert result.exit_code == 1
    assert "Error: a real send needs confirmation\n  hint: pass --yes" in result.stderr
    assert plain_server.recorder.received == []


def test_test_copies_are_outside_the_journal(plain_server: Server, runner: CliRunner) -> None:
    result = _send(runner, "--test", "editor@example.org", "--test", "desk@example.org")
    assert result.exit_code == 0, result.output
    got = plain_server.recorder.by_recipient()
    assert sorted(got) == ["desk@example.org", "editor@example.org"]
    assert _parse(got["desk@example.org"][0].data)["Subject"] == (
        "[TEST] Putin and Biden talk again: what was said"
    )
    assert runner.invoke(cli, ["status", EXAMPLE]).stdout == f"{EXAMPLE}: not sent yet\n"


def test_a_test_copy_to_a_subscriber_carries_their_fields(plain_server: Server, runner: CliRunner) -> None:
    added = runner.invoke(cli, ["subscribers", "add", "ivy@example.net", "--field", "name=Ivy Chen"])
    assert added.exit_code == 0, added.output
    result = _send(runner, "--test", "ivy@example.net", "--test", "desk@example.org")
    assert result.exit_code == 0, result.output
    got = plain_server.recorder.by_recipient()
    assert str(_parse(got["ivy@example.net"][0].data)["To"]) == "Ivy Chen <ivy@example.net>"
    assert str(_parse(got["desk@example.org"][0].data)["To"]) == "desk@example.org"  # not a subscriber


def test_a_test_copy_the_server_refuses_gives_exit_code_4(plain_server: Server, runner: CliRunner) -> None:
    plain_server.recorder.faults["desk@example.org"] = ["550 5.1.1 no such user"]
    result = _send(runner, "--test", "editor@example.org", "--test", "desk@example.org")
    assert result.exit_code == 4, result.output  # a script can tell a refused test copy
    assert "test copy to editor@example.org: 250" in result.stdout
    assert "test copy to desk@example.org: not sent: 550 5.1.1 no such user" in result.stdout


def test_to_a_list_address_once(plain_server: Server, runner: CliRunner) -> None:
    for _ in range(2):
        assert _send(runner, "--to", "digest-list@lists.example.org", "--yes").exit_code == 0
    got = plain_server.recorder.by_recipient()
    assert list(got) == ["digest-list@lists.example.org"]
    assert len(got["digest-list@lists.example.org"]) == 1
    msg = _parse(got["digest-list@lists.example.org"][0].data)
    assert msg["To"] == "digest-list@lists.example.org"
    assert msg["List-Unsubscribe"].startswith("<https://worlddigest.example.org/unsubscribe>")


def test_dry_run_connects_to_nothing(plain_server: Server, runner: CliRunner, tmp_path: Path) -> None:
    result = _send(runner, "--list", str(_list(tmp_path, 5)), "--dry-run")
    assert result.exit_code == 0
    assert "Server:     nothing (dry run)" in result.stdout
    assert (
        result.stdout.splitlines()[-1]
        == "5 prepared (every reader, whatever the journal says; nothing sent), 0 failed, 0 deferred"
    )
    assert plain_server.recorder.received == []
    assert plain_server.recorder.rcpt_seen == {}
    assert runner.invoke(cli, ["status", EXAMPLE]).stdout == f"{EXAMPLE}: not sent yet\n"


def test_a_dry_run_plans_as_the_real_send_would(
    plain_server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """After a run with a longer list, a dry run with a shorter one shows what the real send
    would: those already sent, and those due from the earlier run (found in a new user's
    trial: it said '2 to send', and the real send then mailed 4)."""
    plain_server.recorder.faults.update({f"reader{i:05d}@example.com": ["451 4.3.0 later"] for i in (4, 5)})
    first = _send(runner, "--list", str(_list(tmp_path, 6)), "--yes", "--retries", "0")
    assert first.exit_code == 4, first.output
    short = str(_list(tmp_path, 3, "short.csv"))
    dry = _send(runner, "--list", short, "--dry-run")
    real = _send(runner, "--list", short)  # no terminal: shows the plan, then refuses to ask
    assert dry.exit_code == 0 and real.exit_code == 1
    for result in (dry, real):
        assert "Recipients: 2 to send, 3 already sent" in result.stdout, result.stdout
        assert "Earlier:    2 of them are due from an earlier run of this issue and not in this list" in (
            result.stdout
        )
    assert len(plain_server.recorder.received) == 4


def test_a_reader_whose_message_cannot_be_written_is_named_by_dry_run_and_outbox(
    plain_server: Server, runner: CliRunner, tmp_path: Path, monkeypatch
) -> None:
    """A dry run and an outbox run (whose journals are gone when they end) name the reader whose
    message cannot be written, as 'digest status' does for a real send; nothing crashes."""
    from digest.message import MessageTemplate

    real_pieces = MessageTemplate.pieces
    real_personalise = MessageTemplate.personalise

    def refuse(recipient) -> None:
        if recipient is not None and recipient.email == "reader00001@example.com":
            raise ValueError("cannot encode the To header faithfully")

    monkeypatch.setattr(
        MessageTemplate, "pieces", lambda self, r, **kw: (refuse(r), real_pieces(self, r, **kw))[1]
    )
    monkeypatch.setattr(
        MessageTemplate, "personalise", lambda self, r, **kw: (refuse(r), real_personalise(self, r, **kw))[1]
    )
    path = str(_list(tmp_path, 3))
    dry = _send(runner, "--list", path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "2 prepared (every reader, whatever the journal says; nothing sent), 1 failed" in dry.stdout
    assert (
        "  failed    reader00001@example.com: cannot be written as a message: cannot encode the To header"
        in (dry.stdout)
    )
    out = _send(runner, "--list", path, "--outbox", str(tmp_path / "out"))
    assert out.exit_code == 0, out.output
    assert "2 written, 1 failed" in out.stdout
    assert "  failed    reader00001@example.com: cannot be written as a message" in out.stdout
    assert "digest status" not in out.stdout  # its journal is gone: nothing to see there
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "reader00000_at_example.com.eml",
        "reader00002_at_example.com.eml",
    ]


def test_names_as_csv_exports_hold_them_reach_their_readers(
    plain_server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """A cut-short encoded word ("=?utf-8?b? é" once stopped the whole send, every rerun),
    control characters and a long name with periods: every reader gets the message, with
    the name as the list gives it (control characters as spaces)."""
    names = [
        "=?utf-8?b? é",
        "Zoë\x00Ångström\x1b",
        "Prof. Dr. med. Karl-Theodor Maria Nikolaus Johann Jacob Philipp Franz Joseph Sylvester",
    ]
    path = tmp_path / "names.csv"
    rows = "".join(f'reader{i}@example.com,"{n}"\n' for i, n in enumerate(names))
    path.write_text("email,name\n" + rows, encoding="utf-8")
    assert (
        "3 prepared (every reader, whatever the journal says; nothing sent), 0 failed"
        in _send(runner, "--list", str(path), "--dry-run").stdout
    )
    result = _send(runner, "--list", str(path), "--yes")
    assert result.exit_code == 0, result.output
    assert "3 sent, 0 failed" in result.stdout
    got = plain_server.recorder.by_recipient()
    for i, name in enumerate(["=?utf-8?b? é", "Zoë Ångström", names[2]]):
        (copy,) = got[f"reader{i}@example.com"]
        msg = email.message_from_bytes(copy.data, policy=email.policy.strict)
        assert str(make_header(decode_header(copy.data.split(b"\r\nTo: ")[1].split(b" <")[0].decode()))) == name
        assert msg["To"].addresses[0].addr_spec == f"reader{i}@example.com"


def test_unsubscribed_addresses_are_skipped(plain_server: Server, runner: CliRunner, tmp_path: Path) -> None:
    out = runner.invoke(cli, ["unsubscribe", "Reader00001@example.com", "reader00001@example.com"])
    assert out.stdout == "unsubscribed 1 address (1 already were)\n"
    result = _send(runner, "--list", str(_list(tmp_path, 3)), "--yes")
    assert "Skipped:    1 (0 invalid, 1 unsubscribed, bounced or complained, 0 duplicate)" in result.stdout
    assert "reader00001@example.com" not in plain_server.recorder.by_recipient()


def test_a_changed_issue_is_refused_unless_forced(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    path = _list(tmp_path, 3)
    assert _send(runner, "--list", str(path), "--yes").exit_code == 0
    story = project / "issues" / EXAMPLE / "five-key-takeaways-from-latest-putin-biden-call.md"
    story.write_text(story.read_text().replace("50-minute", "fifty-minute"))
    bigger = _list(tmp_path, 5, "bigger.csv")
    result = _send(runner, "--list", str(bigger), "--yes")
    assert result.exit_code == 1
    assert f"issues/{EXAMPLE}: issue {EXAMPLE} changed after its send started" in result.stderr
    forced = _send(runner, "--list", str(bigger), "--yes", "--force")
    assert forced.exit_code == 0
    assert len(plain_server.recorder.received) == 5


def test_outbox_writes_one_personalised_file_each(
    project: Path, runner: CliRunner, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DIGEST_SECRET", SECRET)
    out = tmp_path / "OUT"
    result = _send(runner, "--list", str(FIXTURES / "subscribers.csv"), "--outbox", str(out))
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "BORIS_at_example.com.eml",
        "anna_at_example.com.eml",
        "chloé_at_example.com.eml",
        "dmitri_at_example.org.eml",
    ]
    assert not list(project.joinpath(".digest").glob("scratch-*"))  # no copy of the list left
    dmitri = _parse((out / "dmitri_at_example.org.eml").read_bytes())
    assert dmitri["To"].addresses[0].display_name == 'Dmitri "Dima" Ivanov'
    assert "dmitri@example.org" in dmitri.get_body(("plain",)).get_content()


def test_outbox_gives_every_address_a_file_of_its_own(tmp_path: Path) -> None:
    import asyncio

    from digest.send.outbox import OutboxMessenger

    out = tmp_path / "OUT"
    out.mkdir()
    outbox = OutboxMessenger(out)
    readers = ["a/b@example.org", "a_b@example.org", "a%2Fb@example.org", "a_at_b@example.org"]

    async def write_all() -> None:
        for i, address in enumerate(readers):
            await outbox.push("news@example.org", address, b"message %d\r\n" % i)

    asyncio.run(write_all())
    files = sorted(out.iterdir())
    assert len(files) == 4
    assert sorted(p.read_bytes() for p in files) == [b"message %d\r\n" % i for i in range(4)]
    assert (out / "a%2Fb_at_example.org.eml").read_bytes() == b"message 0\r\n"
    # A valid address longer than a file name may be: a prefix of it and a hash.
    long_address = "r" * 64 + "@" + ".".join(["d" * 60] * 3) + ".example.org"
    asyncio.run(outbox.push("news@example.org", long_address, b"long\r\n"))
    [long_file] = [p for p in out.iterdir() if p.read_bytes() == b"long\r\n"]
    assert len(long_file.name.encode()) <= 220 and long_file.name.startswith("r" * 64 + "_at_")


def test_a_list_that_cannot_be_read_is_one_clear_error(
    plain_server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    result = _send(runner, "--list", str(tmp_path / "missing.csv"), "--yes")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {tmp_path / 'missing.csv'}: cannot read the list: No such file")
    assert "internal error" not in result.stderr and "Traceback" not in result.output


def test_a_state_folder_where_the_lock_cannot_be_written_stops_before_anything(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    (project / ".digest").mkdir(exist_ok=True)
    (project / ".digest" / "locks").write_text("not a folder")  # as a read-only folder would, for root too
    result = _send(runner, "--list", str(_list(tmp_path, 3)), "--yes")
    assert result.exit_code == 1 and "internal error" not in result.stderr
    assert "cannot read the send's lock: Not a directory" in result.stderr  # at the plan, before the yes
    assert "nothing was sent" in result.stderr
    assert plain_server.recorder.received == []
    # Where it can be read but not written (a read-only folder for another user), taking it fails so:
    from digest.config import load_project
    from digest.send import JournalError, only_sender

    with pytest.raises(JournalError) as e, only_sender(load_project(project), EXAMPLE):
        pass
    assert e.value.message.startswith("cannot write the send's lock")


def test_to_an_address_the_list_send_reached_says_it_sends_another_copy(
    plain_server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    assert _send(runner, "--list", str(_list(tmp_path, 2)), "--yes").exit_code == 0
    result = _send(runner, "--to", "Reader00000@example.com", "--yes")
    assert result.exit_code == 0, result.output
    assert (
        "Also:       Reader00000@example.com got this issue from the list send already; "
        "this sends another copy\n" in result.stdout
    )
    other = _send(runner, "--to", "list@lists.example.org", "--yes")  # a list address: no such line
    assert other.exit_code == 0 and "Also:" not in other.stdout


@pytest.mark.parametrize(("secret", "warned"), [("change-me", True), ("short", True), (SECRET, False)])
def test_a_weak_secret_is_warned_about(
    plain_server: Server, runner: CliRunner, tmp_path: Path, monkeypatch, secret: str, warned: bool
) -> None:
    monkeypatch.setenv("DIGEST_SECRET", secret)
    result = _send(runner, "--list", str(_list(tmp_path, 1)), "--dry-run")
    assert result.exit_code == 0, result.output
    assert ("Warning: DIGEST_SECRET is short or a placeholder" in result.stderr) is warned
    assert repr(secret) not in result.output and f"={secret}" not in result.output  # never shown


def test_a_missing_or_empty_secret_says_where(runner: CliRunner, tmp_path: Path, monkeypatch) -> None:
    """An empty DIGEST_SECRET in the environment wins over .env: the error said '.env: … is
    not set' of a .env that sets it."""
    monkeypatch.setenv("DIGEST_SECRET", "")
    empty = _send(runner, "--list", str(_list(tmp_path, 1)), "--dry-run")
    assert empty.exit_code == 1
    assert empty.stderr.startswith("Error: DIGEST_SECRET is empty in the environment; it signs")
    monkeypatch.delenv("DIGEST_SECRET")
    unset = _send(runner, "--list", str(_list(tmp_path, 1)), "--dry-run")
    assert unset.exit_code == 1 and unset.stderr.startswith("Error: .env: DIGEST_SECRET is not set; it signs")


def test_to_one_address_however_spelt_is_sent_once(plain_server: Server, runner: CliRunner) -> None:
    first = _send(runner, "--to", "List@Lists.Example.org", "--yes")
    assert first.exit_code == 0, first.output
    for spelling in ("list@lists.example.org", " LIST@LISTS.EXAMPLE.ORG"):
        again = _send(runner, "--to", spelling, "--yes")
        assert again.exit_code == 0, again.output
        assert "Nothing to send." in again.stdout
    assert len(plain_server.recorder.received) == 1
    status = runner.invoke(cli, ["status", EXAMPLE]).stdout
    assert status.count(" to ") == 1  # one --to send, not three


def test_state_that_other_users_can_read_is_warned_about(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    first = _send(runner, "--list", str(_list(tmp_path, 1)), "--yes")
    assert first.exit_code == 0 and "every user of this machine" not in first.stderr  # made private
    state = project / ".digest"
    assert {p.name: p.stat().st_mode & 0o777 for p in [state, *state.iterdir()] if p.is_dir()} == {
        ".digest": 0o700,  # not only the folders below it (mkdir's mode is the last folder's)
        "locks": 0o700,
        "send-logs": 0o700,
    }
    assert "every user" not in _send(runner, "--list", str(_list(tmp_path, 1)), "--dry-run").stderr
    (project / ".digest").chmod(0o755)  # as an older digest left them
    (project / ".digest" / "journal.sqlite3").chmod(0o644)
    result = _send(runner, "--list", str(_list(tmp_path, 1)), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Warning: every user of this machine can read .digest .digest/journal.sqlite3" in result.stderr
    (project / ".digest").chmod(0o750)  # shared with a group on purpose: fine
    (project / ".digest" / "journal.sqlite3").chmod(0o640)
    assert "every user" not in _send(runner, "--list", str(_list(tmp_path, 1)), "--dry-run").stderr


def test_names_cannot_inject_headers(plain_server: Server, runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "evil.csv"
    path.write_text(
        'email,name\nvictim@example.com,"Eve\r\nBcc: spy@example.net"\nzoe@example.com,Zoë Ørsted\n'
    )
    refused = _send(runner, "--list", str(path), "--yes")  # a line break in a field: refused
    assert refused.exit_code == 1
    assert "evil.csv:2: a quoted field runs from line 2 to line 3" in refused.stderr
    path.write_text(
        'email,name\nvictim@example.com,"Eve =?utf-8?q?Bcc:?= spy@example.net"\nzoe@example.com,Zoë Ørsted\n'
    )
    assert _send(runner, "--list", str(path), "--yes").exit_code == 0
    got = plain_server.recorder.by_recipient()
    assert sorted(got) == ["victim@example.com", "zoe@example.com"]
    msg = _parse(got["victim@example.com"][0].data)
    assert msg["Bcc"] is None
    assert msg["To"].addresses[0].display_name == "Eve =?utf-8?q?Bcc:?= spy@example.net"
    assert _parse(got["zoe@example.com"][0].data)["To"].addresses[0].display_name == "Zoë Ørsted"


def _spawn_send(project: Path, list_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "send", EXAMPLE, "--list", str(list_path), "--yes", *extra],
        cwd=project,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def test_ctrl_c_finishes_in_flight_and_resumes(plain_server: Server, project: Path, tmp_path: Path) -> None:
    path = _list(tmp_path, 200)
    proc = _spawn_send(project, path, "--rate", "50", "--workers", "2")
    _wait_for(lambda: len(plain_server.recorder.received) >= 20)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = out.splitlines()[-1]
    assert summary.startswith("Interrupted: ") and summary.endswith(
        "still due, 0 uncertain; run the same command to resume "
        f"(or 'digest cancel {EXAMPLE}' to stop it for good)."
    )
    sent = int(summary.split()[1])
    assert sent == len(plain_server.recorder.received)
    status = subprocess.run(
        [sys.executable, "-m", "digest", "status", EXAMPLE], cwd=project, capture_output=True, text=True
    ).stdout
    assert status.startswith(f"{EXAMPLE}: {sent} sent, 0 failed, 0 deferred, {200 - sent} pending, 0 uncertain")
    rerun = _spawn_send(project, path)
    rerun.communicate(timeout=60)
    assert rerun.returncode == 0
    got = plain_server.recorder.by_recipient()
    assert len(got) == 200 and all(len(v) == 1 for v in got.values())


def test_sigkill_mid_send_loses_nobody_and_sends_nobody_twice(
    plain_server: Server, project: Path, tmp_path: Path
) -> None:
    path = _list(tmp_path, 1000)
    proc = _spawn_send(project, path, "--workers", "4")
    _wait_for(lambda: len(plain_server.recorder.received) >= 300, timeout=60)
    proc.kill()
    proc.communicate()
    accepted_before = {r.recipient.lower() for r in plain_server.recorder.received}
    rerun = _spawn_send(project, path)
    out, err = rerun.communicate(timeout=120)
    uncertain_line = next((ln for ln in out.splitlines() if ln.startswith("Uncertain:")), None)
    status = subprocess.run(
        [sys.executable, "-m", "digest", "status", EXAMPLE], cwd=project, capture_output=True, text=True
    ).stdout
    uncertain = {
        line.split()[1].rstrip(":") for line in status.splitlines()[1:] if line.split()[0] == "uncertain"
    }
    assert rerun.returncode == (4 if uncertain else 0), err  # 4: some left for a rerun
    if uncertain:
        assert uncertain_line is not None
    got = plain_server.recorder.by_recipient()
    everyone = {f"reader{i:05d}@example.com" for i in range(1000)}
    # Nobody got two copies; everybody but the uncertain got one.
    assert all(len(v) == 1 for v in got.values())
    assert everyone - uncertain <= set(got)
    assert accepted_before <= set(got)
    # Each uncertain one's line gives the Message-ID its message went out with: one the server
    # took before the kill (if any) carries it, so the server's log can tell.
    ids = dict(re.findall(r"^  uncertain (\S+): .*; its message: Message-ID (<[^>]+>)$", status, re.M))
    assert set(ids) == uncertain, status
    for address, message_id in ids.items():
        assert all(_parse(copy.data)["Message-ID"] == message_id for copy in got.get(address, []))
    # The uncertain are those the killed process had in flight: at most one per worker.
    assert len(uncertain) <= 4
    print(f"uncertain after SIGKILL: {len(uncertain)}; accepted before: {len(accepted_before)}")
    counts = status.splitlines()[0]
    assert counts == (
        f"{EXAMPLE}: {1000 - len(uncertain)} sent, 0 failed, 0 deferred, 0 pending, {len(uncertain)} uncertain"
    )
    # --resend-uncertain completes the list.
    final = _spawn_send(project, path, "--resend-uncertain")
    final.communicate(timeout=60)
    got = plain_server.recorder.by_recipient()
    assert set(got) == everyone


def test_the_sends_of_an_issue_are_matched_exactly(tmp_path: Path) -> None:
    """'_' in an issue slug is no wildcard: a --to send of a-b is not a send of a_b."""
    from digest.send.journal import Journal

    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        journal.start("a-b to list@example.org", "hash")
        journal.start("a_b", "hash")
        assert journal.sends("a_b") == ["a_b"]
        assert journal.sends("a-b") == ["a-b to list@example.org"]
        assert journal.sends("a%b") == []
    finally:
        journal.close()


def test_status_of_an_unknown_issue_is_an_error(project: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["status", "2099-01-01"])
    assert result.exit_code == 1
    assert result.stderr == "Error: issues: no issue '2099-01-01'\n  hint: known issues: 2021-12-31\n"
    assert runner.invoke(cli, ["status", EXAMPLE]).stdout == f"{EXAMPLE}: not sent yet\n"


def test_a_second_process_sending_the_same_issue_is_refused(
    plain_server: Server, project: Path, tmp_path: Path
) -> None:
    path = _list(tmp_path, 40)
    first = _spawn_send(project, path, "--rate", "5", "--workers", "1")  # about 8 s
    _wait_for(lambda: len(plain_server.recorder.received) >= 3)
    second = _spawn_send(project, path, "--resend-uncertain")  # would take the message in flight too
    out, err = second.communicate(timeout=30)
    assert first.poll() is None  # still sending when the second was refused
    assert second.returncode == 1, out + err
    assert "Recipients:" not in out  # refused before the plan, not after the confirmation
    assert "Traceback" not in err
    assert re.search(
        rf"Error: \S*locks/send-[0-9a-f]{{16}}\.lock: {EXAMPLE} is being sent by another digest "
        rf"process \(pid {first.pid}\)\n",
        err,
    ), err
    assert "wait for it to finish" in err
    first.communicate(timeout=60)
    assert first.returncode == 0
    after = _spawn_send(project, path)  # the lock went with the first process
    out, err = after.communicate(timeout=60)
    assert after.returncode == 0 and "Nothing to send." in out, out + err
    got = plain_server.recorder.by_recipient()
    assert len(got) == 40 and all(len(v) == 1 for v in got.values())


def test_an_uncertain_reader_who_unsubscribed_is_counted_once_as_skipped(
    plain_server: Server, project: Path, tmp_path: Path
) -> None:
    from digest.config import load_project
    from digest.send import Options, plan_send
    from digest.send.journal import Journal

    listed = _list(tmp_path, 3)
    earlier = plan_send(load_project(project), EXAMPLE, list_path=listed)
    journal = earlier.record()
    [first, *_] = journal.due(earlier.key, ("pending",), 0, 3)
    journal.mark(first.id, "sending")  # in flight when an earlier send stopped
    journal.close()
    other = Journal(project / ".digest" / "journal.sqlite3")
    other.suppress([first.recipient.email])
    other.close()
    plan = plan_send(load_project(project), EXAMPLE, list_path=listed, options=Options(resend_uncertain=True))
    assert (plan.to_send, plan.suppressed, plan.not_in_list) == (2, 1, 0)


def test_the_plan_names_readers_due_from_an_earlier_run_with_another_list(
    plain_server: Server, runner: CliRunner, project: Path, tmp_path: Path
) -> None:
    from digest.config import load_project
    from digest.send import plan_send

    first = tmp_path / "first.csv"
    first.write_text("email\n" + "".join(f"early{i}@example.com\n" for i in range(3)))
    # An earlier run recorded its readers and stopped before sending (as if interrupted).
    plan_send(load_project(project), EXAMPLE, list_path=first).record().close()
    result = _send(runner, "--list", str(_list(tmp_path, 2)), "--yes")
    assert result.exit_code == 0, result.output
    assert "Recipients: 5 to send\n" in result.stdout
    assert (
        "Earlier:    3 of them are due from an earlier run of this issue and not in this list; "
        f"they are sent too ('digest cancel {EXAMPLE}' first stops that: this list's readers are "
        "sent all the same)\n" in result.stdout
    )
    assert len(plain_server.recorder.by_recipient()) == 5


def test_a_dry_run_of_a_finished_send_still_writes_every_message(
    plain_server: Server, runner: CliRunner, tmp_path: Path
) -> None:
    """Checking an issue's messages after its send (a corrected template, say) must not stop
    at 'Nothing to send.': the dry run prepares every reader's, whatever the journal says."""
    recipients = _list(tmp_path, 3)
    assert _send(runner, "--list", str(recipients), "--yes").exit_code == 0
    result = _send(runner, "--list", str(recipients), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Recipients: 0 to send, 3 already sent" in result.stdout
    assert "Nothing to send." not in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "3 prepared (every reader, whatever the journal says; nothing sent), 0 failed, 0 deferred"
    )
    assert len(plain_server.recorder.received) == 3  # the send's; the dry run sent nothing
