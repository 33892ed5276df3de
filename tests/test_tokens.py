"""Signed, purpose-bound tokens."""

from __future__ import annotations

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
