from __future__ import annotations

import email
import email.policy
import shutil
from pathlib import Path

import lxml.html
import pytest

from digest.config import load_project
from digest.errors import DigestError
from digest.export import export_issue

from .conftest import EXAMPLE, write
from .golden import assert_golden, normalise_eml


def test_export_matches_golden_files(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    paths = export_issue(load_project(), EXAMPLE, out)
    assert sorted(p.name for p in paths) == [f"{EXAMPLE}.eml", f"{EXAMPLE}.html", f"{EXAMPLE}.txt"]
    assert_golden(f"{EXAMPLE}.html", (out / f"{EXAMPLE}.html").read_bytes())
    assert_golden(f"{EXAMPLE}.txt", (out / f"{EXAMPLE}.txt").read_bytes())
    assert_golden(f"{EXAMPLE}.eml", normalise_eml((out / f"{EXAMPLE}.eml").read_bytes()))


def test_export_is_byte_identical_across_runs(project: Path, tmp_path: Path) -> None:
    export_issue(load_project(), EXAMPLE, tmp_path / "a")
    export_issue(load_project(), EXAMPLE, tmp_path / "b")
    for suffix in (".html", ".txt"):
        assert (tmp_path / "a" / f"{EXAMPLE}{suffix}").read_bytes() == (
            tmp_path / "b" / f"{EXAMPLE}{suffix}"
        ).read_bytes()


def test_eml_parses_into_two_parts_with_the_disclaimer(project: Path, tmp_path: Path) -> None:
    export_issue(load_project(), EXAMPLE, tmp_path / "o", ("eml",))
    raw = (tmp_path / "o" / f"{EXAMPLE}.eml").read_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    for header in ("From", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id", "List-Unsubscribe"):
        assert msg[header], header
    assert "=?" not in msg["List-Unsubscribe"]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "We remind our readers that publication of articles" in " ".join(text.split())
    assert "We remind our readers that publication of articles" in html
    assert "<…>" in text and "&lt;…&gt;" in html


def test_failed_build_writes_nothing(project: Path, tmp_path: Path) -> None:
    write(project / "issues" / EXAMPLE / "zz-broken.md", "---\ntitle: [\n---\n")
    with pytest.raises(DigestError):
        export_issue(load_project(), EXAMPLE, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_story_without_text_is_not_exported(project: Path, tmp_path: Path) -> None:
    # 'digest check' calls it an error of the build: the build refuses it too.
    write(project / "issues" / EXAMPLE / "zz-empty.md", "---\ntitle: Nothing here\n---\n  \n")
    with pytest.raises(DigestError) as e:
        export_issue(load_project(), EXAMPLE, tmp_path / "out")
    assert (e.value.message, e.value.path.name, e.value.line) == ("the story has no text", "zz-empty.md", 4)
    assert not (tmp_path / "out").exists()


def test_existing_outputs_survive_a_failed_build(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_issue(load_project(), EXAMPLE, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    write(project / "templates" / "email.txt", "{{ nope }}\n")
    with pytest.raises(DigestError):
        export_issue(load_project(), EXAMPLE, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _pictures(project: Path) -> Path:
    """An issue whose story shows pictures of its folder: the front matter's and the body's."""
    folder = project / "issues" / "pics"
    write(folder / "issue.toml", 'subject = "Pictures"\npreheader = "Maps"\n')
    write(
        folder / "a.md",
        """
        ---
        title: Harbour
        image: {src: small.png, alt: The harbour at dawn}
        ---
        The harbour.

        ![A wide map](wide.png) ![Kyiv](<maps/café map.png>) ![Remote](https://example.com/r.png)
        """,
    )
    for name in ("small.png", "wide.png", "maps/café map.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    return folder


def test_the_eml_links_the_issue_folders_pictures_absolutely(project: Path, runner) -> None:
    from digest.cli import cli

    _pictures(project)
    result = runner.invoke(cli, ["export", "pics", "--format", "eml", "--out", "out"])
    assert result.exit_code == 0, result.output
    msg = email.message_from_bytes((project / "out" / "pics.eml").read_bytes(), policy=email.policy.default)
    html = msg.get_body(("html",)).get_content()
    srcs = [img.get("src") for img in lxml.html.document_fromstring(html).iter("img")]
    base = "https://worlddigest.example.org/pics"
    assert srcs == [
        f"{base}/small.png",
        f"{base}/wide.png",
        f"{base}/maps/caf%C3%A9%20map.png",
        "https://example.com/r.png",
    ]


def test_the_text_part_gives_every_picture_its_alt_text_and_address(project: Path, runner) -> None:
    # The front matter's picture was missing from the text part, and a body picture was
    # only '[A wide map]', with no address.
    from digest.cli import cli

    _pictures(project)
    result = runner.invoke(cli, ["export", "pics", "--format", "eml", "--out", "out"])
    assert result.exit_code == 0, result.output
    msg = email.message_from_bytes((project / "out" / "pics.eml").read_bytes(), policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    base = "https://worlddigest.example.org/pics"
    # Above the story's text, as in the HTML part; wrapped as a link is, never inside the URL.
    assert f"Harbour\n\n[Picture: The harbour at dawn]\n<{base}/small.png>\n\nThe harbour.\n" in text
    assert " ".join(text.split()).count("[Picture: ") == 4
    assert (
        f"[Picture: A wide map] <{base}/wide.png> [Picture: Kyiv] <{base}/maps/caf%C3%A9%20map.png> "
        "[Picture: Remote] <https://example.com/r.png>"
    ) in " ".join(text.split())


def test_a_remote_front_matter_picture_keeps_one_address_in_the_text_part(project: Path) -> None:
    """A remote picture's address with spaces was written raw, and wrapping split it in two."""
    from digest.config import load_project
    from digest.issue import load_issue
    from digest.render import render_issue

    folder = project / "issues" / "remote"
    write(folder / "issue.toml", 'subject = "Remote"\npreheader = "A picture"\n')
    src = "https://example.net/photos/a very long name of a picture in the harbour at dawn.png"
    write(
        folder / "a.md",
        f"---\ntitle: Harbour\nimage: {{src: '{src}', alt: The harbour}}\n---\nThe harbour.\n",
    )
    project_ = load_project()
    text = render_issue(project_, load_issue(project_, "remote")).text
    encoded = src.replace(" ", "%20")
    assert f"[Picture: The harbour]\n<{encoded}>\n" in text


def test_without_base_url_export_refuses_naming_every_picture(project: Path, runner) -> None:
    from digest.cli import cli

    config = project / "digest.toml"
    config.write_text(config.read_text().replace('base_url = "https://worlddigest.example.org"\n', ""))
    _pictures(project)
    result = runner.invoke(cli, ["export", "pics", "--out", "out"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: issues/pics/a.md:{line}: the image '{src}' is a file in the issue folder, "
        "which readers' mail cannot load without 'base_url'"
        for line, src in ((3, "small.png"), (7, "wide.png"), (7, "maps/café map.png"))
    ]
    assert "hint: set base_url in digest.toml" in result.stderr
    assert "3 problems found; nothing was written." in result.stderr
    assert not (project / "out").exists()


def test_no_break_and_ideographic_spaces_stay_in_subject_and_disclaimer(project: Path, tmp_path: Path) -> None:
    # They were folded into ASCII spaces (str.split() takes them for white space).
    import email
    import email.policy

    subject = "«\u00a0GEM\u00a0» 東京\u3000速報"
    manifest = project / "issues" / EXAMPLE / "issue.toml"
    text = manifest.read_text(encoding="utf-8")
    start = text.index("subject")
    manifest.write_text(
        text[:start] + f'subject = "{subject}"' + text[text.index("\n", start) :], encoding="utf-8"
    )
    config = project / "digest.toml"
    config.write_text(config.read_text(encoding="utf-8").replace("our readers", "our\u00a0readers", 1))
    [eml] = export_issue(load_project(), EXAMPLE, tmp_path / "out", ("eml",))
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.strict)
    assert message["Subject"] == subject
    assert "our\u00a0readers" in message.get_body(("plain",)).get_content()


@pytest.mark.parametrize("name", ["page", "édition spéciale"])
def test_an_issue_name_the_archive_refuses_is_refused_with_base_url(
    project: Path, tmp_path: Path, name: str
) -> None:
    """The email links <base_url>/<name>/ ("Read on the web"): check and export passed a name
    'digest publish' then refused (a dead link, and an archive that no longer published)."""
    shutil.copytree(project / "issues" / EXAMPLE, project / "issues" / name)
    with pytest.raises(DigestError) as e:
        export_issue(load_project(), name, tmp_path / "out")
    assert e.value.message in (
        f"the issue name {name!r} is reserved by the web archive",
        f"the issue name {name!r} is not safe in a web address",
    )
    assert not (tmp_path / "out").exists()
