"""MIME messages: built once per issue, personalised per recipient by substitution.

The two parts are quoted-printable encoded once. Each placeholder left by
render.py splits a part into static segments; every segment ends with a soft
line break, so a recipient's value (encoded on its own) always starts a fresh
line and the encoded static bytes never change.
"""

from __future__ import annotations

import binascii
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.header import Header
from email.utils import formataddr, formatdate
from html import escape
from urllib.parse import quote

from . import tokens
from .render import TOKEN_RE, RenderedIssue, Slot

CRLF = b"\r\n"
_SOFT_BREAK = b"=\r\n"


@dataclass(frozen=True)
class Recipient:
    """One subscriber: the address and the merge fields of their CSV row."""

    email: str
    fields: Mapping[str, str] = field(default_factory=dict)
    line: int | None = None

    @property
    def name(self) -> str:
        return clean_value(self.fields.get("name", ""))


def clean_value(value: str | None) -> str:
    """Fold whitespace (CR/LF included) so a value cannot break a header or a line."""
    return " ".join(str(value or "").split())


def _qp(text: str) -> bytes:
    """Quoted-printable encode UTF-8 text with CRLF line ends."""
    if len(text) < 70 and text.isascii() and text.isprintable() and "=" not in text and (
            not text.endswith(" ")):
        return text.encode("ascii")  # nothing to encode (the common case for a value)
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    return encoded.replace(b"\n", CRLF)


def _header(name: str, value: str) -> bytes:
    """Encode one unstructured header (RFC 2047 only where non-ASCII)."""
    charset = "us-ascii" if value.isascii() else "utf-8"
    folded = Header(value, charset, header_name=name).encode(linesep="\r\n")
    return f"{name}: {folded}".encode("ascii") + CRLF


def _address_header(name: str, display: str, address: str) -> bytes:
    display = clean_value(display)
    if display and (not display.isascii() or "=?" in display):
        # Encode it ourselves; a name that looks like an encoded word is encoded too.
        encoded = Header(display, "utf-8", header_name=name).encode(linesep="\r\n")
        value = f"{encoded} <{address}>"
    else:
        value = formataddr((display, address))
    return f"{name}: {value}".encode("ascii") + CRLF


def unsubscribe_token(secret: str, list_id: str, email: str) -> str:
    """Sign a recipient's address for their unsubscribe link (see tokens.py)."""
    return tokens.sign(secret, "unsubscribe", list_id, email)


def verify_unsubscribe_token(secret: str, list_id: str, email: str, token: str) -> bool:
    """Check a token from an unsubscribe link."""
    return tokens.is_valid(secret, "unsubscribe", list_id, email, token)


@dataclass(frozen=True)
class _Part:
    content_type: str
    segments: tuple[bytes, ...]  # static bytes; between two of them sits a slot
    wire: tuple[bytes, ...]  # the same, dot-stuffed for SMTP DATA (RFC 5321 4.5.2)
    slots: tuple[int, ...]
    html: bool


def _split_part(content: str, content_type: str, html: bool) -> _Part:
    pieces = TOKEN_RE.split(content)
    statics = pieces[0::2]
    slots = tuple(int(n) for n in pieces[1::2])
    segments = [_qp(s) for s in statics]
    # Every segment that is followed by a slot ends with a soft line break.
    for i in range(len(segments) - 1):
        segments[i] = segments[i] + _SOFT_BREAK
    # Every segment starts a line: after the part's headers or after a soft break.
    return _Part(content_type, tuple(segments), tuple(dot_stuff(s) for s in segments), slots, html)


def dot_stuff(data: bytes) -> bytes:
    """Double each dot that starts a line (data must start at the start of a line)."""
    data = data.replace(b"\r\n.", b"\r\n..")
    return b"." + data if data.startswith(b".") else data


class MessageTemplate:
    """An issue's message, ready to be personalised at memory speed."""

    def __init__(
        self,
        rendered: RenderedIssue,
        *,
        secret: str | None = None,
        subject_prefix: str = "",
        date: str | None = None,
    ) -> None:
        newsletter = rendered.newsletter
        self.rendered = rendered
        self.newsletter = newsletter
        self.secret = secret
        self.date = date
        self.subject = f"{subject_prefix}{rendered.subject}"
        self.slots: tuple[Slot, ...] = rendered.slots
        digest = hashlib.sha256(
            (rendered.html + "\0" + rendered.text + "\0" + self.subject).encode()
        ).hexdigest()
        self.content_hash = digest
        self._sign = tokens.signer(secret or "", "unsubscribe", newsletter.list_id)
        self._date: tuple[int, str] = (0, "")
        self.boundary = f"==digest-{digest[:24]}"
        self._issue_key = f"{newsletter.list_id}/{rendered.issue.slug}"
        self._domain = newsletter.sender_domain
        self._parts = (
            _split_part(rendered.text, "text/plain", html=False),
            _split_part(rendered.html, "text/html", html=True),
        )
        self._fields_used = {s.field for s in self.slots}
        head = bytearray()
        head += _header("From", newsletter.sender)
        if newsletter.reply_to:
            head += f"Reply-To: {newsletter.reply_to}".encode("ascii") + CRLF
        head += _header("Subject", self.subject)
        head += b"MIME-Version: 1.0" + CRLF
        head += _header("List-Id", f"{newsletter.name} <{newsletter.list_id}>")
        self._head = bytes(head)
        body = bytearray()
        body += f'Content-Type: multipart/alternative; boundary="{self.boundary}"'.encode() + CRLF
        body += CRLF + b"This is a multi-part message in MIME format." + CRLF
        self._body_head = bytes(body)
        self._part_heads = tuple(
            (
                CRLF + f"--{self.boundary}".encode() + CRLF
                + f"Content-Type: {p.content_type}; charset=\"utf-8\"".encode() + CRLF
                + b"Content-Transfer-Encoding: quoted-printable" + CRLF + CRLF
            )
            for p in self._parts
        )
        self._tail = CRLF + f"--{self.boundary}--".encode() + CRLF

    # -- per recipient -------------------------------------------------------

    def message_id(self, email: str | None) -> str:
        """Return the Message-ID: the same for the same issue and recipient."""
        key = f"{self._issue_key}\n{(email or '').lower()}\n{self.subject}"
        return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{self._domain}>"

    def unsubscribe_url(self, email: str | None) -> str:
        """Return the recipient's signed unsubscribe link (the generic one without email)."""
        if not email or not self.secret:
            return self.rendered.unsubscribe_url
        token = self._sign(email)
        url = self.newsletter.unsubscribe_url
        if "{email}" in url or "{token}" in url:
            return url.replace("{email}", quote(email, safe="@")).replace("{token}", token)
        joiner = "&" if "?" in url else "?"
        return f"{url}{joiner}email={quote(email, safe='@')}&token={token}"

    def personalise(
        self, recipient: Recipient | None = None, *, to: str | None = None, wire: bool = False
    ) -> bytes:
        """Return the complete message for *recipient* (or the common copy), CRLF-ended.

        With *wire*, return it as SMTP DATA: dot-stuffed and ended with the '.' line.
        The static parts were stuffed once, so this costs no pass over the message.
        """
        email = recipient.email if recipient is not None else None
        unsubscribe = self.unsubscribe_url(email)
        out = [self._head]
        if recipient is not None:
            out.append(_address_header("To", recipient.name, recipient.email))
        elif to:
            out.append(f"To: {to}".encode("ascii") + CRLF)
        out.append(f"Date: {self.date or self._now()}".encode() + CRLF)
        out.append(f"Message-ID: {self.message_id(email or to)}".encode() + CRLF)
        out.append(self._list_unsubscribe(unsubscribe, personal=email is not None))
        out.append(self._body_head)
        values = self._values(recipient, unsubscribe) if self.slots else ()
        for head, part in zip(self._part_heads, self._parts, strict=True):
            out.append(head)
            segments = part.wire if wire else part.segments
            out.append(segments[0])
            for i, slot in enumerate(part.slots):
                value = values[slot]
                encoded = _qp(escape(value) if part.html else value) + _SOFT_BREAK
                out.append(dot_stuff(encoded) if wire else encoded)
                out.append(segments[i + 1])
        out.append(self._tail + b".\r\n" if wire else self._tail)
        return b"".join(out)

    def _now(self) -> str:
        """Return the Date header value, formatted once a second."""
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, formatdate(second, usegmt=True))
        return self._date[1]

    def _values(self, recipient: Recipient | None, unsubscribe: str) -> list[str]:
        fields = recipient.fields if recipient is not None else {}
        values = []
        for slot in self.slots:
            if slot.field == "unsubscribe_url":
                values.append(unsubscribe)
            elif slot.field == "email":
                values.append(recipient.email if recipient is not None else slot.default)
            else:
                values.append(clean_value(fields.get(slot.field)) or slot.default)
        return values

    def _list_unsubscribe(self, url: str, personal: bool) -> bytes:
        targets = [f"<{url}>"]
        if self.newsletter.unsubscribe_mailto:
            targets.append(f"<mailto:{self.newsletter.unsubscribe_mailto}?subject=unsubscribe>")
        # Fold only between the two URIs, never inside one.
        line = b"List-Unsubscribe: " + ("," + "\r\n ").join(targets).encode("ascii") + CRLF
        if personal and url.startswith("https://"):
            line += b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" + CRLF
        return line
