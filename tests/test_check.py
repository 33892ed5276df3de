from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.check import check_issue
from digest.cli import cli
from digest.config import load_project

from .conftest import EXAMPLE, story, write


def _findings(ref: str) -> list[str]:
    return [f.format() for f in check_issue(load_project(), ref).findings]


def test_example_issue_is_clean(project: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["check", EXAMPLE, "--strict"])
    assert result.exit_code == 0
    assert result.stdout == "0 errors, 0 warnings\n"


@pytest.fixture
def bad_issue(project: Path) -> Path:
    """An issue built to fire every warning."""
    story(
        project / "issues" / EXAMPLE / "zz-earlier.md",
        "An article that went out",
        source="TASS",
        url="https://tass.com/politics/1382579",
    )
    folder = project / "issues" / "2022-01-05"
    write(
        folder / "issue.toml",
        f"""
        subject = "{"A very long subject line that keeps going well past what any inbox shows in full"}"
        date = 2022-01-05
        preheader = ""
    """,
    )
    write(
        folder / "a.md",
        """
        ---
        title: Same title
        url: https://tass.com/politics/1382579
        ---
        First paragraph with a TK figure.

        ![](https://example.com/map.png) and [a relative link](/local/page) and [empty]().
    """,
    )
    write(
        folder / "b.md",
        """
        ---
        title: Same title
        source: Example
        url: https://example.com/same
        ---
        Text. TODO: check the quote.
    """,
    )
    write(
        folder / "c.md",
        """
        ---
        title: Other
        source: Example
        url: https://example.com/same
        ---
        Text.
    """,
    )
    return folder


def test_every_warning_fires(bad_issue: Path) -> None:
    base = "issues/2022-01-05"
    assert _findings("2022-01-05") == [
        f"{base}/issue.toml:1: warning: the subject is 80 characters (over 78)",
        f"{base}/issue.toml:3: warning: the preheader is empty",
        f"{base}/a.md:5: warning: leftover TK marker",
        f"{base}/a.md:3: warning: this url is in an earlier issue too: {EXAMPLE}",
        f"{base}/a.md:3: warning: the story has a url but no source",
        f"{base}/a.md:7: warning: an image has no alt text",
        f"{base}/a.md:7: warning: a relative link (/local/page) does not work in an email",
        f"{base}/a.md:7: warning: an empty link",
        f"{base}/b.md:6: warning: leftover TODO marker",
        f"{base}/b.md:2: warning: the same title as a.md",
        f"{base}/c.md:4: warning: the same url as b.md",
    ]


def test_warnings_exit_zero_unless_strict(bad_issue: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["check", "2022-01-05"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "0 errors, 11 warnings"
    assert runner.invoke(cli, ["check", "2022-01-05", "--strict"]).exit_code == 1


def test_json_output(bad_issue: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["check", "2022-01-05", "--json"])
    data = json.loads(result.stdout)
    assert (data["errors"], data["warnings"]) == (0, 11)
    assert data["findings"][0] == {
        "severity": "warning",
        "message": "the subject is 80 characters (over 78)",
        "path": "issues/2022-01-05/issue.toml",
        "line": 1,
        "hint": "inboxes cut long subjects; shorten it",
    }


def test_build_errors_are_all_reported(project: Path, runner: CliRunner) -> None:
    folder = project / "issues" / EXAMPLE
    write(folder / "zz-a.md", "---\nsource: X\n---\nBody\n")
    write(folder / "zz-b.md", "---\ntitle: [\n---\n")
    result = runner.invoke(cli, ["check", EXAMPLE])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"issues/{EXAMPLE}/zz-a.md:1: error: front matter has no 'title'"
    assert lines[2].startswith(f"issues/{EXAMPLE}/zz-b.md:2: error: malformed YAML")
    assert lines[-1] == "2 errors, 0 warnings"


def test_missing_disclaimer_and_unsubscribe_link(project: Path) -> None:
    write(project / "templates" / "email.txt", "{{ issue.subject }}\n{{ newsletter.disclaimer }}\n")
    write(
        project / "templates" / "email.html",
        """
        {% extends "!default/email.html" %}
        {% block footer %}<tr><td>{{ newsletter.disclaimer }}
        <a href="javascript:void(0)">x</a> <a href="#">top</a></td></tr>{% endblock %}
    """,
    )
    assert _findings(EXAMPLE) == [
        "templates/email.txt: error: the text part has no unsubscribe link",
        "templates/email.html: error: the HTML part has no unsubscribe link",
        "templates/email.html: warning: a javascript: link (javascript:void(0))",
        "templates/email.html: warning: an empty link",
    ]
    write(project / "templates" / "email.txt", "{{ unsubscribe_url }}\n")
    assert _findings(EXAMPLE)[0] == (
        "templates/email.txt: error: the rendered email does not carry the editorial disclaimer"
    )


def test_size_warnings(project: Path) -> None:
    folder = project / "issues" / EXAMPLE
    story(folder / "zz-long.md", "Long read", body="Lorem ipsum dolor sit amet. " * 4000)
    rules = "\n".join(f".c{i} {{ color: #{i:06x} !important; }}" for i in range(900))
    write(
        project / "templates" / "media.css",
        "{% include '!default/media.css' %}\n@media (max-width: 400px) {\n" + rules + "\n}\n",
    )
    findings = _findings(EXAMPLE)
    assert any(
        f.startswith(f"issues/{EXAMPLE}: warning: the HTML part is ")
        and f.endswith("KB as sent; Gmail clips messages over 102 KB")
        for f in findings
    )
    assert any(
        f.endswith("email.html: warning: a <style> block of 50 KB (over 16 KB; Gmail drops it)")
        for f in findings
    )


def test_check_hides_nothing(project: Path, runner: CliRunner) -> None:
    """Errors and warnings together: an empty story, a broken one, markers, import's site urls."""
    folder = project / "issues" / EXAMPLE
    write(folder / "zz-empty.md", "---\ntitle: Nothing here\n---\n\n")
    write(folder / "zz-broken.md", "---\ntitle: [\n---\nText. XXX\n")
    write(folder / "zz-marker.md", "---\ntitle: Marked\n---\nA TODO left here.\n")
    write(
        folder / "zz-site.md",
        "---\ntitle: Site only\nsource: TASS\nurl: https://tass.com/"
        "  # import: only the site is known; put the article's address here\n---\nText.\n",
    )
    result = runner.invoke(cli, ["check", EXAMPLE])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"issues/{EXAMPLE}/zz-broken.md:2: error: malformed YAML front matter: " + (
        "did not find expected node content"  # libyaml's words
        if lines[0].endswith("node content")
        else "expected the node content, but found '<stream end>'"
    )
    assert f"issues/{EXAMPLE}/zz-marker.md:4: warning: leftover TODO marker" in lines
    assert (
        f"issues/{EXAMPLE}/zz-site.md:4: warning: the url is the site that 'digest import' "
        "found, not the article" in lines
    )
    assert f"issues/{EXAMPLE}/zz-empty.md:4: error: the story has no text" in lines
    assert f"issues/{EXAMPLE}/zz-broken.md:4: warning: leftover XXX marker" in lines
    assert lines[-1] == "2 errors, 3 warnings"


def test_an_empty_story_is_an_error(project: Path) -> None:
    write(project / "issues" / EXAMPLE / "zz-empty.md", "---\ntitle: Nothing here\n---\n  \n")
    assert _findings(EXAMPLE) == [f"issues/{EXAMPLE}/zz-empty.md:4: error: the story has no text"]


def test_a_storys_warnings_come_with_its_errors(project: Path) -> None:
    write(project / "issues" / EXAMPLE / "zz-odd.md", "---\ntitle: Odd\nfoo: bar\nurl: ftp://x\n---\nText.\n")
    assert _findings(EXAMPLE) == [
        f"issues/{EXAMPLE}/zz-odd.md:4: error: 'url' is not an http(s) link: 'ftp://x'",
        f"issues/{EXAMPLE}/zz-odd.md:3: warning: unknown front matter key 'foo' (ignored)",
        f"issues/{EXAMPLE}/zz-odd.md:4: warning: the story has a url but no source",
    ]


def test_a_story_with_errors_still_gets_the_warnings_of_its_body(project: Path) -> None:
    # A bad url (or a date that does not exist) hid the warnings about the body's links:
    # they came only once the error was fixed.
    write(
        project / "issues" / EXAMPLE / "zz-bad.md",
        "---\ntitel: Typo in key\nsorce: AFP\nurl: htps://example.com/y\ndate: 2024-02-30\n---\n"
        "A [relative link](page.html) and [an empty one]().\n",
    )
    shown = f"issues/{EXAMPLE}/zz-bad.md"
    assert _findings(EXAMPLE) == [
        f"{shown}:1: error: front matter has no 'title'",
        f"{shown}:4: error: 'url' is not an http(s) link: 'htps://example.com/y'",
        f"{shown}:5: error: invalid date in 'date': 2024-02-30 (day is out of range for month)",
        f"{shown}:2: warning: unknown front matter key 'titel' (ignored)",
        f"{shown}:3: warning: unknown front matter key 'sorce' (ignored)",
        f"{shown}:4: warning: the story has a url but no source",
        f"{shown}:7: warning: a relative link (page.html) does not work in an email",
        f"{shown}:7: warning: an empty link",
    ]


def test_stories_from_the_same_site_are_not_duplicates(project: Path) -> None:
    # The example's two TASS stories both link https://tass.com/: a source, not an article.
    assert _findings(EXAMPLE) == []
    story(project / "issues" / "later" / "a.md", "Later", source="TASS", url="https://tass.com/")
    write(
        project / "issues" / "later" / "issue.toml", 'subject = "Later"\ndate = 2022-01-01\npreheader = "p"\n'
    )
    assert _findings("later") == []


def test_init_example_values_are_flagged(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(cli, ["init", "--name", "Brief, Morning"]).exit_code == 0
    assert runner.invoke(cli, ["new", "one", "--title", "One"]).exit_code == 0
    assert runner.invoke(cli, ["add", "one", "--title", "A", "-"], input="Text.\n").exit_code == 0
    result = runner.invoke(cli, ["check", "one"])
    found = [line for line in result.stdout.splitlines() if "still the example" in line]
    assert found == [
        f"digest.toml:{n}: warning: '{key}' is still the example 'digest init' wrote"
        for n, key in (
            (7, "from"),
            (9, "reply_to"),
            (13, "base_url"),
            (15, "list_id"),
            (18, "unsubscribe_url"),
            (20, "unsubscribe_mailto"),
            (26, "disclaimer"),
        )
    ]


@pytest.fixture
def typo_issue(project: Path) -> Path:
    """A project with no bounce_address; an issue with a misspelt subject and a broken story."""
    config = project / "digest.toml"
    config.write_text("".join(ln for ln in config.read_text().splitlines(True) if "bounce_address" not in ln))
    folder = project / "issues" / "2022-01-07"
    write(folder / "issue.toml", 'subjet = "Thursday"\ndate = 2022-01-07\npreheader = "p"\npre_header = ""\n')
    story(folder / "a.md", "A good story", source="TASS")
    write(folder / "b.md", "---\ntitle: [Letter from the editor\nsource: X\n---\nText.\n")
    return folder


def test_check_shows_hints_and_keeps_warnings_with_errors(typo_issue: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["check", "2022-01-07"])
    assert result.exit_code == 1
    assert result.stderr == ""  # every finding once, on stdout
    assert result.stdout == (
        "issues/2022-01-07/issue.toml:1: error: no 'subject' (unknown key 'subjet': did you mean 'subject'?)\n"
        "  hint: rename 'subjet' to 'subject'\n"
        "issues/2022-01-07/issue.toml:4: error: unknown key 'pre_header': did you mean 'preheader'?\n"
        "  hint: rename it to 'preheader'; known keys: subject, title, date, number, preheader, order\n"
        "issues/2022-01-07/b.md:2: error: malformed YAML front matter: did not find expected ',' or ']'\n"
        "  hint: front matter is 'key: value' lines; quote values that contain ': ' or start with '[' or '{'\n"
        "digest.toml: warning: no bounce_address: bounces go to the From address and are not processed\n"
        '  hint: set bounce_address = "bounces@<your domain>" under [newsletter] and read it with '
        "'digest bounces'\n"
        "3 errors, 1 warning\n"
    )


def test_check_json_keeps_the_bounce_warning_with_errors(typo_issue: Path, runner: CliRunner) -> None:
    data = json.loads(runner.invoke(cli, ["check", "2022-01-07", "--json"]).stdout)
    assert (data["errors"], data["warnings"]) == (3, 1)
    assert data["findings"][-1]["message"].startswith("no bounce_address")


def _picture_issue(project: Path) -> Path:
    folder = project / "issues" / "pics"
    write(folder / "issue.toml", 'subject = "Pictures"\npreheader = "Maps"\n')
    story(
        folder / "a.md",
        "Harbour",
        image="{src: small.png, alt: The harbour}",
        body="Text.\n\n![A wide map](maps/wide.png)\n\n![Gone](gone.png)",
    )
    (folder / "maps").mkdir()
    (folder / "small.png").write_bytes(b"\x89PNG\r\n\x1a\nsmall")
    (folder / "maps" / "wide.png").write_bytes(b"\x89PNG\r\n\x1a\nwide")
    return folder


def test_local_images_without_base_url_are_errors(project: Path, runner: CliRunner) -> None:
    config = project / "digest.toml"
    config.write_text(config.read_text().replace('base_url = "https://worlddigest.example.org"\n', ""))
    _picture_issue(project)
    result = runner.invoke(cli, ["check", "pics"])
    assert result.exit_code == 1
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert errors == [
        "issues/pics/a.md:3: error: the image 'small.png' is a file in the issue folder, which readers' "
        "mail cannot load without 'base_url'",
        "issues/pics/a.md:7: error: the image 'maps/wide.png' is a file in the issue folder, which readers' "
        "mail cannot load without 'base_url'",
        "issues/pics/a.md:9: error: image not found in the issue folder: 'gone.png'",
    ]
    assert result.stdout.count("hint: set base_url in digest.toml's [newsletter] and publish the archive") == 2


def test_an_image_not_yet_in_site_is_a_warning(project: Path, runner: CliRunner) -> None:
    folder = _picture_issue(project)
    (folder / "a.md").write_text((folder / "a.md").read_text().replace("\n\n![Gone](gone.png)", ""))

    def site_findings() -> list[dict]:
        result = runner.invoke(cli, ["check", "pics", "--json"])
        assert result.exit_code == 0, result.output
        return [f for f in json.loads(result.stdout)["findings"] if "site/" in f["message"]]

    found = site_findings()
    assert [(f["severity"], f["path"], f["line"], f["message"]) for f in found] == [
        (
            "warning",
            "issues/pics/a.md",
            3,
            "the image small.png is not published yet (site/pics/small.png); "
            "readers load it from https://worlddigest.example.org/pics/small.png",
        ),
        (
            "warning",
            "issues/pics/a.md",
            7,
            "the image maps/wide.png is not published yet (site/pics/maps/wide.png); "
            "readers load it from https://worlddigest.example.org/pics/maps/wide.png",
        ),
    ]
    assert found[0]["hint"].startswith("run 'digest publish pics' and put site/ online before you send")
    assert runner.invoke(cli, ["publish", "pics"]).exit_code == 0
    assert site_findings() == []
    (folder / "small.png").write_bytes(b"\x89PNG\r\n\x1a\na new small")
    assert [(f["line"], f["message"]) for f in site_findings()] == [
        (
            3,
            "the image small.png has changed since it was published (site/pics/small.png); "
            "readers load it from https://worlddigest.example.org/pics/small.png",
        )
    ]


def test_json_output_when_the_issue_cannot_be_checked_at_all(project: Path, runner: CliRunner) -> None:
    # A broken digest.toml (or no such issue) printed plain text on stderr and no JSON.
    config = project / "digest.toml"
    config.write_text(config.read_text().replace('language = "en"', 'language = "ar_EG"'))
    result = runner.invoke(cli, ["check", EXAMPLE, "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["errors"] == 1 and data["warnings"] == 0
    [finding] = data["findings"]
    assert (finding["severity"], finding["path"], finding["message"]) == (
        "error",
        "digest.toml",
        "'language' is not a BCP 47 language tag: 'ar_EG'",
    )
    assert finding["hint"] == 'write language = "ar-EG"'
    missing = runner.invoke(cli, ["check", "nope", "--json"])
    assert missing.exit_code == 1 and json.loads(missing.stdout)["errors"] == 2  # digest.toml, no issue


def test_a_broken_dotenv_is_found_before_the_send(project: Path) -> None:
    # 'digest send' refused it; the check run before it said nothing.
    (project / ".env").write_text(
        "DIGEST_SMTP_HOST=127.0.0.1\nthis is not a setting\nDIGEST_SMTP_SECURTY=none\n"
    )
    assert _findings(EXAMPLE)[:2] == [
        ".env:2: error: cannot read this line: it is not NAME=value",
        ".env:3: error: unknown setting DIGEST_SMTP_SECURTY",
    ]


def test_an_http_unsubscribe_url_warns_that_one_click_is_not_offered(project: Path) -> None:
    config = project / "digest.toml"
    config.write_text(
        config.read_text().replace('unsubscribe_url = "https://', 'unsubscribe_url = "http://', 1)
    )
    line = next(
        n for n, row in enumerate(config.read_text().splitlines(), 1) if row.startswith("unsubscribe_url")
    )
    assert _findings(EXAMPLE) == [
        f"digest.toml:{line}: warning: unsubscribe_url is http://: messages go without "
        "List-Unsubscribe-Post, so Gmail's and Yahoo's one-click unsubscribe (RFC 8058, https only) "
        "is not offered"
    ]


def test_an_issue_toml_that_cannot_be_read_is_not_also_said_to_lack_a_preheader(
    project: Path, small_issue: Path
) -> None:
    (small_issue / "issue.toml").write_text(
        'subject = "Small issue\npreheader = "Brest joins"\n', encoding="utf-8"
    )
    findings = _findings("small")
    assert any("invalid TOML" in f for f in findings), findings
    assert not any("preheader" in f for f in findings), findings


def test_files_saved_with_a_byte_order_mark_are_read(project: Path, small_issue: Path) -> None:
    """Windows editors write a BOM; stories, the list and .env already allowed one."""
    for path in (project / "digest.toml", small_issue / "issue.toml"):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    findings = _findings("small")
    assert not any("invalid TOML" in f or "error" in f for f in findings), findings


def test_a_broken_digest_toml_does_not_hide_the_stories_problems(project: Path, runner: CliRunner) -> None:
    """A typo in digest.toml stopped the check before the issue was read: the editor fixed
    it, ran again, and only then learnt of the broken story."""
    config = project / "digest.toml"
    config.write_text(config.read_text().replace('language = "en"', 'langauge = "en"'))
    story(
        project / "issues" / EXAMPLE / "zz-late.md", "Late", body="TODO: the [empty]() link.", date="2024-02-30"
    )
    result = runner.invoke(cli, ["check", EXAMPLE])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[::2] == [
        "digest.toml:14: error: unknown key 'langauge' in [newsletter]",
        f"issues/{EXAMPLE}/zz-late.md:3: error: invalid date in 'date': 2024-02-30 "
        "(day is out of range for month)",
        f"issues/{EXAMPLE}/zz-late.md:5: warning: leftover TODO marker",
        f"issues/{EXAMPLE}/zz-late.md:5: warning: an empty link",
        "2 errors, 2 warnings",
    ]
    data = json.loads(runner.invoke(cli, ["check", EXAMPLE, "--json"]).stdout)
    assert [(f["path"], f["severity"]) for f in data["findings"]] == [
        ("digest.toml", "error"),
        (f"issues/{EXAMPLE}/zz-late.md", "error"),
        (f"issues/{EXAMPLE}/zz-late.md", "warning"),
        (f"issues/{EXAMPLE}/zz-late.md", "warning"),
    ]
    missing = runner.invoke(cli, ["check", "nosuch"])  # and a missing issue is said too
    assert missing.stdout.splitlines()[2::2] == ["issues: error: no issue 'nosuch'", "2 errors, 0 warnings"]
