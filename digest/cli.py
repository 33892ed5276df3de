"""The command line: parse, call the library, print. The only module that imports click."""

from __future__ import annotations

import logging
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import click

from . import __version__
from .errors import DigestError, DigestErrors


@dataclass
class State:
    project_dir: Path | None
    verbose: bool

    def project(self):
        from .config import load_project

        return load_project(self.project_dir)


def _format(error: DigestError, kind: str = "Error") -> str:
    text = f"{kind}: {error.format(Path.cwd())}"
    if error.hint:
        text += f"\n  hint: {error.hint}"
    return text


def report(error: DigestError, kind: str = "Error") -> None:
    """Print an error (or each of several) to stderr, with its hint."""
    errors = error.errors if isinstance(error, DigestErrors) else [error]
    for e in errors:
        click.echo(_format(e, kind), err=True)
    if len(errors) > 1 and kind == "Error":
        click.echo(f"{len(errors)} problems found; nothing was written.", err=True)


def warn_all(warnings) -> None:
    for w in warnings:
        report(w, "Warning")


class DigestGroup(click.Group):
    """Turn a DigestError into its message and exit code 1, with no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DigestError as e:
            if ctx.obj is not None and ctx.obj.verbose:
                traceback.print_exc()
            report(e)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=DigestGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--project",
    "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The newsletter project folder (default: found by walking up from here).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log more, and show tracebacks of errors.")
@click.version_option(__version__, prog_name="digest")
@click.pass_context
def cli(ctx: click.Context, project_dir: Path | None, verbose: bool) -> None:
    """Build a newsletter digest from Markdown story files, export it and send it.

    \b
    Example:
        digest export 2021-12-31 --out build/
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s: %(name)s: %(message)s",
    )
    ctx.obj = State(project_dir, verbose)


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
    from .export import FORMATS, build_issue, export_issue

    project = state.project()
    formats = FORMATS if fmt == "all" else (fmt,)
    if out == "-":
        if len(formats) != 1:
            raise DigestError("--out - writes one format to standard output",
                              hint="add --format html, text or eml")
        built = build_issue(project, issue)
        warn_all(built.issue.warnings)
        sys.stdout.buffer.write(built.output(formats[0]))
        return
    out_dir = Path(out) if out else project.build_dir
    from .issue import load_issue

    warn_all(load_issue(project, issue).warnings)
    for path in export_issue(project, issue, out_dir, formats):
        click.echo(f"wrote {_shown(path)}")


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--name", default="My Newsletter", show_default=True, help="The newsletter's name.")
def init(directory: Path, name: str) -> None:
    """Create a newsletter project: digest.toml, .env.example, issues/ and .gitignore.

    Refuses to overwrite any existing file.

    \b
    Example:
        digest init my-newsletter --name "The Morning Brief"
    """
    from .compose import init_project

    for path in init_project(directory, name):
        click.echo(f"created {_shown(path)}")
    click.echo("next: edit digest.toml (name, from, disclaimer), then 'digest new'")


@cli.command()
@click.argument("slug", required=False)
@click.option("--title", help="The subject line (default: newsletter name and date).")
@click.option("--date", type=click.DateTime(["%Y-%m-%d"]), help="The issue's date (default: today).")
@click.pass_obj
def new(state: State, slug: str | None, title: str | None, date) -> None:
    """Create a new issue folder with its issue.toml; SLUG defaults to the date.

    \b
    Example:
        digest new --date 2021-12-31 --title "Putin and Biden talk again"
    """
    from .compose import new_issue

    folder = new_issue(state.project(), slug, title, date.date() if date else None)
    click.echo(f"created {_shown(folder / 'issue.toml')}")


@cli.command()
@click.argument("issue")
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--title", required=True, help="The headline.")
@click.option("--source", help="The publisher, e.g. TASS.")
@click.option("--url", help="The original article (shown as 'Continue reading at <site>').")
@click.option("--dateline", help="e.g. 'MOSCOW, December 31'.")
@click.option("--position", type=click.IntRange(min=1), help="Place in the order (1 = first).")
@click.option("--after", metavar="STORY", help="Place after this story (its slug).")
@click.pass_obj
def add(state: State, issue: str, file: str | None, title: str, source: str | None,
        url: str | None, dateline: str | None, position: int | None, after: str | None) -> None:
    """Add a story to ISSUE; the body comes from FILE, standard input (-) or $EDITOR.

    \b
    Examples:
        digest add 2021-12-31 --title "Kremlin praises talks" --source TASS body.md
        echo "Text of the story." | digest add 2021-12-31 --title "Short one" -
    """
    from .compose import add_story

    if position is not None and after is not None:
        raise DigestError("--position and --after exclude each other", hint="give one of them")
    body = _read_body(file)
    path = add_story(state.project(), issue, title, body, position=position, after=after,
                     source=source, url=url, dateline=dateline)
    click.echo(f"created {_shown(path)}")


def _read_body(file: str | None) -> str:
    if file == "-" or (file is None and not sys.stdin.isatty()):
        return _decode(sys.stdin.buffer.read(), "<stdin>")
    if file is not None:
        try:
            return _decode(Path(file).read_bytes(), file)
        except OSError as e:
            raise DigestError(f"cannot read: {e.strerror}", path=file) from e
    text = click.edit("\n# Write the story in Markdown above this line.\n", extension=".md")
    body = (text or "").split("# Write the story in Markdown above this line.")[0].strip()
    if not body:
        raise DigestError("no story text was written", hint="nothing was added")
    return body


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DigestError("not UTF-8 text", path=name, hint="save the text as UTF-8") from e


@cli.command("import")
@click.argument("issue")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.pass_obj
def import_(state: State, issue: str, file: str) -> None:
    """Split a plain-text digest into story files appended to ISSUE.

    The text is blocks separated by blank lines: a title line, then the story's
    paragraphs (the first may open with 'MOSCOW, December 31. /TASS/.'),
    optionally 'Continue reading at <site>' and a 'Read also:' block; the
    newsletter's disclaimer closes it. Text that is not placed is reported.

    \b
    Example:
        digest new 2021-12-31 && digest import 2021-12-31 digest.txt
    """
    from .compose import import_digest

    if file == "-":
        raw, source = sys.stdin.buffer.read(), Path("<stdin>")
    else:
        source = Path(file)
        try:
            raw = source.read_bytes()
        except OSError as e:
            raise DigestError(f"cannot read: {e.strerror}", path=source) from e
    paths, notes = import_digest(state.project(), issue, raw, source)
    for path in paths:
        click.echo(f"created {_shown(path)}")
    warn_all(notes)
    click.echo(f"imported {len(paths)} stor{'y' if len(paths) == 1 else 'ies'}"
               + (f"; {len(notes)} note(s) above" if notes else ""))


@cli.command("ls")
@click.argument("issue")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def ls(state: State, issue: str, as_json: bool) -> None:
    """List ISSUE's stories in their final order: position, slug, title, source, words.

    \b
    Example:
        digest ls 2021-12-31
    """
    import json

    from .issue import load_issue

    loaded = load_issue(state.project(), issue)
    rows = [{"position": n, "slug": s.slug, "title": s.title, "source": s.source,
             "words": s.words} for n, s in enumerate(loaded.stories, 1)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    warn_all(loaded.warnings)
    width = max(len(r["slug"]) for r in rows)
    for r in rows:
        click.echo(f"{r['position']:>3}  {r['slug']:<{width}}  {r['words']:>5}w  "
                   f"{r['source'] or '-':<10}  {r['title']}")


@cli.command()
@click.argument("issue")
@click.argument("story")
@click.argument("position", type=click.IntRange(min=1), required=False)
@click.option("--before", metavar="STORY", help="Put it before this story.")
@click.option("--after", metavar="STORY", help="Put it after this story.")
@click.pass_obj
def move(state: State, issue: str, story: str, position: int | None, before: str | None,
         after: str | None) -> None:
    """Move STORY to POSITION (1 = first), or before/after another story.

    \b
    Examples:
        digest move 2021-12-31 five-key-takeaways-from-latest-putin-biden-call 1
        digest move 2021-12-31 my-story --after other-story
    """
    from .compose import move_story

    if sum(x is not None for x in (position, before, after)) != 1:
        raise DigestError("say where: a POSITION, --before STORY or --after STORY",
                          hint="give exactly one of them")
    order = move_story(state.project(), issue, story, position=position, before=before,
                       after=after)
    click.echo(f"moved {story} to position {order.index(story) + 1} of {len(order)}")


@cli.command()
@click.argument("issue")
@click.argument("story")
@click.pass_obj
def rm(state: State, issue: str, story: str) -> None:
    """Remove STORY from ISSUE: delete its file and take it out of the order.

    \b
    Example:
        digest rm 2021-12-31 five-key-takeaways-from-latest-putin-biden-call
    """
    from .compose import remove_story

    path = remove_story(state.project(), issue, story)
    click.echo(f"removed {_shown(path)}")


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
    source.

    \b
    Example:
        digest check 2021-12-31 --strict
    """
    import json

    from .check import check_issue

    report = check_issue(state.project(), issue)
    if as_json:
        click.echo(json.dumps({
            "findings": [f.as_dict() for f in report.findings],
            "errors": report.errors, "warnings": report.warnings,
        }, ensure_ascii=False, indent=2))
    else:
        for finding in report.findings:
            click.echo(finding.format())
        click.echo(report.summary())
    if report.errors or (strict and report.warnings):
        sys.exit(1)


@cli.command()
@click.argument("issue")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback unless you say otherwise).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port (default: 8000 or the next free one; 0: any free port).")
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

    from .preview import is_loopback, start_preview

    def stop_on_term(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)

    project = state.project()
    server, shutdown = start_preview(project.root, issue, host, port)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{server.server_address[1]}/"
    if not is_loopback(host):
        click.echo(f"Warning: listening on {host}: anyone who can reach this machine can "
                   "read the preview", err=True)
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


@cli.command()
@click.argument("issue")
@click.option("--list", "list_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Subscribers: a CSV file with an 'email' column (other columns are merge fields).")
@click.option("--to", "to", metavar="ADDRESS",
              help="Send one message to this address instead (a Mailman or Google Groups list).")
@click.option("--test", "tests", metavar="ADDRESS", multiple=True,
              help="Send a '[TEST]' copy to ADDRESS (repeatable), outside the journal.")
@click.option("--dry-run", is_flag=True, help="Do everything but connect.")
@click.option("--outbox", type=click.Path(file_okay=False, path_type=Path),
              help="Write each message as an .eml file into this folder instead of sending.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="SMTP connections in parallel.")
@click.option("--rate", type=click.FloatRange(min=0.01), default=None,
              help="At most this many messages per second, all connections together.")
@click.option("--per-connection", type=click.IntRange(min=1), default=100, show_default=True,
              help="Reconnect after this many messages on one connection.")
@click.option("--retries", type=click.IntRange(0, 20), default=3, show_default=True,
              help="Retries of a temporary failure (4xx, dropped connection) before deferring.")
@click.option("--retry-delay", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds before the first retry; doubled for each next one.")
@click.option("--resend-uncertain", is_flag=True,
              help="Send again to those whose message was in flight when a send was killed.")
@click.option("--force", is_flag=True, help="Send even though the issue changed after the send began.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def send(state: State, issue: str, list_path: Path | None, to: str | None, tests: tuple[str, ...],
         dry_run: bool, outbox: Path | None, workers: int, rate: float | None,
         per_connection: int, retries: int, retry_delay: float, resend_uncertain: bool,
         force: bool, yes: bool) -> None:
    """Send ISSUE to a mailing list, one personalised message per subscriber.

    SMTP settings come from .env or the environment (DIGEST_SMTP_HOST, ...).
    Every (issue, subscriber) is recorded in a journal: running the same send
    again resumes it, and nobody gets a second copy.

    \b
    Examples:
        digest send 2021-12-31 --test me@example.org
        digest send 2021-12-31 --list subscribers.csv --dry-run
        digest send 2021-12-31 --list subscribers.csv --outbox out/
        digest send 2021-12-31 --list subscribers.csv
    """
    import signal

    from .send import Options, plan_send, send_tests

    project = state.project()
    if tests:
        for address, reply in zip(tests, send_tests(project, issue, list(tests), outbox,
                                                    dry_run), strict=True):
            click.echo(f"test copy to {address}: {reply}")
        return
    if list_path is not None and to is not None:
        raise DigestError("--list and --to exclude each other", hint="give one of them")
    options = Options(workers=workers, rate=rate, retries=retries, backoff=retry_delay,
                      resend_uncertain=resend_uncertain)
    plan = plan_send(project, issue, list_path=list_path, to=to, outbox=outbox, dry_run=dry_run,
                     force=force, options=options, per_connection=per_connection)
    for row in plan.invalid:
        click.echo(f"Warning: {list_path}:{row.line}: {row.message} (skipped)", err=True)
    click.echo(f"From:       {plan.sender}")
    click.echo(f"Subject:    {plan.subject}")
    click.echo(f"Server:     {plan.server}")
    click.echo(f"Recipients: {plan.to_send} to send"
               + (f", {plan.already_sent} already sent" if plan.already_sent else ""))
    skipped = len(plan.invalid) + plan.suppressed + plan.duplicates
    if skipped:
        click.echo(f"Skipped:    {skipped} ({len(plan.invalid)} invalid, {plan.suppressed} "
                   f"unsubscribed, {plan.duplicates} duplicate)")
    if plan.uncertain:
        click.echo(f"Uncertain:  {plan.uncertain} were in flight when an earlier send stopped; "
                   + ("sending again" if resend_uncertain else "not sent again without "
                      "--resend-uncertain (see 'digest status')"))
    if plan.to_send == 0:
        click.echo("Nothing to send.")
        return
    real = not dry_run and outbox is None
    if real and not yes:
        if not sys.stdin.isatty():
            raise DigestError("a real send needs confirmation", hint="pass --yes to send "
                              "without a terminal")
        click.confirm(f"Send to {plan.to_send} recipients?", abort=True)

    def stop_on_term(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)
    show = _progress_printer(sys.stderr.isatty())
    try:
        stats = plan.execute(progress=show)
    except KeyboardInterrupt:
        show(None)
        counts = plan.journal.counts(plan.key)
        click.echo(f"Interrupted: {counts['sent']} sent, {counts['failed']} failed, "
                   f"{counts['pending'] + counts['deferred']} still due; run the same command "
                   "to resume.")
        sys.exit(130)
    show(None)
    verb = "prepared" if dry_run else ("written" if outbox else "sent")
    click.echo(f"{stats.sent} {verb}, {stats.failed} failed, {stats.deferred} deferred"
               + (f" ({stats.rate:.0f}/s)" if stats.sent and not dry_run else ""))
    if stats.failed or stats.deferred:
        click.echo(f"See 'digest status {issue}' for the server's replies.")


def _progress_printer(tty: bool):
    import time

    last = [0.0]

    def show(stats) -> None:
        if not tty:
            return
        if stats is None:
            if last[0]:
                click.echo("", err=True)
            return
        now = time.monotonic()
        if now - last[0] < 0.2:
            return
        last[0] = now
        remaining = max(stats.total - stats.done, 0)
        width = 30
        filled = int(width * stats.done / stats.total) if stats.total else width
        click.echo(f"\r[{'#' * filled}{'.' * (width - filled)}] sent {stats.sent}  failed "
                   f"{stats.failed}  remaining {remaining}  {stats.rate:.0f}/s ", nl=False,
                   err=True)

    return show


@cli.command()
@click.argument("issue")
@click.pass_obj
def status(state: State, issue: str) -> None:
    """Show how the send of ISSUE stands: counts by state and every failure's reply.

    \b
    Example:
        digest status 2021-12-31
    """
    from .send import open_journal

    project = state.project()
    journal = open_journal(project)
    keys = [k for (k,) in journal._db.execute(
        "SELECT issue FROM sends WHERE issue = ? OR issue LIKE ? ORDER BY issue",
        (issue, f"{issue} to %"))]
    if not keys:
        click.echo(f"{issue}: not sent yet")
        return
    for key in keys:
        counts = journal.counts(key)
        click.echo(f"{key}: " + ", ".join(f"{n} {s}" for s, n in (
            ("sent", counts["sent"]), ("failed", counts["failed"]),
            ("deferred", counts["deferred"]), ("pending", counts["pending"]),
            ("uncertain", counts["sending"]))))
        labels = {"failed": "failed", "deferred": "deferred", "sending": "uncertain"}
        for email, st, reply in journal.problems(key):
            click.echo(f"  {labels[st]:<9} {email}: {reply or 'no reply recorded'}")


@cli.command()
@click.argument("addresses", nargs=-1, required=True)
@click.pass_obj
def unsubscribe(state: State, addresses: tuple[str, ...]) -> None:
    """Add ADDRESSES to the suppression list: no later send goes to them.

    \b
    Example:
        digest unsubscribe reader@example.org
    """
    from .send import open_journal
    from .send.recipients import normalise_address

    checked = []
    for address in addresses:
        try:
            checked.append(normalise_address(address))
        except ValueError as e:
            raise DigestError(f"not an email address: {address!r}: {e}") from None
    added = open_journal(state.project()).suppress(checked)
    click.echo(f"unsubscribed {added} address{'es' if added != 1 else ''}"
               + (f" ({len(checked) - added} already were)" if added < len(checked) else ""))


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main() -> None:
    """Run the command line."""
    cli(prog_name="digest")
