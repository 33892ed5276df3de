"""The readers' web app, black-box: `digest serve` on loopback, `digest send` to aiosmtpd, HTTP."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from digest import tokens

from .conftest import EXAMPLE, FIXTURES
from .smtpserver import Server
from .webserver import FORM, Serve

SECRET = "web-secret-0123456789"
LIST_ID = "world-digest.worlddigest.example.org"
SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def digest(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "digest", "--project", str(project), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def statuses(project: Path, env: dict[str, str]) -> dict[str, str]:
    out = digest(project, env, "subscribers", "ls").stdout
    return {line.split("\t")[0].lower(): line.split("\t")[1] for line in out.splitlines()}


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


@pytest.fixture
def site(project: Path):
    """A project with three active subscribers, an SMTP sink and `digest serve` running."""
    with Server() as smtp:
        env = {
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(smtp.port),
            "DIGEST_SMTP_SECURITY": "none",
            "DIGEST_SECRET": SECRET,
        }
        done = digest(project, env, "subscribers", "import", "--skip-invalid", str(FIXTURES / "readers.csv"))
        assert done.returncode == 0, done.stderr
        with Serve(project, env) as web:
            yield project, env, smtp, web
            assert not any("Traceback" in line for line in web.stderr), "".join(web.stderr)


def unsubscribe_link(address: str, token: str | None = None) -> str:
    token = token or tokens.sign(SECRET, "unsubscribe", LIST_ID, address)
    return f"/unsubscribe?email={quote(address, safe='@')}&token={token}"


def confirm_links(smtp: Server, address: str) -> list[str]:
    found = []
    for got in smtp.recorder.by_recipient().get(address.lower(), []):
        text = parse(got.data).get_body(("plain",)).get_content()
        found += re.findall(r"https://\S+/confirm\?\S+", text)
    return found


def test_one_click_from_a_delivered_message_and_the_next_send_skips_the_reader(site, small_issue) -> None:
    project, env, smtp, web = site
    sent = digest(project, env, "send", EXAMPLE, "--yes")
    assert sent.returncode == 0, sent.stderr
    assert "Recipients: 3 to send" in sent.stdout
    anna = parse(smtp.recorder.by_recipient()["anna@example.com"][0].data)
    assert anna["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = anna["List-Unsubscribe"].split(",")[0].strip(" <>")
    assert link.startswith("https://worlddigest.example.org/unsubscribe?email=anna@example.com&token=")

    # A GET (a link preview, a mail scanner) shows the page and changes nothing.
    page = web.request("GET", web.local(link))
    assert page.status == 200
    assert "The World Digest" in page.text and "anna@example.com" in page.text
    assert page.text.count("<button") == 1
    assert web.request("HEAD", web.local(link)).status == 200
    assert statuses(project, env)["anna@example.com"] == "active"

    # The mail provider's RFC 8058 POST, as Gmail sends it.
    done = web.request("POST", web.local(link), "List-Unsubscribe=One-Click", FORM)
    assert done.status == 200
    assert "You are unsubscribed" in done.text
    assert 'action="/subscribe"' in done.text  # the undo goes through double opt-in
    assert statuses(project, env)["anna@example.com"] == "unsubscribed"
    again = web.request("POST", web.local(link), "List-Unsubscribe=One-Click", FORM)
    assert again.status == 200  # idempotent: one event, the same answer
    conn = sqlite3.connect(project / ".digest" / "journal.sqlite3")
    assert conn.execute(
        "SELECT status, source FROM events WHERE email_key = ? AND status = 'unsubscribed'",
        ("anna@example.com",),
    ).fetchall() == [("unsubscribed", "web: one-click")]

    # The next send skips the reader; --list still honours the unsubscribe.
    smtp.recorder.received.clear()
    nxt = digest(project, env, "send", "small", "--yes")
    assert nxt.returncode == 0, nxt.stderr
    assert sorted(smtp.recorder.by_recipient()) == ["boris@example.com", "dmitri@example.org"]
    listed = digest(project, env, "send", "small", "--list", str(FIXTURES / "readers.csv"), "--dry-run")
    # A dry run plans as the real send would: boris and dmitri have it, anna is skipped.
    assert "Recipients: 0 to send, 2 already sent" in listed.stdout, listed.stdout
    assert re.search(r"Skipped: .*[1-9] unsubscribed", listed.stdout), listed.stdout


def test_a_reader_who_leaves_while_a_paced_send_waits_for_their_turn_gets_nothing(site) -> None:
    """The check comes right before the message goes out, after any --rate wait."""
    project, env, smtp, web = site
    send = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "digest",
            "--project",
            str(project),
            "send",
            EXAMPLE,
            "--yes",
            "--workers",
            "1",
            "--rate",
            "1",
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while "anna@example.com" not in smtp.recorder.by_recipient():  # first of three, a second apart
        assert send.poll() is None and time.monotonic() < deadline, send.communicate()
        time.sleep(0.01)
    # Boris's turn is about a second away: the send is waiting for it.
    answer = web.request("POST", unsubscribe_link("boris@example.com"), "List-Unsubscribe=One-Click", FORM)
    assert answer.status == 200
    out, err = send.communicate(timeout=60)
    assert send.returncode == 0, err
    assert sorted(smtp.recorder.by_recipient()) == ["anna@example.com", "dmitri@example.org"]


def test_the_unsubscribe_button_posts_a_multipart_or_empty_form(site) -> None:
    project, env, _, web = site
    link = unsubscribe_link("BORIS@example.com")
    boundary = "xYzZY"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    )
    done = web.request("POST", link, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert done.status == 200, done.text
    assert statuses(project, env)["boris@example.com"] == "unsubscribed"
    empty = web.request("POST", unsubscribe_link("dmitri@example.org"), b"")
    assert empty.status == 200
    assert statuses(project, env)["dmitri@example.org"] == "unsubscribed"


def test_forged_altered_and_misused_tokens_get_a_400_page_and_change_nothing(site) -> None:
    project, env, _, web = site
    good = tokens.sign(SECRET, "unsubscribe", LIST_ID, "anna@example.com")
    altered = good[:-1] + ("A" if good[-1] != "A" else "B")
    confirm = tokens.sign(SECRET, "confirm", LIST_ID, "anna@example.com", ttl=3600)
    forged = tokens.sign("another-secret", "unsubscribe", LIST_ID, "anna@example.com")
    cases = [
        unsubscribe_link("anna@example.com", altered),
        unsubscribe_link("anna@example.com", forged),
        unsubscribe_link("anna@example.com", "x" * 22),
        unsubscribe_link("anna@example.com", confirm),  # a token for another purpose
        unsubscribe_link("boris@example.com", good),  # another reader's token
        "/unsubscribe?email=anna@example.com",
        "/unsubscribe?token=" + good,
    ]
    for link in cases:
        for method in ("GET", "POST"):
            answer = web.request(method, link, "List-Unsubscribe=One-Click", FORM)
            assert answer.status == 400, (method, link)
            assert "This link is not valid" in answer.text
            assert "newest email" in answer.text  # says what to do
            assert "Traceback" not in answer.text
    assert statuses(project, env)["anna@example.com"] == "active"
    # Without address and token (the generic link of a copy sent to a list): how to unsubscribe.
    info = web.request("GET", "/unsubscribe")
    assert info.status == 200 and "mailto:unsubscribe@worlddigest.example.org" in info.text


def test_expired_and_replayed_confirmation_links(site) -> None:
    project, env, smtp, web = site
    old = tokens.sign(SECRET, "confirm", LIST_ID, "new@example.net", ttl=7 * 86400, now=time.time() - 8 * 86400)
    expired = web.request(
        "POST", "/confirm?" + urlencode({"email": "new@example.net", "token": old}), b"confirm=yes", FORM
    )
    assert expired.status == 400 and "This link has expired" in expired.text
    assert "new@example.net" not in statuses(project, env)

    # A link used once, then the reader unsubscribes: the old link cannot subscribe them again.
    assert web.request("POST", "/subscribe", "email=carol@example.net", FORM).status == 200
    (link,) = confirm_links(smtp, "carol@example.net")
    assert web.request("POST", web.local(link), b"confirm=yes", FORM).status == 200
    assert statuses(project, env)["carol@example.net"] == "active"
    assert web.request("POST", web.local(link), b"confirm=yes", FORM).status == 200  # idempotent
    time.sleep(1.1)  # links carry whole seconds
    out = web.request("POST", unsubscribe_link("carol@example.net"), "List-Unsubscribe=One-Click", FORM)
    assert out.status == 200
    replay = web.request("POST", web.local(link), b"confirm=yes", FORM)
    assert replay.status == 400 and "You unsubscribed after this confirmation link" in replay.text
    assert statuses(project, env)["carol@example.net"] == "unsubscribed"


def test_subscribe_confirm_and_the_next_send_includes_the_reader(site, small_issue) -> None:
    project, env, smtp, web = site
    form = web.request("GET", "/subscribe")
    assert form.status == 200 and 'name="email"' in form.text and 'name="name"' in form.text
    asked = web.request(
        "POST", "/subscribe", urlencode({"email": "erin@example.net", "name": "Erin Ödegaard"}), FORM
    )
    assert asked.status == 200 and "Check your inbox" in asked.text
    assert statuses(project, env)["erin@example.net"] == "unconfirmed"
    (got,) = smtp.recorder.by_recipient()["erin@example.net"]
    message = parse(got.data)
    assert message["Subject"] == "Confirm your subscription to The World Digest"
    assert message["From"] == "The World Digest <digest@worlddigest.example.org>"
    (link,) = confirm_links(smtp, "erin@example.net")
    page = web.request("GET", web.local(link))
    assert page.status == 200 and "<button" in page.text
    assert statuses(project, env)["erin@example.net"] == "unconfirmed"  # a GET changes nothing
    done = web.request("POST", web.local(link), b"confirm=yes", FORM)
    assert done.status == 200 and "You are subscribed" in done.text
    assert statuses(project, env)["erin@example.net"] == "active"
    smtp.recorder.received.clear()
    assert digest(project, env, "send", "small", "--yes").returncode == 0
    erin = parse(smtp.recorder.by_recipient()["erin@example.net"][0].data)
    assert erin["To"].addresses[0].display_name == "Erin Ödegaard"


def test_the_answer_is_the_same_for_new_active_and_unsubscribed_addresses(site) -> None:
    project, env, smtp, web = site
    web.request("POST", unsubscribe_link("dmitri@example.org"), "List-Unsubscribe=One-Click", FORM)
    answers = {}
    for address in ("anna@example.com", "dmitri@example.org", "nobody@example.net"):
        answer = web.request("POST", "/subscribe", urlencode({"email": address}), FORM)
        answers[address] = (answer.status, answer.text.replace(address, "ADDRESS"))
    assert len(set(answers.values())) == 1, answers
    # Each gets a confirmation; nobody's status changes until they confirm.
    assert {a: len(confirm_links(smtp, a)) for a in answers} == dict.fromkeys(answers, 1)
    st = statuses(project, env)
    assert (st["anna@example.com"], st["dmitri@example.org"], st["nobody@example.net"]) == (
        "active",
        "unsubscribed",
        "unconfirmed",
    )


def test_rate_limits_per_address_and_per_client(site) -> None:
    _, _, smtp, web = site
    answers = [web.request("POST", "/subscribe", "email=victim@example.net", FORM) for _ in range(6)]
    assert {a.status for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    assert len(confirm_links(smtp, "victim@example.net")) == 3  # at most 3 an hour
    statuses_seen = [
        web.request("POST", "/subscribe", f"email=r{i}@example.net", FORM).status for i in range(16)
    ]
    # 6 + 14 requests from this client pass in the hour; the rest get 429.
    assert statuses_seen == [200] * 14 + [429] * 2
    limited = web.request("POST", "/subscribe", "email=late@example.net", FORM)
    assert limited.status == 429 and "try again in an hour" in limited.text
    assert "late@example.net" not in smtp.recorder.by_recipient()


def test_erasure_keeps_only_a_hash_and_nothing_re_adds_the_reader(site) -> None:
    project, env, smtp, web = site
    sent = digest(project, env, "send", EXAMPLE, "--yes")
    assert sent.returncode == 0
    erased = digest(project, env, "subscribers", "rm", "BORIS@example.com")
    assert erased.returncode == 0 and erased.stdout == "erased BORIS@example.com\n"
    conn = sqlite3.connect(project / ".digest" / "journal.sqlite3")
    dump = "\n".join(conn.iterdump()).lower()
    assert "boris" not in dump and "борис" not in dump
    conn.close()
    again = digest(project, env, "subscribers", "import", "--skip-invalid", str(FIXTURES / "readers.csv"))
    assert "0 added" in again.stdout and "boris@example.com" not in statuses(project, env)
    add = digest(project, env, "subscribers", "add", "boris@example.com")
    assert add.returncode == 1 and add.stderr.startswith("Error: boris@example.com unsubscribed")
    listed = digest(project, env, "send", EXAMPLE, "--list", str(FIXTURES / "readers.csv"), "--dry-run")
    assert "1 unsubscribed" in listed.stdout
    # Not even the file's free pages or the write-ahead log hold the address.
    files = [path for path in (project / ".digest").rglob("*") if path.is_file()]
    assert any(path.name == "journal.sqlite3" for path in files)
    for path in files:
        assert b"boris" not in path.read_bytes().lower(), path
    # The reader can come back, by confirming a new subscription.
    web.request("POST", "/subscribe", "email=boris@example.com", FORM)
    (link,) = confirm_links(smtp, "boris@example.com")
    assert web.request("POST", web.local(link), b"confirm=yes", FORM).status == 200
    assert statuses(project, env)["boris@example.com"] == "active"


def test_bad_input_is_refused_with_a_page_and_no_change(site) -> None:
    project, env, smtp, web = site
    link = unsubscribe_link("anna@example.com")
    huge = web.request("POST", "/subscribe", "email=a@example.net&name=" + "x" * 100_000, FORM)
    assert huge.status == 413
    assert web.request("POST", link, "x" * 100_000, FORM).status == 413
    for kind in ("text/plain", "application/json", "text/xml"):
        answer = web.request("POST", "/subscribe", '{"email": "a@example.net"}', {"Content-Type": kind})
        assert answer.status == 415, kind
        assert web.request("POST", link, "List-Unsubscribe=One-Click", {"Content-Type": kind}).status == 415
    assert statuses(project, env)["anna@example.com"] == "active"
    latin1 = web.request("POST", "/subscribe", b"email=b%FCcher@example.net&name=M%FCller", FORM)
    assert latin1.status == 400 and "UTF-8" in latin1.text
    raw = web.request("POST", "/subscribe", "email=bücher@example.net".encode("latin-1"), FORM)
    assert raw.status == 400
    for injected in (
        "x@example.net\r\nBcc: victim@example.org",
        "x@example.net\nBcc: v@e.org",
        "x@example.net, victim@example.org",
        "<x@example.net>",
    ):
        answer = web.request("POST", "/subscribe", urlencode({"email": injected}), FORM)
        assert answer.status == 400, injected
        assert "That is not an email address" in answer.text
    assert smtp.recorder.received == []
    for path in (
        "/../digest.toml",
        "/_digest/../../digest.toml",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/_digest/..%2f..%2fdigest.toml",
        "/_digest/reader.css/../../digest.toml",
        "/.digest/journal.sqlite3",
        "/issues/2021-12-31/issue.toml",
        "/admin",
    ):
        answer = web.request("GET", path)
        assert answer.status == 404, path
        assert "[newsletter]" not in answer.text
    for method in ("PUT", "DELETE", "PATCH"):
        answer = web.request(method, "/subscribe", "email=a@example.net", FORM)
        assert answer.status == 405 and set(answer.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert web.request("POST", "/_digest/reader.css", "", FORM).status == 405


def test_every_answer_carries_the_security_headers(site) -> None:
    _, _, _, web = site
    for method, path in (
        ("GET", "/subscribe"),
        ("GET", unsubscribe_link("anna@example.com")),
        ("GET", "/nope"),
        ("GET", "/_digest/reader.css"),
        ("GET", "/confirm?email=a@example.net&token=bad"),
    ):
        answer = web.request(method, path)
        for name, value in SECURITY.items():
            assert answer.headers[name] == value, (path, name)
        csp = answer.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src" not in csp
        assert "default-src 'none'" in csp
        assert "<script" not in answer.text
    css = web.request("GET", "/_digest/reader.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")


def test_serve_also_serves_the_published_archive_at_base_url(project: Path) -> None:
    env = {"DIGEST_SECRET": SECRET}
    published = digest(project, env, "publish", EXAMPLE)
    assert published.returncode == 0, published.stderr
    with Serve(project, env) as web:
        page = web.request("GET", f"/{EXAMPLE}/")  # where the email's "Read on the web" points
        feed = web.request("GET", "/feed.atom")
        bare = web.request("GET", f"/{EXAMPLE}")
        outside = web.request("GET", "/.digest-site.json")
        post = web.request("POST", f"/{EXAMPLE}/", "x=1", FORM)
        unsubscribe = web.request("GET", unsubscribe_link("reader@example.org"))
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "Kremlin praises Putin-Biden talks as constructive" in page.text
    assert "We remind our readers" in page.text
    assert feed.status == 200 and feed.headers["Content-Type"].startswith("application/atom+xml")
    assert bare.status == 301 and bare.headers["Location"].endswith(f"/{EXAMPLE}/")
    assert outside.status == 404
    assert post.status == 405
    assert unsubscribe.status == 200  # the readers' pages are still the app's own


def test_serve_started_before_the_first_publish_serves_it_once_written(project: Path) -> None:
    # The default site/ was decided at startup: a publish after it stayed 404 until a restart.
    env = {"DIGEST_SECRET": SECRET}
    with Serve(project, env) as web:
        before = web.request("GET", f"/{EXAMPLE}/")
        published = digest(project, env, "publish", EXAMPLE)
        assert published.returncode == 0, published.stderr
        after = web.request("GET", f"/{EXAMPLE}/")
        unsubscribe = web.request("GET", unsubscribe_link("reader@example.org"))
    assert before.status == 404
    assert after.status == 200 and "We remind our readers" in after.text
    assert unsubscribe.status == 200


def test_serve_with_a_missing_site_folder_is_one_clear_error(project: Path) -> None:
    done = digest(project, {}, "serve", "--port", "0", "--site", "nowhere")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: nowhere: no published site in nowhere\n  hint:")
    assert "Traceback" not in done.stderr


def test_the_subscribe_form_never_changes_a_known_subscriber(site) -> None:
    project, env, smtp, web = site

    def rows() -> dict[str, tuple[str, dict]]:
        out = json.loads(digest(project, env, "subscribers", "ls", "--json").stdout)
        return {r["email"].lower(): (r["status"], r["fields"]) for r in out}

    web.request("POST", unsubscribe_link("dmitri@example.org"), "List-Unsubscribe=One-Click", FORM)
    before = rows()
    for address in ("anna@example.com", "Dmitri@example.org"):
        asked = web.request("POST", "/subscribe", urlencode({"email": address, "name": "Mallory"}), FORM)
        assert asked.status == 200
    assert rows() == before  # no name, no field, no status changed by an anonymous form
    # A known reader who follows the link keeps their fields, whatever name the form gave.
    (link,) = confirm_links(smtp, "anna@example.com")
    assert web.request("POST", web.local(link), b"confirm=yes", FORM).status == 200
    assert rows()["anna@example.com"] == before["anna@example.com"]
    (link,) = confirm_links(smtp, "dmitri@example.org")
    assert web.request("POST", web.local(link), b"confirm=yes", FORM).status == 200
    assert rows()["dmitri@example.org"] == ("active", before["dmitri@example.org"][1])

    # A new reader: the name waits, signed, in the link, and applies only on the confirming POST.
    web.request("POST", "/subscribe", urlencode({"email": "erin@example.net", "name": "Erin"}), FORM)
    assert rows()["erin@example.net"] == ("unconfirmed", {})
    (link,) = confirm_links(smtp, "erin@example.net")
    assert "name=Erin" in link
    for changed in (link.replace("name=Erin", "name=Mallory"), link.replace("&name=Erin", "")):
        answer = web.request("POST", web.local(changed), b"confirm=yes", FORM)
        assert answer.status == 400 and "This link is not valid" in answer.text
    assert rows()["erin@example.net"] == ("unconfirmed", {})
    assert web.request("GET", web.local(link)).status == 200
    assert rows()["erin@example.net"] == ("unconfirmed", {})
    assert web.request("POST", web.local(link), b"confirm=yes", FORM).status == 200
    assert rows()["erin@example.net"] == ("active", {"name": "Erin"})
