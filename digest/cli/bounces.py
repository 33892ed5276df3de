"""The bounce command: read a bounce mailbox, classify, record, move ours to 'processed'."""

from __future__ import annotations

from pathlib import Path

import click

from . import State, cli
from .readers import subscribers as subscribers_group

_LABELS = {
    "hard": "hard bounce",
    "soft": "soft bounce",
    "complaint": "complaint",
    "auto-reply": "auto-reply (ignored)",
    "delivered": "delivery notice (ignored)",
}


@cli.command()
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    help="A Maildir that receives the bounce address's mail.",
)
@click.option(
    "--mbox",
    type=click.Path(dir_okay=False, path_type=Path),
    help="An mbox file that receives the bounce address's mail.",
)
@click.option(
    "--imap", is_flag=True, help="The IMAP folder of DIGEST_IMAP_HOST, _USERNAME, _PASSWORD, _FOLDER (TLS)."
)
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option(
    "--threshold",
    type=click.FloatRange(min=0.5),
    default=None,
    help="Soft-bounce score that marks a subscriber bounced (default: "
    "bounce_threshold in digest.toml, else 3).",
)
@click.pass_obj
def bounces(
    state: State, maildir: Path | None, mbox: Path | None, imap: bool, dry_run: bool, threshold: float | None
) -> None:
    """Read bounces and complaints from a mailbox and stop mailing those who never get the issue.

    Hard bounces (5.x.x) and complaints (ARF) mark the subscriber bounced or
    complained at once; soft bounces (4.x.x, mailbox full) add 0.5 a day to a
    score that marks them bounced at the threshold; auto-replies are ignored.
    Only a message sent to a valid VERP address counts, and only for the reader
    its token names; a report about this newsletter without one is shown as
    unverified and left in place. Messages that are ours go to the mailbox's
    'processed' folder; nothing is deleted, and mail that is not ours is left
    untouched.

    \b
    Examples:
        digest bounces --maildir ~/Maildir/bounces --dry-run
        digest bounces --mbox /var/mail/bounces
        digest bounces --imap
    """
    import os

    from .. import db
    from ..bounces import imap_settings, open_mailbox, process_mailbox, project_identity
    from ..errors import DigestError

    if sum((maildir is not None, mbox is not None, imap)) != 1:
        raise DigestError("give one mailbox", hint="--maildir DIR, --mbox FILE or --imap")
    project = state.project()
    settings = imap_settings(project.root / ".env", os.environ) if imap else None
    conn = db.connect(project.state_dir / db.DB_NAME)
    try:
        identity = project_identity(project, conn)
        if identity.resolve is None or not project.newsletter.bounce_address:
            click.echo(
                "Warning: no bounce_address in digest.toml (or no DIGEST_SECRET): no report "
                "can be verified, so no status is changed; reports that carry this "
                "newsletter's List-Id are shown as unverified",
                err=True,
            )
        box = open_mailbox(maildir=maildir, mbox=mbox, imap=settings, readonly=dry_run)
        report = process_mailbox(
            conn,
            box,
            identity,
            dry_run=dry_run,
            threshold=threshold or project.newsletter.bounce_threshold,
            progress=lambda o: _show(o, dry_run),
        )
    finally:
        conn.close()
    _summary(report)


def _show(outcome, dry_run: bool) -> None:
    v = outcome.verdict
    if not v.ours:
        if v.kind in ("malformed", "unknown", "unverified"):
            what = {"malformed": "malformed message", "unknown": "not a bounce"}.get(
                v.kind, "unverified report"
            )
            click.echo(f"Warning: {outcome.ref}: {what}: {v.reason}; left in place", err=True)
        else:
            click.echo(f"{outcome.ref}: not ours ({v.reason}); left untouched")
        return
    for e in v.events:
        detail = " ".join(x for x in (e.status, e.diagnostic) if x)
        click.echo(
            f"{outcome.ref}: {_LABELS.get(e.kind, e.kind)} {e.email}"
            + (f" ({e.issue})" if e.issue else "")
            + (f": {detail}" if detail else "")
        )
    if outcome.duplicate:
        click.echo("  already recorded by an earlier run")
    verb = "would mark" if dry_run else "marked"
    for change in outcome.changes:
        click.echo(f"  {verb} {change.email} {change.status}")
    if outcome.moved_to:
        click.echo(f"  {'would move' if dry_run else 'moved'} to {outcome.moved_to}")


def _summary(report) -> None:
    counts = [
        (report.count(k), label)
        for k, label in (
            ("hard", "hard"),
            ("soft", "soft"),
            ("complaint", "complaint(s)"),
            ("auto-reply", "auto-reply(ies)"),
            ("delivered", "delivery notice(s)"),
            ("not-ours", "not ours"),
            ("unknown", "unrecognised"),
            ("unverified", "unverified"),
            ("malformed", "malformed"),
        )
    ]
    changed = [c for o in report.outcomes for c in o.changes]
    marked = {s: sum(1 for c in changed if c.status == s) for s in ("bounced", "complained")}
    click.echo(
        f"{report.source}: {len(report.outcomes)} message(s): "
        + ", ".join(f"{n} {label}" for n, label in counts if n)
        if report.outcomes
        else f"{report.source}: no messages"
    )
    verb = "would mark" if report.dry_run else "marked"
    if any(marked.values()):
        click.echo(
            f"{verb} {marked['bounced']} bounced, {marked['complained']} complained"
            + (" (dry run: nothing changed)" if report.dry_run else "")
        )
    elif report.dry_run:
        click.echo("dry run: nothing changed")


@subscribers_group.command()
@click.argument("addresses", nargs=-1, required=True)
@click.pass_obj
def reactivate(state: State, addresses: tuple[str, ...]) -> None:
    """Make bounced or complained ADDRESSES active again (undo a wrong classification).

    Lifts the suppression and starts the soft-bounce count again; the events
    stay on record.

    \b
    Example:
        digest subscribers reactivate reader@example.org
    """
    from .. import db, subscribers
    from ..bounces.events import last_reason, reset_score
    from ..errors import DigestError, raise_all
    from ..send.recipients import check_addresses

    checked = check_addresses(list(addresses), "address")
    project = state.project()
    conn = db.connect(project.state_dir / db.DB_NAME)
    try:
        known = {a: subscribers.get(conn, a) for a in checked}
        refused = []
        for a, s in known.items():  # report every problem, in the order given
            if s is None:
                refused.append(
                    DigestError(
                        f"{a} is not in the subscriber store",
                        hint="add a new reader with 'digest subscribers add ADDRESS'",
                    )
                )
            elif s.status in ("unsubscribed", "unconfirmed"):
                refused.append(
                    DigestError(
                        f"{a} is {s.status}, not bounced or complained",
                        hint="reactivate only undoes a bounce or a complaint; a reader who "
                        "unsubscribed subscribes again themselves",
                    )
                )
        raise_all(refused)
        for address in checked:
            was = known[address].status
            reason = last_reason(conn, address, was)
            changed = subscribers.reactivate(
                conn,
                address,
                "digest subscribers reactivate",
                reason=f"reactivated by the editor (was {was})",
            )
            with db.transaction(conn):
                reset_score(conn, address, "digest subscribers reactivate")
            if changed:
                click.echo(f"reactivated {address} (was {was}" + (f": {reason}" if reason else "") + ")")
            else:
                click.echo(f"{address} is already active")
    finally:
        conn.close()
