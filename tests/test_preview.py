"""The preview server, driven by a real headless Chromium."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from digest.preview import start_preview

from .conftest import EXAMPLE, write

TITLES = [
    "Kremlin praises Putin-Biden talks as constructive – aide",
    "Putin said new sanctions could cause complete severance of Russian-US ties – Kremlin aide",
    "Statement by Press Secretary Jen\xa0Psaki on President\xa0Biden’s Phone Call with "
    "President Vladimir Putin of\xa0Russia",
    "Five key takeaways from latest Putin-Biden call",
]
KREMLIN = "kremlin-praises-putin-biden-talks-as-constructive-aide.md"


@pytest.fixture
def server(project: Path):
    srv, shutdown = start_preview(project, EXAMPLE, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv
    shutdown()


@pytest.fixture
def url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def page(browser, url, request):
    context = browser.new_context(viewport={"width": 1100, "height": 900}, color_scheme="light")
    pg = context.new_page()
    pg.goto(url + "/")
    pg.wait_for_function("document.body.dataset.version !== undefined")
    pg.frame_locator("#email").locator(".story-title").first.wait_for()
    yield pg
    context.close()


def _shot(page, request, name: str) -> None:
    folder = request.config.getoption("--screenshots")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=False)


def _email(page):
    return page.frame_locator("#email")


def test_story_titles_in_order(page, request) -> None:
    assert _email(page).locator(".story-title").all_inner_texts() == TITLES
    header = page.locator("header").inner_text()
    assert "Putin and Biden talk again: what was said" in header
    assert "4 stories" in header
    assert "KB of 102 KB" in header
    _shot(page, request, "desktop-light")


def test_the_frame_shows_the_exported_bytes(page, url) -> None:
    from digest.config import load_project
    from digest.export import build_issue

    conn = http.client.HTTPConnection(url.removeprefix("http://"))
    conn.request("GET", "/email.html")
    served = conn.getresponse().read()
    assert served == build_issue(load_project(), EXAMPLE).output("html")


def test_mobile_view_is_375_px(page, request) -> None:
    page.get_by_role("button", name="Mobile").click()
    frame = page.locator("#email")
    page.wait_for_function("document.getElementById('email').className === 'mobile'")
    assert frame.bounding_box()["width"] == 375
    # The email's own mobile media query applies inside the 375 px frame.
    padding = _email(page).locator(".story").first.evaluate("el => getComputedStyle(el).paddingLeft")
    assert padding == "16px"
    _shot(page, request, "mobile-light")


def test_dark_view_uses_the_templates_dark_styles(page, request) -> None:
    container = _email(page).locator(".container")
    assert container.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(255, 255, 255)"
    page.get_by_role("button", name="Dark").click()
    page.wait_for_function(
        "getComputedStyle(document.getElementById('email').contentDocument"
        ".querySelector('.container')).backgroundColor === 'rgb(30, 30, 30)'"
    )
    title = _email(page).locator(".story-title").first
    assert title.evaluate("el => getComputedStyle(el).color") == "rgb(240, 240, 240)"
    _shot(page, request, "desktop-dark")
    page.get_by_role("button", name="Mobile").click()
    page.wait_for_function("document.getElementById('email').className === 'mobile'")
    _email(page).locator(".container").wait_for()
    page.wait_for_function(
        "getComputedStyle(document.getElementById('email').contentDocument"
        ".querySelector('.container')).backgroundColor === 'rgb(30, 30, 30)'"
    )
    _shot(page, request, "mobile-dark")


def _wait_for_styles(page, value: str) -> None:
    page.wait_for_function(
        f"document.getElementById('email').contentDocument.documentElement.dataset.styles === '{value}'"
    )


def test_no_styles_view_shows_the_email_without_its_style_blocks(page, request) -> None:
    page.get_by_role("button", name="No styles").click()
    _wait_for_styles(page, "none")
    frame = _email(page)
    assert page.evaluate(
        "[...document.getElementById('email').contentDocument"
        ".querySelectorAll('style')].every(s => s.sheet.disabled)"
    )
    # The inlined styles stay: the container is still fluid and white.
    container = frame.locator(".container")
    assert container.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(255, 255, 255)"
    _shot(page, request, "nostyle-desktop")
    for button, width in (("Mobile", 375), ("Narrow", 320)):
        page.get_by_role("button", name=button, exact=True).click()
        page.wait_for_function(f"document.getElementById('email').getBoundingClientRect().width === {width}")
        _wait_for_styles(page, "none")
        # Without the media query the padding is the inline one, and nothing runs off the side.
        story = frame.locator(".story").first
        assert story.evaluate("el => getComputedStyle(el).paddingLeft") == "24px"
        assert frame.locator("html").evaluate("el => el.scrollWidth") <= width
        _shot(page, request, f"nostyle-{width}")
    # Dark mode lives in the style blocks, so without them the email stays light.
    page.get_by_role("button", name="Dark").click()
    assert container.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(255, 255, 255)"
    page.get_by_role("button", name="Styles", exact=True).click()
    _wait_for_styles(page, "on")
    page.wait_for_function(
        "getComputedStyle(document.getElementById('email').contentDocument"
        ".querySelector('.container')).backgroundColor === 'rgb(30, 30, 30)'"
    )
    assert frame.locator(".story").first.evaluate("el => getComputedStyle(el).paddingLeft") == "16px"


def test_text_and_source_views(page, request) -> None:
    page.get_by_role("button", name="Text").click()
    body = _email(page).locator("body")
    body.get_by_text("Continue reading at tass.com: https://tass.com/").first.wait_for()
    assert "We remind our readers that publication of articles" in body.inner_text()
    _shot(page, request, "text")
    page.get_by_role("button", name="Source").click()
    _email(page).get_by_text("Content-Type: multipart/alternative", exact=False).wait_for()
    assert "List-Unsubscribe: <https://" in _email(page).locator("body").inner_text()
    _shot(page, request, "source")


def test_saving_a_story_updates_the_page(page, project: Path) -> None:
    page.get_by_role("button", name="Mobile").click()  # the chosen view is kept
    before = page.evaluate("document.body.dataset.version")
    path = project / "issues" / EXAMPLE / KREMLIN
    path.write_text(path.read_text().replace("title: Kremlin praises", "title: Kremlin hails"))
    _email(page).get_by_text("Kremlin hails Putin-Biden talks as constructive – aide").wait_for(timeout=5000)
    assert page.evaluate("document.body.dataset.version") != before
    assert page.locator("#email").get_attribute("class") == "mobile"


def test_a_broken_file_shows_the_error_then_recovers(page, project: Path, request) -> None:
    path = project / "issues" / EXAMPLE / KREMLIN
    good = path.read_text()
    path.write_text(good.replace("title: Kremlin praises", "titel: Kremlin praises"))
    error = _email(page).locator("pre.error")
    error.wait_for(timeout=5000)
    assert error.inner_text() == (
        f"Error: issues/{EXAMPLE}/{KREMLIN}:1: front matter has no 'title'\n"
        "  hint: add 'title: ...' to the front matter"
    )
    _shot(page, request, "error")
    path.write_text(good)
    _email(page).locator(".story-title").first.wait_for(timeout=5000)
    assert _email(page).locator(".story-title").all_inner_texts() == TITLES


def test_template_change_rebuilds(page, project: Path) -> None:
    write(
        project / "templates" / "email.html",
        """
        {% extends "!default/email.html" %}
        {% block header %}<tr><td class="masthead">New masthead</td></tr>{% endblock %}
    """,
    )
    _email(page).get_by_text("New masthead").wait_for(timeout=5000)


@pytest.mark.parametrize(
    "path",
    [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e%5c%2e%2e%5cetc%5cpasswd",
        "//etc/passwd",
        "/issue.toml",
        f"/{KREMLIN}",
        "/../digest.toml",
        "/.env",
        "/nothing.png",
    ],
)
def test_requests_outside_the_preview_get_404(url: str, path: str) -> None:
    conn = http.client.HTTPConnection(url.removeprefix("http://"))
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 404
    assert b"root:" not in response.read()


def test_issue_images_are_served(url: str, project: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    (project / "issues" / EXAMPLE / "map.png").write_bytes(png)
    conn = http.client.HTTPConnection(url.removeprefix("http://"))
    conn.request("GET", "/map.png")
    response = conn.getresponse()
    assert (response.status, response.getheader("Content-Type"), response.read()) == (200, "image/png", png)


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("attacker.example:{port}", 421),
        ("attacker.example", 421),
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
        ("[::1]:{port}", 200),
        ("127.0.0.2", 200),
    ],
)
def test_only_loopback_names_reach_the_draft(url: str, host: str, status: int) -> None:
    """A page whose name rebinds to 127.0.0.1 (DNS rebinding) cannot read the draft."""
    address = url.removeprefix("http://")
    conn = http.client.HTTPConnection(address)
    conn.putrequest("GET", "/message.eml", skip_host=True)
    conn.putheader("Host", host.format(port=address.rsplit(":", 1)[1]))
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    assert response.status == status
    assert (b"Subject:" in body) == (status == 200)


def test_the_size_shown_is_the_html_part_as_sent(url: str) -> None:
    """The toolbar's size against Gmail's 102 KB is the quoted-printable HTML part, as
    'digest check' measures it (it showed the raw HTML's bytes)."""
    import email

    address = url.removeprefix("http://")

    def get(path: str) -> bytes:
        conn = http.client.HTTPConnection(address)
        conn.request("GET", path)
        return conn.getresponse().read()

    state = json.loads(get("/state.json"))
    message = email.message_from_bytes(get("/message.eml"))
    [html] = [part for part in message.walk() if part.get_content_type() == "text/html"]
    assert state["html_bytes"] == len(html.get_payload())
    assert state["html_bytes"] != len(get("/email.html"))


def test_an_svg_of_the_issue_is_served_sandboxed(url: str, project: Path) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    (project / "issues" / EXAMPLE / "pic.svg").write_bytes(svg)
    conn = http.client.HTTPConnection(url.removeprefix("http://"))
    conn.request("GET", "/pic.svg")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, svg)
    assert "sandbox" in response.getheader("Content-Security-Policy")
    assert "script-src" not in response.getheader("Content-Security-Policy")  # default-src 'none'


@pytest.mark.parametrize("base_url", [True, False], ids=["base_url", "no-base_url"])
def test_the_issue_folders_pictures_show_in_the_email(browser, project: Path, base_url: bool) -> None:
    from .test_template import _png

    if not base_url:  # the preview shows a draft's pictures before the archive has a home
        config = project / "digest.toml"
        config.write_text(config.read_text().replace('base_url = "https://worlddigest.example.org"\n', ""))
    folder = project / "issues" / "pics"
    write(folder / "issue.toml", 'subject = "Pictures"\npreheader = "Maps"\n')
    write(
        folder / "a.md",
        """
        ---
        title: Harbour
        image: {src: small.png, alt: The harbour}
        ---
        Text.

        ![Kyiv](<maps/café map.png>)
        """,
    )
    (folder / "maps").mkdir()
    (folder / "small.png").write_bytes(_png(300, 100))
    (folder / "maps" / "café map.png").write_bytes(_png(200, 80))
    srv, shutdown = start_preview(project, "pics", "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{srv.server_address[1]}/")
        _email(page).locator(".story-title").first.wait_for()
        images = "[...document.getElementById('email').contentDocument.querySelectorAll('img')]"
        page.wait_for_function(
            f"{images}.length === 2 && {images}.every(i => i.complete && i.naturalWidth > 0)"
        )
        shown = page.evaluate(f"{images}.map(i => [i.getAttribute('src'), i.naturalWidth])")
        assert shown == [["small.png", 300], ["maps/caf%C3%A9%20map.png", 200]]
    finally:
        context.close()
        shutdown()


def test_ctrl_c_stops_cleanly(project: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "preview", EXAMPLE, "--no-open", "--port", "0"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith(f"Previewing {EXAMPLE} at http://127.0.0.1:")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert out.strip() == "Stopped."


def test_other_host_warns(project: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "preview", EXAMPLE, "--no-open", "--port", "0", "--host", "0.0.0.0"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert "Warning: listening on 0.0.0.0" in err
