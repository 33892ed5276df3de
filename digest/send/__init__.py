"""Send an issue: personalised, resumable, never twice.

``plan_send`` builds the message once, loads the list into the journal and says
what will happen; ``Plan.execute`` runs the send loop.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path

from ..config import Project
from ..errors import ConfigError, DigestError, SendError
from ..issue import load_issue
from ..message import MessageTemplate, Recipient
from ..render import render_issue
from ..tokens import verp_address, verp_token
from .journal import Journal
from .loop import Options, SendLoop, Stats
from .recipients import RowProblem, check_addresses, read_recipients
from .transport import OutboxMessenger, SMTPMessenger, check_settings

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.sqlite3"

__all__ = ["Options", "Plan", "Stats", "open_journal", "plan_send", "send_tests"]


def open_journal(project: Project) -> Journal:
    """Open the project's send journal (and suppression list)."""
    return Journal(project.state_dir / JOURNAL_NAME)


@dataclass
class Plan:
    """What a send will do, for the confirmation; ``execute`` does it."""

    key: str
    template: MessageTemplate
    journal: Journal
    messenger_factory: Callable[[], object]
    server: str
    options: Options
    to_send: int = 0
    already_sent: int = 0
    uncertain: int = 0
    failed_before: int = 0
    invalid: list[RowProblem] = field(default_factory=list)
    suppressed: int = 0
    duplicates: int = 0
    dry_run: bool = False

    @property
    def sender(self) -> str:
        return self.template.newsletter.sender

    @property
    def subject(self) -> str:
        return self.template.subject

    def execute(self, progress: Callable[[Stats], None] | None = None) -> Stats:
        """Send (or, dry, only prepare) every due message."""
        loop = self.loop()
        if self.dry_run:  # prepare every message, a batch at a time, and send none
            last = 0
            while batch := self.journal.due(self.key, ("pending", "deferred"), last, 512):
                for delivery in batch:
                    self.template.personalise(delivery.recipient)
                    loop.stats.sent += 1
                last = batch[-1].id
            return loop.stats
        try:
            return loop.run(progress)
        except KeyboardInterrupt:
            loop.stop.set()
            raise

    def envelope_sender(self, recipient: Recipient) -> str:
        """Return the envelope sender (MAIL FROM) for one recipient.

        With bounce_address in digest.toml it is the delivery's VERP address
        (bounces+<token>@domain, see digest.tokens), so a bounce names the issue and
        the recipient; without it, the From address.
        """
        newsletter = self.template.newsletter
        bounce, secret = newsletter.bounce_address, self.template.secret
        delivery_id = (self.journal.delivery_id(self.key, recipient.email)
                       if bounce and secret and self.journal is not None else None)
        if delivery_id is None:
            return parseaddr(newsletter.sender)[1]
        token = verp_token(secret, newsletter.list_id, delivery_id, self.key, recipient.email)
        return verp_address(bounce, token)

    def loop(self) -> SendLoop:
        return SendLoop(self.key, self.template, self.journal, self.messenger_factory,
                        self.options, envelope_sender=self.envelope_sender)


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
) -> Plan:
    """Build the message once, record the recipients in the journal, and return the plan."""
    options = options or Options()
    settings = project.settings()
    if outbox is None and not dry_run:
        check_settings(settings)
    if to is None and not settings.secret:
        raise ConfigError("DIGEST_SECRET is not set; it signs each reader's unsubscribe link",
                          hint="add DIGEST_SECRET=<a long random string> to .env "
                               "(python -c 'import secrets; print(secrets.token_hex(32))')")
    issue = load_issue(project, ref)
    rendered = render_issue(project, issue, personal=to is None)
    template = MessageTemplate(rendered, secret=settings.secret)
    key = issue.slug if to is None else f"{issue.slug} to {to}"
    if dry_run or outbox is not None:
        journal = _scratch_journal(project)
    else:
        journal = open_journal(project)
    known = journal.content_hash(key)
    if known is not None and known != template.content_hash and not force:
        raise SendError(
            f"issue {issue.slug} changed after its send started",
            path=issue.path,
            hint="undo the change to finish the send as it began, or pass --force to send "
                 "the new version to those still due (those already sent get nothing)")
    journal.start(key, template.content_hash, replace=force)
    if outbox is not None:
        messenger_factory: Callable[[], object] = lambda: OutboxMessenger(outbox)  # noqa: E731
        server = f"outbox {outbox}"
    else:
        messenger_factory = lambda: SMTPMessenger(settings, per_connection)  # noqa: E731
        server = "nothing (dry run)" if dry_run else SMTPMessenger(settings, per_connection).server
    plan = Plan(key, template, journal, messenger_factory, server, options, dry_run=dry_run)
    if to is not None:
        recipients = iter([Recipient(check_addresses([to], "--to")[0])])
    elif list_path is not None:
        recipients = _valid_rows(read_recipients(list_path), plan)
    else:  # the active subscribers of the project's store
        recipients = _active_subscribers(project)
    for _, outcome in journal.add(key, recipients):
        if outcome == "suppressed":
            plan.suppressed += 1
        elif outcome == "duplicate":
            plan.duplicates += 1
    counts = journal.counts(key)
    plan.to_send = counts["pending"] + counts["deferred"] + (
        counts["sending"] if options.resend_uncertain else 0)
    plan.already_sent = counts["sent"]
    plan.uncertain = counts["sending"]
    plan.failed_before = counts["failed"]
    return plan


def _valid_rows(rows, plan: Plan):
    for row in rows:
        if isinstance(row, RowProblem):
            plan.invalid.append(row)
        else:
            yield row


def _active_subscribers(project: Project) -> Iterator[Recipient]:
    """Return the store's active subscribers (as a stream); raise when there are none."""
    from .. import db, subscribers

    path = project.state_dir / JOURNAL_NAME
    conn = db.connect(path)
    try:
        if not subscribers.has_active(conn):
            raise DigestError("the subscriber store has no active subscriber",
                              hint="add some with 'digest subscribers import FILE.csv' or "
                                   "'digest subscribers add ADDRESS', or send to --list "
                                   "FILE.csv or --to ADDRESS")
    finally:
        conn.close()
    return subscribers.stream_active(path)


def _scratch_journal(project: Project) -> Journal:
    """A throw-away journal on disk (memory stays flat), with the real suppression list."""
    folder = Path(tempfile.mkdtemp(prefix="digest-dry-"))
    journal = Journal(folder / JOURNAL_NAME)
    real = project.state_dir / JOURNAL_NAME
    if real.exists():
        journal.add_suppressed_hashes(Journal(real).suppressed_hashes())
    return journal


def send_tests(project: Project, ref: str, addresses: list[str], outbox: Path | None = None,
               dry_run: bool = False) -> list[str]:
    """Send one '[TEST]' copy to each address, outside the journal; return the replies."""
    settings = project.settings()
    issue = load_issue(project, ref)
    rendered = render_issue(project, issue, personal=True)
    template = MessageTemplate(rendered, secret=settings.secret or "test",
                               subject_prefix="[TEST] ")
    from email.utils import parseaddr

    sender = parseaddr(template.newsletter.sender)[1]
    checked = check_addresses(addresses, "--test")
    if dry_run:
        return ["dry run"] * len(checked)
    messenger = OutboxMessenger(outbox) if outbox else SMTPMessenger(settings)

    async def push_all() -> list[str]:
        try:
            return [await messenger.push(sender, a, template.personalise(
                Recipient(a), wire=messenger.wire)) for a in checked]
        finally:
            await messenger.close()

    return asyncio.run(push_all())
