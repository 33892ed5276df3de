"""Read the parts of a bounce, complaint or auto-reply: report fields, codes, addresses, text."""

from __future__ import annotations

import email
import email.header
import re
from email.message import Message
from email.utils import getaddresses, parseaddr

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_BASIC = re.compile(r"(?<![\d.])([45]\d\d)[ -]")
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|auto:|out of "
    r"(?:the )?office|vacation|away from|abwesenheit|absence|r[ée]ponse "
    r"automatique)",
    re.IGNORECASE,
)


def status_blocks(msg: Message) -> list[Message] | None:
    """Return the header blocks of the message/delivery-status part (message, then each recipient)."""
    part = None
    for sub in msg.walk():
        if sub.get_content_type() == "message/delivery-status":
            part = sub
            break
    if part is None:
        return None
    payload = part.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message)] or None
    if not isinstance(payload, str) or not payload.strip():  # e.g. encoded; parse the text
        return None
    text = part.get_payload(decode=True) or b""
    blocks = re.split(r"\r?\n\s*\r?\n", text.decode("ascii", "replace").strip())
    parsed = [email.message_from_string(b + "\n\n") for b in blocks if b.strip()]
    return parsed or None


def first_part(msg: Message, content_type: str) -> Message | None:
    """Return the fields of the first part of *content_type* (e.g. message/feedback-report)."""
    for sub in msg.walk():
        if sub.get_content_type() == content_type:
            payload = sub.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            if isinstance(payload, str):
                return email.message_from_string(payload.lstrip())
    return None


def original_message(msg: Message) -> Message | None:
    """Return the returned message (or its headers) inside a report, if any."""
    for sub in msg.walk():
        if sub is msg:
            continue
        ctype = sub.get_content_type()
        if ctype == "message/rfc822":
            payload = sub.get_payload()
            if isinstance(payload, list) and payload:
                return payload[0]
        elif ctype == "text/rfc822-headers":
            return email.message_from_bytes((sub.get_payload(decode=True) or b"").lstrip() + b"\n\n")
    return None


def is_auto_reply(msg: Message) -> bool:
    """RFC 3834 Auto-Submitted, the older vacation markers, or an out-of-office subject."""
    auto = (header(msg, "Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Vacation"):
        return True
    if (header(msg, "Precedence") or "").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.match(header(msg, "Subject") or ""))


def status_code(value) -> str | None:
    """Return the enhanced status code (RFC 3463, e.g. 5.1.1) in a Status field."""
    m = _ENHANCED.search(str(value or ""))
    return ".".join(m.groups()) if m else None


def status_near(text: str, address: str) -> tuple[str | None, str | None]:
    """Find the status code and diagnostic line a free-form bounce gives for *address*."""
    lines = [line.strip() for line in text.splitlines()]
    at = next((i for i, line in enumerate(lines) if address.lower() in line.lower()), None)
    window = lines[at : at + 6] if at is not None else lines
    for line in window + lines:
        m = _ENHANCED.search(line)
        if m and m.group(1) != "2":
            return ".".join(m.groups()), one_line(line)[:300]
    for line in window + lines:
        m = _BASIC.search(line)
        if m:
            code = m.group(1)
            return f"{code[0]}.0.0", one_line(line)[:300]
    return None, one_line(window[1] if at is not None and len(window) > 1 else "")[:300] or None


def text_of(msg: Message) -> str:
    """The message's text parts, decoded leniently (not the returned original)."""
    out = []
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            break
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True) or b""
            out.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return "\n".join(out)


def address_of(value) -> str | None:
    """An address from 'rfc822; a@b', '<a@b>' or 'Name <a@b>'."""
    if not value:
        return None
    text = one_line(str(value))
    if ";" in text:
        text = text.split(";", 1)[1]
    pairs = getaddresses([text]) or [parseaddr(text)]
    for _, address in pairs:
        address = address.strip().strip("<>")
        if "@" in address:
            return address
    return None


def header(msg: Message, name: str) -> str | None:
    """Return a header decoded (RFC 2047), or as it came when its encoding is broken."""
    value = msg.get(name)
    if value is None:
        return None
    try:
        return str(email.header.make_header(email.header.decode_header(str(value))))
    except Exception:  # noqa: BLE001 - a broken encoded word: show it as it came
        return str(value)


def has_no_headers(msg: Message) -> bool:
    """Return whether the message has no header block to speak of (binary junk, say)."""
    return (
        any(type(d).__name__ == "MissingHeaderBodySeparatorDefect" for d in msg.defects)
        and not msg.get("From")
        and not msg.get("Subject")
    )


def defects(msg: Message) -> str:
    """Name the parser's complaints about a message and its parts."""
    names = sorted({type(d).__name__ for part in msg.walk() for d in part.defects})
    return ", ".join(names) or "no parts"


def one_line(text: str) -> str:
    """Unfold and squeeze whitespace."""
    return " ".join(str(text).split())
