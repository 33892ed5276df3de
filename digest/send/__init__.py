"""Send an issue: personalised, resumable, never twice.

``plan_send`` builds the message once, reads the list and says what will happen,
writing nothing; ``Plan.execute`` (after the confirmation) records the send and its
recipients in the journal and runs the send loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import make_msgid, parseaddr
from pathlib import Path

from ..config import Project
from ..errors import ConfigError, DigestError, SendError
from ..issue import load_issue
from ..message import MessageTemplate, Recipient
from ..render import render_issue
from ..tokens import verp_address, verp_signer
from .journal import REVIVED, STATES, Journal, JournalError
from .loop import SendLoop
from .options import Options, Stats
from .outbox import OutboxMessenger
from .recipients import (
    RowProblem,
    address_key,
    check_addresses,
    envelope_address,
    normalise_address,
    read_recipients,
)
from .state import (
    JOURNAL_NAME,
    STOP_IT_FIRST,
    _check_not_being_sent,
    _existing_journal,
    _log_path,
    cancel_sends,
    check_not_running,
    left_by_send,
    only_sender,
    open_journal,
    recover_send_logs,
    send_logs,
)
from .transport import (
    PermanentFailure,
    SMTPMessenger,
    TemporaryFailure,
    Timeouts,
    Uncertain,
    check_settings,
)

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


@dataclass
class Plan:
    """What a send will do, for the confirmation; ``execute`` records and does it.

    Planning writes nothing: the journal records the send and its recipients only
    in ``execute``, after the confirmation.
    """

    key: str
    template: MessageTemplate
    project: Project
    messenger_factory: Callable[[], object]
    server: str
    options: Options
    recipients: Callable[[], Iterable[Recipient]]
    list_path: Path | None = None
    list_digest: str | None = None
    replace: bool = False
    slug: str = ""  # the issue's
    to_send: int = 0
    already_sent: int = 0  # readers of this list who have the issue
    sent_before: int = 0  # others who have it, from an earlier run with another list
    uncertain: int = 0
    failed_before: int = 0
    retrying: list[str] = field(default_factory=list)
    invalid: list[RowProblem] = field(default_factory=list)
    suppressed: int = 0
    not_in_list: int = 0  # due from an earlier run of this send, not in this list
    revived: int = 0  # readers of this list that 'digest cancel' set aside: taken up again
    in_list_send: str | None = None  # --to an address the list send has in this state
    weak_secret: bool = False  # DIGEST_SECRET short or a placeholder: links could be forged
    readable_by_others: list[Path] = field(default_factory=list)  # the state that others can read
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, first line)
    dry_run: bool = False
    scratch: bool = False  # --dry-run or --outbox: a throw-away journal in the state folder
    journal: Journal | None = None
    stats: Stats | None = None  # the run's counts, once it runs (also after a stop or Ctrl-C)

    @property
    def sender(self) -> str:
        return self.template.newsletter.sender

    @property
    def subject(self) -> str:
        return self.template.subject

    def envelope_sender(self, recipient: Recipient, delivery_id: int | None = None) -> str:
        """Return the envelope sender (MAIL FROM) for one recipient (of one journal delivery).

        With bounce_address in digest.toml it is the delivery's VERP address
        (bounces+<token>@domain, see digest.tokens), so a bounce names the issue and
        the recipient; without it, the From address.
        """
        newsletter = self.template.newsletter
        bounce, secret = newsletter.bounce_address, self.template.secret
        if not (bounce and secret and self.journal is not None):
            return self._from_address
        if delivery_id is None:
            delivery_id = self.journal.delivery_id(self.key, recipient.email)
        if delivery_id is None:
            return self._from_address
        token = self._verp_token(delivery_id, self.key, recipient.email)
        return verp_address(bounce, token)

    @functools.cached_property
    def _verp_token(self) -> Callable[[int, str, str], str]:
        return verp_signer(self.template.secret, self.template.newsletter.list_id)

    @functools.cached_property
    def _from_address(self) -> str:
        return parseaddr(self.template.newsletter.sender)[1]

    def execute(
        self, progress: Callable[[Stats], None] | None = None, notice: Callable[[str], None] | None = None
    ) -> Stats:
        """Record the send and its recipients in the journal, then send every due message.

        A real send holds the send's lock throughout: a second process sending the
        same issue (a cron job overlapping a manual run) is refused, not let loose on
        the same recipients.
        """
        with contextlib.nullcontext() if self.scratch else only_sender(self.project, self.key):
            try:
                self.record()
                if self.dry_run:  # prepare every message, a batch at a time, and send none
                    return self._prepare_all(self.journal)
                return self.run(progress, notice)
            finally:
                self.discard_scratch()

    def record(self) -> Journal:
        """Record the send and its list in the journal (after the confirmation)."""
        if self.list_path is not None and _file_digest(self.list_path) != self.list_digest:
            raise SendError(
                "the list changed after the plan was shown",
                path=self.list_path,
                hint="run the command again to see the new plan",
            )
        journal = self.journal = (
            self._scratch(self._scratch_path) if self.scratch else open_journal(self.project)
        )
        if not self.scratch:  # what a killed send of this issue did comes first
            journal.recover(_log_path(self.project, self.key))
        journal.start(self.key, self.template.content_hash, replace=self.replace)
        for _ in journal.add(self.key, self.recipients()):
            pass
        return journal

    def run(
        self, progress: Callable[[Stats], None] | None = None, notice: Callable[[str], None] | None = None
    ) -> Stats:
        """Run the send loop over the recorded send (*notice*: what to tell the editor on Ctrl-C)."""
        assert self.journal is not None, "record() first"
        loop = SendLoop(
            self.key,
            self.template,
            self.journal,
            self.messenger_factory,
            self.options,
            envelope_sender=self.envelope_sender,
            notice=notice,
        )
        self.stats = loop.stats
        log_context = (
            contextlib.nullcontext()
            if self.scratch
            else self.journal.logging_to(_log_path(self.project, self.key))
        )
        try:
            with log_context:
                return loop.run(progress)
        except KeyboardInterrupt:
            loop.stop.set()
            raise

    @property
    def _scratch_path(self) -> Path:
        return self.project.state_dir / f"scratch-{os.getpid()}.sqlite3"

    def discard_scratch(self) -> None:
        """Delete the throw-away journal of --dry-run and --outbox: no copy of the list stays."""
        if self.scratch and self.journal is not None:
            self.journal.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self._scratch_path}{suffix}").unlink(missing_ok=True)

    def _scratch(self, path: Path) -> Journal:
        """A throw-away journal (memory stays flat) with the real suppression list."""
        journal = Journal(path)
        real = _existing_journal(self.project)
        if real is not None:
            journal.add_suppressed_hashes(real.suppressed_hashes())
            real.close()
        return journal

    def _prepare_all(self, journal: Journal) -> Stats:
        stats = Stats()
        last = 0
        while batch := journal.due(self.key, ("pending", "deferred"), last, 512):
            for delivery in batch:
                if journal.is_suppressed(delivery.key):
                    continue
                self.template.personalise(delivery.recipient)
                stats.sent += 1
            last = batch[-1].id
        return stats

    def counts(self) -> dict[str, int]:
        """Return the journal's counts of this send by state (after ``execute``)."""
        journal = self.journal or _existing_journal(self.project)
        return journal.counts(self.key) if journal else {}


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
) -> Plan:
    """Build the message once, read the list and say what the send will do; write nothing."""
    options = options or Options()
    settings = project.settings()
    if outbox is None and not dry_run:
        check_settings(settings)
    if to is None and not settings.secret:
        raise ConfigError(
            "DIGEST_SECRET is not set; it signs each reader's unsubscribe link",
            hint="add DIGEST_SECRET=<a long random string> to .env "
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
    known = journal.content_hash(key) if journal and not scratch else None
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
    _count(
        plan,
        journal if not scratch else None,
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
    options = plan.options
    plan.to_send = new + sum(counts[state] for state in due_states) - due_suppressed
    # Due from an earlier run of this send but not in this list (a run interrupted and
    # started again with another list): they are part of the send, so they go too.
    plan.not_in_list = max(0, plan.to_send - new - due_here)
    plan.already_sent = sent_here
    plan.sent_before = counts["sent"] - sent_here
    plan.uncertain = counts["sending"]
    plan.failed_before = counts["failed"]
    if options.retry_failed and journal is not None:
        plan.retrying = journal.in_state(plan.key, "failed", 10)


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


def _file_digest(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise ConfigError(
            f"cannot read the list: {e.strerror or e}",
            path=path,
            hint="check the path given to --list",
        ) from None


def send_tests(
    project: Project, ref: str, addresses: list[str], outbox: Path | None = None, dry_run: bool = False
) -> list[str]:
    """Send one '[TEST]' copy to each address, outside the journal; return the replies.

    Each copy gets a fresh Message-ID, so a corrected copy is not dropped as a duplicate.
    A subscriber of the store gets their own fields, so the copy shows what they will
    get; any other address the fields' defaults.
    """
    settings = project.settings()
    issue = load_issue(project, ref)
    rendered = render_issue(project, issue, personal=True)
    template = MessageTemplate(rendered, secret=settings.secret or "test", subject_prefix="[TEST] ")
    sender = envelope_address(parseaddr(template.newsletter.sender)[1])
    checked = check_addresses(addresses, "--test")
    if dry_run:
        return ["dry run"] * len(checked)
    messenger = OutboxMessenger(outbox) if outbox else SMTPMessenger(settings)
    fields = _store_fields(project, checked)

    def fresh(address: str) -> bytes:
        data = template.personalise(Recipient(address, fields.get(address, {})), wire=messenger.wire)
        old = f"Message-ID: {template.message_id(address)}".encode()
        new = f"Message-ID: {make_msgid('test', template.newsletter.sender_domain)}".encode()
        return data.replace(old, new, 1)

    async def push_all() -> list[str]:
        replies = []
        try:
            for a in checked:
                try:
                    replies.append(await messenger.push(sender, envelope_address(a), fresh(a)))
                except (TemporaryFailure, PermanentFailure, Uncertain) as e:
                    replies.append(f"not sent: {e}")
            return replies
        finally:
            await messenger.close()

    return asyncio.run(push_all())


def _store_fields(project: Project, addresses: list[str]) -> dict[str, dict[str, str]]:
    """The fields of those of *addresses* that are subscribers of the store (read only)."""
    from .. import db, subscribers

    path = project.state_dir / db.DB_NAME
    if not path.is_file():
        return {}
    conn = db.connect(path)
    try:
        found = {a: subscribers.get(conn, a) for a in addresses}
    finally:
        conn.close()
    return {a: dict(s.fields) for a, s in found.items() if s is not None}


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
