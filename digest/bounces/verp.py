"""VERP addresses: ``bounces+<token>@domain``, the token naming one delivery, signed.

The token is the delivery's id in the send journal (base 36) and an 80-bit HMAC of
the id, the issue and the recipient, so an address cannot be forged or reused for
another delivery, and the local part stays short (RFC 5321: at most 64 octets).
Only lower-case letters and digits: some MTAs lower-case local parts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3

from .classify import Resolver

PURPOSE = b"digest verp v1"
MAC_BYTES = 10  # 16 base32 characters
MAX_LOCAL_PART = 64
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _mac(secret: str, delivery_id: int, issue: str, email: str) -> str:
    data = f"{delivery_id}\n{issue}\n{email.strip().lower()}".encode()
    key = hmac.new(secret.encode(), PURPOSE, hashlib.sha256).digest()
    tag = hmac.new(key, data, hashlib.sha256).digest()[:MAC_BYTES]
    return base64.b32encode(tag).decode().lower().rstrip("=")


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if not n:
            return out


def verp_token(secret: str, delivery_id: int, issue: str, email: str) -> str:
    """Return the token of one delivery: ``<id base 36>.<mac>``."""
    return f"{_base36(delivery_id)}.{_mac(secret, delivery_id, issue, email)}"


def verp_address(bounce_address: str, token: str) -> str:
    """Return ``local+token@domain`` for ``local@domain``."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{token}@{domain}"


def parse_verp_token(token: str) -> tuple[int, str] | None:
    """Return (delivery id, mac) of a well-formed token, else None."""
    head, dot, mac = token.lower().partition(".")
    if not dot or not head or len(head) > 12 or len(mac) != 16:
        return None
    try:
        return int(head, 36), mac
    except ValueError:
        return None


def check_verp_token(secret: str, token: str, issue: str, email: str) -> bool:
    """Return whether *token* is the signed token of this delivery."""
    parsed = parse_verp_token(token)
    return parsed is not None and hmac.compare_digest(
        parsed[1], _mac(secret, parsed[0], issue, email))


def journal_resolver(conn: sqlite3.Connection, secret: str) -> Resolver:
    """Resolve tokens through the send journal: the delivery's (issue, recipient) if signed."""

    def resolve(token: str) -> tuple[str, str] | None:
        parsed = parse_verp_token(token)
        if parsed is None:
            return None
        row = conn.execute("SELECT issue, email FROM deliveries WHERE id = ?",
                           (parsed[0],)).fetchone()
        if row is None or not check_verp_token(secret, token, row[0], row[1]):
            return None
        return row[0], row[1]

    return resolve
