from __future__ import annotations

import email
import email.policy
import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import cli

from .conftest import EXAMPLE, FIXTURES


def _ok(runner: CliRunner, *args: str, input: str | None = None) -> str:
    result = runner.invoke(cli, list(args), input=input)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_compose_an_issue_from_an_empty_folder(tmp_path: Path, runner: CliRunner, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _ok(runner, "init", "--name", "Morning Brief").splitlines()[:4] == [
        "created digest.toml",
        "created .env.example",
        "created .gitignore",
        "created issues",
    ]
    assert _ok(runner, "new", "--date", "2022-01-03", "--title", "Monday") == (
        "created issues/2022-01-03/issue.toml\n"
    )
    Path("first.md").write_text("The first story's text.\n")
    _ok(
        runner,
        "add",
        "2022-01-03",
        "--title",
        "Ёлка на Красной площади",
        "--source",
        "TASS",
        "--url",
        "https://tass.com/society/1",
        "--dateline",
        "MOSCOW, January 3",
        "first.md",
    )
    _ok(runner, "add", "2022-01-03", "--title", "From stdin", "-", input="Piped *text*.\n")
    _ok(runner, "add", "2022-01-03", "--title", "From stdin", "--position", "1", "first.md")
    assert _ok(runner, "move", "2022-01-03", "from-stdin", "--after", "from-stdin-2") == (
        "moved from-stdin to position 2 of 3\n"
    )
    listing = _ok(runner, "ls", "2022-01-03", "--json")
    import json

    assert [row["slug"] for row in json.loads(listing)] == [
        "from-stdin-2",
        "from-stdin",
        "elka-na-krasnoi-ploshchadi",
    ]
    _ok(runner, "export", "2022-01-03")
    msg = email.message_from_bytes(Path("build/2022-01-03.eml").read_bytes(), policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()
    assert text.index("From stdin\r\n\r\nThe first") < text.index("From stdin\r\n\r\nPiped text.")
    assert text.index("Piped text.") < text.index("Ёлка на Красной площади")
    assert "MOSCOW, January 3. /TASS/. The first story's text." in text
    manifest = Path("issues/2022-01-03/issue.toml").read_text()
    assert manifest.startswith("# The issue's subject line")  # comments survive the edits


def test_move_keeps_comments_and_layout(project: Path, runner: CliRunner) -> None:
    manifest = project / "issues" / EXAMPLE / "issue.toml"
    before = manifest.read_text()
    _ok(runner, "move", EXAMPLE, "five-key-takeaways-from-latest-putin-biden-call", "1")
    after = manifest.read_text()
    assert after.splitlines()[:5] == before.splitlines()[:5]
    assert after.index('"five-key-takeaways') < after.index('"kremlin-praises')


def test_rm_deletes_the_story_and_its_order_entry(project: Path, runner: CliRunner) -> None:
    slug = "five-key-takeaways-from-latest-putin-biden-call"
    assert _ok(runner, "rm", EXAMPLE, slug) == f"removed issues/{EXAMPLE}/{slug}.md\n"
    assert not (project / "issues" / EXAMPLE / f"{slug}.md").exists()
    assert slug not in (project / "issues" / EXAMPLE / "issue.toml").read_text()


def test_init_refuses_an_existing_project(project: Path, runner: CliRunner) -> None:
    before = (project / "digest.toml").read_bytes()
    result = runner.invoke(cli, ["init", "."])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: .: already exists: digest.toml\n"
        "  hint: digest init never overwrites files; choose an empty folder\n"
    )
    assert (project / "digest.toml").read_bytes() == before
    assert not (project / ".env.example").exists()


def test_move_or_rm_of_a_missing_story(project: Path, runner: CliRunner) -> None:
    manifest = project / "issues" / EXAMPLE / "issue.toml"
    before = manifest.read_bytes()
    for args in (["move", EXAMPLE, "ghost", "1"], ["rm", EXAMPLE, "ghost"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1
        assert result.stderr == (
            f"Error: issues/{EXAMPLE}: no story 'ghost' in the issue\n"
            f"  hint: see the slugs with 'digest ls {EXAMPLE}'\n"
        )
    assert manifest.read_bytes() == before


def test_move_before_or_after_itself_says_so(project: Path, runner: CliRunner) -> None:
    # It said "no story 'kremlin' in the issue" of a story that is there.
    manifest = project / "issues" / EXAMPLE / "issue.toml"
    before = manifest.read_bytes()
    slug = runner.invoke(cli, ["ls", EXAMPLE, "--json"])
    first = json.loads(slug.stdout)[0]["slug"]
    result = runner.invoke(cli, ["move", EXAMPLE, first, "--before", first])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: issues/{EXAMPLE}/issue.toml: '{first}' cannot move before itself\n"
        "  hint: name another story, or give a position (see them with 'digest ls ISSUE')\n"
    )
    assert manifest.read_bytes() == before


def test_commands_on_a_missing_issue(project: Path, runner: CliRunner) -> None:
    for args in (
        ["add", "nope", "--title", "T", "-"],
        ["import", "nope", "-"],
        ["ls", "nope"],
        ["move", "nope", "a", "1"],
        ["rm", "nope", "a"],
        ["check", "nope"],
    ):
        result = runner.invoke(cli, args, input="Text\n")
        assert result.exit_code == 1, args
        assert result.stderr.startswith("Error: issues: no issue 'nope'\n"), args


def test_import_cli(project: Path, runner: CliRunner) -> None:
    _ok(runner, "new", "imported", "--date", "2021-12-31")
    out = _ok(runner, "import", "imported", str(FIXTURES / "seed.txt"))
    assert out.splitlines()[-1] == "imported 4 stories"
    listing = _ok(runner, "ls", "imported")
    assert [line.split()[1] for line in listing.splitlines()] == [
        "kremlin-praises-putin-biden-talks-as-constructive-aide",
        "putin-said-new-sanctions-could-cause-complete-severance-of",
        "statement-by-press-secretary-jen-psaki-on-president-bidens",
        "five-key-takeaways-from-latest-putin-biden-call",
    ]


def test_import_of_bad_input_changes_nothing(project: Path, runner: CliRunner, tmp_path: Path) -> None:
    _ok(runner, "new", "target")
    folder = project / "issues" / "target"
    before = sorted((p.name, p.read_bytes()) for p in folder.iterdir())
    csv = tmp_path / "list.csv"
    csv.write_text("email,name\na@example.com,Ann\nb@example.com,Bob\n")
    result = runner.invoke(cli, ["import", "target", str(csv)])
    assert result.exit_code == 1
    assert "this looks like CSV, not a plain-text digest" in result.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert runner.invoke(cli, ["import", "target", str(empty)]).exit_code == 1
    assert sorted((p.name, p.read_bytes()) for p in folder.iterdir()) == before


def test_import_reports_text_it_did_not_place(project: Path, runner: CliRunner, tmp_path: Path) -> None:
    _ok(runner, "new", "target")
    source = tmp_path / "in.txt"
    source.write_text("Title\n\nBody.\nContinue reading at a.com\nLeft over.\n")
    result = runner.invoke(cli, ["import", "target", str(source)])
    assert result.exit_code == 0
    assert f"Warning: {source}:5: text after 'Continue reading' not placed: 'Left over.'" in (result.stderr)
    assert result.stdout.splitlines()[-1] == "imported 1 story; 1 note(s) above"


def test_add_position_and_after_exclude_each_other(project: Path, runner: CliRunner) -> None:
    result = runner.invoke(
        cli, ["add", EXAMPLE, "--title", "T", "--position", "1", "--after", "x", "-"], input="t"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --position and --after exclude each other")


def test_add_refuses_an_empty_story_from_every_source(project: Path, runner: CliRunner) -> None:
    before = sorted(p.name for p in (project / "issues" / EXAMPLE).iterdir())
    (project / "empty.md").write_text("  \n\n")
    for args, stdin in ((["empty.md"], None), (["-"], ""), (["-"], "\n \n"), ([], "")):
        result = runner.invoke(cli, ["add", EXAMPLE, "--title", "Nothing", *args], input=stdin)
        assert result.exit_code == 1, args
        assert result.output.startswith(f"Error: issues/{EXAMPLE}: the story has no text\n")
    assert sorted(p.name for p in (project / "issues" / EXAMPLE).iterdir()) == before


def test_add_refuses_an_invalid_url(project: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["add", EXAMPLE, "--title", "T", "--url", "http://[oops", "-"], input="Text.\n")
    assert result.exit_code == 1
    assert result.output.startswith("Error: --url is not an http(s) link: 'http://[oops'")


@pytest.mark.parametrize(
    "name", ["News\\Daily", "Brief, Morning", 'Les "Nouvelles"', "Ελληνικά Νέα", "Tab\there"]
)
def test_init_writes_valid_toml_for_any_name(tmp_path: Path, runner: CliRunner, name: str) -> None:
    from digest.config import load_project

    result = runner.invoke(cli, ["init", str(tmp_path / "p"), "--name", name])
    assert result.exit_code == 0, result.output
    newsletter = load_project(tmp_path / "p").newsletter
    shown = " ".join(name.split())
    assert newsletter.name == shown
    from digest.headers import parse_mailbox

    assert parse_mailbox(newsletter.sender) == (shown, "newsletter@example.org")
    assert "# [sources]" in (tmp_path / "p" / "digest.toml").read_text()


def test_init_writes_the_same_env_example_as_this_repository() -> None:
    """Every setting (SMTP, signing key, IMAP for bounces) is named in what init writes."""
    from digest.compose import ENV_EXAMPLE

    from .conftest import REPO

    assert ENV_EXAMPLE == (REPO / ".env.example").read_text()
    assert "DIGEST_IMAP_PASSWORD=" in ENV_EXAMPLE


def test_new_takes_the_preheader_and_a_story_title_keeps_its_apostrophes_words(
    project: Path, runner: CliRunner
) -> None:
    _ok(runner, "new", "2022-01-10", "--title", "Monday", "--preheader", "Strike ends;\n ports reopen")
    manifest = tomllib.loads((project / "issues" / "2022-01-10" / "issue.toml").read_text())
    assert manifest["preheader"] == "Strike ends; ports reopen"  # one line
    (project / "letter.md").write_text("Dear readers.\n")
    _ok(runner, "add", "2022-01-10", "--title", "Editor's letter: the week’s news", "letter.md")
    assert (project / "issues" / "2022-01-10" / "editors-letter-the-weeks-news.md").is_file()


@pytest.mark.parametrize(
    ("edited", "body"),
    [
        ("Above the line.\n# Write the story in Markdown above this line.\n", "Above the line."),
        (
            "\n# Write the story in Markdown above this line.\nBelow it, as many write.\n",
            "Below it, as many write.",
        ),
    ],
)
def test_a_story_written_in_the_editor_above_or_below_the_line(monkeypatch, edited: str, body: str) -> None:
    import click

    from digest.cli import compose

    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(compose.sys, "stdin", Terminal())  # no file, no pipe: $EDITOR
    monkeypatch.setattr(click, "edit", lambda text, extension: edited)
    assert compose._read_body(None) == body


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("page", "is reserved by the web archive"),
        ("Subscribe", "is reserved by the web archive"),
        ("feed.atom", "is reserved by the web archive"),
        ("_draft", "is not safe in a web address"),
        (".hidden", "is not safe in a web address"),
    ],
)
def test_new_refuses_a_name_the_web_archive_refuses(
    project: Path, runner: CliRunner, name: str, why: str
) -> None:
    # It was accepted, and only 'digest publish' (now also check, export and send) refused it.
    result = runner.invoke(cli, ["new", name])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: issues: the issue name {name!r} {why}\n"
        "  hint: choose another name: a letter or digit first, then letters, digits, '-', '_', "
        "'.' or '~', such as the date: 2021-12-31\n"
    )
    assert not (project / "issues" / name).exists()


def test_a_file_that_cannot_be_read_is_an_error_with_a_hint(project: Path, runner: CliRunner) -> None:
    for args, hint in (
        (["import", EXAMPLE, "nonexistent.txt"], "give the plain-text digest to split into stories"),
        (["add", EXAMPLE, "--title", "T", "nonexistent.md"], "give the story's text file"),
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1
        first, second = result.stderr.splitlines()
        assert first.startswith("Error: nonexistent.") and first.endswith(
            ": cannot read: No such file or directory"
        )
        assert second.startswith(f"  hint: {hint}")
