"""Send an issue: personalised, resumable, never twice.

``plan_send`` builds the message once, reads the list and says what will happen,
writing nothing; ``Plan.execute`` (after the confirmation) records the send and its
recipients in the journal and runs the send loop.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..config import Project
from ..errors import ConfigError, DigestError, SendError
from ..issue import load_issue
from ..message import MessageTemplate, Recipient
from ..render import render_issue
from . import serverlog
from .journal import REVIVED, Journal, JournalError
from .options import Options, Stats
from .outbox import OutboxMessenger
from .plan import Plan, _file_digest
from .recipients import (
    RowProblem,
    address_key,
    check_addresses,
    envelope_address,
    normalise_address,
    read_recipients,
)
from .reports import STATES
from .state import (
    JOURNAL_NAME,
    STOP_IT_FIRST,
    _check_not_being_sent,
    _existing_journal,
    cancel_sends,
    check_not_running,
    left_by_send,
    only_sender,
    open_journal,
    recover_send_logs,
    send_logs,
)
from .testcopies import send_tests
from .transport import SMTPMessenger, Timeouts, check_settings

log = logging.getLogger(__name__)

__all__ = [
    "Options",
    "Plan",
    "Stats",
    "Timeouts",
    "STOP_IT_FIRST",
    "cancel_sends",
    "check_not_running",
    "left_by_send",
    "open_journal",
    "plan_send",
    "recover_send_logs",
    "send_logs",
    "send_tests",
    "only_sender",
    "JOURNAL_NAME",
    "JournalError",
]


def plan_send(
    project: Project,
    ref: str,
    *,
    list_path: Path | None = None,
    to: str | None = None,
    outbox: Path | None = None,
    dry_run: bool = False,
    force: bool = False,
    options: Options | None = None,
    per_connection: int = 100,
    timeouts: Timeouts | None = None,
    server_logs: Sequence[Path] = (),
) -> Plan:
    """Build the message once, read the list and say what the send will do; write nothing.

    With *server_logs* (Postfix's), the uncertain readers whose message the server's
    log shows queued are found (``Plan.taken``): recorded sent once the send is
    confirmed, and not sent again.
    """
    options = options or Options()
    if server_logs and outbox is not None:
        raise ConfigError(
            "--server-log cannot go with --outbox",
            hint="--outbox writes every reader's message whatever the journal says; give --server-log "
            "to the real send (or to --dry-run, to see what it finds)",
        )
    settings = project.settings()
    if outbox is None and not dry_run:
        check_settings(settings)
    if to is None and not settings.secret:
        empty = "DIGEST_SECRET" in os.environ  # set, but empty, where it wins over .env
        raise ConfigError(
            ("DIGEST_SECRET is empty in the environment" if empty else "DIGEST_SECRET is not set")
            + "; it signs each reader's unsubscribe link",
            path=None if empty else project.root / ".env",
            hint=("unset it there, or give it the value; " if empty else "")
            + "add DIGEST_SECRET=<a long random string> to .env (or the environment) "
            "(python -c 'import secrets; print(secrets.token_hex(32))')",
        )
    issue = load_issue(project, ref)
    rendered = render_issue(project, issue, personal=to is None)
    template = MessageTemplate(rendered, secret=settings.secret)
    weak_secret = bool(settings.secret and _weak_secret(settings.secret))  # it signs VERP senders too
    address = check_addresses([to], "--to")[0] if to is not None else None
    # Opened before the recovery below, which its reads see: each is a transaction of its own.
    journal = _existing_journal(project)
    key = issue.slug if address is None else _to_key(journal, issue.slug, address)
    scratch = dry_run or outbox is not None
    if not scratch:
        _check_not_being_sent(project, key)
        recover_send_logs(project)  # a killed send's last entries, for a true plan
    # A dry run plans as the real send would (reading the journal, writing nothing);
    # --outbox writes every reader's message, whatever the journal says.
    planned = journal if outbox is None else None
    if dry_run and journal is not None:
        # What a killed send logged after its last fold, read only (the real send folds it first).
        journal.read_logs(send_logs(project, killed_only=True))
    known = planned.content_hash(key) if planned else None
    if known is not None and known != template.content_hash and not force:
        raise SendError(
            f"issue {issue.slug} changed after its send started",
            path=issue.path,
            hint="undo the change to finish the send as it began, or pass --force to send "
            "the new version to those still due (those already sent get nothing)",
        )
    if outbox is not None:
        messenger_factory: Callable[[], object] = lambda: OutboxMessenger(outbox)  # noqa: E731
        server = f"outbox {outbox}"
    else:

        def messenger_factory() -> SMTPMessenger:
            return SMTPMessenger(settings, per_connection, timeouts)

        server = "nothing (dry run)" if dry_run else SMTPMessenger(settings, per_connection).server
    if address is not None:

        def recipients() -> Iterable[Recipient]:
            return [Recipient(address)]
    elif list_path is not None:

        def recipients() -> Iterable[Recipient]:
            return (r for r in read_recipients(list_path) if isinstance(r, Recipient))
    else:  # the active subscribers of the project's store
        recipients = functools.partial(_active_subscribers, project)
    plan = Plan(
        key,
        template,
        project,
        messenger_factory,
        server,
        options,
        recipients,
        list_path=list_path,
        replace=force,
        dry_run=dry_run,
        scratch=scratch,
    )
    plan.slug = issue.slug
    plan.weak_secret = weak_secret
    plan.readable_by_others = _readable_by_others(project)
    if list_path is not None:
        plan.list_digest = _file_digest(list_path)
    if server_logs:
        _look_up_uncertain(plan, planned, server_logs, (timeouts or Timeouts()).data_end)
    _count(
        plan,
        planned,
        journal,
        read_recipients(list_path) if list_path is not None else iter(recipients()),
    )
    if address is not None and journal is not None:  # a reader of the list, not a list address?
        plan.in_list_send = journal.state_of(issue.slug, address_key(address))
    if journal is not None:
        journal.close()
    return plan


def _count(
    plan: Plan, journal: Journal | None, suppression: Journal | None, rows: Iterable[Recipient | RowProblem]
) -> None:
    """Count what the send would do, reading the journal only."""
    # First line of each address, by a 64-bit hash of its key: about 100 bytes a reader.
    seen: dict[int, int] = {}
    new = 0
    due_here = 0  # readers of this list already due from an earlier run
    due_suppressed = 0  # of them, unsubscribed since: skipped, not sent
    sent_here = 0  # readers of this list who have the issue already
    revived = {"sending": 0, "failed": 0}  # cancelled uncertain or failed readers this list names again
    due_states = plan.options.due_states
    taken = {address_key(email) for _, email, _, _ in plan.taken}  # sent, the server's log says
    held = {address_key(email) for _, email, _ in plan.held}  # uncertain, not sent again this run
    for row in rows:
        if isinstance(row, RowProblem):
            plan.invalid.append(row)
            continue
        key = address_key(row.email)
        short = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        if short in seen:
            plan.duplicates.append((row.line or 0, seen[short]))
            continue
        seen[short] = row.line or 0
        state = journal.state_of(plan.key, key) if journal is not None else None
        if key in taken:
            state = "sent"
        elif key in held:
            continue  # uncertain, and not due in this run whatever the options
        if suppression is not None and suppression.is_suppressed(key):
            plan.suppressed += 1
            due_suppressed += state in due_states
            continue
        plan.revived += state in REVIVED
        if state is None or state == "cancelled":  # new, or cancelled and due again (REVIVED)
            new += 1
            continue
        if state in REVIVED:  # cancelled, and uncertain or failed again
            state = REVIVED[state]
            revived[state] += 1
        if state in due_states:
            due_here += 1
        elif state == "sent":
            sent_here += 1
    counts = journal.counts(plan.key) if journal else dict.fromkeys(STATES, 0)
    for state, n in revived.items():
        counts[state] += n
    counts["sending"] -= len(plan.taken) + len(plan.held)  # held: added back to plan.uncertain below
    counts["sent"] += len(plan.taken)
    options = plan.options
    plan.to_send = new + sum(counts[state] for state in due_states) - due_suppressed
    # Due from an earlier run of this send but not in this list (a run interrupted and
    # started again with another list): they are part of the send, so they go too.
    plan.not_in_list = max(0, plan.to_send - new - due_here)
    plan.already_sent = sent_here
    plan.sent_before = counts["sent"] - sent_here
    plan.uncertain = counts["sending"] + len(plan.held)
    plan.failed_before = counts["failed"]
    if options.retry_failed and journal is not None:
        plan.retrying = journal.in_state(plan.key, "failed", 10)


def _look_up_uncertain(
    plan: Plan, journal: Journal | None, server_logs: Sequence[Path], data_timeout: float
) -> None:
    """Look the uncertain readers up in the server's logs (``serverlog``): those it shows
    taken (``Plan.taken``: the plan counts them as sent, ``Plan.execute`` records them
    so), those it shows thrown away or that never got there (sent again with
    --resend-uncertain), and those it cannot tell of (``Plan.held``: not sent again in
    this run, even with --resend-uncertain). Raise ConfigError when the logs hold no
    message of the send at all."""
    problems = journal.problems(plan.key) if journal else []
    uncertain = [(i, email) for i, email, state, _ in problems if state == "sending"]
    # Recorded with why it is uncertain (no reply in time, a second Ctrl-C): up to
    # --data-timeout after its claim, as this run's is.
    late = {i for i, _, state, reply in problems if state == "sending" and reply}
    ids = journal.message_ids(plan.key, [i for i, _ in uncertain]) if journal else {}
    senders = {
        ids[i]: envelope_address(plan.envelope_sender(Recipient(email), i))
        for i, email in uncertain
        if i in ids
    }
    known = journal.sent_message_ids(plan.key) if journal and senders else {}
    log = serverlog.read(server_logs, senders, known)  # reads (and checks) the logs even so
    if senders and not log.has_the_send:
        raise ConfigError(
            f"none of the messages of {plan.key} is logged in {'it' if len(server_logs) == 1 else 'them'}: "
            "the log of another server, or of another time?",
            path=server_logs[0] if len(server_logs) == 1 else None,
            hint="give the log of the Postfix instance this issue was sent through, of the days of its "
            "send (every rotated file of them), or leave --server-log out",
        )
    recorded = journal.last_recorded(plan.key, ids) if journal else {}
    plan.checked = len(uncertain)
    for i, email in uncertain:
        message_id = ids.get(i)
        if message_id is None:
            plan.held.append((i, email, "no Message-ID"))
        elif message_id in log.taken:
            plan.taken.append((i, email, message_id, log.taken[message_id]))
        elif message_id in log.thrown_away:
            plan.gone += 1
        elif message_id in log.held:
            why = "another envelope" if message_id in log.other_envelope else "not queued yet"
            plan.held.append((i, email, why))
        elif log.covers(
            recorded.get(i, 0.0), data_timeout + serverlog.AFTER if i in late else serverlog.BEFORE
        ):
            plan.gone += 1  # no line of it, in logs of its time: it never got there
        elif log.clock_off is not None and abs(log.clock_off) > serverlog.SKEW:
            plan.held.append((i, email, "another clock"))
            plan.clock_off = log.clock_off
        else:
            plan.held.append((i, email, "not covered"))
            plan.log_spans = log.spans


def _to_key(journal: Journal | None, slug: str, address: str) -> str:
    """The journal key of a --to send: one per address however it is spelt (case, IDNA or
    Unicode domain), so a second --to never sends it again; an earlier send's key if any."""
    wanted, prefix = address_key(address), f"{slug} to "
    for key in journal.sends(slug) if journal is not None else []:
        if not key.startswith(prefix):
            continue
        try:
            if address_key(normalise_address(key[len(prefix) :])) == wanted:
                return key
        except ValueError:
            continue
    return prefix + address


_PLACEHOLDER_SECRETS = frozenset({"change-me", "changeme", "secret", "password", "test", "example"})


def _readable_by_others(project: Project) -> list[Path]:
    """The state folder and journal files that every user of the machine can read (made by an
    older digest, or by hand): they hold readers' addresses. New ones are 0700 and 0600."""
    found = []
    for path in (project.state_dir, *sorted(project.state_dir.glob(f"{JOURNAL_NAME}*"))):
        try:
            if path.stat().st_mode & 0o004:
                found.append(path)
        except OSError:
            continue
    return found


def _weak_secret(secret: str) -> bool:
    """Whether DIGEST_SECRET is short (under 16 characters) or a placeholder: whoever
    guessed it could forge unsubscribe links and bounces for any reader."""
    return len(secret) < 16 or secret.strip().lower() in _PLACEHOLDER_SECRETS


def _active_subscribers(project: Project) -> Iterable[Recipient]:
    """Return the store's active subscribers (as a stream); raise when there are none."""
    from .. import db, subscribers

    path = project.state_dir / db.DB_NAME
    conn = db.connect(path)
    try:
        if not subscribers.has_active(conn):
            raise DigestError(
                "the subscriber store has no active subscriber",
                hint="add some with 'digest subscribers import FILE.csv' or "
                "'digest subscribers add ADDRESS', or send to --list "
                "FILE.csv or --to ADDRESS",
            )
    finally:
        conn.close()
    return subscribers.stream_active(path)
