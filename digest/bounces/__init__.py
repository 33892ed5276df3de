"""Bounces and complaints: read a mailbox, classify each message, record, never delete.

``process_mailbox`` reads every message of a Maildir, an mbox or an IMAP folder,
classifies it (see ``classify``), records what it says about whom (see ``events``),
changes the subscribers' status where it must, and moves the messages that are ours
to the ``processed`` folder. Messages that are not ours are only read. A message that
cannot be read is reported and left where it is.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from . import events as ev
from .classify import MALFORMED, UNKNOWN, Identity, Verdict, classify
from .mailboxes import ImapBox, ImapSettings, MailboxError, MaildirBox, MboxBox, imap_settings

log = logging.getLogger(__name__)

__all__ = ["ImapBox", "ImapSettings", "MailboxError", "MaildirBox", "MboxBox", "Outcome",
           "Report", "imap_settings", "process_mailbox"]


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
    source: str
    dry_run: bool
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, *kinds: str) -> int:
        return sum(1 for o in self.outcomes if o.verdict.kind in kinds)

    @property
    def warnings(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict.kind in (MALFORMED, UNKNOWN)]


def message_day(raw: bytes) -> dt.date:
    """The day a bounce was written (its Date header), else today."""
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    for line in head.decode("ascii", "replace").splitlines():
        if line.lower().startswith("date:"):
            try:
                return email.utils.parsedate_to_datetime(line[5:].strip()).astimezone(
                    dt.UTC).date()
            except (TypeError, ValueError, IndexError, OverflowError):
                break
    return dt.datetime.now(dt.UTC).date()


def process_mailbox(conn: sqlite3.Connection, box, identity: Identity, *,
                    set_status: Callable[[sqlite3.Connection, str, str, str, str | None], object],
                    dry_run: bool = False, threshold: float = ev.DEFAULT_THRESHOLD,
                    progress: Callable[[Outcome], None] | None = None) -> Report:
    """Classify and record every message of *box*; move ours to ``processed``.

    Each message is recorded and its status changes committed before it is moved,
    so a run that stops half-way loses nothing and records nothing twice next time.
    """
    report = Report(box.describe(), dry_run)
    try:
        for ref, raw in box.messages():
            verdict = classify(raw, identity)
            outcome = Outcome(ref, verdict)
            if verdict.ours:
                _apply(conn, box, outcome, raw, set_status, dry_run, threshold)
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    finally:
        box.close()
    return report


def _apply(conn, box, outcome: Outcome, raw: bytes, set_status, dry_run: bool,
           threshold: float) -> None:
    verdict = outcome.verdict
    day = message_day(raw)
    outcome.duplicate = ev.already_recorded(conn, verdict.key)
    outcome.changes = ev.changes(conn, verdict.events, day, threshold, outcome.duplicate)
    if dry_run:
        outcome.moved_to = "processed"
        return
    if not outcome.duplicate:
        with conn:
            outcome.recorded = ev.record(conn, verdict.key, verdict.events, outcome.ref, day) > 0
            for change in outcome.changes:
                set_status(conn, change.email, change.status, "bounce", change.reason)
    else:
        outcome.changes = []
    outcome.moved_to = box.move(outcome.ref)

