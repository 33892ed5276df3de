"""'digest bounces --imap' against a real Dovecot: only ours move to 'processed', the rest untouched."""

from __future__ import annotations

import re

import pytest
import trustme
from click.testing import CliRunner

from digest import subscribers
from digest.bounces import ImapBox, imap_settings, process_mailbox, project_identity
from digest.bounces.mailboxes import _clean, _flatten, _quote, imap_utf7, personal_prefix
from digest.cli import cli
from digest.config import load_project
from tests.bounceutil import connect, enable_bounces, fixture
from tests.dovecot import service_tmp, start_dovecot

OURS = [
    "postfix-hard.eml",
    "gmail-delayed.eml",
    "qmail.eml",
    "arf-abuse.eml",
    "vacation-rfc3834.eml",
    "vacation-outlook.eml",
]
OTHERS = [
    "unrelated.eml",
    "unrelated-dsn.eml",
    "vacation-to-editors.eml",
    "verp-human-reply.eml",
    "malformed-bad-status.eml",
]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def dovecot(ca):
    with service_tmp() as tmp, start_dovecot(tmp, ca) as server:
        yield server


def load(dovecot, project, names, flags: str = ""):
    conn = connect(project)
    imap = dovecot.connect()
    try:
        for name in names:
            typ, _ = imap.append("INBOX", flags or None, None, fixture(conn, name))
            assert typ == "OK"
    finally:
        imap.logout()
        conn.close()


def folder(dovecot, name: str) -> dict[str, tuple[str, bytes]]:
    """Message-ID -> (flags, bytes) of every message in an IMAP folder (read-only)."""
    imap = dovecot.connect()
    try:
        typ, _ = imap.select(f'"{name}"', readonly=True)
        if typ != "OK":
            return {}
        _, data = imap.uid("SEARCH", None, "ALL")
        out = {}
        for uid in data[0].split():
            _, fetched = imap.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
            meta, raw = fetched[0]
            flags = re.search(rb"FLAGS \(([^)]*)\)", meta).group(1).decode()
            flags = " ".join(f for f in flags.split() if f != "\\Recent")  # per session
            mid = re.search(rb"(?im)^message-id:\s*(\S+)", raw)
            out[mid.group(1).decode() if mid else f"uid {uid.decode()}"] = (flags, raw)
        return out
    finally:
        imap.logout()


@pytest.fixture
def imap_project(project, monkeypatch, dovecot):
    enable_bounces(project, monkeypatch)
    for key, value in dovecot.environ().items():
        monkeypatch.setenv(key, value)
    conn = connect(project)
    subscribers.add(conn, "gone@example.net")
    conn.close()
    return project


def test_imap_moves_only_ours_and_leaves_the_rest_unread(imap_project, dovecot, runner: CliRunner):
    load(dovecot, imap_project, OURS + OTHERS)
    before = folder(dovecot, "INBOX")
    dry = runner.invoke(cli, ["bounces", "--imap", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would move to processed" in dry.stdout
    assert folder(dovecot, "INBOX") == before
    result = runner.invoke(cli, ["bounces", "--imap"])
    assert result.exit_code == 0, result.output
    assert dovecot.password not in result.output
    assert (
        f"IMAP bounces@127.0.0.1:{dovecot.port}/INBOX: 11 message(s): 2 hard, 1 soft, "
        "1 complaint(s), 2 auto-reply(ies), 3 not ours, 1 unrecognised, 1 malformed" in result.stdout
    )
    assert "Warning: UID 11: malformed message" in result.stderr
    inbox, processed = folder(dovecot, "INBOX"), folder(dovecot, "processed")
    # The rest stay as they were: same bytes, still unread (fetched with BODY.PEEK).
    assert inbox == {mid: before[mid] for mid in inbox}
    assert len(inbox) == len(OTHERS) and all("\\Seen" not in f for f, _ in inbox.values())
    assert len(processed) == len(OURS)
    for mid, (_, raw) in processed.items():
        assert raw == before[mid][1]
    conn = connect(imap_project)
    try:
        assert subscribers.get(conn, "gone@example.net").status == "bounced"
        assert subscribers.get(conn, "annoyed@mailbox.example").status == "complained"
        sources = {s for (s,) in conn.execute("SELECT source FROM bounce_events")}
        assert sources == {f"UID {n}" for n in range(1, 7)}
        recorded = conn.execute("SELECT count(*) FROM bounce_events").fetchone()[0]
    finally:
        conn.close()
    # A second run finds only the others: nothing recorded twice, nothing moved.
    again = runner.invoke(cli, ["bounces", "--imap"])
    assert again.exit_code == 0, again.output
    assert ": 5 message(s): 3 not ours, 1 unrecognised, 1 malformed" in again.stdout
    conn = connect(imap_project)
    assert conn.execute("SELECT count(*) FROM bounce_events").fetchone()[0] == recorded
    conn.close()


def test_without_move_copy_flag_and_expunge_only_that_uid(imap_project, dovecot):
    # A message another client flagged \Deleted (but did not expunge) must survive our expunge.
    load(dovecot, imap_project, ["unrelated.eml"], flags=r"(\Deleted)")
    load(dovecot, imap_project, ["postfix-hard.eml", "unrelated-dsn.eml"])
    project = load_project(imap_project)
    conn = connect(imap_project)
    try:
        box = ImapBox(imap_settings(imap_project / ".env", dovecot.environ()), use_move=False)
        report = process_mailbox(conn, box, project_identity(project, conn))
    finally:
        conn.close()
    assert [o.verdict.kind for o in report.outcomes] == ["hard", "not-ours"]  # \Deleted: unseen
    inbox = folder(dovecot, "INBOX")
    assert sorted(inbox) == ["<20220115130000.AAAA@relay.example.org>", "<tip-12345@example.com>"]
    assert "\\Deleted" in inbox["<tip-12345@example.com>"][0]
    assert list(folder(dovecot, "processed")) == ["<20220103061209.5D7AA1C2B1@relay.example.org>"]


def test_a_wrong_password_is_one_clear_error_without_the_password(
    imap_project, dovecot, runner: CliRunner, monkeypatch
):
    monkeypatch.setenv("DIGEST_IMAP_PASSWORD", "wrong-Secret-123")
    result = runner.invoke(cli, ["bounces", "--imap"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot log in to IMAP 127.0.0.1:{dovecot.port} as bounces: ")
    assert "hint: check DIGEST_IMAP_HOST" in result.output
    assert "wrong-Secret-123" not in result.output and "Traceback" not in result.output


def test_a_password_that_is_not_ascii_logs_in(imap_project, dovecot, runner: CliRunner, monkeypatch):
    """IMAP LOGIN takes ASCII only (imaplib raised UnicodeEncodeError, an internal error):
    such a login goes as AUTHENTICATE PLAIN, in UTF-8 (RFC 4616)."""
    passwd = dovecot.base / "passwd"
    uid, gid = passwd.read_text().split(":")[2:4]
    with passwd.open("a", encoding="utf-8") as f:  # Dovecot reads the file again once it changed
        f.write(f"zoe:{{PLAIN}}Pässwörd-1:{uid}:{gid}::{dovecot.base}/home::\n")
    monkeypatch.setenv("DIGEST_IMAP_USERNAME", "zoe")
    monkeypatch.setenv("DIGEST_IMAP_PASSWORD", "Pässwörd-1")
    result = runner.invoke(cli, ["bounces", "--imap", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"IMAP zoe@127.0.0.1:{dovecot.port}/INBOX: no messages" in result.stdout
    monkeypatch.setenv("DIGEST_IMAP_PASSWORD", "Pässwörd-2")
    wrong = runner.invoke(cli, ["bounces", "--imap", "--dry-run"])
    assert wrong.exit_code == 1 and wrong.output.startswith("Error: cannot log in to IMAP")
    assert "Pässwörd" not in wrong.output and "Traceback" not in wrong.output


@pytest.mark.parametrize("password", ['Pa\\ss"w0rd', "plain-Secret-1", "it's-Secret", "Pässwörd\\"])
def test_an_echoed_password_is_hidden_in_every_form_imaplib_shows(password: str) -> None:
    """A server may echo the LOGIN command: imaplib quotes the password (backslash and quote
    escaped) and shows the reply as the repr of bytes (backslashes doubled again)."""
    quoted = _quote(password)
    plain = __import__("base64").b64encode(f"\0bounces\0{password}".encode()).decode()
    for shown in (
        f"[AUTHENTICATIONFAILED] cannot accept {plain}",
        f"LOGIN failed for {password}",
        f"b'LOGIN bounces {quoted}'",
        repr(f"LOGIN bounces {quoted} failed".encode()),
        repr(f"LOGIN {password}".encode()),
    ):
        cleaned = _clean(Exception(shown), password, "bounces")
        assert "***" in cleaned and "w0rd" not in cleaned and "Secret" not in cleaned, cleaned
        assert "Pässwörd" not in cleaned and "P\\xc3" not in cleaned, cleaned


def test_starttls_and_a_folder_of_its_own(imap_project, dovecot, runner: CliRunner, monkeypatch):
    imap = dovecot.connect()
    try:
        assert imap.create('"bounces"')[0] == "OK"
        conn = connect(imap_project)
        assert imap.append('"bounces"', None, None, fixture(conn, "postfix-hard.eml"))[0] == "OK"
        conn.close()
    finally:
        imap.logout()
    monkeypatch.setenv("DIGEST_IMAP_SECURITY", "starttls")
    monkeypatch.setenv("DIGEST_IMAP_PORT", str(dovecot.starttls_port))
    monkeypatch.setenv("DIGEST_IMAP_FOLDER", "bounces")
    result = runner.invoke(cli, ["bounces", "--imap"])
    assert result.exit_code == 0, result.output
    assert f"IMAP bounces@127.0.0.1:{dovecot.starttls_port}/bounces: 1 message(s): 1 hard" in result.stdout
    assert list(folder(dovecot, "processed")) == ["<20220103061209.5D7AA1C2B1@relay.example.org>"]
    assert folder(dovecot, "bounces") == {}


def test_processed_goes_under_the_servers_personal_namespace(project, ca, runner: CliRunner, monkeypatch):
    """A server that keeps folders under INBOX. (Cyrus, Courier) refuses a top-level folder."""
    enable_bounces(project, monkeypatch)
    with service_tmp() as tmp, start_dovecot(tmp, ca, namespace=("INBOX.", ".")) as server:
        for key, value in server.environ().items():
            monkeypatch.setenv(key, value)
        load(server, project, OURS[:2])
        dry = runner.invoke(cli, ["bounces", "--imap", "--dry-run"])
        assert "would move to INBOX.processed" in dry.stdout, dry.output
        result = runner.invoke(cli, ["bounces", "--imap"])
        assert result.exit_code == 0, result.output
        assert "moved to INBOX.processed" in result.stdout
        assert len(folder(server, "INBOX.processed")) == 2 and folder(server, "INBOX") == {}
        # DIGEST_IMAP_PROCESSED names the folder as a mail program shows it.
        load(server, project, OURS[2:3])
        monkeypatch.setenv("DIGEST_IMAP_PROCESSED", "INBOX.Erledigt-Ü")
        named = runner.invoke(cli, ["bounces", "--imap"])
        assert named.exit_code == 0, named.output
        assert len(folder(server, "INBOX.Erledigt-&ANw-")) == 1 and folder(server, "INBOX") == {}


@pytest.mark.parametrize(
    ("response", "prefix"),
    [
        (b'(("INBOX." ".")) NIL NIL', "INBOX."),
        (b'(("" "/")) NIL (("#shared/" "/"))', ""),
        (b'(("INBOX" ".")) NIL NIL', "INBOX."),  # the delimiter added (RFC 2342 section 5)
        (b'(("Mail/" NIL)) NIL NIL', "Mail/"),
        (b"NIL NIL NIL", ""),
        (b"", ""),
    ],
)
def test_the_personal_prefix_of_a_namespace_response(response: bytes, prefix: str) -> None:
    assert personal_prefix(response) == prefix


def test_a_prefix_sent_as_a_literal() -> None:
    # imaplib hands a literal over as a (head, bytes) pair.
    assert personal_prefix(_flatten([(b"(({6}", b"INBOX."), b' ".")) NIL NIL'])) == "INBOX."


def test_folder_names_are_written_in_modified_utf7() -> None:
    assert imap_utf7("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"  # RFC 3501's example
    assert imap_utf7("Entwürfe") == "Entw&APw-rfe"
    assert imap_utf7("R&D") == "R&-D"
    assert imap_utf7("INBOX") == "INBOX"


def test_a_folder_name_with_a_line_break_is_refused(tmp_path) -> None:
    """A line break in a folder name would smuggle in another IMAP command."""
    from digest.errors import ConfigError

    environ = {
        "DIGEST_IMAP_HOST": "127.0.0.1",
        "DIGEST_IMAP_USERNAME": "u",
        "DIGEST_IMAP_PASSWORD": "p",
        "DIGEST_IMAP_PROCESSED": "done\r\nA1 DELETE INBOX",
    }
    with pytest.raises(ConfigError, match="DIGEST_IMAP_PROCESSED holds a control character"):
        imap_settings(tmp_path / ".env", environ)
