"""A planned send, once confirmed: ``Plan.execute`` records the send and its recipients in
the journal and runs the send loop (``plan_send`` in ``__init__`` makes the plan)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.errors import MessageError
from email.utils import parseaddr
from pathlib import Path

from ..config import Project
from ..errors import ConfigError, SendError
from ..message import MessageTemplate, Recipient
from ..tokens import verp_address, verp_signer
from . import serverlog
from .journal import Journal
from .loop import SendLoop
from .options import Options, Stats
from .recipients import RowProblem
from .state import _existing_journal, _log_path, only_sender, open_journal

MAX_PROBLEMS_SHOWN = 50


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
    # (id, address, state, reply) of the failed and deferred of a --dry-run or --outbox run,
    # whose journal is gone when it ends (MAX_PROBLEMS_SHOWN at most)
    problems: list[tuple[int, str, str, str | None]] = field(default_factory=list)
    # --server-log: the uncertain readers whose message the server's log shows queued, as
    # (id, address, Message-ID, where), recorded sent by ``execute``; how many uncertain
    # were looked up, and how many of them have no Message-ID recorded (an older digest's)
    taken: list[tuple[int, str, str, serverlog.Taken]] = field(default_factory=list)
    # those it cannot tell of, as (id, address, why): not sent again now; and how many it
    # shows thrown away or never there (sent again with --resend-uncertain)
    held: list[tuple[int, str, str]] = field(default_factory=list)
    gone: int = 0
    checked: int = 0
    log_spans: list = field(default_factory=list)  # the times the logs cover, when one was not covered
    clock_off: float = 0.0  # seconds the logs' clock runs ahead of this machine's, when too many
    recorded_taken: int = 0  # of ``taken``, those recorded sent (still uncertain then)

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
        if not (bounce and secret):
            return self._from_address
        if delivery_id is None and self.journal is not None:
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
                journal = self.record()
                if self.taken and not self.scratch:
                    self.recorded_taken = journal.record_taken(
                        self.key,
                        [
                            (
                                i,
                                message_id,
                                f"queued by the server as {t.queue_id} (its log {t.log}); "
                                "its reply to the message was lost",
                            )
                            for i, _, message_id, t in self.taken
                        ],
                    )
                if self.dry_run:  # prepare every message, a batch at a time, and send none
                    return self._prepare_all(self.journal)
                if self.taken and not self._anything_due(journal):  # only the server's log to record
                    return Stats()
                return self.run(progress, notice)
            finally:
                if self.scratch and self.journal is not None:  # said by the command, then gone
                    self.problems = self.journal.problems(self.key)[:MAX_PROBLEMS_SHOWN]
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
            held=frozenset(i for i, _, _ in self.held),
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

    def _anything_due(self, journal: Journal) -> bool:
        return self.options.due(journal.counts(self.key), held=len(self.held)) > 0

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
                try:
                    self.template.personalise(delivery.recipient)
                except (ValueError, UnicodeError, MessageError) as e:  # as the send would: that reader fails
                    journal.mark(delivery.id, "failed", f"cannot be written as a message: {e}")
                    stats.failed += 1
                    continue
                stats.sent += 1
            last = batch[-1].id
        return stats

    def counts(self) -> dict[str, int]:
        """Return the journal's counts of this send by state (after ``execute``)."""
        journal = self.journal or _existing_journal(self.project)
        return journal.counts(self.key) if journal else {}


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
