"""The app factory: paths from the project's URLs, the static mount, overrides, proxies."""

from __future__ import annotations

from pathlib import Path

from werkzeug.test import Client

from digest import tokens
from digest.config import Settings, load_project
from digest.web import Options, create_app

from .conftest import write

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
    assert c.get("/2022-01-03").text == "<h1>Monday</h1>"
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
