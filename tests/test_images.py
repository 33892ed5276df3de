"""Story images: the email links a picture of the issue folder at its published URL."""

from __future__ import annotations

import os
import re
from pathlib import Path

import lxml.html
import pytest

from digest.config import load_project
from digest.errors import DigestError
from digest.images import email_srcs, folder_path, for_email, is_local, published_url, site_files
from digest.issue import load_issue
from digest.render import render_issue

from .conftest import EXAMPLE, write

BASE = "https://worlddigest.example.org"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def _issue(project: Path, body: str, image: str | None = "{src: small.png, alt: The harbour}") -> Path:
    """Write issues/pics/ with one story (front matter image, then *body*) and its pictures."""
    folder = project / "issues" / "pics"
    write(folder / "issue.toml", 'subject = "Pictures"\npreheader = "Maps"\n')
    front = "---\ntitle: Harbour\n" + (f"image: {image}\n" if image else "") + "---\n"
    (folder / "a.md").write_text(front + body + "\n", encoding="utf-8")
    for name in ("small.png", "wide.png", "maps/kyiv.png", "maps/café map.png", "100%.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(PNG)
    return folder


def _srcs(html: str) -> list[str]:
    return [img.get("src") for img in lxml.html.document_fromstring(html).iter("img")]


def _set_base_url(project: Path, value: str | None) -> None:
    path = project / "digest.toml"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("base_url")]
    if value is not None:
        lines.insert(lines.index("[newsletter]") + 1, f'base_url = "{value}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("src", "local"),
    [
        ("small.png", True),
        ("maps/kyiv.png", True),
        ("./small.png", True),
        ("caf%C3%A9.png", True),
        ("https://example.com/a.png", False),
        ("http://example.com/a.png", False),
        ("//cdn.example.com/a.png", False),
        ("data:image/png;base64,AAAA", False),
    ],
)
def test_what_is_a_local_image(src: str, local: bool) -> None:
    assert is_local(src) is local


@pytest.mark.parametrize(
    ("src", "path"),
    [
        ("small.png", "small.png"),
        ("./maps/kyiv.png", "maps/kyiv.png"),
        ("maps/caf%C3%A9%20map.png", "maps/café map.png"),
        ("maps/café map.png", "maps/café map.png"),
        ("100%.png", "100%.png"),
        ("small.png?v=2#top", "small.png"),
        ("../small.png", None),
        ("maps/../../small.png", None),
        ("/etc/passwd", None),
        (".hidden.png", None),
        ("", None),
    ],
)
def test_the_folder_path_a_src_names(src: str, path: str | None) -> None:
    assert folder_path(src) == path


@pytest.mark.parametrize(
    ("base", "path", "url"),
    [
        (BASE, "small.png", f"{BASE}/pics/small.png"),
        (BASE + "/news/", "maps/kyiv.png", f"{BASE}/news/pics/maps/kyiv.png"),
        (BASE, "maps/café map.png", f"{BASE}/pics/maps/caf%C3%A9%20map.png"),
        (BASE, "100%.png", f"{BASE}/pics/100%25.png"),
        (BASE, "a#b?.png", f"{BASE}/pics/a%23b%3F.png"),
    ],
)
def test_published_url_is_ascii_and_percent_encoded(base: str, path: str, url: str) -> None:
    assert published_url(base, "pics", path) == url


def test_front_matter_and_body_images_get_their_published_urls(project: Path) -> None:
    _issue(
        project,
        "Text.\n\n![A wide map](wide.png) and\n![Kyiv](maps/kyiv.png)\n\n"
        "![Café](<maps/café map.png>) ![Full](100%.png)\n\n![Remote](https://example.com/r.png)",
    )
    project_ = load_project()
    issue = load_issue(project_, "pics")
    html = render_issue(project_, issue).html
    assert _srcs(html) == [
        f"{BASE}/pics/small.png",
        f"{BASE}/pics/wide.png",
        f"{BASE}/pics/maps/kyiv.png",
        f"{BASE}/pics/maps/caf%C3%A9%20map.png",
        f"{BASE}/pics/100%25.png",
        "https://example.com/r.png",
    ]
    # The loaded issue keeps the srcs as written: the archive's pages are relative to the issue.
    assert issue.stories[0].image.src == "small.png"
    assert 'src="wide.png"' in issue.stories[0].body_html


def test_absolute_images_are_kept_and_need_no_base_url(project: Path) -> None:
    _set_base_url(project, None)
    _issue(
        project,
        "![Remote](https://example.com/r.png)",
        image="{src: 'https://example.com/s.png', alt: Remote}",
    )
    project_ = load_project()
    issue = load_issue(project_, "pics")
    assert for_email(issue, None) == (issue, [])
    assert _srcs(render_issue(project_, issue).html) == [
        "https://example.com/s.png",
        "https://example.com/r.png",
    ]


def test_the_rewrite_changes_only_the_image_srcs(project: Path) -> None:
    _issue(project, 'A [link](https://example.com/x) and ![Wide *map*](wide.png "A title").')
    issue = load_issue(load_project(), "pics")
    rewritten, errors = for_email(issue, BASE)
    assert errors == []
    before, after = issue.stories[0], rewritten.stories[0]
    assert after.body_html == before.body_html.replace('src="wide.png"', f'src="{BASE}/pics/wide.png"')
    assert (after.image.src, after.image.alt) == (f"{BASE}/pics/small.png", "The harbour")
    # The text part writes the picture's address too: the published one.
    assert "[Picture: Wide map] <wide.png>" in before.body_text
    published = before.body_text.replace("<wide.png>", f"<{BASE}/pics/wide.png>")
    assert after.body_text.split() == published.split()  # wrapped again: the URL is longer
    assert (after.body, after.title) == (before.body, before.title)


def test_an_idn_base_url_is_written_in_ascii(project: Path) -> None:
    _set_base_url(project, "https://пример.рф/новости")
    _issue(project, "![Wide](wide.png)")
    project_ = load_project()
    html = render_issue(project_, load_issue(project_, "pics")).html
    base = "https://xn--e1afmkfd.xn--p1ai/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8"
    assert _srcs(html) == [f"{base}/pics/small.png", f"{base}/pics/wide.png"]


def test_without_base_url_every_local_image_is_an_error(project: Path) -> None:
    _set_base_url(project, None)
    folder = _issue(project, "Text.\n\n![Wide](wide.png)\n\n![Remote](https://example.com/r.png)")
    project_ = load_project()
    with pytest.raises(DigestError) as caught:
        render_issue(project_, load_issue(project_, "pics"))
    errors = caught.value.errors
    assert [(e.path, e.line) for e in errors] == [(folder / "a.md", 3), (folder / "a.md", 7)]
    assert errors[0].message == (
        "the image 'small.png' is a file in the issue folder, which readers' mail cannot load "
        "without 'base_url'"
    )
    assert "set base_url" in errors[0].hint and "digest publish" in errors[0].hint
    assert "full https:// address" in errors[0].hint


def test_a_src_that_names_no_file_is_an_error_with_its_line(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(PNG)
    folder = _issue(
        project,
        "Text.\n\n![Gone](gone.png)\n![Up](../small.png)\n\n![Root](/etc/passwd) ![Link](link.png)",
        image="{src: missing.png, alt: Missing}",
    )
    os.symlink(outside, folder / "link.png")
    project_ = load_project()
    with pytest.raises(DigestError) as caught:
        render_issue(project_, load_issue(project_, "pics"))
    found = [(e.line, e.message) for e in caught.value.errors]
    assert found == [
        (3, "image not found in the issue folder: 'missing.png'"),
        (7, "image not found in the issue folder: 'gone.png'"),
        (8, "the image '../small.png' is not a file inside the issue folder"),
        (10, "the image '/etc/passwd' is not a file inside the issue folder"),
        (10, "the image 'link.png' is not a file inside the issue folder"),
    ]
    assert all(e.path == folder / "a.md" for e in caught.value.errors)


def test_a_src_with_a_url_character_says_how_to_write_it(project: Path) -> None:
    # 'Port #2.png' exists, but a src is a web address: '#' starts a fragment.
    folder = _issue(project, "Text.", image='{src: "Port #2.png", alt: The port}')
    (folder / "Port #2.png").write_bytes(PNG)
    project_ = load_project()
    with pytest.raises(DigestError) as caught:
        render_issue(project_, load_issue(project_, "pics"))
    assert caught.value.message == (
        "image not found in the issue folder: 'Port #2.png' (read as a web address: the file 'Port ')"
    )
    assert caught.value.hint == "a src is a web address: write '#' as %23, '?' as %3F and '%' as %25"
    (folder / "a.md").write_text(
        (folder / "a.md").read_text(encoding="utf-8").replace("Port #2.png", "Port%20%232.png"),
        encoding="utf-8",
    )
    html = render_issue(load_project(), load_issue(load_project(), "pics")).html
    assert f"{BASE}/pics/Port%20%232.png" in _srcs(html)


def test_a_missing_body_image_with_an_accent_gets_the_plain_hint(project: Path) -> None:
    # The parser percent-encodes a body image's src: that '%' is not the editor's.
    _issue(
        project, "![Map](maps/gone café.png)".replace("maps/gone café.png", "<maps/gone café.png>"), image=None
    )
    project_ = load_project()
    with pytest.raises(DigestError) as caught:
        render_issue(project_, load_issue(project_, "pics"))
    assert caught.value.message == "image not found in the issue folder: 'maps/gone café.png'"
    assert caught.value.hint == "put the picture in the issue's folder, or give a full URL"


def test_a_symlink_inside_the_folder_is_a_file_of_it(project: Path) -> None:
    folder = _issue(project, "![Latest](latest.png)")
    os.symlink(folder / "wide.png", folder / "latest.png")
    issue = load_issue(load_project(), "pics")
    assert email_srcs(issue, BASE) == (
        {"small.png": f"{BASE}/pics/small.png", "latest.png": f"{BASE}/pics/latest.png"},
        [],
    )
    assert dict(site_files(issue)) == {"pics/small.png": PNG, "pics/latest.png": PNG}


def test_site_files_are_every_local_image_once(project: Path) -> None:
    _issue(
        project,
        "![Wide](wide.png) ![Again](./wide.png) ![Café](<maps/café map.png>) ![R](https://example.com/r.png)",
    )
    files = list(site_files(load_issue(load_project(), "pics")))
    assert [name for name, _ in files] == ["pics/small.png", "pics/wide.png", "pics/maps/café map.png"]


def test_the_preview_build_keeps_the_srcs_as_written(project: Path) -> None:
    _set_base_url(project, None)  # and needs no base_url
    _issue(project, "![Wide](maps/kyiv.png)")
    project_ = load_project()
    html = render_issue(project_, load_issue(project_, "pics"), local_images=True).html
    assert _srcs(html) == ["small.png", "maps/kyiv.png"]


def test_image_errors_come_with_template_errors(project: Path) -> None:
    _set_base_url(project, None)
    _issue(project, "Text.")
    write(project / "templates" / "email.txt", "{{ nope }}\n")
    project_ = load_project()
    with pytest.raises(DigestError) as caught:
        render_issue(project_, load_issue(project_, "pics"))
    messages = [e.message for e in caught.value.errors]
    assert len(messages) == 2 and "base_url" in messages[0] and "undefined variable" in messages[1]


def test_pictures_carry_no_height_attribute_that_html_forbids(project: Path) -> None:
    """premailer copied CSS sizes into attributes over the template's: the story picture's
    width="536" (Outlook's size) became width="100%", and 'height: auto' height="auto",
    which HTML does not allow (pixels only)."""
    _issue(project, "Text.\n\n![A wide map](wide.png)")
    project_ = load_project()
    html = render_issue(project_, load_issue(project_, "pics")).html
    story_image, body_image = re.findall(r"<img [^>]*>", html)
    assert ' width="536"' in story_image and "max-width:536px" in story_image, story_image
    assert " width=" not in body_image and "max-width:100%" in body_image, body_image
    assert " height=" not in story_image + body_image


def test_a_project_template_s_pixel_sizes_still_become_attributes_for_outlook(project: Path) -> None:
    """Outlook for Windows sizes pictures by their attributes: a project's logo sized in CSS
    keeps getting width and height from premailer, where the template wrote none."""
    write(
        project / "templates" / "email.html",
        """
        {% extends "!default/email.html" %}
        {% block head %}{{ super() }}<style>.logo{width:120px;height:40px}
        .col{width:280px}</style>{% endblock %}
        {% block header %}<tr><td class="masthead"><img class="logo" src="https://example.org/l.png" alt="Logo">
        <table><tr><td class="col">L</td></tr></table></td></tr>{% endblock %}
        """,
    )
    project_ = load_project()
    html = render_issue(project_, load_issue(project_, EXAMPLE)).html
    logo = re.search(r'<img class="logo"[^>]*>', html)[0]
    assert ' width="120"' in logo and ' height="40"' in logo, logo
    assert re.search(r'<td class="col"[^>]* width="280"', html)
