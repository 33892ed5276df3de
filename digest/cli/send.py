"""The command that sends an issue: digest send (its plan, confirmation, progress and summary)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import DigestError
from . import State, cli

# Exit codes of `digest send` (documented in the README, "Delivery guarantees").
EXIT_STOPPED = 3  # the send stopped on a fatal error; run it again once fixed
EXIT_RERUN = 4  # the send finished, but some messages are deferred or uncertain


@cli.command()
@click.argument("issue")
@click.option(
    "--list",
    "list_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A one-off list: a CSV file with an 'email' column (other columns are merge "
    "fields). Default: the active subscribers of the store.",
)
@click.option(
    "--to",
    "to",
    metavar="ADDRESS",
    help="Send one message to this address instead (a Mailman or Google Groups list).",
)
@click.option(
    "--test",
    "tests",
    metavar="ADDRESS",
    multiple=True,
    help="Send a '[TEST]' copy to ADDRESS (repeatable), outside the journal.",
)
@click.option("--dry-run", is_flag=True, help="Do everything but connect.")
@click.option(
    "--outbox",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each message as an .eml file into this folder instead of sending.",
)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="SMTP connections in parallel."
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.01),
    default=None,
    help="At most this many messages per second, all connections together.",
)
@click.option(
    "--per-connection",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Reconnect after this many messages on one connection.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=3,
    show_default=True,
    help="Retries of a temporary failure (4xx, lost connection) before deferring.",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds before the first retry; doubled for each next one.",
)
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds a server that refuses mail for the pace (a rate limit) may go on letting "
    "nothing through before the send stops (exit code 3); the send slows down meanwhile.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds to wait for each SMTP reply but the last  [default: 300, RFC 5321]",
)
@click.option(
    "--data-timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds to wait for the reply to a message's final '.'  [default: 600]",
)
@click.option(
    "--resend-uncertain",
    is_flag=True,
    help="Send again to those whose message was in flight when a send was cut off.",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Send again to those who failed for good earlier (once the cause is fixed).",
)
@click.option(
    "--server-log",
    "server_logs",
    type=click.Path(dir_okay=False, path_type=Path),
    multiple=True,
    metavar="FILE",
    help="Postfix's log (repeatable; rotated .gz ones too): the uncertain whose message it shows "
    "queued are recorded sent, those it shows received but not yet queued are held back.",
)
@click.option("--force", is_flag=True, help="Send even though the issue changed after the send began.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def send(
    state: State,
    issue: str,
    list_path: Path | None,
    to: str | None,
    tests: tuple[str, ...],
    dry_run: bool,
    outbox: Path | None,
    workers: int,
    rate: float | None,
    per_connection: int,
    retries: int,
    retry_delay: float,
    max_wait: float,
    timeout: float | None,
    data_timeout: float | None,
    resend_uncertain: bool,
    retry_failed: bool,
    server_logs: tuple[Path, ...],
    force: bool,
    yes: bool,
) -> None:
    """Send ISSUE to a mailing list, one personalised message per subscriber.

    SMTP settings come from .env or the environment (DIGEST_SMTP_HOST, ...).
    Every (issue, subscriber) is recorded in a journal: running the same send
    again resumes it, and nobody gets a second copy. Exit code 0: all done;
    3: the send stopped (see the error); 4: some are deferred or uncertain
    (run it again later); 130: interrupted.

    \b
    Examples:
        digest send 2021-12-31 --test me@example.org
        digest send 2021-12-31 --list subscribers.csv --dry-run
        digest send 2021-12-31 --list subscribers.csv --outbox out/
        digest send 2021-12-31 --list subscribers.csv
    """
    import signal

    from ..errors import SendError
    from ..send import Options, Timeouts, plan_send, send_tests

    project = state.project()
    if tests:
        if server_logs:
            raise DigestError(
                "--test sends only test copies, outside the journal; --server-log has nothing to do there",
                hint="give --server-log to the send of the list",
            )
        if list_path is not None or to is not None:
            raise DigestError(
                "--test sends only test copies; it cannot go with --list or --to",
                hint="send the test copies first, then the list without --test",
            )
        replies = send_tests(project, issue, list(tests), outbox, dry_run)
        for address, reply in zip(tests, replies, strict=True):
            click.echo(f"test copy to {address}: {reply}")
        if any(reply.startswith("not sent:") for reply in replies):
            sys.exit(EXIT_RERUN)  # a script must not take a refused test copy for a sent one
        return
    if list_path is not None and to is not None:
        raise DigestError("--list and --to exclude each other", hint="give one of them")
    options = Options(
        workers=workers,
        rate=rate,
        retries=retries,
        backoff=retry_delay,
        max_wait=max_wait,
        resend_uncertain=resend_uncertain,
        retry_failed=retry_failed,
    )
    plan = plan_send(
        project,
        issue,
        list_path=list_path,
        to=to,
        outbox=outbox,
        dry_run=dry_run,
        force=force,
        options=options,
        per_connection=per_connection,
        timeouts=Timeouts.scaled(timeout, data_timeout),
        server_logs=server_logs,
    )
    if plan.readable_by_others:
        names = " ".join(str(p.relative_to(project.root)) for p in plan.readable_by_others)
        click.echo(
            f"Warning: every user of this machine can read {names}, which hold readers' addresses\n"
            "  hint: chmod 700 .digest and chmod 600 .digest/journal.sqlite3*, unless the web app's "
            "user shares them through a group",
            err=True,
        )
    if plan.weak_secret:
        click.echo(
            "Warning: DIGEST_SECRET is short or a placeholder: whoever guesses it can forge "
            "unsubscribe links and bounces for any reader\n"
            "  hint: use a long random one: python -c 'import secrets; print(secrets.token_hex(32))'",
            err=True,
        )
    for row in plan.invalid:
        click.echo(f"Warning: {list_path}:{row.line}: {row.message} (skipped)", err=True)
    for line, first in plan.duplicates:
        click.echo(f"Warning: {list_path}:{line}: the address of line {first} again (skipped)", err=True)
    click.echo(f"From:       {plan.sender}")
    click.echo(f"Subject:    {plan.subject}")
    click.echo(f"Server:     {plan.server}")
    click.echo(
        f"Recipients: {plan.to_send} to send"
        + (f", {plan.already_sent} already sent" if plan.already_sent else "")
        + (f" (besides {plan.sent_before} sent to readers not among these)" if plan.sent_before else "")
    )
    if (
        plan.to_send
        and plan.in_list_send is not None
        and plan.in_list_send not in ("failed", "suppressed", "cancelled", "cancelled_failed")
    ):
        how = {
            "sent": "got this issue from the list send already",
            "sending": "was in flight in the list send (uncertain)",
            "cancelled_uncertain": "was in flight in the list send (uncertain; it was cancelled since)",
        }.get(plan.in_list_send, "is due in the list send too")
        click.echo(f"Also:       {to} {how}; this sends another copy")
    if plan.revived:
        click.echo(
            f"Cancelled:  {plan.revived} of them {'was' if plan.revived == 1 else 'were'} set aside by "
            f"'digest cancel {plan.slug}'; this send takes {'it' if plan.revived == 1 else 'them'} up again"
        )
    if plan.not_in_list:
        click.echo(
            f"Earlier:    {plan.not_in_list} of them are due from an earlier run of this "
            f"issue and not in this list; they are sent too ('digest cancel {plan.slug}' first "
            "stops that: this list's readers are sent all the same)"
        )
    skipped = len(plan.invalid) + plan.suppressed + len(plan.duplicates)
    if skipped:
        click.echo(
            f"Skipped:    {skipped} ({len(plan.invalid)} invalid, {plan.suppressed} "
            f"unsubscribed, bounced or complained, {len(plan.duplicates)} duplicate)"
        )
    if plan.failed_before:
        if retry_failed:
            more = plan.failed_before - len(plan.retrying)
            click.echo(
                f"Retrying:   {plan.failed_before} that failed before: "
                + ", ".join(plan.retrying)
                + (f" and {more} more" if more > 0 else "")
            )
        else:
            click.echo(
                f"Failed:     {plan.failed_before} failed before; not sent again "
                "without --retry-failed (see 'digest status')"
            )
    if server_logs:
        _server_log_line(plan, resend_uncertain)
    if plan.uncertain:
        held = len(plan.held)
        click.echo(
            f"Uncertain:  {plan.uncertain} {'was' if plan.uncertain == 1 else 'were'} in flight "
            "when an earlier send stopped; "
            + (
                ("sending again" if not held else f"sending {plan.uncertain - held} again, {held} held back")
                if resend_uncertain
                else "not sent again without --resend-uncertain (see 'digest status')"
            )
        )
    real = not dry_run and outbox is None
    # A dry run goes on even so: it writes every reader's message, whatever the journal says.
    if plan.to_send == 0 and not (plan.taken and real) and not dry_run:
        click.echo("Nothing to send.")
        if plan.held:
            click.echo(_HELD_LEFT.format(n=len(plan.held)))
        if plan.uncertain:
            sys.exit(EXIT_RERUN)
        return
    if real and not yes:
        if not sys.stdin.isatty():
            raise DigestError("a real send needs confirmation", hint="pass --yes to send without a terminal")
        question = f"Send to {plan.to_send} recipient{'s' if plan.to_send != 1 else ''}?"
        if plan.taken:
            record = f"Record {len(plan.taken)} as sent (the server's log)"
            question = f"{record} and {question[0].lower()}{question[1:]}" if plan.to_send else f"{record}?"
        try:
            confirmed = click.confirm(question)
        except click.Abort:  # Ctrl-C or Ctrl-D at the prompt: the same as no
            click.echo("")
            confirmed = False
        if not confirmed:
            click.echo("Not sent; nothing was recorded.")
            sys.exit(1)

    def stop_on_term(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)
    show = _progress_printer(sys.stderr.isatty())

    def notice(text: str) -> None:
        show(None)
        click.echo(text, err=True)

    try:
        stats = plan.execute(progress=show, notice=notice)
    except KeyboardInterrupt:
        show(None)
        counts = plan.counts()
        due, uncertain = counts.get("pending", 0) + counts.get("deferred", 0), counts.get("sending", 0)
        cancel = f"'digest cancel {plan.slug}'"
        if due:
            then = f"run the same command to resume (or {cancel} to stop it for good)."
        elif uncertain:  # the same command would send nothing: say what would
            then = (
                "the uncertain are sent again only with --resend-uncertain (they may then get two "
                f"copies); {cancel} sets them aside for good."
            )
        else:
            then = "nothing is left to send."
        _pace_line(plan.stats)
        click.echo(
            f"Interrupted: {counts.get('sent', 0)} sent, {counts.get('failed', 0)} failed, {due} still due, "
            f"{uncertain} uncertain; {then}"
        )
        sys.exit(130)
    except SendError as e:
        show(None)
        if plan.journal is None:  # nothing was recorded or sent
            raise
        from . import report

        report(e)
        _pace_line(plan.stats)
        counts = plan.counts()
        click.echo(
            f"Stopped: {counts.get('sent', 0)} sent, {counts.get('failed', 0)} failed, "
            f"{counts.get('pending', 0) + counts.get('deferred', 0)} still due, "
            f"{counts.get('sending', 0)} uncertain; fix the cause and run the same "
            "command to resume."
        )
        sys.exit(EXIT_STOPPED)
    show(None)
    if plan.taken and real:
        n = plan.recorded_taken
        click.echo(
            f"Recorded {n} as sent: the server's log shows the server queued {'it' if n == 1 else 'them'}."
            + (
                f" ({len(plan.taken) - n} of those found {'is' if len(plan.taken) - n == 1 else 'are'} "
                "no longer uncertain: left as they are.)"
                if n < len(plan.taken)
                else ""
            )
        )
    if plan.stats is None and real:  # only the server's log to record: no send ran
        _left_for_a_rerun(plan)
        return
    verb = (
        (
            "prepared (nothing sent)"
            if to
            else "prepared (every reader, whatever the journal says; nothing sent)"
        )
        if dry_run
        else ("written" if outbox else "sent")
    )
    click.echo(
        f"{stats.sent} {verb}, {stats.failed} failed, {stats.deferred} deferred"
        + (f", {stats.uncertain} uncertain" if stats.uncertain else "")
        + (f", {stats.suppressed} unsubscribed meanwhile" if stats.suppressed else "")
        + (f" ({stats.rate:.{0 if stats.rate >= 10 else 1}f}/s)" if stats.sent and not dry_run else "")
    )
    _pace_line(stats)
    if not real:  # its journal is gone: say who failed here
        from .status import problem_line

        for _id, email, st, reply in plan.problems:
            click.echo(problem_line(st, email, reply))
        more = stats.failed + stats.deferred + stats.uncertain - len(plan.problems)
        if more > 0:
            click.echo(f"  and {more} more")
        return
    _left_for_a_rerun(plan, stats.failed)


def _left_for_a_rerun(plan, failed: int = 0) -> None:
    """Say what is left for a rerun, and exit 4 if anything is (after a send that ran)."""
    counts = plan.counts()
    left = counts.get("deferred", 0) + counts.get("pending", 0)
    uncertain = counts.get("sending", 0)
    if failed or left:
        click.echo(f"See 'digest status {plan.slug}' for the server's replies.")
    elif uncertain:
        click.echo(f"See 'digest status {plan.slug}' for the uncertain readers.")
    if left or uncertain:
        held = len(plan.held)
        again = " (sent again only with --resend-uncertain; they may then get two copies)."
        if held == uncertain and held:
            again = "."
        click.echo(f"Left for a rerun: {left} deferred, {uncertain} uncertain" + (again if uncertain else "."))
        if held:
            click.echo(_HELD_LEFT.format(n=held))
        sys.exit(EXIT_RERUN)


_HELD_LEFT = (
    "Held back: {n} uncertain that the logs given cannot tell of (see 'Server log' above for why); "
    "look them up by hand ('digest status' gives their Message-IDs), or run again with the logs it asks for."
)
_HELD = {  # why the server's log cannot tell of an uncertain reader (Plan.held)
    "not queued yet": (
        "{was} received by the server, but its log does not show {it} queued (yet): not sent again now "
        "(see 'mailq'; run again later)"
    ),
    "another envelope": (
        "{was} queued with another envelope sender or more recipients than digest gave (a rewritten "
        "sender, always_bcc?): not sent again; look {it} up by hand"
    ),
    "not covered": (
        "{is_} not in the logs given, which do not cover the time of {its} send{spans}: not sent again; "
        "give the log of that time too (or run again once the log has gone 2 minutes past it)"
    ),
    "another clock": (
        "{is_} not in the logs given, whose time stamps are {off} from this machine's clock (another "
        "time zone?), so whether they cover {its} send is not known: not sent again"
    ),
    "no Message-ID": "{has} no Message-ID recorded (claimed by an older digest): not looked up, not sent again",
}


def _server_log_line(plan, resend_uncertain: bool) -> None:
    """What the server's log (--server-log) says of the uncertain readers."""
    if not plan.checked:
        click.echo("Server log: no reader is uncertain; nothing to look up")
        return

    def words(n: int) -> dict[str, str]:
        one = n == 1
        return {
            "was": "was" if one else "were",
            "is_": "is" if one else "are",
            "has": "has" if one else "have",
            "it": "it" if one else "them",
            "its": "its" if one else "their",
        }

    spans = ", ".join(
        f"{first.astimezone():%b %d %H:%M} to {last.astimezone():%b %d %H:%M}"
        for first, last in plan.log_spans[:3]
    ) + (", ..." if len(plan.log_spans) > 3 else "")
    spans = f" (they cover {spans})" if plan.log_spans else ""
    off = f"{abs(plan.clock_off) / 60:.0f} minutes {'ahead' if plan.clock_off > 0 else 'behind'}"
    lines = []
    if plan.taken:
        n = len(plan.taken)
        ids = ", ".join(t.queue_id for *_, t in plan.taken[:5]) + (", ..." if n > 5 else "")
        counts = "it counts" if n == 1 else "they count"
        lines.append((n, f"{words(n)['was']} queued by the server ({ids}): {counts} as sent, not sent again"))
    for why, text in _HELD.items():
        n = sum(1 for *_, w in plan.held if w == why)
        if n:
            lines.append((n, text.format(spans=spans, off=off, **words(n))))
    if plan.gone:
        n = plan.gone
        lines.append(
            (
                n,
                f"never got there, or {words(n)['was']} thrown away by the server: "
                + ("sent again" if resend_uncertain else "not sent again without --resend-uncertain"),
            )
        )
    if plan.checked == 1:
        click.echo(f"Server log: the uncertain reader {lines[0][1]}")
        return
    click.echo(f"Server log: of the {plan.checked} uncertain, {lines[0][0]} {lines[0][1]}")
    for n, text in lines[1:]:
        click.echo(f"            {n} {text}")


def _pace_line(stats) -> None:
    """How often the server refused messages for the pace (a rate limit), and what it did."""
    if stats is None or not stats.throttled:
        return
    refused = f"{stats.throttled} message{'s' if stats.throttled > 1 else ''}"
    paused = f"{stats.slowed} time{'s' if stats.slowed > 1 else ''}"
    click.echo(
        f"The server refused {refused} for the pace; the send paused {paused}"
        + (
            f" and slowed down to at most {stats.pace:.3g} a second (--rate {stats.pace:.3g} "
            "would stay below its limit)."
            if stats.pace
            else "."
        )
    )


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
        click.echo(
            f"\r[{'#' * filled}{'.' * (width - filled)}] sent {stats.sent}  failed "
            f"{stats.failed}  remaining {remaining}  {stats.rate:.0f}/s ",
            nl=False,
            err=True,
        )

    return show
