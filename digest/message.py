"""MIME messages: built once per issue, personalised per recipient by substitution.

The two parts are quoted-printable encoded once. Each placeholder left by
render.py splits a part into static segments; every segment ends with a soft
line break, so a recipient's value (encoded on its own) always starts a fresh
line and the encoded static bytes never change.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from html import escape
from urllib.parse import quote

from . import tokens
from .errors import TemplateError
from .headers import (
    address_header,
    clean_value,
    list_id_header,
    mailbox_header,
    unstructured_header,
)
from .mergefields import Slot
from .render import RenderedIssue

CRLF = b"\r\n"
_SOFT_BREAK = b"=\r\n"
_URL_SAFE = re.compile(r"[A-Za-z0-9@._~-]+")  # what quote(address, safe="@") leaves as it is


@dataclass(frozen=True)
class Recipient:
    """One subscriber: the address and the merge fields of their CSV row."""

    email: str
    fields: Mapping[str, str] = field(default_factory=dict)
    line: int | None = None

    @property
    def name(self) -> str:
        return clean_value(self.fields.get("name", ""))


def _qp(text: str) -> bytes:
    """Quoted-printable encode UTF-8 text with CRLF line ends."""
    if (
        len(text) < 70
        and text.isascii()
        and text.isprintable()
        and "=" not in text
        and (not text.endswith(" "))
    ):
        return text.encode("ascii")  # nothing to encode (the common case for a value)
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    return encoded.replace(b"\n", CRLF)


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


def _split_part(
    content: str, content_type: str, html: bool, pattern: re.Pattern[str] | None, nonce: str
) -> _Part:
    pieces = pattern.split(content) if pattern is not None else [content]
    statics = pieces[0::2]
    slots = tuple(int(n) for n in pieces[1::2])
    for static in statics:
        if nonce and nonce in static.lower():
            # Never send a placeholder: the build's rendering changed one.
            raise TemplateError(
                "a merge field placeholder would reach readers unfilled",
                hint="print merge fields as they are: {{ recipient.name }}",
            )
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


DATE_AT = 2  # where MessageTemplate.pieces leaves the Date line
MESSAGE_ID_AT = 3  # and where it puts the Message-ID line


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
        placeholders = rendered.placeholders
        pattern = placeholders.pattern if placeholders is not None else None
        nonce = placeholders.nonce if placeholders is not None else ""

        def stable(text: str) -> str:  # the same for every build of the same issue
            return pattern.sub(r"@@\1@@", text) if pattern is not None else text

        digest = hashlib.sha256(
            (stable(rendered.html) + "\0" + stable(rendered.text) + "\0" + self.subject).encode()
        ).hexdigest()
        self.content_hash = digest
        self._sign = tokens.signer(secret or "", "unsubscribe", newsletter.list_id)
        # Keyed with the secret where there is one: nobody else can write a message with the
        # Message-ID of a reader's copy (send/serverlog.py tells ours by it in a server's log).
        self._id_mac = tokens.hmac_sha256(secret.encode("utf-8")) if secret else None
        self._date: tuple[int, str] = (0, "")
        self.boundary = f"==digest-{digest[:24]}"
        self._issue_key = f"{newsletter.list_id}/{rendered.issue.slug}"
        self._domain = newsletter.sender_domain
        self._parts = (
            _split_part(rendered.text, "text/plain", False, pattern, nonce),
            _split_part(rendered.html, "text/html", True, pattern, nonce),
        )
        self._fields_used = {s.field for s in self.slots}
        head = bytearray()
        head += mailbox_header("From", newsletter.sender)
        if newsletter.reply_to:
            head += mailbox_header("Reply-To", newsletter.reply_to)
        head += unstructured_header("Subject", self.subject)
        head += b"MIME-Version: 1.0" + CRLF
        head += list_id_header(newsletter.name, newsletter.list_id)
        self._head = bytes(head)
        body = bytearray()
        # Folded before the parameter: on one line it is 81 octets, over the 78 of RFC 5322.
        body += b"Content-Type: multipart/alternative;" + CRLF + f' boundary="{self.boundary}"'.encode() + CRLF
        body += CRLF + b"This is a multi-part message in MIME format." + CRLF
        self._body_head = bytes(body)
        self._part_heads = tuple(
            (
                CRLF
                + f"--{self.boundary}".encode()
                + CRLF
                + f'Content-Type: {p.content_type}; charset="utf-8"'.encode()
                + CRLF
                + b"Content-Transfer-Encoding: quoted-printable"
                + CRLF
                + CRLF
            )
            for p in self._parts
        )
        self._tail = CRLF + f"--{self.boundary}--".encode() + CRLF

    @property
    def html_part_size(self) -> int:
        """Bytes of the HTML part as sent (quoted-printable), without the readers' values:
        what Gmail's clipping threshold counts."""
        return sum(len(segment) for segment in self._parts[1].segments)

    # -- per recipient -------------------------------------------------------

    def message_id(self, email: str | None) -> str:
        """Return the Message-ID: the same for the same issue, recipient and secret.

        With a secret it is an HMAC that only the secret's holder can work out; without
        one (an exported copy) a hash of the issue, the address and the subject.
        """
        key = f"{self._issue_key}\n{(email or '').lower()}\n{self.subject}".encode()
        mac = self._id_mac(b"message-id\n" + key) if self._id_mac else hashlib.sha256(key).digest()
        return f"<{mac[:16].hex()}@{self._domain}>"

    def unsubscribe_url(self, email: str | None) -> str:
        """Return the recipient's signed unsubscribe link (the generic one without email)."""
        if not email or not self.secret:
            return self.rendered.unsubscribe_url
        token = self._sign(email)
        url = self.newsletter.unsubscribe_url
        quoted = email if _URL_SAFE.fullmatch(email) else quote(email, safe="@")  # the common case, faster
        if "{email}" in url or "{token}" in url:
            return url.replace("{email}", quoted).replace("{token}", token)
        joiner = "&" if "?" in url else "?"
        return f"{url}{joiner}email={quoted}&token={token}"

    def personalise(
        self, recipient: Recipient | None = None, *, to: str | None = None, wire: bool = False
    ) -> bytes:
        """Return the complete message for *recipient* (or the common copy), CRLF-ended.

        With *wire*, return it as SMTP DATA: dot-stuffed and ended with the '.' line.
        The static parts were stuffed once, so this costs no pass over the message.
        """
        return self.assemble(self.pieces(recipient, to=to, wire=wire))

    def pieces(
        self, recipient: Recipient | None = None, *, to: str | None = None, wire: bool = False
    ) -> list[bytes]:
        """Return the message as pieces to join (``assemble``): the static ones shared, the personal ones small.

        The send prepares these a batch of readers at a time and joins each when its
        turn comes; the Date line (``pieces[DATE_AT]``) is written then.
        """
        email = recipient.email if recipient is not None else None
        unsubscribe = self.unsubscribe_url(email)
        out = [self._head]
        if recipient is not None:
            out.append(address_header("To", recipient.name, recipient.email))
        elif to:
            out.append(mailbox_header("To", to))
        else:
            out.append(b"")
        out.append(b"")  # DATE_AT: written by assemble
        out.append(f"Message-ID: {self.message_id(email or to)}".encode() + CRLF)  # MESSAGE_ID_AT
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
        return out

    def assemble(self, pieces: list[bytes]) -> bytes:
        """Return the message of ``pieces``, its Date line written now."""
        pieces[DATE_AT] = f"Date: {self.date or self._now()}".encode() + CRLF
        return b"".join(pieces)

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
            # RFC 6068: '?', '#', '%', '&' or ',' of a local part are percent-encoded in the URI.
            mailto = quote(self.newsletter.unsubscribe_mailto, safe="@!$'()*+;=-._~")
            targets.append(f"<mailto:{mailto}?subject=unsubscribe>")
        # Fold only between the two URIs, never inside one.
        line = b"List-Unsubscribe: " + ("," + "\r\n ").join(targets).encode("ascii") + CRLF
        if len(line) > 1000 and max(len(part) for part in line.split(CRLF)) > 998:
            # RFC 5322's limit: a reader whose address makes the link this long cannot get a message.
            raise ValueError("the List-Unsubscribe header would be over 998 octets (the address is too long)")
        if personal and url.startswith("https://"):
            line += b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" + CRLF
        return line
