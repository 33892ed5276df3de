"""The app factory: paths from the project's URLs, the static mount, overrides, proxies."""

from __future__ import annotations

import html
import logging
import quopri
import re
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
from werkzeug.test import Client

from digest import db, subscribers, tokens
from digest.config import load_project
from digest.settings import Settings
from digest.web import Options, create_app
from digest.web.app import canonical_address, form_name
from digest.web.limits import Limit

from .conftest import write
from .smtpserver import Server

SECRET = "app-secret"


def make_project(root: Path, unsubscribe_url: str, base_url: str) -> Path:
    write(
        root / "digest.toml",
        f'''
        [newsletter]
        name = "Harbour Notes"
        from = "Harbour Notes <notes@harbour.example>"
        base_url = "{base_url}"
        list_id = "notes.harbour.example"
        unsubscribe_url = "{unsubscribe_url}"
        disclaimer = "Opinions are the authors' own."
        ''',
    )
    return root


def client(root: Path, **options) -> Client:
    app = create_app(
        load_project(root),
        Settings(secret=SECRET),
        Options(**options),
        proxies=options.pop("proxies", 0) if "proxies" in options else 0,
    )
    return Client(app)


def test_paths_follow_base_url_and_an_unsubscribe_url_with_path_parameters(tmp_path) -> None:
    root = make_project(
        tmp_path, "https://harbour.example/news/u/{token}/{email}", "https://harbour.example/news"
    )
    c = client(root)
    token = tokens.sign(SECRET, "unsubscribe", "notes.harbour.example", "a@example.org")
    page = c.get(f"/news/u/{token}/a@example.org")
    assert page.status_code == 200 and "a@example.org" in page.text
    assert f'action="/news/u/{token}/a@example.org"' in page.text
    assert c.post(f"/news/u/{token}/a@example.org").status_code == 200
    assert c.get(f"/news/u/{token}/b@example.org").status_code == 400
    assert c.get("/news/subscribe").status_code == 200
    assert 'href="/news/_digest/reader.css"' in c.get("/news/subscribe").text
    assert c.get("/subscribe").status_code == 404


def test_a_published_site_mounts_under_base_url_without_traversal(tmp_path) -> None:
    root = make_project(tmp_path / "p", "https://harbour.example/unsubscribe", "https://harbour.example/")
    site = tmp_path / "site"
    write(site / "index.html", "<h1>Archive</h1>")
    write(site / "2022-01-03" / "index.html", "<h1>Monday</h1>")
    write(site / "feed.xml", "<feed/>")
    (tmp_path / "secret.txt").write_text("private")
    c = client(root, static_dir=site)
    assert c.get("/").text == "<h1>Archive</h1>"
    assert c.get("/2022-01-03/").text == "<h1>Monday</h1>"
    moved = c.get("/2022-01-03")  # the archive's static app: a folder without its slash redirects
    assert moved.status_code == 301 and moved.headers["Location"].endswith("/2022-01-03/")
    feed = c.get("/feed.xml")
    assert feed.status_code == 200 and feed.headers["X-Content-Type-Options"] == "nosniff"
    for path in (
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/missing.html",
        "/2022-01-03/../../secret.txt",
    ):
        assert c.get(path).status_code == 404, path
    assert c.get("/subscribe").status_code == 200  # the app's own routes come first


def test_a_project_overrides_a_page_and_can_extend_the_default(tmp_path) -> None:
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    write(
        root / "templates" / "web" / "reader" / "subscribe.html",
        """
        {% extends "!default/subscribe.html" %}
        {% block title %}Join the harbour{% endblock %}
        """,
    )
    page = client(root).get("/subscribe")
    assert "<title>Join the harbour – Harbour Notes</title>" in page.text
    assert 'name="email"' in page.text


def test_behind_a_proxy_the_client_is_the_forwarded_address(tmp_path) -> None:
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    from digest.web.limits import Limit

    app = create_app(
        load_project(root),
        Settings(secret=SECRET, smtp_host=None),
        Options(per_client=Limit(1, 3600)),
        proxies=1,
    )
    c = Client(app)
    form = {"email": "not-an-address"}  # refused before any limit or email
    assert c.post("/subscribe", data=form).status_code == 400
    # Two different forwarded clients each get their own allowance.
    for forwarded in ("203.0.113.7", "203.0.113.8"):
        answer = c.post("/subscribe", data={"email": "x@example.org"}, headers={"X-Forwarded-For": forwarded})
        assert answer.status_code == 503  # allowed; no SMTP server is configured here
    again = c.post("/subscribe", data={"email": "y@example.org"}, headers={"X-Forwarded-For": "203.0.113.7"})
    assert again.status_code == 429


def confirm(c: Client, address: str, token: str, name: str = ""):
    query = urlencode({"email": address, "token": token, **({"name": name} if name else {})})
    return c.post(f"/confirm?{query}", data={"confirm": "yes"})


def test_the_confirm_link_s_issue_time_does_not_move_with_confirm_days(tmp_path) -> None:
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    scope = "notes.harbour.example"
    conn = db.connect(root / ".digest" / db.DB_NAME)
    subscribers.add(conn, "a@example.org", {"name": "A"}, "active", "test")
    # A link sent 12 hours ago; the reader unsubscribed after it.
    link = tokens.sign_confirm(SECRET, scope, "a@example.org", now=time.time() - 12 * 3600)
    subscribers.set_status(conn, "a@example.org", "unsubscribed", "web: one-click")
    for days in (1, 7, 30):
        answer = confirm(client(root, confirm_days=days), "a@example.org", link)
        assert answer.status_code == 400, days
        assert "You unsubscribed after this confirmation link was sent" in answer.text
    assert subscribers.get(conn, "a@example.org").status == "unsubscribed"
    # Past the current time to live, the link has expired.
    old = tokens.sign_confirm(SECRET, scope, "a@example.org", now=time.time() - 2 * 86400)
    assert "This link has expired" in confirm(client(root, confirm_days=1), "a@example.org", old).text
    # A link sent after the unsubscribe works, whatever --confirm-days is.
    time.sleep(0.01)
    fresh = tokens.sign_confirm(SECRET, scope, "a@example.org")
    assert confirm(client(root, confirm_days=30), "a@example.org", fresh).status_code == 200
    assert subscribers.get(conn, "a@example.org").status == "active"


@pytest.mark.parametrize("typed", ["\u00a0", "\u3000\u3000", " \x1b ", "\u202e"])
def test_a_name_of_nothing_but_spaces_or_controls_is_no_name(typed: str) -> None:
    assert form_name(typed) == ""


def test_a_name_with_control_characters_is_kept_without_them(tmp_path) -> None:
    """A terminal escape sequence or a bidi override typed into the form never reaches the
    store: 'digest subscribers ls' would run it in the editor's terminal."""
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    with Server() as smtp:
        settings = Settings(secret=SECRET, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
        c = Client(create_app(load_project(root), settings, Options()))
        typed = "\x1b[2J\x1b]0;owned\x07 Eve\u202e  Zoë\u00a0Ng"
        assert c.post("/subscribe", data={"email": "eve@example.net", "name": typed}).status_code == 200
        [got] = smtp.recorder.by_recipient()["eve@example.net"]
    link = re.search(rb"https://harbour.example/confirm\?\S+", got.data.replace(b"=\r\n", b"")).group()
    query = dict(parse_qsl(urlsplit(quopri.decodestring(link).decode()).query))
    assert query["name"] == "[2J ]0;owned Eve Zoë\u00a0Ng"  # a no-break space stays
    assert c.post(f"/confirm?{urlencode(query)}", data={"confirm": "yes"}).status_code == 200
    conn = db.connect(root / ".digest" / db.DB_NAME)
    assert subscribers.get(conn, "eve@example.net").fields == {"name": "[2J ]0;owned Eve Zoë\u00a0Ng"}


def test_a_confirm_link_from_before_signed_issue_times(tmp_path) -> None:
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    scope, c = "notes.harbour.example", client(root, confirm_days=1)
    conn = db.connect(root / ".digest" / db.DB_NAME)
    fresh = tokens.sign(SECRET, "confirm", scope, "new@example.org", ttl=7 * 86400)
    assert confirm(c, "new@example.org", fresh).status_code == 200  # valid to its signed expiry
    subscribers.set_status(conn, "new@example.org", "unsubscribed", "web: one-click")
    again = confirm(c, "new@example.org", fresh)
    assert again.status_code == 400 and "from an older version of the site" in again.text
    assert subscribers.get(conn, "new@example.org").status == "unsubscribed"


def test_an_error_is_logged_with_the_route_not_the_path(tmp_path, monkeypatch, caplog) -> None:
    root = make_project(tmp_path, "https://harbour.example/u/{token}/{email}", "https://harbour.example")
    token = tokens.sign(SECRET, "unsubscribe", "notes.harbour.example", "secret-reader@example.org")

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(subscribers, "set_status", broken)
    with caplog.at_level(logging.INFO, logger="digest.web"):
        answer = client(root).post(f"/u/{token}/secret-reader@example.org?x=1")
    assert answer.status_code == 500
    assert "error answering POST unsubscribe: 500" in caplog.text
    assert "secret-reader" not in caplog.text and token not in caplog.text


def test_limits_count_the_canonical_address_and_the_ipv6_64(tmp_path) -> None:
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    with Server() as smtp:
        settings = Settings(secret=SECRET, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
        options = Options(per_address=Limit(1, 3600), per_client=Limit(2, 3600))
        c = Client(create_app(load_project(root), settings, options))

        def ask(address: str, remote: str) -> int:
            answer = c.post("/subscribe", data={"email": address}, environ_base={"REMOTE_ADDR": remote})
            return answer.status_code

        assert ask("victim@example.org", "2001:db8:1:2::1") == 200
        assert ask("Victim+news@Example.org", "2001:db8:1:2::2") == 200  # same answer, no email
        assert ask("victim+x@example.org", "2001:db8:1:2:ffff::3") == 429  # the same /64
        limited = c.post(
            "/subscribe", data={"email": "x@example.org"}, environ_base={"REMOTE_ADDR": "2001:db8:1:2::9"}
        )
        assert limited.status_code == 429 and 3500 < int(limited.headers["Retry-After"]) <= 3600  # what is left
        assert ask("other@example.org", "2001:db8:1:3::1") == 200  # another /64
        assert ask("third@example.org", "192.0.2.1") == 200
        assert sorted(smtp.recorder.by_recipient()) == [
            "other@example.org",
            "third@example.org",
            "victim@example.org",
        ]


@pytest.mark.parametrize(
    ("address", "mailbox"),
    [
        ("Anna+x@Example.com", "anna@example.com"),
        ("v.ic.tim@gmail.com", "victim@gmail.com"),
        ("Vic.Tim+news@GoogleMail.com", "victim@gmail.com"),
        ("v.ictim@example.org", "v.ictim@example.org"),  # dots count elsewhere
        ("anna@bücher.de", "anna@xn--bcher-kva.de"),
        ("anna@xn--bcher-kva.de", "anna@xn--bcher-kva.de"),
    ],
)
def test_the_canonical_address_is_the_mailbox(address: str, mailbox: str) -> None:
    assert canonical_address(address) == mailbox


def test_spellings_of_one_gmail_inbox_share_its_limit(tmp_path) -> None:
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    with Server() as smtp:
        settings = Settings(secret=SECRET, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
        options = Options(per_address=Limit(1, 3600), per_client=Limit(100, 3600))
        c = Client(create_app(load_project(root), settings, options))
        for n, spelling in enumerate(["victim@gmail.com", "v.ictim@gmail.com", "vic.tim@googlemail.com"]):
            answer = c.post(
                "/subscribe", data={"email": spelling}, environ_base={"REMOTE_ADDR": f"192.0.2.{n}"}
            )
            assert answer.status_code == 200  # the same answer, one email
        assert sum(len(v) for v in smtp.recorder.by_recipient().values()) == 1


def test_a_confirmation_that_cannot_be_sent_stores_nothing(tmp_path) -> None:
    # The page says "Nothing was changed": the address was kept as unconfirmed all the same.
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    with Server() as smtp:
        closed = smtp.port
    settings = Settings(secret=SECRET, smtp_host="127.0.0.1", smtp_port=closed, smtp_security="none")
    c = Client(create_app(load_project(root), settings, Options()))
    answer = c.post("/subscribe", data={"email": "down@example.org"})
    assert answer.status_code == 503 and "Nothing was changed" in answer.text
    assert answer.headers["Retry-After"] == "300"
    conn = db.connect(root / ".digest" / db.DB_NAME)
    assert subscribers.get(conn, "down@example.org") is None
    assert subscribers.events(conn, "down@example.org") == []


def test_unconfirmed_subscribers_older_than_confirm_days_expire(tmp_path) -> None:
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    conn = db.connect(root / ".digest" / db.DB_NAME)
    subscribers.add(conn, "stale@example.org", None, "unconfirmed", "web: subscribe form")
    subscribers.add(conn, "recent@example.org", None, "unconfirmed", "web: subscribe form")
    conn.execute(
        "UPDATE subscribers SET updated_at = ? WHERE email_key = 'stale@example.org'",
        (time.time() - 3 * 86400,),
    )
    c = client(root, confirm_days=2)
    assert c.post("/subscribe", data={"email": "not-an-address"}).status_code == 400  # nothing purged yet
    assert subscribers.get(conn, "stale@example.org") is not None
    c.post("/subscribe", data={"email": "x@example.org"})  # 503: no SMTP server here; purged anyway
    assert subscribers.get(conn, "stale@example.org") is None
    assert subscribers.get(conn, "recent@example.org").status == "unconfirmed"


def test_a_refused_confirmation_is_logged_without_the_address(tmp_path, caplog) -> None:
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    with Server() as smtp:
        smtp.recorder.faults["Victim@example.org".lower()] = ["550 5.1.1 <Victim@example.org>: no such user"]
        settings = Settings(secret=SECRET, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
        c = Client(create_app(load_project(root), settings, Options()))
        with caplog.at_level(logging.INFO, logger="digest.web"):
            answer = c.post("/subscribe", data={"email": "Victim@example.org"})
    assert answer.status_code == 503
    assert "SMTPRecipientsRefused" in caplog.text and "<address>" in caplog.text
    assert "victim" not in caplog.text.lower()


def test_a_one_click_post_that_names_nobody_is_refused(tmp_path) -> None:
    """RFC 8058: a mailbox provider takes a 2xx as 'unsubscribed'; a POST without an address
    and token unsubscribed nobody, so it must not answer 200."""
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    c = client(root)
    assert c.get("/unsubscribe").status_code == 200  # the how-to page, for a reader who came by
    answer = c.post("/unsubscribe", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 400 and "names no address" in answer.text


@pytest.mark.parametrize("base", ["/n%C3%B6ws", "/my%20news"])
def test_a_base_url_with_an_encoded_path_is_served_where_its_links_point(tmp_path, base: str) -> None:
    root = make_project(
        tmp_path / "p", f"https://harbour.example{base}/unsubscribe", f"https://harbour.example{base}"
    )
    site = tmp_path / "site"
    write(site / "index.html", "<h1>Archive</h1>")
    write(site / "2022-01-03" / "index.html", "<h1>Monday</h1>")
    c = client(root, static_dir=site)
    subscribe = c.get(f"{base}/subscribe")
    assert subscribe.status_code == 200
    assert f'href="{base}/_digest/reader.css"' in subscribe.text  # links keep the encoded form
    assert c.get(f"{base}/_digest/reader.css").status_code == 200
    assert c.get(f"{base}/").text == "<h1>Archive</h1>"
    moved = c.get(f"{base}/2022-01-03?utm_source=feed")
    assert moved.status_code == 301
    assert moved.headers["Location"].endswith(f"{base}/2022-01-03/?utm_source=feed")  # query kept
    token = tokens.sign(SECRET, "unsubscribe", "notes.harbour.example", "a@example.org")
    query = urlencode({"email": "a@example.org", "token": token})
    assert c.post(f"{base}/unsubscribe?{query}").status_code == 200
    conn = db.connect(root / ".digest" / db.DB_NAME)
    assert subscribers.get(conn, "a@example.org").status == "unsubscribed"


@pytest.mark.parametrize(
    "address", ["a/b@example.org", "a?b@example.org", "a#b@example.org", "a%b@x.org", "a/./b@x.org"]
)
def test_a_path_form_unsubscribe_link_works_for_any_valid_address(tmp_path, address: str) -> None:
    root = make_project(
        tmp_path, "https://harbour.example/news/u/{token}/{email}", "https://harbour.example/news"
    )
    c = client(root)
    token = tokens.sign(SECRET, "unsubscribe", "notes.harbour.example", address)
    path = f"/news/u/{token}/{quote(address, safe='@')}"  # as message.py writes the link
    page = c.get(path)
    assert page.status_code == 200 and html.escape(address) in page.text
    action = html.unescape(re.search(r'action="([^"]*)"', page.text)[1])
    assert "/./" not in action and "/../" not in action  # a browser would drop a dot segment
    posted = c.post(action)  # the page's button
    assert posted.status_code == 200, posted.text
    conn = db.connect(root / ".digest" / db.DB_NAME)
    assert subscribers.get(conn, address).status == "unsubscribed"
    # The one-click POST to the link itself works too.
    assert c.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200


def test_a_confirmation_that_failed_does_not_count_toward_the_address_limit(tmp_path) -> None:
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    with Server() as smtp:
        smtp.recorder.faults["flaky@example.org"] = ["451 4.3.0 try later"] * 3 + ["250 OK"]
        settings = Settings(secret=SECRET, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
        options = Options(per_address=Limit(3, 3600), per_client=Limit(100, 3600))
        c = Client(create_app(load_project(root), settings, options))
        codes = [c.post("/subscribe", data={"email": "flaky@example.org"}).status_code for _ in range(4)]
        assert codes == [503, 503, 503, 200]
        assert len(smtp.recorder.by_recipient()["flaky@example.org"]) == 1  # the 200 sent one


def test_a_confirmation_to_an_internationalised_domain_needs_no_smtputf8(tmp_path) -> None:
    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    with Server(smtputf8=False) as smtp:
        settings = Settings(secret=SECRET, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
        c = Client(create_app(load_project(root), settings, Options()))
        assert c.post("/subscribe", data={"email": "zed@bücher.de"}).status_code == 200
        received = smtp.recorder.by_recipient()
    assert list(received) == ["zed@xn--bcher-kva.de"]  # the envelope, as a send writes it
    assert b"\r\nTo: zed@xn--bcher-kva.de\r\n" in received["zed@xn--bcher-kva.de"][0].data


def test_a_confirmation_the_server_took_counts_however_the_quit_goes(tmp_path) -> None:
    """A QUIT refused (or a connection lost) after the server took the message: the email
    went, so it is not '503, nothing was changed', and it counts toward the address's limit
    (else a server like this one would let one address be mailed without end)."""
    import socketserver
    import threading

    delivered: list[bytes] = []

    class QuitRefused(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            write, in_data = self.wfile.write, False
            write(b"220 stub ESMTP\r\n")
            while line := self.rfile.readline():
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        delivered.append(b"")
                        write(b"250 queued\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"DATA":
                    in_data = True
                    write(b"354 go on\r\n")
                elif verb == b"QUIT":
                    write(b"451 4.3.0 not now\r\n")
                    return
                else:
                    write(b"250 ok\r\n")

    root = make_project(tmp_path, "https://harbour.example/unsubscribe", "https://harbour.example")
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), QuitRefused) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            port = server.server_address[1]
            settings = Settings(secret=SECRET, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none")
            options = Options(per_address=Limit(3, 3600), per_client=Limit(100, 3600))
            c = Client(create_app(load_project(root), settings, options))
            codes = [c.post("/subscribe", data={"email": "victim@example.org"}).status_code for _ in range(5)]
        finally:
            server.shutdown()
            thread.join()
    assert codes == [200] * 5
    assert len(delivered) == 3
    conn = db.connect(root / ".digest" / db.DB_NAME)
    assert subscribers.get(conn, "victim@example.org").status == "unconfirmed"


@pytest.mark.parametrize(
    "unsubscribe",
    ["https://harbour.example/news/{email}?token={token}", "https://harbour.example/news/{token}/{email}"],
)
def test_a_path_form_unsubscribe_link_leaves_the_archive_alone(tmp_path, unsubscribe: str) -> None:
    """The unsubscribe route takes an address ('@' and a domain), not every path under
    base_url: the archive's pages and pictures in subfolders are still served."""
    root = make_project(tmp_path / "p", unsubscribe, "https://harbour.example/news")
    site = tmp_path / "site"
    write(site / "index.html", "<h1>Archive</h1>")
    write(site / "2024-03-04" / "index.html", "<h1>Monday</h1>")
    write(site / "2024-03-04" / "maps" / "port.png", "png")
    c = client(root, static_dir=site)
    assert c.get("/news/2024-03-04/index.html").text == "<h1>Monday</h1>"
    assert c.get("/news/2024-03-04/maps/port.png").text == "png"
    assert c.get("/news/2024-03-04/").text == "<h1>Monday</h1>"
    token = tokens.sign(SECRET, "unsubscribe", "notes.harbour.example", "a@example.org")
    link = unsubscribe.replace("{email}", "a@example.org").replace("{token}", token)
    assert c.get(link.removeprefix("https://harbour.example")).status_code == 200


def test_a_base_path_that_werkzeug_cannot_route_is_a_clear_error(tmp_path) -> None:
    from digest.errors import ConfigError

    root = make_project(
        tmp_path, "https://harbour.example/a%3Cb%3E/unsubscribe", "https://harbour.example/a%3Cb%3E"
    )
    with pytest.raises(ConfigError) as e:
        client(root)
    assert "holds '<' or '>', which digest serve cannot route" in e.value.message


def test_retry_after_is_the_time_left_in_the_window(tmp_path) -> None:
    from digest.web.limits import allow, seconds_left

    conn = db.connect(tmp_path / "j.sqlite3")
    limit = Limit(1, 3600)
    assert allow(conn, "client:x", limit, now=1000.0)
    assert not allow(conn, "client:x", limit, now=1000.0 + 3000)
    assert seconds_left(conn, "client:x", limit, now=1000.0 + 3000) == 600
    assert seconds_left(conn, "client:x", limit, now=1000.0 + 3599.5) == 1
