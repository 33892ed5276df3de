"""How an issue's send stands, and cancelling what is left of it: digest status, digest cancel."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from ..errors import DigestError
from . import State, cli

if TYPE_CHECKING:
    from ..config import Project


_LABELS = {"failed": "failed", "deferred": "deferred", "sending": "uncertain"}


def problem_line(state: str, email: str, why: str | None) -> str:
    """One reader with a problem, as status and the end of a dry run or outbox run show it."""
    return f"  {_LABELS[state]:<9} {email}: {why}"


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
    from ..send import open_journal, recover_send_logs, send_logs
    from ..send.journal import REVIVED
    from ..send.state import running_since
    from . import report

    project = state.project()
    unfolded = False
    try:
        recover_send_logs(project)  # what a killed send had not yet folded in
    except DigestError as e:
        e.hint = (
            "the figures below include what a killed send logged last, read from its log "
            "without folding it in; fix that and run status again"
        )
        report(e, "Warning")
        unfolded = True
    issue = _slug(project, issue)  # a mistyped issue is an error, not "not sent yet"
    journal = open_journal(project)
    if unfolded:  # read only: the counts and the readers named are right all the same
        journal.read_logs(send_logs(project, killed_only=True))
    conn = db.connect(project.state_dir / db.DB_NAME)
    keys = journal.sends(issue)
    if not keys:
        click.echo(f"{issue}: not sent yet")
        return
    running = running_since(project, keys)
    for key in keys:
        counts = journal.counts(key)
        bounced = issue_counts(conn, key)  # shown once there are any (digest bounces)
        # A running send's messages are in flight, not uncertain; older 'sending' ones are.
        in_flight = journal.in_flight(key, running[key]) if key in running else set()
        click.echo(
            f"{key}: "
            + ", ".join(
                f"{n} {s}"
                for s, n in (
                    ("sent", counts["sent"]),
                    *((s, n) for s, n in bounced.items() if any(bounced.values())),
                    ("failed", counts["failed"]),
                    ("deferred", counts["deferred"]),
                    ("pending", counts["pending"]),
                    ("uncertain", counts["sending"] - len(in_flight)),
                    *((("in flight", len(in_flight)),) if key in running else ()),
                )
            )
            + (f", {counts['suppressed']} unsubscribed meanwhile" if counts["suppressed"] else "")
            + (f", {cancelled} cancelled" if (cancelled := sum(counts[s] for s in REVIVED)) else "")
            + (" (sending now; the counts can be half a second behind)" if key in running else "")
        )
        problems = [p for p in journal.problems(key) if p[0] not in in_flight]  # in flight: not (yet)
        message_ids = journal.message_ids(key, [i for i, _, st, _ in problems if st == "sending"])
        for delivery_id, email, st, reply in problems:
            why = reply or (
                "no reply recorded (in flight when the send stopped)"
                if st == "sending"
                else "no reply recorded"
            )
            if delivery_id in message_ids:  # to look up in the server's log (README)
                why += f"; its message: Message-ID {message_ids[delivery_id]}"
            click.echo(problem_line(st, email, why))
        for email, label, detail in issue_bounces(conn, key):
            click.echo(f"  {label:<9} {email}: {detail}")


@cli.command()
@click.argument("issue")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def cancel(state: State, issue: str, yes: bool) -> None:
    """Cancel what is left of the send of ISSUE: nobody more is sent it.

    For a send stopped part way that must not go on (the wrong list, an error in
    the issue). Readers still due, uncertain or failed are set aside; those sent
    stay sent. A later send sends to the cancelled readers its own list names.

    \b
    Example:
        digest cancel 2021-12-31
    """
    from ..send import STOP_IT_FIRST, cancel_sends, check_not_running, left_by_send

    project = state.project()
    slug = _slug(project, issue)
    left = left_by_send(project, slug)
    if not left:
        click.echo(f"{slug}: not sent yet; nothing to cancel")
        return
    check_not_running(project, left, STOP_IT_FIRST)  # before asking, not after
    left = {key: what for key, what in left.items() if any(what.counts.values())}
    if not left:
        click.echo(f"Nothing to cancel: nothing of {slug} is left to send (see 'digest status {slug}').")
        return
    if not yes and not sys.stdin.isatty():
        raise DigestError(
            "cancelling a send needs confirmation", hint="pass --yes to cancel without a terminal"
        )
    for key, what in left.items():
        click.echo(f"Left of {key}: {_left_text(what.counts)}")
    total = {part: sum(what.counts[part] for what in left.values()) for part in ("due", "uncertain", "failed")}
    if not yes:
        if not click.confirm(f"Cancel the send of {slug}, so that none of them is sent it?"):
            click.echo("Not cancelled.")
            sys.exit(1)
    cancel_sends(project, left)
    click.echo(
        f"Cancelled: {_left_text(total)}. No later run sends {slug} to them unless it names them "
        "again (its list, the store's subscribers, or --to); its plan then says so."
    )


def _left_text(what: dict[str, int]) -> str:
    """'3 readers still due', or '5 readers (3 still due, 1 uncertain, 1 failed)'."""
    parts = [
        (n, label)
        for n, label in (
            (what["due"], "still due"),
            (what["uncertain"], "uncertain"),
            (what["failed"], "failed"),
        )
        if n
    ]
    total = sum(what.values())
    readers = f"{total} reader{'s' if total != 1 else ''}"
    if len(parts) == 1:
        return f"{readers} {parts[0][1]}"
    return f"{readers} ({', '.join(f'{n} {label}' for n, label in parts)})"


def _slug(project: Project, issue: str) -> str:
    """The slug of ISSUE (a slug, or the issue's folder as a path); an issue whose folder is
    gone is still known by its slug to the journal."""
    from ..issue import resolve_issue_dir
    from ..send.state import _existing_journal

    try:
        return resolve_issue_dir(project, issue).name
    except DigestError:
        journal = _existing_journal(project) if "/" not in issue else None
        known = journal is not None and bool(journal.sends(issue))
        if journal is not None:
            journal.close()
        if not known:
            raise
        return issue
