"""Bounce mailboxes under stress: IMAP without TLS, an mbox written to while it is read."""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.bounces import imap_settings
from digest.bounces.mailboxes import MboxBox
from digest.cli import cli
from digest.errors import ConfigError
from tests.bounceutil import connect, enable_bounces, fixture

PASSWORD = "Imap-Secret-42"


def imap_env(host: str, security: str = "none") -> dict[str, str]:
    return {
        "DIGEST_IMAP_HOST": host,
        "DIGEST_IMAP_USERNAME": "bounces",
        "DIGEST_IMAP_PASSWORD": PASSWORD,
        "DIGEST_IMAP_SECURITY": security,
    }


def test_imap_without_encryption_is_refused_for_another_host(project, monkeypatch, runner: CliRunner):
    for key, value in imap_env("192.0.2.10").items():
        monkeypatch.setenv(key, value)
    result = runner.invoke(cli, ["bounces", "--imap"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: DIGEST_IMAP_SECURITY=none would send the IMAP password unencrypted to 192.0.2.10\n"
        "  hint: use tls (the default) or starttls; 'none' is only allowed to this machine\n"
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_imap_without_encryption_is_allowed_to_this_machine(tmp_path: Path, host):
    settings = imap_settings(tmp_path / ".env", imap_env(host))
    assert (settings.host, settings.security, settings.port) == (host, "none", 143)
    assert PASSWORD not in repr(settings)


def test_imap_settings_refuse_none_before_connecting(tmp_path: Path):
    (tmp_path / ".env").write_text("DIGEST_IMAP_SECURITY=none\n")
    env = imap_env("imap.example.org")
    del env["DIGEST_IMAP_SECURITY"]  # from .env: the error names it
    with pytest.raises(ConfigError) as caught:
        imap_settings(tmp_path / ".env", env)
    assert caught.value.path == tmp_path / ".env"
    assert "to imap.example.org" in caught.value.message


NAMES = ["postfix-hard.eml", "unrelated.eml", "arf-abuse.eml", "malformed-bad-status.eml"]
OURS_IDS = ["<20220103061209.5D7AA1C2B1@relay.example.org>", "<arf-1641992400-42@fbl.mailbox.example>"]
OTHER_IDS = ["<tip-12345@example.com>", "<bad-status-1@relay.example.org>"]
NAMES_IDS = [OURS_IDS[0], OTHER_IDS[0], OURS_IDS[1], OTHER_IDS[1]]
LATE = b"From: someone@example.org\nSubject: late\nMessage-ID: <late@example.org>\n\nappended meanwhile\n"


@pytest.fixture
def mbox_path(project: Path, monkeypatch) -> Path:
    enable_bounces(project, monkeypatch)
    path = project.parent / "bounces.mbox"
    conn = connect(project)
    box = mailbox.mbox(path)
    for name in NAMES:
        box.add(fixture(conn, name))
    box.flush()
    box.close()
    conn.close()
    return path


def while_reading(monkeypatch, action) -> None:
    """Run *action* once, after the first message of the mbox has been read."""
    original = MboxBox.messages

    def messages(self):
        for n, item in enumerate(original(self)):
            yield item
            if n == 0:
                action()

    monkeypatch.setattr(MboxBox, "messages", messages)


def ids(path: Path) -> list[str]:
    return [m["Message-ID"] for m in mailbox.mbox(path)] if path.exists() else []


def test_mbox_is_locked_for_the_whole_run(mbox_path, monkeypatch, runner: CliRunner):
    refused = []

    def deliver_with_a_lock():  # as a delivery agent does: lock, append, unlock
        other = mailbox.mbox(mbox_path)
        try:
            other.lock()
        except mailbox.ExternalClashError as e:
            refused.append(str(e))  # the agent tries again later
            return
        finally:
            other.close()

    while_reading(monkeypatch, deliver_with_a_lock)
    result = runner.invoke(cli, ["bounces", "--mbox", str(mbox_path)])
    assert result.exit_code == 0, result.output
    assert "moved to bounces.mbox.processed (at the end of the run)" in result.stdout
    assert refused, "another writer could lock the mbox while digest was reading it"
    assert ids(mbox_path) == OTHER_IDS
    assert ids(mbox_path.with_name("bounces.mbox.processed")) == OURS_IDS
    assert not mbox_path.with_name("bounces.mbox.lock").exists()  # the lock is gone with the run
    again = mailbox.mbox(mbox_path)
    again.lock()
    again.add(LATE)
    again.flush()
    again.unlock()
    assert ids(mbox_path) == [*OTHER_IDS, "<late@example.org>"]


def test_mbox_changed_without_a_lock_is_one_clear_error_and_nothing_duplicated(
    mbox_path, monkeypatch, runner: CliRunner
):
    def append_ignoring_the_lock():
        with mbox_path.open("ab") as f:
            f.write(b"\nFrom someone@example.org Sat Jan 15 12:00:00 2022\n" + LATE)

    with monkeypatch.context() as m:
        while_reading(m, append_ignoring_the_lock)
        result = runner.invoke(cli, ["bounces", "--mbox", str(mbox_path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert (
        f"Error: {mbox_path}: the mbox changed while it was read (a program wrote to it without "
        "locking it); nothing was moved\n"
        "  hint: run digest bounces again: what was recorded is not recorded twice\n"
    ) in result.output
    # Nothing lost, nothing copied: every message still in FILE, the late one too.
    assert ids(mbox_path) == [*NAMES_IDS, "<late@example.org>"]
    assert ids(mbox_path.with_name("bounces.mbox.processed")) == []
    # The next run moves ours exactly once.
    result = runner.invoke(cli, ["bounces", "--mbox", str(mbox_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("already recorded by an earlier run") == 2
    assert ids(mbox_path) == [*OTHER_IDS, "<late@example.org>"]
    assert ids(mbox_path.with_name("bounces.mbox.processed")) == OURS_IDS


def test_a_change_while_moving_takes_the_copies_back(mbox_path, monkeypatch, runner: CliRunner):
    processed = mbox_path.with_name("bounces.mbox.processed")
    earlier = mailbox.mbox(processed)
    earlier.add(b"From: a@example.org\nMessage-ID: <earlier@example.org>\n\nmoved by an earlier run\n")
    earlier.close()
    before = processed.read_bytes()
    original = mailbox.mbox.get_message
    calls = []

    def get_message(self, key):  # FILE grows after the check, while the copies are written
        if self._path == str(mbox_path) and not calls:
            calls.append(key)
            with mbox_path.open("ab") as f:
                f.write(b"\nFrom someone@example.org Sat Jan 15 12:00:00 2022\n" + LATE)
        return original(self, key)

    with monkeypatch.context() as m:
        m.setattr(mailbox.mbox, "get_message", get_message)
        result = runner.invoke(cli, ["bounces", "--mbox", str(mbox_path)])
    assert calls and result.exit_code == 1
    assert "the mbox changed while it was read" in result.output and "Traceback" not in result.output
    assert processed.read_bytes() == before  # the copies taken back, the earlier run's kept
    assert ids(mbox_path) == [*NAMES_IDS, "<late@example.org>"]
    result = runner.invoke(cli, ["bounces", "--mbox", str(mbox_path)])
    assert result.exit_code == 0, result.output
    assert ids(processed) == ["<earlier@example.org>", *OURS_IDS]


def test_a_locked_mbox_is_one_clear_error(mbox_path, monkeypatch, runner: CliRunner):
    monkeypatch.setattr(MboxBox, "LOCK_WAIT", 0.2)
    other = mailbox.mbox(mbox_path)
    other.lock()
    try:
        result = runner.invoke(cli, ["bounces", "--mbox", str(mbox_path)])
    finally:
        other.unlock()
        other.close()
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {mbox_path}: the mbox is locked by another program")
    assert "Traceback" not in result.output
    assert ids(mbox_path) == NAMES_IDS
    assert not mbox_path.with_name("bounces.mbox.processed").exists()


def test_a_dry_run_reads_the_mbox_without_locking_it(mbox_path, runner: CliRunner):
    before = mbox_path.read_bytes()
    other = mailbox.mbox(mbox_path)
    other.lock()  # a delivery in progress does not stop a dry run, which only reads
    try:
        result = runner.invoke(cli, ["bounces", "--mbox", str(mbox_path), "--dry-run"])
    finally:
        other.unlock()
        other.close()
    assert result.exit_code == 0, result.output
    assert "would move to processed" in result.stdout
    assert mbox_path.read_bytes() == before
    assert not mbox_path.with_name("bounces.mbox.processed").exists()
