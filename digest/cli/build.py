"""Commands that build an issue: export, preview, check."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import DigestError, DigestErrors
from . import State, _shown, cli, report, warn_all


@cli.command()
@click.argument("issue")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "text", "eml", "all"]),
    default="all",
    show_default=True,
    help="What to write.",
)
@click.option(
    "--out",
    default=None,
    help="Folder to write into (default: build/ in the project), or - for standard output.",
)
@click.pass_obj
def export(state: State, issue: str, fmt: str, out: str | None) -> None:
    """Render ISSUE and write it as HTML, plain text and/or an .eml message.

    ISSUE is a folder name under issues/ or a path to an issue folder.

    \b
    Examples:
        digest export 2021-12-31
        digest export 2021-12-31 --format eml --out -
    """
    from ..export import FORMATS, build_issue, export_issue

    project = state.project()
    formats = FORMATS if fmt == "all" else (fmt,)
    if out == "-":
        if len(formats) != 1:
            raise DigestError(
                "--out - writes one format to standard output", hint="add --format html, text or eml"
            )
        built = build_issue(project, issue)
        warn_all(built.issue.warnings)
        sys.stdout.buffer.write(built.output(formats[0]))
        return
    out_dir = Path(out) if out else project.build_dir
    from ..issue import load_issue

    warn_all(load_issue(project, issue).warnings)
    for path in export_issue(project, issue, out_dir, formats):
        click.echo(f"wrote {_shown(path)}")


@cli.command()
@click.argument("issue")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (loopback unless you say otherwise).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port (default: 8000 or the next free one; 0: any free port).",
)
@click.option("--no-open", is_flag=True, help="Do not open a browser.")
@click.pass_obj
def preview(state: State, issue: str, host: str, port: int | None, no_open: bool) -> None:
    """Preview ISSUE in a browser, rebuilt live whenever a file is saved.

    Shows the exact HTML that export writes and send sends, at desktop or
    mobile width, light or dark, the text part and the message source.

    \b
    Example:
        digest preview 2021-12-31 --no-open
    """
    import signal
    import webbrowser

    from ..preview import start_preview
    from ..settings import is_loopback

    def stop_on_term(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)

    project = state.project()
    server, shutdown = start_preview(project.root, issue, host, port)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{server.server_address[1]}/"
    if not is_loopback(host):
        click.echo(
            f"Warning: listening on {host}: anyone who can reach this machine can read the preview", err=True
        )
    snap = server.builder.snapshot
    if snap.errors:
        for e in snap.errors:
            report(e)
    click.echo(f"Previewing {issue} at {url} (Ctrl-C to stop)")
    if not no_open:
        webbrowser.open(url)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        click.echo("\nStopped.")
    finally:
        shutdown()


def _issue_folder(state: State, issue: str) -> tuple[Path | None, DigestError | None]:
    """ISSUE's folder when digest.toml cannot be read (the project's issues/, or a path),
    or the error that there is no such issue."""
    from ..config import find_project_root
    from ..issue import issue_dir_in

    try:
        root = state.project_dir.resolve() if state.project_dir is not None else find_project_root()
    except DigestError:
        return None, None
    try:
        return issue_dir_in(root / "issues", issue), None
    except DigestError as e:
        return None, e


@cli.command()
@click.argument("issue")
@click.option("--strict", is_flag=True, help="Fail (exit 1) on warnings too.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON, for CI.")
@click.pass_obj
def check(state: State, issue: str, strict: bool, as_json: bool) -> None:
    """Check ISSUE before it goes out, without sending anything.

    Errors (exit 1): anything the build rejects, a missing disclaimer or
    unsubscribe link. Warnings (exit 1 only with --strict): Gmail clipping,
    a large <style> block, a long subject or empty preheader, images without
    alt text, empty, relative or javascript: links, TK/TODO/XXX markers,
    repeated stories, links that went out in recent issues, a url without a
    source, a picture of the issue folder not yet published in site/.

    \b
    Example:
        digest check 2021-12-31 --strict
    """
    import json

    from ..check import check_issue, report_of

    try:
        project = state.project()
    except DigestError as e:  # digest.toml: its errors, and what the stories say on their own
        folder, missing = _issue_folder(state, issue)
        errors = [*getattr(e, "errors", [e]), *([missing] if missing else [])]
        report = report_of(DigestErrors(errors) if len(errors) > 1 else e, issue_dir=folder)
    else:
        try:
            report = check_issue(project, issue)
        except DigestError as e:  # no such issue: for CI, still JSON
            if not as_json:
                raise
            report = report_of(e)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "findings": [f.as_dict() for f in report.findings],
                    "errors": report.errors,
                    "warnings": report.warnings,
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        for finding in report.findings:
            click.echo(finding.format_with_hint())
        click.echo(report.summary())
    if report.errors or (strict and report.warnings):
        sys.exit(1)
