"""The web archive: `digest publish` on real projects, read back by a crawler, feedparser,
a WSGI client, waitress and Chromium (axe-core)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import feedparser
import lxml.html
import pytest
from click.testing import CliRunner

from digest.cli import cli
from digest.config import load_project
from digest.message import unsubscribe_token
from digest.publish import publish_site, static_app

from .conftest import EXAMPLE, FIXTURES, story, write
from .golden import GOLDEN, assert_golden
from .smtpserver import Server

BASE = "https://worlddigest.example.org"
LIST_ID = "world-digest.worlddigest.example.org"
SECRET = "test-secret-0123456789"
ATOM = "{http://www.w3.org/2005/Atom}"
TITLES = [
    "Kremlin praises Putin-Biden talks as constructive – aide",
    "Putin said new sanctions could cause complete severance of Russian-US ties – Kremlin aide",
    "Five key takeaways from latest Putin-Biden call",
]


def publish(runner: CliRunner, *args: str):
    return runner.invoke(cli, ["publish", *args])


def site_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def site_path(out: Path, url: str, base: str = BASE) -> Path:
    """Map an absolute URL under the site onto the file a static host would serve."""
    assert url.startswith(base + "/"), url
    rel = unquote(urlsplit(url).path[len(urlsplit(base).path) + 1 :])
    return out / (rel + "index.html" if rel == "" or rel.endswith("/") else rel)


def make_issue(
    project: Path, slug: str, day: str, title: str, stories: int = 2, source: str = "Example"
) -> Path:
    folder = project / "issues" / slug
    write(folder / "issue.toml", f'subject = "{title}"\ndate = {day}\npreheader = "About {title}."\n')
    for n in range(stories):
        story(
            folder / f"story-{n}.md",
            f"{title}, story {n}",
            f"Text {n} of {title}.",
            source=source,
            url=f"https://example.com/{slug}/{n}",
        )
    return folder


@pytest.fixture
def held_in(project: Path, runner: CliRunner) -> Path:
    """The example issue plus the held-in test digests imported through the CLI."""
    for slug, day, fixture in (
        ("2022-03-03", "2022-03-03", "second-digest.txt"),
        ("2022-01-07", "2022-01-07", "seed.txt"),
    ):
        result = runner.invoke(cli, ["new", slug, "--date", day, "--title", f"Digest of {day}"])
        assert result.exit_code == 0, result.output
        result = runner.invoke(cli, ["import", slug, str(FIXTURES / fixture)])
        assert result.exit_code == 0, result.output
    return project


def crawl(out: Path, base: str = BASE) -> set[Path]:
    """Follow every link from the home page; assert each internal one resolves, anchors too."""
    subscribe = f"{base}/subscribe"
    seen: set[Path] = set()
    todo = [out / "index.html"]
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        rel = page.relative_to(out).as_posix().removesuffix("index.html")
        page_url = f"{base}/{rel}"
        tree = lxml.html.fromstring(page.read_bytes())
        for _element, _attribute, link, _ in tree.iterlinks():
            url = urljoin(page_url, link)
            if not url.startswith(base + "/") or url.split("#")[0] == subscribe:
                assert urlsplit(url).scheme in ("http", "https"), (page, link)
                continue
            target = site_path(out, url.split("#")[0], base)
            assert target.is_file(), f"{page.relative_to(out)}: broken link {link!r}"
            fragment = urlsplit(url).fragment
            if fragment:
                ids = lxml.html.fromstring(target.read_bytes()).xpath("//@id")
                assert fragment in ids, f"{page.relative_to(out)}: no anchor {link!r}"
            if target.name == "index.html":
                todo.append(target)
    return seen


def test_publish_writes_the_example_issue_where_its_link_points(project: Path, runner: CliRunner) -> None:
    result = publish(runner, EXAMPLE)
    assert result.exit_code == 0, result.output
    out = project / "site"
    assert result.stdout.splitlines()[-1] == ("1 issue published in site: 10 written, 0 removed, 0 unchanged")
    page = lxml.html.fromstring((out / EXAMPLE / "index.html").read_bytes())
    assert page.findtext(".//title") == "Putin and Biden talk again: what was said"
    assert [h.text_content() for h in page.cssselect("h2.story-title")][:2] == TITLES[:2]
    assert page.cssselect("#kremlin-praises-putin-biden-talks-as-constructive-aide")
    meta = {m.get("property") or m.get("name"): m.get("content") for m in page.iter("meta")}
    assert meta["og:url"] == f"{BASE}/{EXAMPLE}/"
    assert (
        meta["og:description"]
        == meta["description"]
        == meta["twitter:description"]
        == ("The Kremlin calls the call constructive; Washington warns of a decisive response.")
    )
    assert meta["og:title"] == meta["twitter:title"] == "Putin and Biden talk again: what was said"
    assert page.xpath("//link[@rel='canonical']/@href") == [f"{BASE}/{EXAMPLE}/"]
    text = " ".join(page.text_content().split())
    assert "We remind our readers that publication of articles on our site" in text
    assert page.xpath(f"//a[@href='{BASE}/subscribe']")
    assert "nsubscribe" not in (out / EXAMPLE / "index.html").read_text()
    for feed in ("feed.atom", "feed.json"):
        assert f"{BASE}/{EXAMPLE}/" in (out / feed).read_text()


def test_a_first_publish_makes_the_state_folder_the_owners_alone(project: Path, runner: CliRunner) -> None:
    # .digest/ later holds the readers' addresses: publish made it 0755 when it came first.
    shutil.rmtree(project / ".digest", ignore_errors=True)
    old = os.umask(0o022)
    try:
        result = publish(runner, EXAMPLE)
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert (project / ".digest").stat().st_mode & 0o777 == 0o700


def test_a_right_to_left_newsletter_gets_a_right_to_left_archive(project: Path, runner: CliRunner) -> None:
    # The email was dir="rtl"; the archive's pages said nothing, and read left to right.
    config = project / "digest.toml"
    config.write_text(config.read_text().replace('language = "en"', 'language = "ar-EG"', 1))
    assert publish(runner, EXAMPLE).exit_code == 0
    for page in ("index.html", f"{EXAMPLE}/index.html", "sources/index.html"):
        root = lxml.html.fromstring((project / "site" / page).read_bytes())
        assert (root.get("lang"), root.get("dir")) == ("ar-EG", "rtl"), page


def test_a_story_in_a_language_of_its_own_keeps_it_on_every_page(project: Path, runner: CliRunner) -> None:
    """Its title, picture and text on the issue's page, and its title on its source's page."""
    story = sorted((project / "issues" / EXAMPLE).glob("*.md"))[0]
    story.write_text(
        story.read_text(encoding="utf-8").replace("---\n", "---\nlanguage: ar\n", 1), encoding="utf-8"
    )
    assert publish(runner, EXAMPLE).exit_code == 0
    page = lxml.html.fromstring((project / "site" / EXAMPLE / "index.html").read_bytes())
    assert [(e.tag, e.get("dir")) for e in page.xpath('//*[@lang="ar"]')] == [("h2", "rtl"), ("div", "rtl")]
    marked = []
    for source_page in (project / "site" / "sources").glob("*/index.html"):
        tree = lxml.html.fromstring(source_page.read_bytes())
        marked += [(e.get("class"), e.get("dir")) for e in tree.xpath('//*[@lang="ar"]')]
    assert marked == [("issue-item-title", "rtl")]


def test_the_example_site_matches_the_golden_tree(project: Path, runner: CliRunner) -> None:
    out = _published(project, runner, EXAMPLE)
    files = {name: data for name, data in site_files(out).items() if name != ".digest-site.json"}
    golden = GOLDEN / "site"
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(golden, ignore_errors=True)
        for name in files:
            (golden / name).parent.mkdir(parents=True, exist_ok=True)
    assert sorted(files) == sorted(
        p.relative_to(golden).as_posix() for p in golden.rglob("*") if p.is_file()
    ) or os.environ.get("UPDATE_GOLDEN")
    for name, data in files.items():
        assert_golden(f"site/{name}", data)


def test_every_link_inside_the_site_resolves(held_in: Path, runner: CliRunner) -> None:
    for n in range(23):  # 26 issues: two index pages
        make_issue(
            held_in,
            f"gen-{n:02d}",
            f"2022-02-{n + 1:02d}",
            f"Generated {n}",
            source="TASS" if n % 2 else "Reuters / AFP",
        )
    slugs = sorted(p.name for p in (held_in / "issues").iterdir())
    result = publish(runner, *slugs)
    assert result.exit_code == 0, result.output
    out = held_in / "site"
    visited = crawl(out)
    pages = set(out.rglob("index.html"))
    assert visited == pages  # every page is reachable from the home page
    assert (out / "page" / "2" / "index.html").is_file()
    assert not (out / "page" / "3").exists()
    home = lxml.html.fromstring((out / "index.html").read_bytes())
    items = [a.get("href") for a in home.cssselect(".issue-item-title a")]
    assert len(items) == 20 and items[0] == "2022-03-03/" and items[1] == "gen-22/"
    assert (out / "sources" / "reuters-afp" / "index.html").is_file()
    tass = (out / "sources" / "tass" / "index.html").read_text()
    assert "Kremlin praises Putin-Biden talks as constructive – aide" in tass
    sitemap = ET.parse(out / "sitemap.xml").getroot()
    locs = [e.text for e in sitemap.iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")]
    assert sorted(site_path(out, loc) for loc in locs) == sorted(pages)
    assert (out / "robots.txt").read_text().endswith(f"Sitemap: {BASE}/sitemap.xml\n")


@pytest.fixture
def sent(held_in: Path, tmp_path: Path, monkeypatch) -> tuple[Server, list[str]]:
    """The example issue really sent to an aiosmtpd sink; the held-in digests stay drafts."""
    addresses = ["anna@example.com", "BORIS@example.com", "dmitri@example.org"]
    with Server() as server:
        for key, value in {
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(server.port),
            "DIGEST_SMTP_SECURITY": "none",
            "DIGEST_SECRET": SECRET,
        }.items():
            monkeypatch.setenv(key, value)
        result = CliRunner().invoke(
            cli, ["send", EXAMPLE, "--list", str(FIXTURES / "subscribers.csv"), "--yes"]
        )
        assert result.exit_code == 0, result.output
        assert len(server.recorder.received) == 4  # anna, boris, chloé (a UTF-8 local part) and dmitri
        yield server, addresses


def test_the_read_on_the_web_link_of_a_sent_message_is_its_page(sent, held_in: Path, runner: CliRunner) -> None:
    server, _ = sent
    result = publish(runner)  # nothing named: the sent issue only, never the drafts
    assert result.exit_code == 0, result.output
    out = held_in / "site"
    assert sorted(
        p.name for p in out.iterdir() if (p / "index.html").is_file() and p.name not in ("sources", "page")
    ) == [EXAMPLE]
    message = email.message_from_bytes(server.recorder.received[0].data, policy=email.policy.default)
    html = lxml.html.fromstring(message.get_body(("html",)).get_content())
    links = [a.get("href") for a in html.iter("a") if a.text_content() == "Read on the web"]
    assert links == [f"{BASE}/{EXAMPLE}/"]
    text = message.get_body(("plain",)).get_content()
    assert f"Read on the web: {links[0]}" in text
    page = site_path(out, links[0])
    assert page == out / EXAMPLE / "index.html"
    shown = [h.text_content() for h in lxml.html.fromstring(page.read_bytes()).cssselect("h2.story-title")]
    assert shown == [h.text_content() for h in html.cssselect("h2.story-title")]
    assert all(title in shown for title in TITLES)


def test_no_subscriber_address_or_token_anywhere_in_the_site(sent, held_in: Path, runner: CliRunner) -> None:
    server, addresses = sent
    assert publish(runner, "2022-03-03").exit_code == 0
    secrets = [SECRET, "chloé@example.com", "Борис", "Schmidt"]
    for address in addresses:
        secrets += [
            address,
            address.lower(),
            unsubscribe_token(SECRET, LIST_ID, address.lower()),
            address.lower().replace("@", "%40"),
        ]
    # UTF-8: the reader with a UTF-8 local part gets an RFC 6532 header.
    received = [r.data.decode("utf-8") for r in server.recorder.received]
    tokens = re.findall(r"token=([0-9A-Za-z_-]{16,})", "".join(received).replace("=\r\n", ""))
    assert tokens
    secrets += tokens
    files = site_files(held_in / "site")
    assert len(files) > 10
    for name, data in files.items():
        text = data.decode("utf-8")
        for secret in secrets:
            assert secret not in text, f"{name} carries {secret!r}"
        assert "token=" not in text and "@example.com" not in text, name


def _published(project: Path, runner: CliRunner, *args: str) -> Path:
    result = publish(runner, *args)
    assert result.exit_code == 0, result.output
    return project / "site"


def test_drafts_are_never_published_and_a_named_issue_stays(held_in: Path, runner: CliRunner) -> None:
    (held_in / "site" / ".git").mkdir(parents=True)  # a fresh checkout of a pages branch
    (held_in / "site" / ".git" / "HEAD").write_text("ref: refs/heads/gh-pages\n")
    result = publish(runner)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("0 issues published in site: ")
    assert "No issue is published yet" in result.stderr
    assert "No issue has been published yet." in (held_in / "site" / "index.html").read_text()
    assert feedparser.parse((held_in / "site" / "feed.atom").read_bytes()).entries == []
    assert publish(runner, "2022-03-03").exit_code == 0
    result = publish(runner)  # named once, published from then on
    assert result.stdout.splitlines()[-1].startswith("1 issue published in site: 0 written")
    assert (held_in / "site" / "2022-03-03" / "index.html").is_file()
    assert not (held_in / "site" / EXAMPLE).exists() and not (held_in / "site" / "2022-01-07").exists()
    assert (held_in / "site" / ".git" / "HEAD").read_text() == "ref: refs/heads/gh-pages\n"


def test_a_draft_published_to_a_scratch_folder_stays_off_the_site(
    held_in: Path, runner: CliRunner, tmp_path: Path
) -> None:
    """An editor looks at a draft's page with --out elsewhere: that name is for that run only."""
    scratch = tmp_path / "look"
    assert publish(runner, "2022-01-07", "--out", str(scratch)).exit_code == 0
    assert (scratch / "2022-01-07" / "index.html").is_file()
    state = held_in / ".digest" / "archive.json"
    assert not state.exists() or "2022-01-07" not in state.read_text()  # nor its dates kept
    result = publish(runner)
    assert result.exit_code == 0, result.output
    assert not (held_in / "site" / "2022-01-07").exists()
    assert "2022-01-07" not in (held_in / "site" / "feed.atom").read_text()
    assert publish(runner, "2022-01-07", "--out", "site").exit_code == 0  # the site itself: remembered
    assert publish(runner, "--out", str(tmp_path / "copy")).exit_code == 0
    assert (tmp_path / "copy" / "2022-01-07" / "index.html").is_file()


def test_feeds_parse_and_carry_what_their_specifications_require(held_in: Path, runner: CliRunner) -> None:
    out = _published(held_in, runner, EXAMPLE, "2022-03-03", "2022-01-07")
    atom = feedparser.parse((out / "feed.atom").read_bytes())
    assert not atom.bozo, atom.get("bozo_exception")
    assert atom.version == "atom10"
    assert [e.link for e in atom.entries] == [
        f"{BASE}/2022-03-03/",
        f"{BASE}/2022-01-07/",
        f"{BASE}/{EXAMPLE}/",
    ]
    example = atom.entries[2]
    assert example.title == "Putin and Biden talk again: what was said"
    assert example.updated == example.published == "2021-12-31T00:00:00Z"
    content = example.content[0].value
    assert TITLES[0] in content and "We remind our readers" in content
    assert f'href="{BASE}/{EXAMPLE}/#kremlin-praises-putin-biden-talks-as-constructive-aide"' in content
    # RFC 4287: the feed has id, title, updated and an author (or every entry has one);
    # every entry has id, title, updated, and content or a link rel=alternate.
    root = ET.parse(out / "feed.atom").getroot()
    assert root.tag == f"{ATOM}feed"
    for tag in ("id", "title", "updated", "author/" + ATOM + "name"):
        assert len(root.findall(ATOM + tag)) == 1, tag
    assert root.find(f"{ATOM}link[@rel='self']").get("href") == f"{BASE}/feed.atom"
    ids = []
    for entry in root.findall(f"{ATOM}entry"):
        for tag in ("id", "title", "updated", "published", "summary", "content"):
            assert len(entry.findall(ATOM + tag)) == 1, tag
        assert entry.find(f"{ATOM}link[@rel='alternate']") is not None
        assert entry.find(f"{ATOM}content").get("type") == "html"
        dt.datetime.fromisoformat(entry.findtext(f"{ATOM}updated").replace("Z", "+00:00"))
        ids.append(entry.findtext(f"{ATOM}id"))
    assert len(set(ids)) == 3 and all(i.startswith("urn:uuid:") for i in ids)

    # JSON Feed 1.1 (feedparser 6.0 reads no JSON): version, title and items are required;
    # every item has a string id and content_html or content_text; dates are RFC 3339.
    feed = json.loads((out / "feed.json").read_text())
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["title"] == "The World Digest" and isinstance(feed["items"], list)
    assert feed["feed_url"] == f"{BASE}/feed.json" and feed["home_page_url"] == f"{BASE}/"
    assert [i["id"] for i in feed["items"]] == ids  # the same stable ids in both feeds
    for item in feed["items"]:
        assert isinstance(item["id"], str) and item["content_html"].strip()
        for key in ("date_published", "date_modified"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item[key])
    content = feed["items"][2]["content_html"]
    assert TITLES[0] in content and "We remind our readers" in content
    assert f'href="{BASE}/{EXAMPLE}/#kremlin-praises-putin-biden-talks-as-constructive-aide"' in content
    assert feed["items"][2]["url"] == f"{BASE}/{EXAMPLE}/"


def test_updated_moves_only_when_the_issue_changes(held_in: Path) -> None:
    project = load_project(held_in)
    later = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.UTC)
    publish_site(project, named=(EXAMPLE, "2022-03-03"), now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    first = json.loads((held_in / "site" / "feed.json").read_text())
    again = publish_site(project, now=later)  # nothing changed; named issues are remembered
    assert again.changes.written == [] and again.issues == ["2022-03-03", EXAMPLE]
    kremlin = held_in / "issues" / EXAMPLE / "kremlin-praises-putin-biden-talks-as-constructive-aide.md"
    kremlin.write_text(kremlin.read_text().replace("frank, meaningful", "frank and meaningful"))
    changed = publish_site(project, now=later)
    assert f"{EXAMPLE}/index.html" in changed.changes.written
    assert "2022-03-03/index.html" not in changed.changes.written
    after = {i["url"]: i for i in json.loads((held_in / "site" / "feed.json").read_text())["items"]}
    before = {i["url"]: i for i in first["items"]}
    example = f"{BASE}/{EXAMPLE}/"
    assert after[example]["date_modified"] == "2030-05-01T12:00:00Z"
    assert after[example]["date_published"] == before[example]["date_published"]
    other = f"{BASE}/2022-03-03/"
    assert after[other] == before[other]


def test_same_bytes_twice_and_a_second_run_writes_nothing(
    held_in: Path, runner: CliRunner, tmp_path: Path
) -> None:
    out = _published(held_in, runner, EXAMPLE, "2022-03-03", "2022-01-07")
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*")}
    before = site_files(out)
    time.sleep(0.01)
    result = publish(runner)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"3 issues published in site: 0 written, 0 removed, {len(before) - 1} unchanged"
    ]
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*")} == stamps
    state = held_in / ".digest" / "archive.json"
    state_stamp = state.stat().st_mtime_ns
    other = tmp_path / "elsewhere"
    assert publish(runner, "--out", str(other)).exit_code == 0
    assert site_files(other) == before
    assert state.stat().st_mtime_ns == state_stamp


def test_stale_files_are_removed_from_the_site_folder_only(held_in: Path, runner: CliRunner) -> None:
    out = _published(held_in, runner, EXAMPLE, "2022-03-03")
    (out / "CNAME").write_text("worlddigest.example.org\n")  # the editor's own file
    beside = held_in / "notes.txt"
    beside.write_text("keep me")
    shutil.rmtree(held_in / "issues" / "2022-03-03")
    result = publish(runner)
    assert result.exit_code == 0, result.output
    assert "removed site/2022-03-03/index.html" in result.stdout
    assert not (out / "2022-03-03").exists()
    assert (out / "CNAME").read_text() == "worlddigest.example.org\n"
    assert beside.read_text() == "keep me"
    assert "2022-03-03" not in (out / "feed.atom").read_text()
    crawl(out)


def test_an_image_beside_the_story_is_published_with_its_page(project: Path, runner: CliRunner) -> None:
    folder = make_issue(project, "pictures", "2022-04-01", "Pictures", stories=1)
    (folder / "harbour.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    text = (folder / "story-0.md").read_text()
    (folder / "story-0.md").write_text(
        text.replace("---\n", "---\nimage: {src: harbour.png, alt: The harbour at dawn}\n", 1)
    )
    out = _published(project, runner, "pictures")
    assert (out / "pictures" / "harbour.png").read_bytes().startswith(b"\x89PNG")
    crawl(out)
    assert (
        f'src="{BASE}/pictures/harbour.png"'
        in json.loads((out / "feed.json").read_text())["items"][0]["content_html"]
    )


def test_body_images_are_published_where_the_email_links_them(project: Path, runner: CliRunner) -> None:
    folder = make_issue(project, "pictures", "2022-04-01", "Pictures", stories=1)
    pictures = {"harbour.png": b"harbour", "wide.png": b"wide", "maps/café map.png": b"cafe"}
    for name, data in pictures.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    text = (folder / "story-0.md").read_text()
    (folder / "story-0.md").write_text(
        text.replace("---\n", "---\nimage: {src: harbour.png, alt: The harbour at dawn}\n", 1)
        + "\n![A wide map](wide.png)\n\n![Kyiv](<maps/café map.png>)\n"
    )
    out = _published(project, runner, "pictures")
    for name, data in pictures.items():
        assert (out / "pictures" / name).read_bytes().endswith(data), name
    crawl(out)  # the page's relative srcs find the copies
    result = runner.invoke(cli, ["export", "pictures", "--format", "eml", "--out", "build"])
    assert result.exit_code == 0, result.output
    msg = email.message_from_bytes(
        (project / "build" / "pictures.eml").read_bytes(), policy=email.policy.default
    )
    srcs = [i.get("src") for i in lxml.html.fromstring(msg.get_body(("html",)).get_content()).iter("img")]
    assert len(srcs) == 3
    for src in srcs:  # each picture the email links is the published file at that URL
        assert site_path(out, src).read_bytes() == (folder / unquote(src.split("/pictures/")[1])).read_bytes()
    check = runner.invoke(cli, ["check", "pictures"])
    assert "not published yet" not in check.stdout and "has changed" not in check.stdout


def test_a_missing_body_image_is_a_warning_of_the_publish(project: Path, runner: CliRunner) -> None:
    folder = make_issue(project, "pictures", "2022-04-01", "Pictures", stories=1)
    (folder / "story-0.md").write_text((folder / "story-0.md").read_text() + "\n![Gone](gone.png)\n")
    result = publish(runner, "pictures")
    assert result.exit_code == 0, result.output
    assert (
        "Warning: issues/pictures/story-0.md:8: image not found in the issue folder: 'gone.png'"
        in result.stderr
    )
    assert (project / "site" / "pictures" / "index.html").is_file()


def test_a_project_template_extends_the_default(project: Path, runner: CliRunner) -> None:
    write(
        project / "templates" / "web" / "archive" / "issue.html",
        """
        {% extends "!default/web/archive/issue.html" %}
        {% block head %}{{ super() }}<meta name="x-custom" content="yes">{% endblock %}
        """,
    )
    out = _published(project, runner, EXAMPLE)
    page = (out / EXAMPLE / "index.html").read_text()
    assert '<meta name="x-custom" content="yes">' in page and TITLES[0] in page


def test_a_template_without_the_disclaimer_fails_naming_it(project: Path, runner: CliRunner) -> None:
    write(
        project / "templates" / "web" / "archive" / "content.html",
        """
        {% for story in stories %}{% include "partials/story.html" %}{% endfor %}
        """,
    )
    write(
        project / "templates" / "web" / "archive" / "issue.html",
        """
        {% extends "!default/web/archive/issue.html" %}
        {% block footer %}{% endblock %}
        """,
    )
    result = publish(runner, EXAMPLE)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: templates/web/archive/issue.html: the rendered web "
        "page does not carry the editorial disclaimer\n  hint:"
    )
    assert not (project / "site").exists()


# -- bad input --------------------------------------------------------------------------


def test_a_base_url_without_scheme_is_a_clear_error(project: Path, runner: CliRunner) -> None:
    config = project / "digest.toml"
    config.write_text(config.read_text().replace('base_url = "https://', 'base_url = "'))
    result = publish(runner, EXAMPLE)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: digest.toml:7: 'base_url' must be an http(s) URL: 'worlddigest.example.org'\n"
        "  hint: write the full address, e.g. https://example.org\n"
    )
    assert not (project / "site").exists()


def test_no_base_url_is_a_clear_error(project: Path, runner: CliRunner) -> None:
    config = project / "digest.toml"
    config.write_text(re.sub(r"(?m)^base_url = .*\n", "", config.read_text()))
    result = publish(runner, EXAMPLE)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: digest.toml:3: publishing needs 'base_url' in [newsletter]\n  hint: add base_url"
    )


@pytest.mark.parametrize("slug", ["two words", "caf%C3%A9", "sources", "a'b"])
def test_an_issue_name_unsafe_in_a_path_is_a_clear_error(project: Path, runner: CliRunner, slug: str) -> None:
    make_issue(project, slug, "2022-05-01", "Unsafe")
    result = publish(runner, EXAMPLE, slug)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: issues/{slug}: the issue name {slug!r} is ")
    assert "\n  hint: rename the folder" in result.stderr
    assert not (project / "site").exists()


def test_every_problem_is_reported_at_once(project: Path, runner: CliRunner) -> None:
    make_issue(project, "two words", "2022-05-01", "Unsafe")
    broken = make_issue(project, "broken", "2022-05-02", "Broken")
    (broken / "story-0.md").write_text("no front matter\n")
    result = publish(runner, "two words", "broken")
    assert result.exit_code == 1
    assert "Error: issues/two words: the issue name" in result.stderr
    assert "Error: issues/broken/story-0.md:1: no front matter" in result.stderr
    assert result.stderr.endswith("2 problems found; nothing was written.\n")


@pytest.mark.parametrize("out", ["issues/site", "issues", ".", "templates/site", ".."])
def test_an_output_folder_that_would_overwrite_the_project_is_refused(
    project: Path, runner: CliRunner, out: str
) -> None:
    before = sorted(str(p) for p in project.rglob("*"))
    result = publish(runner, EXAMPLE, "--out", out)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ")
    assert "\n  hint: publish into a folder of its own, such as site/" in result.stderr
    assert sorted(str(p) for p in project.rglob("*")) == before


def test_a_folder_digest_did_not_write_is_refused(project: Path, runner: CliRunner) -> None:
    (project / "public").mkdir()
    (project / "public" / "precious.txt").write_text("mine")
    result = publish(runner, EXAMPLE, "--out", "public")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: public: the output folder is not empty and was not written by 'digest publish'\n"
    )
    assert sorted(p.name for p in (project / "public").iterdir()) == ["precious.txt"]


def test_script_in_a_title_is_escaped_everywhere(project: Path, runner: CliRunner) -> None:
    evil = 'Breaking </script><script>alert("x")</script> & <b>bold</b>'
    folder = project / "issues" / "evil"
    write(folder / "issue.toml", "subject = 'Evil </script><script>alert(1)</script>'\ndate = 2022-06-01\n")
    story(folder / "a.md", json.dumps(evil), "Body </script> text.", source=json.dumps(evil))
    out = _published(project, runner, "evil")
    for name, data in site_files(out).items():
        if name == "feed.json":  # JSON strings: titles are plain text there
            continue
        text = data.decode()
        assert "<script>alert" not in text, name
        assert "<b>bold" not in text, name
    page = lxml.html.fromstring((out / "evil" / "index.html").read_bytes())
    scripts = page.xpath("//script")
    assert [s.get("type") for s in scripts] == ["application/ld+json"]
    assert json.loads(scripts[0].text)["headline"] == "Evil </script><script>alert(1)</script>"
    assert page.cssselect("h2.story-title")[0].text_content() == evil
    atom = feedparser.parse((out / "feed.atom").read_bytes())
    assert not atom.bozo and atom.entries[0].title == "Evil </script><script>alert(1)</script>"
    assert json.loads((out / "feed.json").read_text())["items"][0]["tags"] == [evil]
    crawl(out)


# -- serving ----------------------------------------------------------------------------


def test_the_static_app_serves_the_site_with_types_and_caching(project: Path, runner: CliRunner) -> None:
    from werkzeug.test import Client

    out = _published(project, runner, EXAMPLE)
    client = Client(static_app(out, "/digest"))
    page = client.get(f"/digest/{EXAMPLE}/")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-cache, public"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.get_data() == (out / EXAMPLE / "index.html").read_bytes()
    etag = page.headers["ETag"]
    assert client.get(f"/digest/{EXAMPLE}/", headers={"If-None-Match": etag}).status_code == 304
    types = {
        "feed.atom": "application/atom+xml; charset=utf-8",
        "feed.json": "application/feed+json",
        "sitemap.xml": "application/xml; charset=utf-8",
        "robots.txt": "text/plain; charset=utf-8",
        "archive.css": "text/css; charset=utf-8",
    }
    for name, content_type in types.items():
        response = client.get(f"/digest/{name}")
        assert response.status_code == 200 and response.headers["Content-Type"] == content_type
    assert client.get("/digest").headers["Location"].endswith("/digest/")
    assert client.get(f"/digest/{EXAMPLE}").headers["Location"].endswith(f"/digest/{EXAMPLE}/")
    for bad in (
        "/digest/.digest-site.json",
        "/digest/../digest.toml",
        "/digest/%2e%2e/digest.toml",
        "/digest/nope/",
        f"/{EXAMPLE}/",
        "/digest/sources/..%2f..%2fdigest.toml",
        "/digest//etc",  # an absolute path must not reveal what exists outside the site
        "/digest//tmp/",
        "/digest/sources//index.html",
    ):
        assert client.get(bad).status_code == 404, bad
    assert client.post(f"/digest/{EXAMPLE}/").status_code == 405
    assert client.head(f"/digest/{EXAMPLE}/").status_code == 200


def test_publish_serve_answers_on_loopback_at_the_base_path(project: Path) -> None:
    import http.client

    config = project / "digest.toml"
    config.write_text(config.read_text().replace('example.org"\nlist_id', 'example.org/news"\nlist_id'))
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "publish", EXAMPLE, "--serve", "--port", "0"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = ""
        while "Serving" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()
        url = urlsplit(line.split(" at ")[1].split()[0])
        assert url.hostname == "127.0.0.1" and url.path == "/news/"
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        connection.request("GET", f"/news/{EXAMPLE}/")
        response = connection.getresponse()
        assert response.status == 200
        assert TITLES[0] in response.read().decode()
        assert (
            f'href="https://worlddigest.example.org/news/{EXAMPLE}/"'
            in (project / "site" / EXAMPLE / "index.html").read_text()
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_busy_port_is_a_clear_error(project: Path, runner: CliRunner) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = publish(runner, EXAMPLE, "--serve", "--port", str(port))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        "  hint: choose another --port (0 takes any free one)\n"
    )


def test_help_has_an_example(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["publish", "--help"])
    assert result.exit_code == 0
    assert "digest publish 2021-12-31 --out public/" in result.output


# -- accessibility ----------------------------------------------------------------------


def test_pages_pass_an_accessibility_audit(held_in: Path, runner: CliRunner, browser) -> None:
    import waitress
    from axe_playwright_python.sync_playwright import Axe

    for n in range(21):
        make_issue(held_in, f"gen-{n:02d}", f"2022-02-{n + 1:02d}", f"Generated {n}")
    slugs = sorted(p.name for p in (held_in / "issues").iterdir())
    out = _published(held_in, runner, *slugs)
    server = waitress.create_server(static_app(out, "/"), host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    axe = Axe()
    try:
        base = f"http://127.0.0.1:{server.effective_port}/"
        for scheme in ("light", "dark"):
            context = browser.new_context(color_scheme=scheme)
            page = context.new_page()
            for path in ("", f"{EXAMPLE}/", "2022-03-03/", "page/2/", "sources/", "sources/tass/"):
                response = page.goto(base + path)
                assert response.status == 200, path
                violations = axe.run(page).response["violations"]
                bad = [
                    (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
                    for v in violations
                    if v["impact"] in ("serious", "critical")
                ]
                assert bad == [], (scheme, path, bad)
            context.close()
    finally:
        server.close()
        thread.join(timeout=5)
