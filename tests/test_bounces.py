"""'digest bounces' over a Maildir and an mbox: record, change statuses, move ours, touch nothing else."""

from __future__ import annotations

import datetime as dt
import mailbox
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import digest.bounces
from digest import subscribers
from digest.cli import cli
from tests.bounceutil import ISSUE, connect, deliver, enable_bounces, fixture, maildir

OURS = [
    "postfix-hard.eml",
    "postfix-mailbox-full.eml",
    "exim-hard.eml",
    "exchange-ndr.eml",
    "gmail-hard.eml",
    "yahoo.eml",
    "qmail.eml",
    "arf-abuse.eml",
    "vacation-rfc3834.eml",
    "vacation-outlook.eml",
]
NOT_OURS = ["unrelated.eml", "unrelated-dsn.eml", "vacation-to-editors.eml", "forged-verp.eml"]
LEFT = [
    "verp-human-reply.eml",
    "malformed-truncated-report.eml",
    "malformed-empty.eml",
    "malformed-binary.eml",
    "malformed-bad-status.eml",
]


@pytest.fixture
def box(project: Path, monkeypatch) -> Path:
    """A Maildir holding every kind of message, their recipients active subscribers."""
    enable_bounces(project, monkeypatch)
    folder = maildir(project.parent / "Maildir")
    conn = connect(project)
    for name in OURS + NOT_OURS + LEFT:
        deliver(folder, f"1641190329.{name.removesuffix('.eml')}.mx", fixture(conn, name))
    for address in (
        "gone@example.net",
        "full@example.net",
        "annoyed@mailbox.example",
        "away@example.net",
        "ooo@contoso.example",
    ):
        subscribers.add(conn, address)
    conn.close()
    return folder


def status_of(project: Path, address: str) -> str | None:
    conn = connect(project)
    try:
        found = subscribers.get(conn, address)
        return found.status if found else None
    finally:
        conn.close()


def event_count(project: Path) -> int:
    conn = connect(project)
    try:
        return conn.execute("SELECT count(*) FROM bounce_events").fetchone()[0]
    finally:
        conn.close()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every message file (cur/ and new/ of the Maildir and its subfolders) and its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.parent.name in ("cur", "new")
    }


def test_maildir_run_records_marks_and_moves_only_ours(project, box, runner: CliRunner):
    before = snapshot(box)
    result = runner.invoke(cli, ["bounces", "--maildir", str(box)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "hard bounce gone@example.net (2021-12-31): 5.1.1 550 5.1.1 <gone@example.net>" in out
    assert "marked gone@example.net bounced" in out
    assert "complaint annoyed@mailbox.example (2021-12-31): abuse" in out
    assert "marked annoyed@mailbox.example complained" in out
    assert "auto-reply (ignored) away@example.net" in out
    assert out.endswith(
        f"Maildir {box}: 19 message(s): 6 hard, 1 soft, 1 complaint(s), "
        "2 auto-reply(ies), 4 not ours, 1 unrecognised, 4 malformed\n"
        "marked 6 bounced, 1 complained\n"
    )
    # Each broken message is named in a warning, never a traceback, and stays where it was.
    for name in ("malformed-truncated-report", "malformed-empty", "malformed-binary", "malformed-bad-status"):
        assert f"Warning: new/1641190329.{name}.mx: malformed message: " in result.stderr
    assert "Traceback" not in result.output
    # Hard bounces and complaints change the status at once; one soft bounce does not.
    assert status_of(project, "gone@example.net") == "bounced"
    assert status_of(project, "nobody@example.com") == "bounced"  # not a subscriber: suppressed
    assert status_of(project, "annoyed@mailbox.example") == "complained"
    assert status_of(project, "full@example.net") == "active"
    assert status_of(project, "away@example.net") == "active"
    # Ours moved (same bytes, same name) into .processed; the rest untouched, byte for byte.
    after = snapshot(box)
    for name in OURS:
        stem = f"1641190329.{name.removesuffix('.eml')}.mx"
        assert f"new/{stem}" not in after
        assert after[f".processed/cur/{stem}:2,"] == before[f"new/{stem}"]
    for name in NOT_OURS + LEFT:
        stem = f"new/1641190329.{name.removesuffix('.eml')}.mx"
        assert after[stem] == before[stem]
    assert len(after) == len(before)  # nothing lost, nothing added


def test_running_twice_records_nothing_twice(project, box, runner: CliRunner):
    assert runner.invoke(cli, ["bounces", "--maildir", str(box)]).exit_code == 0
    recorded = event_count(project)
    assert recorded == 10
    # The same messages again (say, copied back by a mail client): recognised, moved, not recorded.
    for path in (box / ".processed" / "cur").iterdir():
        shutil.copy(path, box / "new" / path.name.split(":")[0])
    result = runner.invoke(cli, ["bounces", "--maildir", str(box)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("already recorded by an earlier run") == 10
    assert "marked" not in result.stdout
    assert event_count(project) == recorded


def test_dry_run_changes_nothing(project, box, runner: CliRunner):
    before = snapshot(box)
    result = runner.invoke(cli, ["bounces", "--maildir", str(box), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would mark gone@example.net bounced" in result.stdout
    assert "would move to processed" in result.stdout
    assert "would mark 6 bounced, 1 complained (dry run: nothing changed)" in result.stdout
    assert snapshot(box) == before
    assert event_count(project) == 0
    assert status_of(project, "gone@example.net") == "active"


def test_soft_bounces_mark_bounced_past_the_threshold(project, monkeypatch, runner: CliRunner):
    enable_bounces(project, monkeypatch, threshold=1.5)
    folder = maildir(project.parent / "Maildir")
    conn = connect(project)
    raw = fixture(conn, "postfix-mailbox-full.eml")
    conn.close()
    # A soft bounce counts on the day digest processes it (its Date header is the sender's word).
    runs = {dt.date(2022, 1, 4): 2, dt.date(2022, 1, 5): 1, dt.date(2022, 1, 6): 1}
    outputs, n = [], 0
    for day, count in runs.items():
        for _ in range(count):
            deliver(folder, f"soft-{n}", raw.replace(b"20220104070000.B00F1", f"soft-{n}".encode()))
            n += 1
        monkeypatch.setattr(digest.bounces, "processing_day", lambda day=day: day)
        result = runner.invoke(cli, ["bounces", "--maildir", str(folder)])
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout)
    # 0.5 on the 4th (twice that day counts once), 1.0 on the 5th, 1.5 on the 6th: bounced.
    assert [o.count("marked full@example.net bounced") for o in outputs] == [0, 0, 1]
    assert "soft-3: soft bounce" in outputs[2]
    assert status_of(project, "full@example.net") == "bounced"
    listing = runner.invoke(cli, ["subscribers", "ls", "--status", "bounced"])
    assert "full@example.net\tbounced\t" in listing.stdout
    assert "soft bounce 2022-01-06 (2021-12-31): 4.2.2 452 4.2.2 Mailbox full" in listing.stdout


def test_status_ls_and_reactivate(project, box, runner: CliRunner, monkeypatch):
    conn = connect(project)
    conn.execute("UPDATE deliveries SET state = 'sent'")
    conn.close()
    monkeypatch.setattr(digest.bounces, "processing_day", lambda: dt.date(2022, 1, 10))
    assert runner.invoke(cli, ["bounces", "--maildir", str(box)]).exit_code == 0
    status = runner.invoke(cli, ["status", ISSUE])
    assert status.exit_code == 0, status.output
    first = status.stdout.splitlines()[0]
    assert first.startswith(f"{ISSUE}: ") and ", 6 bounced, 1 soft-bounced, 1 complained, " in first
    assert "  bounced   gone@example.net: hard bounce 5.1.1 550 5.1.1" in status.stdout
    assert "  complained annoyed@mailbox.example: complaint abuse" in status.stdout
    listing = runner.invoke(cli, ["subscribers", "ls", "--status", "bounced"])
    assert (
        "gone@example.net\tbounced\t" in listing.stdout
        and "\thard bounce 2022-01-10 (2021-12-31): 5.1.1 550 5.1.1 <gone@example.net>: "
        "Recipient address rejected"
        in listing.stdout
    )
    again = runner.invoke(cli, ["subscribers", "reactivate", "gone@example.net"])
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("reactivated gone@example.net (was bounced: hard bounce")
    assert status_of(project, "gone@example.net") == "active"
    history = runner.invoke(cli, ["subscribers", "history", "gone@example.net"]).stdout
    assert "\tactive\tdigest subscribers reactivate\treactivated by the editor (was bounced)\n" in history
    assert "confirmed opt-in" not in history  # the reader confirmed nothing
    assert runner.invoke(cli, ["subscribers", "reactivate", "gone@example.net"]).stdout == (
        "gone@example.net is already active\n"
    )
    # Only a bounce or a complaint is undone: not a reader's own unsubscribe, not a stranger.
    runner.invoke(cli, ["unsubscribe", "away@example.net"])
    refused = runner.invoke(cli, ["subscribers", "reactivate", "away@example.net", "stranger@example.org"])
    assert refused.exit_code == 1
    assert refused.output == (
        "Error: away@example.net is unsubscribed, not bounced or complained\n"
        "  hint: reactivate only undoes a bounce or a complaint; a reader who unsubscribed "
        "subscribes again themselves\n"
        "Error: stranger@example.org is not in the subscriber store\n"
        "  hint: add a new reader with 'digest subscribers add ADDRESS'\n"
        "2 problems found; nothing was written.\n"
    )
    assert status_of(project, "away@example.net") == "unsubscribed"


def test_send_skips_bounced_and_complained_also_from_a_list(project, box, runner: CliRunner, tmp_path: Path):
    assert runner.invoke(cli, ["bounces", "--maildir", str(box)]).exit_code == 0
    csv = tmp_path / "list.csv"
    csv.write_text(
        "email,name\ngone@example.net,G\nnobody@example.com,N\n"
        "annoyed@mailbox.example,A\nfull@example.net,F\nnew@example.org,Y\n"
    )
    result = runner.invoke(cli, ["send", ISSUE, "--list", str(csv), "--outbox", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    sent = sorted(
        p.read_bytes().split(b"\nTo: ")[1].split(b"\r\n")[0].decode() for p in (tmp_path / "out").glob("*.eml")
    )
    assert sent == ["F <full@example.net>", "Y <new@example.org>"]


def test_mbox_moves_ours_to_a_processed_mbox(project, monkeypatch, runner: CliRunner):
    enable_bounces(project, monkeypatch)
    path = project.parent / "bounces.mbox"
    conn = connect(project)
    box = mailbox.mbox(path)
    for name in ("postfix-hard.eml", "unrelated.eml", "arf-abuse.eml", "malformed-bad-status.eml"):
        box.add(fixture(conn, name))
    box.flush()
    box.close()
    conn.close()
    result = runner.invoke(cli, ["bounces", "--mbox", str(path)])
    assert result.exit_code == 0, result.output
    assert "Warning: #4 (key 3): malformed message" in result.stderr
    left = [m["Message-ID"] for m in mailbox.mbox(path)]
    moved = [m["Message-ID"] for m in mailbox.mbox(path.with_name("bounces.mbox.processed"))]
    assert left == ["<tip-12345@example.com>", "<bad-status-1@relay.example.org>"]
    assert moved == ["<20220103061209.5D7AA1C2B1@relay.example.org>", "<arf-1641992400-42@fbl.mailbox.example>"]
    assert status_of(project, "gone@example.net") == "bounced"


def test_bad_invocations_are_one_clear_error(project, runner: CliRunner, tmp_path: Path):
    result = runner.invoke(cli, ["bounces"])
    assert result.exit_code == 1
    assert "Error: give one mailbox\n  hint: --maildir DIR, --mbox FILE or --imap" in result.output
    result = runner.invoke(cli, ["bounces", "--maildir", str(tmp_path)])
    assert result.exit_code == 1 and "not a Maildir (it needs cur/, new/ and tmp/)" in result.output
    result = runner.invoke(cli, ["bounces", "--imap"])
    assert result.exit_code == 1
    assert "Error: --imap needs DIGEST_IMAP_HOST, DIGEST_IMAP_USERNAME, DIGEST_IMAP_PASSWORD" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('bounce_address = "Bounces <b@example.org>"', "'bounce_address' must be a plain address"),
        ('bounce_address = "b+x@example.org"', "'bounce_address' must be a plain address"),
        (
            'bounce_address = "' + "b" * 40 + '@example.org"',
            "'bounce_address' leaves no room for the VERP token",
        ),
        ("bounce_threshold = 0", "'bounce_threshold' must be a positive number"),
        ('bounce_threshold = "3"', "'bounce_threshold' must be a positive number"),
    ],
)
def test_bad_bounce_settings_are_one_clear_error(project, runner, line, message):
    config = project / "digest.toml"
    text = "\n".join(x for x in config.read_text().splitlines() if not x.startswith("bounce_"))
    config.write_text(text.replace("[newsletter]", "[newsletter]\n" + line, 1) + "\n")
    result = runner.invoke(cli, ["check", "2021-12-31"])
    assert result.exit_code == 1
    assert f"digest.toml:4: error: {message}" in result.output, result.output  # a finding, as check writes them
    assert "Traceback" not in result.output


def test_check_warns_without_bounce_address(project, runner):
    assert runner.invoke(cli, ["check", "2021-12-31"]).stdout == "0 errors, 0 warnings\n"
    config = project / "digest.toml"
    config.write_text(
        "\n".join(x for x in config.read_text().splitlines() if not x.startswith("bounce_address")) + "\n"
    )
    result = runner.invoke(cli, ["check", "2021-12-31"])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "digest.toml: warning: no bounce_address: bounces go to the From address and are not processed",
        '  hint: set bounce_address = "bounces@<your domain>" under [newsletter] and read it with '
        "'digest bounces'",
        "0 errors, 1 warning",
    ]


def test_erasure_also_forgets_the_bounce_records(project, box, runner: CliRunner):
    assert runner.invoke(cli, ["bounces", "--maildir", str(box)]).exit_code == 0
    result = runner.invoke(cli, ["subscribers", "rm", "gone@example.net"])
    assert result.exit_code == 0, result.output
    conn = connect(project)
    try:
        rows = conn.execute(
            "SELECT email, email_key, kind, diagnostic FROM bounce_events "
            "WHERE kind = 'hard' AND email LIKE 'erased:%'"
        ).fetchall()
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert rows and all(diagnostic is None for *_, diagnostic in rows)  # the kind stays
    assert "gone@example.net" not in dump
    # Still suppressed: a re-import cannot bring the reader back.
    assert status_of(project, "gone@example.net") is None
