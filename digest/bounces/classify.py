"""Classify one message from a bounce mailbox: hard, soft, complaint, auto-reply or not ours.

A message is *ours* when it is addressed to a valid VERP address of this newsletter
(``bounces+<token>@domain``: the token names the issue and the recipient); then it
speaks for that one recipient only, whatever addresses its report fields name. A
report without a valid token that is about a message carrying this newsletter's
List-Id is *unverified*: anyone can write one, so it names no one to mark and is
left for a person to read. Delivery status notifications (RFC 3464) are read field
by field for their status codes; other bounce shapes (Exim, qmail, Yahoo, Exchange,
...) go through flufl.bounce.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message

from .parts import (
    address_of,
    defects,
    first_part,
    has_no_headers,
    header,
    is_auto_reply,
    one_line,
    original_message,
    status_blocks,
    status_code,
    status_near,
    text_of,
)

log = logging.getLogger(__name__)

# What a message is, as far as the subscriber is concerned.
HARD, SOFT, COMPLAINT, AUTO_REPLY, DELIVERED = "hard", "soft", "complaint", "auto-reply", "delivered"
NOT_OURS, UNKNOWN, MALFORMED = "not-ours", "unknown", "malformed"
UNVERIFIED = "unverified"  # about our List-Id, but no valid VERP token: changes nothing
OURS = (HARD, SOFT, COMPLAINT, AUTO_REPLY, DELIVERED)

# Headers where an MTA leaves the envelope recipient, then the visible ones.
_ENVELOPE_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
_MAILBOX_FULL = re.compile(
    r"mailbox (?:is )?full|over ?quota|quota exceeded|insufficient "
    r"(?:system )?storage|out of storage",
    re.IGNORECASE,
)

# Resolves a VERP token to (issue, recipient), or None when it is not a valid token of ours.
Resolver = Callable[[str], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Event:
    """One thing a message says about one recipient."""

    kind: str
    email: str | None
    issue: str | None = None
    status: str | None = None
    diagnostic: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What a message is: its kind, the events to record, and why."""

    kind: str
    key: str
    message_id: str | None
    events: tuple[Event, ...] = ()
    reason: str = ""

    @property
    def ours(self) -> bool:
        return self.kind in OURS


@dataclass(frozen=True)
class Identity:
    """How to recognise our own mail: the VERP address and the List-Id."""

    list_id: str
    bounce_address: str | None = None
    resolve: Resolver | None = None
    _pattern: re.Pattern | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bounce_address:
            local, _, domain = self.bounce_address.rpartition("@")
            pattern = re.compile(
                rf"(?<![\w.+-]){re.escape(local)}\+([A-Za-z0-9.]+)@{re.escape(domain)}\b", re.IGNORECASE
            )
            object.__setattr__(self, "_pattern", pattern)

    def tokens(self, text: str) -> Iterator[str]:
        """Yield every VERP token in *text*."""
        if self._pattern is not None:
            for m in self._pattern.finditer(text):
                yield m.group(1).lower()


def message_key(raw: bytes, message_id: str | None) -> str:
    """Return the key that makes one message the same on every run (Message-ID + body hash)."""
    head, sep, body = raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
    digest = hashlib.sha256(body.replace(b"\r\n", b"\n") if sep else raw).hexdigest()
    return hashlib.sha256(f"{message_id or ''}\n{digest}".encode()).hexdigest()[:32]


def classify(raw: bytes, identity: Identity) -> Verdict:
    """Classify one raw message; never raise (a broken message is MALFORMED)."""
    if not raw.strip():
        return Verdict(MALFORMED, message_key(raw, None), None, reason="the message is empty")
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception as e:  # the parser is lenient; this is a last resort
        return Verdict(MALFORMED, message_key(raw, None), None, reason=f"cannot parse: {e}")
    message_id = header(msg, "Message-ID")
    key = message_key(raw, message_id)
    if not msg.keys() or has_no_headers(msg):
        return Verdict(MALFORMED, key, message_id, reason="no readable header block")
    try:
        return _classify(msg, identity, key, message_id)
    except Exception as e:  # noqa: BLE001 - a detector choking on odd input is a broken message
        log.info("classifying %s failed", message_id, exc_info=True)
        return Verdict(MALFORMED, key, message_id, reason=f"cannot read it: {type(e).__name__}: {e}")


def _classify(msg: Message, identity: Identity, key: str, message_id: str | None) -> Verdict:
    verp = _verp(msg, identity)
    report = (
        (msg.get_param("report-type", "", header="content-type") or "").lower()
        if msg.get_content_type() == "multipart/report"
        else ""
    )

    def verdict(kind: str, events: list[Event], reason: str = "") -> Verdict:
        return Verdict(kind, key, message_id, tuple(events), reason)

    if report == "feedback-report":
        return _complaint(msg, identity, verp, verdict)
    if report == "delivery-status":
        return _dsn(msg, identity, verp, verdict)
    if msg.get_content_type() == "multipart/report" and report not in ("disposition-notification",):
        if not msg.is_multipart() or msg.defects:
            return verdict(MALFORMED, [], f"a {report or 'report'} whose parts cannot be read ({defects(msg)})")
    if is_auto_reply(msg):
        if verp is None:
            return verdict(NOT_OURS, [], "an auto-reply not sent to a VERP address")
        return verdict(
            AUTO_REPLY, [Event(AUTO_REPLY, verp[1], verp[0], None, one_line(header(msg, "Subject")))]
        )
    return _other_bounce(msg, identity, verp, verdict)


def _complaint(msg: Message, identity: Identity, verp, verdict) -> Verdict:
    fields = first_part(msg, "message/feedback-report")
    if fields is None:
        return verdict(MALFORMED, [], "a feedback report without its message/feedback-report part")
    original = original_message(msg)
    if verp is None and original is not None:
        verp = _verp(original, identity)
    if verp is None:
        if not _carries_list_id(original, identity):
            return verdict(NOT_OURS, [], "a feedback report about mail that is not ours")
        claimed = address_of(fields.get("Original-Rcpt-To")) or (
            address_of(original.get("To")) if original is not None else None
        )
        return verdict(UNVERIFIED, [], _unverified("a feedback report", [claimed] if claimed else []))
    issue, recipient = verp
    feedback = (fields.get("Feedback-Type") or "abuse").strip().lower()
    agent = one_line(fields.get("User-Agent") or "")
    diagnostic = f"Feedback-Type: {feedback}" + (f" from {agent}" if agent else "")
    return verdict(COMPLAINT, [Event(COMPLAINT, recipient, issue, feedback, diagnostic)])


def _dsn(msg: Message, identity: Identity, verp, verdict) -> Verdict:
    blocks = status_blocks(msg)
    if blocks is None:
        return verdict(
            MALFORMED, [], "a delivery status notification without a readable message/delivery-status part"
        )
    if verp is None and not _carries_list_id(original_message(msg), identity):
        return verdict(NOT_OURS, [], "a delivery status notification about mail that is not ours")
    reports = []
    for block in blocks[1:] or blocks:  # the first block is about the message, the rest per recipient
        action = (block.get("Action") or "").strip().lower()
        recipient = address_of(block.get("Final-Recipient")) or address_of(block.get("Original-Recipient"))
        status = status_code(block.get("Status"))
        diagnostic = one_line(block.get("Diagnostic-Code") or "")
        diagnostic = diagnostic.split(";", 1)[1].strip() if ";" in diagnostic[:12] else diagnostic
        if not action and not status:
            continue
        reports.append((action, recipient, status, diagnostic))
    if not reports:
        return verdict(MALFORMED, [], "a delivery status notification with no per-recipient Action or Status")
    if verp is None:
        claimed = [
            r for action, r, _, _ in reports if r and not action.startswith(("deliver", "relay", "expand"))
        ]
        return verdict(UNVERIFIED, [], _unverified("a delivery status notification", claimed))
    # A VERP address is one message to one recipient: the token says whom, never the fields.
    # Read the block about that recipient (a forwarding address may stand there instead).
    issue, recipient = verp
    action, _, status, diagnostic = next(
        (r for r in reports if (r[1] or "").lower() == recipient.lower()), reports[0]
    )
    if action.startswith(("deliver", "relay", "expand")):
        kind = DELIVERED
    elif status is None:
        kind = SOFT if action.startswith("delay") else HARD
    else:
        kind = _kind_of(status, diagnostic, permanent=not action.startswith("delay"))
    return verdict(kind, [Event(kind, recipient, issue, status, diagnostic or None)])


def _other_bounce(msg: Message, identity: Identity, verp, verdict) -> Verdict:
    from flufl.bounce import all_failures

    temporary, permanent = all_failures(msg)
    if not temporary and not permanent:
        if verp is not None:
            return verdict(
                UNKNOWN,
                [],
                "sent to a VERP address, but neither a bounce, a complaint "
                "nor an auto-reply; left for a person to read",
            )
        return verdict(NOT_OURS, [], "not a bounce")
    if verp is None:
        if not _carries_list_id(original_message(msg) or msg, identity):
            return verdict(NOT_OURS, [], "a bounce about mail that is not ours")
        claimed = [a.decode("ascii", "replace") for a in sorted(permanent) + sorted(temporary - permanent)]
        return verdict(UNVERIFIED, [], _unverified("a bounce", claimed))
    text = text_of(msg)
    events = []
    for failed, permanent_failure in [(a, False) for a in sorted(temporary)] + [
        (a, True) for a in sorted(permanent)
    ]:
        address = failed.decode("ascii", "replace")
        status, diagnostic = status_near(text, address)
        kind = _kind_of(status, diagnostic, permanent_failure)
        events = [Event(kind, verp[1], verp[0], status, diagnostic)]  # the token's recipient only
        if kind == HARD:
            break
    return verdict(_worst(events), events)


# -- helpers -------------------------------------------------------------------


def _kind_of(status: str | None, diagnostic: str | None, permanent: bool) -> str:
    """Hard for 5.x.x (except a full mailbox), soft for 4.x.x and a full mailbox."""
    if status and status.endswith(".2.2") or _MAILBOX_FULL.search(diagnostic or ""):
        return SOFT
    if status:
        return HARD if status.startswith("5") else SOFT
    return HARD if permanent else SOFT


def _worst(events: list[Event]) -> str:
    kinds = {e.kind for e in events}
    for kind in (HARD, SOFT, DELIVERED):
        if kind in kinds:
            return kind
    return events[0].kind


def _verp(msg: Message, identity: Identity) -> tuple[str, str] | None:
    """Return (issue, recipient) of the first valid VERP token in the envelope headers."""
    if identity.resolve is None:
        return None
    for name in _ENVELOPE_HEADERS + ("Return-Path",):
        for value in msg.get_all(name) or []:
            for token in identity.tokens(str(value)):
                found = identity.resolve(token)
                if found is not None:
                    return found
    return None


def _unverified(what: str, claimed: list[str]) -> str:
    """Say why a report about our List-Id changes nothing, naming (a few of) the addresses it claims."""
    shown = [_printable(a) for a in dict.fromkeys(claimed)]
    names = ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")
    return (
        f"{what} about a message with this newsletter's List-Id, but not sent to a valid VERP "
        f"address, so it changes no one's status" + (f" (it names {names})" if names else "")
    )


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:200]


def _carries_list_id(original: Message | None, identity: Identity) -> bool:
    if original is None:
        return False
    value = header(original, "List-Id") or ""
    return f"<{identity.list_id.lower()}>" in value.lower()
