"""The default email template in Chromium: every width, with and without <style>, light and dark."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import lxml.html
import pytest

from .conftest import EXAMPLE, FIXTURES, REPO, story, write

WIDTHS = (320, 375, 600)
SAMPLES = ("example", "seed", "second", "rtl")
STYLES = ("styled", "unstyled")
BARE_LINK_TEXT = {"here", "click here", "read more", "more", "link", "this"}
# Landmark rules do not apply to an email: a mail client supplies the page around the
# message, and the message is one role="article" region, so there is no main or nav to find.
AXE_OPTIONS = {
    "resultTypes": ["violations"],
    "rules": {
        "region": {"enabled": False},  # landmarks: content outside landmarks is the whole email
        "landmark-one-main": {"enabled": False},  # landmarks: the client owns <main>
    },
}
RTL_NAME = "النشرة العالمية"
RTL_TITLE = "الكرملين يصف المحادثات بأنها بناءة"


def _run(project: Path, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "digest", "--project", str(project), *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def _png(width: int, height: int) -> bytes:
    """Return a plain grey PNG of the given size (a stand-in for a photo)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _imported(root: Path, fixture: str) -> Path:
    shutil.copy(REPO / "digest.toml", root / "digest.toml")
    (root / "issues").mkdir()
    _run(root, "new", "held-in", "--title", "Held-in digest", "--date", "2022-03-03")
    _run(root, "import", "held-in", str(FIXTURES / fixture))
    _run(root, "export", "held-in", "--format", "html", "--out", str(root / "build"))
    return root / "build" / "held-in.html"


def _rtl(root: Path) -> Path:
    """An Arabic newsletter with a wide picture and a long unbroken link in its story."""
    text = (REPO / "digest.toml").read_text(encoding="utf-8")
    text = text.replace('name = "The World Digest"', f'name = "{RTL_NAME}"')
    text = text.replace('language = "en"', 'language = "ar"')
    write(root / "digest.toml", text)
    folder = root / "issues" / "rtl"
    write(folder / "issue.toml", 'subject = "نشرة اليوم"\npreheader = "ملخص اليوم"\n')
    (folder / "wide.png").write_bytes(_png(1200, 300))
    story(
        folder / "a-kremlin.md",
        RTL_TITLE,
        url="https://tass.com/politics/1382579",
        source="TASS",
        dateline="موسكو، 31 ديسمبر",
        body="قال الكرملين إن المحادثات كانت صريحة وهادفة.\n\n![خريطة المنطقة](wide.png)\n\n"
        "https://example.org/" + "a" * 120,
    )
    _run(root, "export", "rtl", "--format", "html", "--out", str(root / "build"))
    # The email links the picture where 'digest publish' puts it; here it loads from beside the file.
    exported = root / "build" / "rtl.html"
    html = exported.read_text(encoding="utf-8")
    assert 'src="https://worlddigest.example.org/rtl/wide.png"' in html
    exported.write_text(html.replace("https://worlddigest.example.org/rtl/", ""), encoding="utf-8")
    shutil.copy(folder / "wide.png", root / "build" / "wide.png")
    return exported


def _without_style(html: str) -> str:
    """Return the email as clients that drop <style> blocks show it."""
    return re.sub(r"<style[^>]*>.*?</style>", "", html, flags=re.S)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Each sample as an exported HTML file, and beside it the same without <style>."""
    base = tmp_path_factory.mktemp("samples")
    example = base / "example"
    example.mkdir()
    shutil.copy(REPO / "digest.toml", example / "digest.toml")
    shutil.copytree(REPO / "issues", example / "issues")
    _run(example, "export", EXAMPLE, "--format", "html", "--out", str(example / "build"))
    files = {"example": example / "build" / f"{EXAMPLE}.html"}
    for name, fixture in (("seed", "seed.txt"), ("second", "second-digest.txt")):
        (base / name).mkdir()
        files[name] = _imported(base / name, fixture)
    (base / "rtl").mkdir()
    files["rtl"] = _rtl(base / "rtl")
    out = {}
    for name, path in files.items():
        out[(name, "styled")] = path
        bare = path.with_name(path.stem + ".unstyled.html")
        bare.write_text(_without_style(path.read_text(encoding="utf-8")), encoding="utf-8")
        out[(name, "unstyled")] = bare
    return out


def _open(browser, path: Path, width: int = 600, scheme: str = "light"):
    context = browser.new_context(viewport={"width": width, "height": 800}, color_scheme=scheme)
    page = context.new_page()
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return context, page


# Every visible element that holds text of its own, with its computed sizes and colours.
TEXT_ELEMENTS = """() => {
  const out = [];
  const opaque = (c) => !/rgba\\(.*,\\s*0\\)$/.test(c) && c !== 'transparent';
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.closest('[aria-hidden="true"]')) continue;
    const rect = el.getBoundingClientRect();
    if (!rect.width || !rect.height) continue;
    let bg = null;
    for (let a = el; a; a = a.parentElement) {
      const c = getComputedStyle(a).backgroundColor;
      if (opaque(c)) { bg = c; break; }
    }
    const s = getComputedStyle(el);
    out.push({tag: el.tagName, cls: el.className, text: el.textContent.trim().slice(0, 40),
              size: parseFloat(s.fontSize), color: s.color, bg: bg || 'rgb(255, 255, 255)',
              story: !!el.closest('.story')});
  }
  return out;
}"""


def _rgb(css: str) -> tuple[float, float, float]:
    r, g, b = (float(v) for v in re.findall(r"[\d.]+", css)[:3])
    return r, g, b


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: tuple[float, float, float], bg: tuple[float, float, float]) -> float:
    """Return the WCAG 2 contrast ratio of two sRGB colours."""
    hi, lo = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _inverted(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """Invert the lightness, keep the hue: what Gmail's apps do to a light email in dark mode."""
    import colorsys

    h, lightness, s = colorsys.rgb_to_hls(*(c / 255 for c in rgb))
    return tuple(c * 255 for c in colorsys.hls_to_rgb(h, 1 - lightness, s))


def test_contrast_helper_matches_known_ratios() -> None:
    assert round(contrast((0, 0, 0), (255, 255, 255)), 1) == 21.0
    assert round(contrast((0x76, 0x76, 0x76), (255, 255, 255)), 2) == 4.54


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("sample", SAMPLES)
def test_layout_fits_and_reads(browser, samples, sample: str, style: str, width: int) -> None:
    context, page = _open(browser, samples[(sample, style)], width)
    try:
        scroll = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth]")
        assert max(scroll) <= width, f"the document is {max(scroll)} px wide at {width} px"
        texts = page.evaluate(TEXT_ELEMENTS)
        assert texts
        small = [t for t in texts if t["size"] < (16 if t["story"] else 14)]
        assert not small, f"text too small: {small[:3]}"
        links = page.evaluate("""() => [...document.querySelectorAll('.footer a')].map(
            a => ({text: a.textContent, h: a.getBoundingClientRect().height}))""")
        assert [a["text"] for a in links][:1] == ["Unsubscribe"]
        assert all(a["h"] >= 44 for a in links), links
        images = page.evaluate("""() => [...document.querySelectorAll('img')].map(
            i => i.getBoundingClientRect().right)""")
        assert all(right <= width for right in images)
    finally:
        context.close()


@pytest.mark.parametrize("scheme", ["light", "dark", "outlook.com", "gmail"])
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("sample", ["example", "second", "rtl"])
def test_colours_keep_contrast(browser, samples, sample: str, style: str, scheme: str) -> None:
    context, page = _open(browser, samples[(sample, style)], 375, "dark" if scheme == "dark" else "light")
    try:
        if scheme == "outlook.com":  # Outlook.com marks the colours it takes over
            page.evaluate(
                "document.body.setAttribute('data-ogsc', '');document.body.setAttribute('data-ogsb', '')"
            )
        texts = page.evaluate(TEXT_ELEMENTS)
    finally:
        context.close()
    if scheme == "dark" and style == "styled":
        assert _rgb(texts[0]["bg"]) != (255.0, 255.0, 255.0)  # the dark rules applied
    if scheme == "outlook.com" and style == "styled":
        assert _luminance(_rgb(texts[0]["bg"])) < 0.05
    poor = []
    for t in texts:
        fg, bg = _rgb(t["color"]), _rgb(t["bg"])
        if scheme == "gmail":
            fg, bg = _inverted(fg), _inverted(bg)
        ratio = contrast(fg, bg)
        if ratio < 4.5:
            poor.append((t["text"], t["color"], t["bg"], round(ratio, 2)))
    assert not poor


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("sample", SAMPLES)
def test_axe_finds_no_serious_violation(browser, samples, sample: str, style: str, scheme: str) -> None:
    from axe_playwright_python.sync_playwright import Axe

    context, page = _open(browser, samples[(sample, style)], 375, scheme)
    try:
        results = Axe().run(page, options=AXE_OPTIONS).response
    finally:
        context.close()
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad
    assert results["testEngine"]["name"] == "axe-core"


@pytest.mark.parametrize("sample", SAMPLES)
def test_document_structure(samples, sample: str) -> None:
    html = samples[(sample, "styled")].read_text(encoding="utf-8")
    doc = lxml.html.document_fromstring(html)
    assert len(doc.xpath("//h1")) == 1
    assert doc.get("lang") and doc.get("dir") in ("ltr", "rtl")
    article = doc.find_class("email")[0]
    assert (article.get("lang"), article.get("dir")) == (doc.get("lang"), doc.get("dir"))
    # Stories are h2, in the order.
    assert [h.text_content() for h in doc.xpath("//h2")] == [
        h.text_content() for h in doc.find_class("story-title")
    ]
    assert all(t.get("role") == "presentation" for t in doc.xpath("//table"))
    for a in doc.iter("a"):
        name = (a.get("aria-label") or a.text_content()).strip().lower()
        assert name and name not in BARE_LINK_TEXT, lxml.html.tostring(a)
    assert all(p.get("aria-hidden") == "true" for p in doc.find_class("preheader"))
    assert bool(doc.find_class("preheader")) == (sample in ("example", "rtl"))
    # Outlook's fixed-width table survives premailer, and the container is fluid inline.
    assert '<!--[if mso]><table role="presentation" align="center" width="600"' in html
    assert "<!--[if mso]></td></tr></table><![endif]-->" in html
    container = doc.find_class("container")[0].get("style").replace(" ", "")
    assert "width:100%" in container and "max-width:600px" in container


def test_rtl_sample_reads_right_to_left(browser, samples) -> None:
    for style in STYLES:
        context, page = _open(browser, samples[("rtl", style)], 375)
        try:
            assert page.evaluate("document.documentElement.dir") == "rtl"
            assert page.locator("h1").inner_text() == RTL_NAME
            title = page.locator(".story-title")
            assert title.inner_text() == RTL_TITLE
            assert title.evaluate("el => getComputedStyle(el).direction") == "rtl"
            # The title's text hugs the right edge of its cell, not the left.
            edges = title.evaluate("""el => {
                const range = document.createRange(); range.selectNodeContents(el);
                const text = range.getBoundingClientRect(), box = el.getBoundingClientRect();
                return [text.left - box.left, box.right - text.right];
            }""")
            assert edges[1] < 2 < edges[0], edges
        finally:
            context.close()
