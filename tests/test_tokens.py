"""Signed, purpose-bound tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest import tokens

SECRET, SCOPE = "s3cret", "news.example.org"


def test_a_token_holds_for_its_purpose_scope_and_address_only() -> None:
    token = tokens.sign(SECRET, "unsubscribe", SCOPE, "Anna@Example.com")
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", token)
    tokens.verify(SECRET, "unsubscribe", SCOPE, "anna@example.COM", token)  # any spelling
    for secret, purpose, scope, address in [
        ("other", "unsubscribe", SCOPE, "anna@example.com"),
        (SECRET, "confirm", SCOPE, "anna@example.com"),
        (SECRET, "unsubscribe", "other.example.org", "anna@example.com"),
        (SECRET, "unsubscribe", SCOPE, "boris@example.com"),
    ]:
        with pytest.raises(tokens.TokenError, match="signature does not match"):
            tokens.verify(secret, purpose, scope, address, token)


def test_expiry_is_signed_and_checked() -> None:
    token = tokens.sign(SECRET, "confirm", SCOPE, "a@example.org", ttl=3600, now=1_000_000)
    assert tokens.expiry(token) == 1_003_600
    tokens.verify(SECRET, "confirm", SCOPE, "a@example.org", token, now=1_003_600)
    with pytest.raises(tokens.TokenError, match="expired") as raised:
        tokens.verify(SECRET, "confirm", SCOPE, "a@example.org", token, now=1_003_601)
    assert raised.value.expired
    stretched = tokens._base36(2_000_000) + token[token.index(".") :]  # a later expiry, same MAC
    with pytest.raises(tokens.TokenError, match="signature"):
        tokens.verify(SECRET, "confirm", SCOPE, "a@example.org", stretched, now=1_003_601)


@given(st.text(max_size=40))
def test_garbage_never_verifies_and_never_raises_anything_else(garbage: str) -> None:
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, "unsubscribe", SCOPE, "a@example.org", garbage)


def test_links_sent_before_purpose_bound_tokens_stay_valid() -> None:
    legacy = hmac.new(SECRET.encode(), f"{SCOPE}\n".encode() + b"a@example.org", hashlib.sha256).hexdigest()[
        :32
    ]
    tokens.verify(SECRET, "unsubscribe", SCOPE, "A@example.org", legacy)
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, "confirm", SCOPE, "a@example.org", legacy)


def test_no_secret_no_valid_token() -> None:
    with pytest.raises(tokens.TokenError, match="no secret"):
        tokens.verify(
            "", "unsubscribe", SCOPE, "a@example.org", tokens.sign("", "unsubscribe", SCOPE, "a@example.org")
        )
    with pytest.raises(ValueError, match="unknown token purpose"):
        tokens.sign(SECRET, "login", SCOPE, "a@example.org")


def test_a_confirmation_signs_its_issue_time_and_name() -> None:
    token = tokens.sign_confirm(SECRET, SCOPE, "A@example.org", "Anna Ødegaard", now=1_000_000.25)
    assert re.fullmatch(r"c\.[0-9a-z]+\.[A-Za-z0-9_-]{22}", token)
    check = tokens.verify_confirm
    assert check(SECRET, SCOPE, "a@example.org", token, 3600, "Anna Ødegaard", now=1_003_600) == 1_000_000.25
    # The expiry follows the current time to live; the issue time does not move with it.
    with pytest.raises(tokens.TokenError, match="expired") as raised:
        check(SECRET, SCOPE, "a@example.org", token, 3600, "Anna Ødegaard", now=1_003_601)
    assert raised.value.expired
    assert check(SECRET, SCOPE, "a@example.org", token, 7200, "Anna Ødegaard", now=1_003_601) == 1_000_000.25
    later = "c." + tokens._base36(1_500_000_000) + token[token.rindex(".") :]
    for address, name, forged in [
        ("a@example.org", "Mallory", token),  # another name
        ("a@example.org", "", token),
        ("b@example.org", "Anna Ødegaard", token),
        ("a@example.org", "Anna Ødegaard", later),  # a later issue time, same MAC
    ]:
        with pytest.raises(tokens.TokenError, match="signature"):
            check(SECRET, SCOPE, address, forged, 3600, name, now=1_000_001)
    with pytest.raises(tokens.TokenError, match="signature"):
        check("other", SCOPE, "a@example.org", token, 3600, "Anna Ødegaard", now=1_000_001)
    with pytest.raises(tokens.TokenError):  # not an unsubscribe token
        tokens.verify(SECRET, "unsubscribe", SCOPE, "a@example.org", token)


def test_confirmation_tokens_from_before_stay_valid_until_their_expiry_with_no_issue_time() -> None:
    old = tokens.sign(SECRET, "confirm", SCOPE, "a@example.org", ttl=3600, now=1_000_000)
    assert tokens.verify_confirm(SECRET, SCOPE, "a@example.org", old, 60, now=1_003_600) is None
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify_confirm(SECRET, SCOPE, "a@example.org", old, 86400, now=1_003_601)
    with pytest.raises(tokens.TokenError, match="signature"):
        tokens.verify_confirm(SECRET, SCOPE, "a@example.org", old, 3600, "Named", now=1_000_001)


def _reference_unsubscribe(secret: str, scope: str, expires: int, address: str) -> str:
    """The token as the module docstring defines it, written the plain way."""
    mac = hmac.new(secret.encode(), f"unsubscribe\n{scope}\n{expires}\n".encode(), hashlib.sha256)
    mac.update(address.strip().lower().encode())
    prefix = f"{tokens._base36(expires)}." if expires else ""
    return prefix + base64.urlsafe_b64encode(mac.digest()[:16]).decode()[:22]


def _reference_verp(secret: str, scope: str, delivery_id: int, issue: str, address: str) -> str:
    mac = hmac.new(secret.encode(), f"verp\n{scope}\n".encode(), hashlib.sha256)
    mac.update(f"{delivery_id}\n{issue}\n".encode())
    mac.update(address.strip().lower().encode())
    return f"{tokens._base36(delivery_id)}.{base64.b32encode(mac.digest()[:10]).decode().lower()}"


@given(
    st.text(min_size=1, max_size=20),
    st.text(max_size=20),
    st.integers(0, 2**40),
    st.integers(1, 2**40),
    st.text(max_size=40),
)
def test_the_fast_signers_give_the_tokens_of_their_definition(
    secret: str, scope: str, expires: int, delivery_id: int, address: str
) -> None:
    # The send loop signs with one-shot HMACs and its own base32; links already sent
    # and bounces already on their way must still verify.
    assert tokens.signer(secret, "unsubscribe", scope, expires)(address) == _reference_unsubscribe(
        secret, scope, expires, address
    )
    assert tokens.verp_signer(secret, scope)(delivery_id, "2026-11-28", address) == _reference_verp(
        secret, scope, delivery_id, "2026-11-28", address
    )


@given(st.binary(max_size=200), st.binary(max_size=300))
def test_the_precomputed_hmac_is_hmac_sha256(key: bytes, message: bytes) -> None:
    # Keys shorter, as long as and longer than SHA-256's 64-byte block (hashed first).
    mac = tokens.hmac_sha256(key)
    assert mac(message) == hmac.digest(key, message, "sha256")
    assert mac(message + b"x") == hmac.digest(key, message + b"x", "sha256")  # the pads are reused, not used up
