from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest import __version__
from digest.cli import cli

from .conftest import EXAMPLE, write


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"digest, version {__version__}\n"


def test_every_command_has_help_with_an_example(runner: CliRunner) -> None:
    for name in cli.commands:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example" in result.output, f"'digest {name} --help' shows no example"
        assert "digest " + name in result.output


@pytest.mark.parametrize(
    ("args", "message", "where"),
    [
        (
            ["subscribers", "ls", "--status", "bogus"],
            "Invalid value for '--status': 'bogus' is not one of",
            "digest subscribers ls",
        ),
        (
            ["--project", "digest.toml", "ls", EXAMPLE],
            "Invalid value for '--project': Directory 'digest.toml' is a file.",
            "digest",
        ),
        (
            ["add", EXAMPLE, "--position", "0", "--title", "T", "-"],
            "Invalid value for '--position': 0 is not in the range x>=1.",
            "digest add",
        ),
        (
            ["send", EXAMPLE, "--rate", "abc"],
            "Invalid value for '--rate': 'abc' is not a number.",
            "digest send",
        ),
        (
            ["send", EXAMPLE, "--workers", "two"],
            "Invalid value for '--workers': 'two' is not a whole number.",
            "digest send",
        ),
        (
            ["new", "x", "--date", "2024-02-30"],
            "Invalid value for '--date': '2024-02-30' is not a day of the calendar written YYYY-MM-DD.",
            "digest new",
        ),
        (["nonsense"], "No such command 'nonsense'.", "digest"),
        (["ls"], "Missing argument 'ISSUE'.", "digest ls"),
        (["add", EXAMPLE, "--title"], "Option '--title' requires an argument.", "digest add"),
    ],
)
def test_a_usage_error_is_one_line_and_a_hint(project: Path, runner: CliRunner, args, message, where) -> None:
    """Not click's 'Usage:' block and exit code 2: digest's own form, as for any bad input."""
    result = runner.invoke(cli, args, prog_name="digest")
    assert result.exit_code == 1
    first, hint = result.stderr.splitlines()
    assert first.startswith(f"Error: {message}") and hint == f"  hint: see '{where} --help'"
    assert "Usage:" not in result.output and "Traceback" not in result.output


def test_export_writes_three_files(project: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["export", EXAMPLE, "--out", "out"])
    assert result.exit_code == 0, result.output
    assert result.output == (f"wrote out/{EXAMPLE}.html\nwrote out/{EXAMPLE}.txt\nwrote out/{EXAMPLE}.eml\n")


def test_export_one_format_to_stdout(project: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["export", EXAMPLE, "--format", "eml", "--out", "-"])
    assert result.exit_code == 0
    msg = email.message_from_bytes(result.stdout_bytes, policy=email.policy.default)
    assert msg["Subject"] == "Putin and Biden talk again: what was said"


def test_export_all_to_stdout_is_refused(project: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["export", EXAMPLE, "--out", "-"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: --out - writes one format to standard output\n  hint: add --format html, text or eml\n"
    )


def test_missing_title_error_text(project: Path, runner: CliRunner) -> None:
    write(project / "issues" / EXAMPLE / "zz.md", "---\nsource: X\n---\nBody\n")
    result = runner.invoke(cli, ["export", EXAMPLE, "--out", "out"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: issues/{EXAMPLE}/zz.md:1: front matter has no 'title'\n"
        "  hint: add 'title: ...' to the front matter\n"
    )
    assert not (project / "out").exists()


def test_all_problems_in_one_run(project: Path, runner: CliRunner) -> None:
    folder = project / "issues" / EXAMPLE
    write(folder / "zz-a.md", "---\nsource: X\n---\nBody\n")
    write(folder / "zz-b.md", "---\ntitle: [oops\n---\nBody\n")
    result = runner.invoke(cli, ["export", EXAMPLE])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("Error:")] == [
        f"Error: issues/{EXAMPLE}/zz-a.md:1: front matter has no 'title'",
        f"Error: issues/{EXAMPLE}/zz-b.md:2: malformed YAML front matter: did not find expected ',' or ']'",
    ]
    assert lines[-1] == "2 problems found; nothing was written."
    assert "Traceback" not in result.output


def test_unknown_key_warns_but_exports(project: Path, runner: CliRunner) -> None:
    path = project / "issues" / EXAMPLE / "five-key-takeaways-from-latest-putin-biden-call.md"
    path.write_text(path.read_text().replace("source: RT", "source: RT\nsoruce: typo"))
    result = runner.invoke(cli, ["export", EXAMPLE, "--out", "out"])
    assert result.exit_code == 0
    assert result.stderr.startswith(
        f"Warning: issues/{EXAMPLE}/five-key-takeaways-from-latest-putin-biden-call.md:4: "
        "unknown front matter key 'soruce' (ignored)\n"
    )


def test_no_project(tmp_path: Path, runner: CliRunner, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["export", EXAMPLE])
    assert result.exit_code == 1
    assert re.fullmatch(
        r"Error: no digest.toml in .* or any folder above it\n"
        r"  hint: run digest inside a newsletter project, pass --project DIR, .*\n",
        result.stderr,
    )


def test_project_option(project: Path, runner: CliRunner, tmp_path: Path, monkeypatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(cli, ["--project", str(project), "export", EXAMPLE, "--out", "o"])
    assert result.exit_code == 0, result.output
    assert (elsewhere / "o" / f"{EXAMPLE}.html").exists()


def test_invalid_digest_toml(project: Path, runner: CliRunner) -> None:
    (project / "digest.toml").write_text("[newsletter\n")
    result = runner.invoke(cli, ["export", EXAMPLE])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: digest.toml:1: invalid TOML")


def test_template_dropping_disclaimer(project: Path, runner: CliRunner) -> None:
    write(project / "templates" / "email.txt", "{{ issue.subject }}\n")
    result = runner.invoke(cli, ["export", EXAMPLE])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: templates/email.txt: the rendered email does not carry the editorial disclaimer\n"
        "  hint: keep {{ newsletter.disclaimer }} in the template (or extend the default "
        "template and keep its footer block)\n"
    )


def test_verbose_shows_the_traceback(project: Path, runner: CliRunner) -> None:
    write(project / "issues" / EXAMPLE / "zz.md", "---\nsource: X\n---\n")
    result = runner.invoke(cli, ["--verbose", "export", EXAMPLE])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr


@pytest.mark.parametrize("args", [["export", "nope"]])
def test_missing_issue(project: Path, runner: CliRunner, args) -> None:
    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    assert result.stderr == "Error: issues: no issue 'nope'\n  hint: known issues: 2021-12-31\n"


PIPELINE = (
    "jinja2",
    "premailer",
    "lxml",
    "markdown_it",
    "yaml",
    "digest.render",
    "digest.export",
    "digest.stories",
    "digest.message",
    "digest.config",
    "cssutils",
)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["export", "--help"]])
def test_help_and_version_do_not_import_the_pipeline(args: list[str]) -> None:
    import subprocess
    import sys

    code = (
        "import sys, runpy; sys.argv = ['digest', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('digest', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in {PIPELINE!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("LOADED []"), out[-300:]


def test_an_unexpected_exception_is_one_line_without_traceback(
    project: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import digest.export

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody expected\nsecond line")

    monkeypatch.setattr(digest.export, "build_issue", broken)
    result = runner.invoke(cli, ["export", EXAMPLE, "--out", "OUT"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: internal error: RuntimeError: something nobody expected\n"
        "  hint: run the command again with --verbose to see the traceback, and report it if "
        "the input looks right\n"
    )
    assert not (project / "OUT").exists()
    verbose = runner.invoke(cli, ["--verbose", "export", EXAMPLE, "--out", "OUT"])
    assert verbose.exit_code == 1
    assert "Traceback (most recent call last)" in verbose.output
    assert verbose.output.rstrip().endswith("the input looks right")


def test_bad_values_are_errors_with_path_and_line(project: Path, runner: CliRunner) -> None:
    folder = project / "issues" / EXAMPLE
    write(folder / "bad-url.md", '---\ntitle: A\nurl: "http://[oops"\n---\nText.\n')
    write(folder / "bad-date.md", "---\ntitle: B\ndate: 2021-02-30\n---\nText.\n")
    result = runner.invoke(cli, ["export", EXAMPLE, "--out", "OUT"])
    assert result.exit_code == 1
    assert (
        f"Error: issues/{EXAMPLE}/bad-url.md:3: 'url' is not an http(s) link: 'http://[oops'" in result.output
    )
    assert (
        f"Error: issues/{EXAMPLE}/bad-date.md:3: invalid date in 'date': 2021-02-30 (day is "
        "out of range for month)" in result.output
    )
    assert "Traceback" not in result.output


def test_a_closed_pipe_is_not_an_error(project: Path) -> None:
    """`digest subscribers ls | head -1`: the reader goes away; no internal error."""
    import os
    import subprocess
    import sys

    rows = "".join(f"reader{i}@example.com,Reader {i}\n" for i in range(3000))
    (project / "list.csv").write_text("email,name\n" + rows)
    added = subprocess.run(
        [sys.executable, "-m", "digest", "subscribers", "import", "list.csv"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "subscribers", "ls"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    assert proc.stdout.readline().startswith(b"reader")
    proc.stdout.close()  # as `head -1` does
    stderr = proc.stderr.read().decode()
    assert proc.wait(60) == 0
    assert stderr == ""
