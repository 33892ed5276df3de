"""Bounces and complaints: read a mailbox, classify each message, record, never delete.

``process_mailbox`` reads every message of a Maildir, an mbox or an IMAP folder,
classifies it (see ``classify``), records what it says about whom (see ``events``),
changes the subscribers' status where it must, and moves the messages that are ours
to the ``processed`` folder. Only a message sent to a valid VERP address is ours, and
it changes the status of the one recipient its token names. Messages that are not
ours are only read. A message that cannot be read, or a report that carries our
List-Id without a valid token (unverified), is reported and left where it is.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from . import events as ev
from .classify import Identity, Resolver, Verdict, classify
from .mailboxes import (
    PROCESSED,
    ImapBox,
    ImapSettings,
    MailboxError,
    MaildirBox,
    MboxBox,
    imap_settings,
    open_mailbox,
)

log = logging.getLogger(__name__)

__all__ = [
    "ImapBox",
    "ImapSettings",
    "MailboxError",
    "MaildirBox",
    "MboxBox",
    "Outcome",
    "Report",
    "imap_settings",
    "journal_resolver",
    "open_mailbox",
    "process_mailbox",
    "project_identity",
]


@dataclass
class Outcome:
    """What happened (or, dry, would happen) to one message."""

    ref: str
    verdict: Verdict
    recorded: bool = False  # new events written
    duplicate: bool = False  # the same message was recorded by an earlier run
    moved_to: str | None = None
    changes: list[ev.Change] = field(default_factory=list)


@dataclass
class Report:
    """The outcome of one run over a mailbox."""

    source: str
    dry_run: bool
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, *kinds: str) -> int:
        """Return how many messages were of these kinds."""
        return sum(1 for o in self.outcomes if o.verdict.kind in kinds)


def processing_day() -> dt.date:
    """Return the day (UTC) a bounce is processed: what a soft bounce counts on.

    Never the message's Date header, which its sender writes: back-dated reports
    would otherwise add a day's score each.
    """
    return dt.datetime.now(dt.UTC).date()


def journal_resolver(conn: sqlite3.Connection, secret: str, scope: str) -> Resolver:
    """Resolve VERP tokens through the send journal: (issue, recipient) when the token holds."""
    from ..tokens import verp_delivery, verp_is_valid

    def resolve(token: str) -> tuple[str, str] | None:
        delivery_id = verp_delivery(token)
        if delivery_id is None:
            return None
        row = conn.execute("SELECT issue, email FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if row is None or not verp_is_valid(secret, scope, token, row[0], row[1]):
            return None
        return row[0], row[1]

    return resolve


def project_identity(project, conn: sqlite3.Connection) -> Identity:
    """How this project's own bounces are recognised: its VERP address (its List-Id: unverified)."""
    newsletter = project.newsletter
    secret = project.settings().secret
    resolve = journal_resolver(conn, secret, newsletter.list_id) if secret else None
    return Identity(newsletter.list_id, newsletter.bounce_address, resolve)


def process_mailbox(
    conn: sqlite3.Connection,
    box,
    identity: Identity,
    *,
    dry_run: bool = False,
    threshold: float = ev.DEFAULT_THRESHOLD,
    progress: Callable[[Outcome], None] | None = None,
) -> Report:
    """Classify and record every message of *box*; move ours to ``processed``.

    A message's status changes are made, then its events recorded, then it is
    moved: a run that stops half-way loses nothing, and the next run records
    nothing twice (the events are keyed on the message).
    """
    report = Report(box.describe(), dry_run)
    try:
        for ref, raw in box.messages():
            verdict = classify(raw, identity)
            outcome = Outcome(ref, verdict)
            if verdict.ours:
                _apply(conn, box, outcome, dry_run, threshold)
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    finally:
        box.close()
    return report


def _apply(conn: sqlite3.Connection, box, outcome: Outcome, dry_run: bool, threshold: float) -> None:
    from .. import subscribers
    from ..db import transaction

    verdict = outcome.verdict
    day = processing_day()
    outcome.duplicate = ev.already_recorded(conn, verdict.key)
    if not outcome.duplicate:
        for change in ev.changes(conn, verdict.events, day, threshold, recorded=False):
            current = subscribers.get(conn, change.email)
            if current is not None and (
                current.status == change.status
                or (current.status == "complained" and change.status == "bounced")
            ):
                continue  # already so; a complaint is not downgraded to a bounce
            outcome.changes.append(change)
    if dry_run:
        outcome.moved_to = getattr(box, "processed", PROCESSED)  # an IMAP box names its own
        return
    if not outcome.duplicate:
        for change in outcome.changes:
            subscribers.set_status(conn, change.email, change.status, "bounce", change.reason)
        with transaction(conn):
            outcome.recorded = ev.record(conn, verdict.key, verdict.events, outcome.ref, day) > 0
    outcome.moved_to = box.move(outcome.ref)
