"""`digest check` knows what email clients ignore: template CSS, wide and heavy images."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from digest.cli import cli
from digest.clientcss import email_template_files, scan_file
from digest.config import load_project
from digest.render import default_templates_dir

from .conftest import EXAMPLE, story, write
from .test_template import _png


def test_default_templates_are_clean(project: Path) -> None:
    files = email_template_files(load_project())
    names = {p.relative_to(default_templates_dir()).as_posix() for p in files}
    assert {"email.html", "style.css", "media.css", "dark.css", "partials/story.html"} <= names
    assert [w.format() for p in files for w in scan_file(p)] == []


def test_client_hostile_css_is_reported_with_file_and_line(project: Path, runner: CliRunner) -> None:
    write(
        project / "templates" / "style.css",
        """
        .masthead { position: relative; top: 2px; }
        .story { display: flex; }
        .story-image { float: left; }
        :root { --accent: #0b5cad; }
        .story-title a { color: var(--accent); }
        .footer { background-image: url(https://example.org/paper.png); }
        .read-also { background: #f6f6f4 url(https://example.org/ok.png); }
        .story-body p { font-family: 'Inter', Helvetica; }
        @font-face { font-family: 'Inter'; src: url(https://example.org/inter.woff2); }
        @media only screen and (max-width: 620px) { .story-image { float: none; display: grid; } }
        .masthead { font-family: 'Inter', Arial, sans-serif; }
    """,
    )
    write(
        project / "templates" / "email.html",
        """
        {% extends "!default/email.html" %}
        {% block header %}
        <tr><td class="masthead">
        <img src="https://example.org/banner.png" alt="Banner" width="800">
        <div style="float: right">a</div><div align="right" style="float: right">b</div>
        <td background="https://example.org/bg.png">x</td>
        </td></tr>
        {% endblock %}
    """,
    )
    result = runner.invoke(cli, ["check", EXAMPLE, "--json"])
    found = [(f["path"], f["line"], f["message"]) for f in json.loads(result.stdout)["findings"]]
    assert found == [
        ("templates/email.html", 4, "an image 800 px wide is wider than the 600 px container"),
        ("templates/email.html", 5, "float without a fallback: Outlook for Windows ignores it"),
        ("templates/email.html", 6, "a background image without a background colour"),
        ("templates/style.css", 1, "position:relative is ignored by Gmail and Outlook"),
        ("templates/style.css", 2, "display:flex is ignored by Outlook for Windows and older Gmail apps"),
        ("templates/style.css", 3, "float without a fallback: Outlook for Windows ignores it"),
        ("templates/style.css", 4, "CSS variables are ignored by Gmail and Outlook"),
        ("templates/style.css", 5, "CSS variables are ignored by Gmail and Outlook"),
        ("templates/style.css", 6, "a background image without a background colour"),
        ("templates/style.css", 8, "font-family 'inter', helvetica has no generic fallback"),
    ]  # line 10: float and grid inside @media are enhancements Outlook never sees
    assert result.exit_code == 0  # warnings; --strict makes them fail
    strict = runner.invoke(cli, ["check", EXAMPLE, "--strict"])
    assert strict.exit_code == 1
    assert "templates/style.css:1: warning: position:relative is ignored by Gmail and Outlook" in (
        strict.stdout
    )


def test_wide_and_heavy_images_are_reported(project: Path, runner: CliRunner) -> None:
    folder = project / "issues" / "pictures"
    write(folder / "issue.toml", 'subject = "Pictures"\npreheader = "Maps"\n')
    (folder / "wide.png").write_bytes(_png(1200, 300))
    (folder / "narrow.png").write_bytes(_png(500, 300))
    (folder / "photo.png").write_bytes(_png(1200, 800))  # scaled by the template: fine
    heavy = folder / "heavy.bin.png"
    heavy.write_bytes(_png(400, 100)[:-12] + b"\0" * (1100 * 1024) + _png(400, 100)[-12:])
    story(
        folder / "a.md",
        "Maps",
        source="Example",
        url="https://example.org/maps",
        image="{src: photo.png, alt: A photo}",
        body="Text.\n\n![A wide map](wide.png)\n\n![A narrow map](narrow.png)\n\n"
        "![Heavy](heavy.bin.png)\n\n![Remote](https://example.org/x.png)",
    )
    result = runner.invoke(cli, ["check", "pictures", "--json"])
    found = [(f["path"], f["line"], f["message"]) for f in json.loads(result.stdout)["findings"]]
    assert (
        "issues/pictures/a.md",
        9,
        "the image wide.png is 1200 px wide, wider than the 600 px container (Outlook for "
        "Windows shows it at full size)",
    ) in found
    wide = [f for f in found if "px wide" in f[2]]
    assert not [f for f in wide if "narrow.png" in f[2] or "photo.png" in f[2]]
    weight = [f for f in found if "weigh" in f[2]]
    assert len(weight) == 1 and weight[0][:2] == ("issues/pictures", None)
    assert weight[0][2].startswith("the issue's images weigh 11") and "over 1024 KB" in weight[0][2]


def test_a_broken_template_is_reported_once_not_as_a_traceback(project: Path, runner: CliRunner) -> None:
    write(project / "templates" / "style.css", ".story { position: absolute;\n")
    write(project / "templates" / "email.html", "{% extends %}\n")
    result = runner.invoke(cli, ["check", EXAMPLE])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "templates/email.html:1: error: template syntax error" in result.stdout


def test_cssutils_keeps_its_css21_complaints_to_itself(project: Path) -> None:
    """'display: flex' is check's to judge (a warning in its own words): cssutils printed
    'ERROR: CSSUTILS: … Invalid value for "CSS Level 2.1" property' on every export."""
    import subprocess
    import sys

    write(
        project / "templates" / "email.html",
        '{% extends "!default/email.html" %}{% block header %}{{ super() }}'
        '<tr><td class="masthead" style="display:flex; position:absolute">x</td></tr>{% endblock %}\n',
    )
    done = subprocess.run(
        [sys.executable, "-m", "digest", "export", EXAMPLE, "--out", str(project / "out")],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "CSSUTILS" not in done.stderr and "ERROR" not in done.stderr, done.stderr
