"""Commands that send an issue: send, status, unsubscribe."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import DigestError
from . import State, cli


@cli.command()
@click.argument("issue")
@click.option("--list", "list_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A one-off list: a CSV file with an 'email' column (other columns are merge "
                   "fields). Default: the active subscribers of the store.")
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

    from ..send import Options, plan_send, send_tests

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
    from .. import db
    from ..bounces.events import issue_bounces, issue_counts
    from ..send import open_journal

    project = state.project()
    journal = open_journal(project)
    conn = db.connect(project.state_dir / db.DB_NAME)  # bounces (issue 12)
    keys = journal.sends(issue)
    if not keys:
        click.echo(f"{issue}: not sent yet")
        return
    for key in keys:
        counts = journal.counts(key)
        bounced = issue_counts(conn, key)  # shown once there are any (digest bounces)
        click.echo(f"{key}: " + ", ".join(f"{n} {s}" for s, n in (
            ("sent", counts["sent"]), *((s, n) for s, n in bounced.items() if any(bounced.values())),
            ("failed", counts["failed"]), ("deferred", counts["deferred"]),
            ("pending", counts["pending"]), ("uncertain", counts["sending"]))))
        labels = {"failed": "failed", "deferred": "deferred", "sending": "uncertain"}
        for email, st, reply in journal.problems(key):
            click.echo(f"  {labels[st]:<9} {email}: {reply or 'no reply recorded'}")
        for email, label, detail in issue_bounces(conn, key):
            click.echo(f"  {label:<9} {email}: {detail}")


@cli.command()
@click.argument("addresses", nargs=-1, required=True)
@click.pass_obj
def unsubscribe(state: State, addresses: tuple[str, ...]) -> None:
    """Add ADDRESSES to the suppression list: no later send goes to them.

    \b
    Example:
        digest unsubscribe reader@example.org
    """
    from ..send import open_journal
    from ..send.recipients import check_addresses

    checked = check_addresses(list(addresses), "address")
    added = open_journal(state.project()).suppress(checked)
    click.echo(f"unsubscribed {added} address{'es' if added != 1 else ''}"
               + (f" ({len(checked) - added} already were)" if added < len(checked) else ""))
