"""Each fixture (DSNs of several MTAs, ARF, auto-replies, unrelated and broken mail) classified."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from digest.bounces import journal_resolver
from digest.bounces.classify import Identity, classify, message_key
from digest.bounces.events import score_days
from tests.bounceutil import BOUNCE_ADDRESS, FIXTURES, ISSUE, LIST_ID, SECRET, connect, fixture

# file -> (kind, recipient, issue, status, words of the diagnostic)
EXPECTED = {
    "postfix-hard.eml": ("hard", "gone@example.net", ISSUE, "5.1.1", "User unknown"),
    "postfix-mailbox-full.eml": ("soft", "full@example.net", ISSUE, "4.2.2", "Mailbox full"),
    "exim-hard.eml": ("hard", "nobody@example.com", ISSUE, "5.0.0", "Recipient address rejected"),
    "exim-old.eml": ("hard", "old@example.com", ISSUE, None, "retry timeout exceeded"),
    "exchange-ndr.eml": ("hard", "left@contoso.example", ISSUE, "5.1.10", "RecipientNotFound"),
    "gmail-hard.eml": ("hard", "no.such.user@gmail.example", ISSUE, "5.1.1", "does not exist"),
    "gmail-delayed.eml": ("soft", "slow@gmail.example", ISSUE, "4.7.0", "Try again later"),
    "yahoo.eml": ("hard", "ghost@yahoo.example", ISSUE, "5.0.0", "554 delivery error"),
    "qmail.eml": ("hard", "former@qmail.example", ISSUE, "5.1.1", "no mailbox here"),
    "arf-abuse.eml": ("complaint", "annoyed@mailbox.example", ISSUE, "abuse", "ExampleFBL"),
    # Our List-Id but no VERP token: anyone could have written them, so nobody is named.
    "arf-no-verp.eml": ("unverified", None, None, None, "(it names reader@aol.example)"),
    "dsn-list-id-only.eml": ("unverified", None, None, None, "(it names moved@example.org)"),
    "vacation-rfc3834.eml": ("auto-reply", "away@example.net", ISSUE, None, "Re: Putin"),
    "vacation-outlook.eml": ("auto-reply", "ooo@contoso.example", ISSUE, None, "Automatic reply"),
    "vacation-to-editors.eml": ("not-ours", None, None, None, "auto-reply"),
    "unrelated.eml": ("not-ours", None, None, None, "not a bounce"),
    "unrelated-dsn.eml": ("not-ours", None, None, None, "not ours"),
    "forged-verp.eml": ("not-ours", None, None, None, "not ours"),
    "verp-human-reply.eml": ("unknown", None, None, None, "person"),
    "malformed-truncated-report.eml": ("malformed", None, None, None, "delivery-status part"),
    "malformed-empty.eml": ("malformed", None, None, None, "empty"),
    "malformed-binary.eml": ("malformed", None, None, None, "header"),
    "malformed-bad-status.eml": ("malformed", None, None, None, "Action or Status"),
}


@pytest.fixture
def identity(project):
    conn = connect(project)
    yield conn, Identity(LIST_ID, BOUNCE_ADDRESS, journal_resolver(conn, SECRET, LIST_ID))
    conn.close()


def test_every_fixture_is_listed():
    assert sorted(p.name for p in FIXTURES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classify(identity, name):
    conn, ident = identity
    kind, email, issue, status, words = EXPECTED[name]
    verdict = classify(fixture(conn, name), ident)
    assert verdict.kind == kind, verdict.reason
    if email is None:
        assert verdict.events == ()
        assert words.lower() in verdict.reason.lower()
        return
    assert len(verdict.events) == 1
    event = verdict.events[0]
    assert (event.kind, event.email, event.issue, event.status) == (kind, email, issue, status)
    assert words in event.diagnostic


def test_a_token_for_another_delivery_or_secret_is_not_ours(identity):
    conn, ident = identity
    raw = fixture(conn, "postfix-hard.eml")
    other = Identity(LIST_ID, BOUNCE_ADDRESS, journal_resolver(conn, "another secret", LIST_ID))
    # Without a valid token the report is seen by its List-Id, but speaks for no one.
    verdict = classify(raw, other)
    assert verdict.kind == "unverified" and verdict.events == () and not verdict.ours
    assert "(it names gone@example.net)" in verdict.reason
    no_list = raw.replace(b"List-Id: The World Digest <world-digest.worlddigest.example.org>\n", b"")
    assert classify(no_list, other).kind == "not-ours"


def test_without_bounce_address_nothing_is_verified(identity):
    conn, _ = identity
    plain = Identity(LIST_ID)
    assert classify(fixture(conn, "vacation-rfc3834.eml"), plain).kind == "not-ours"
    assert classify(fixture(conn, "dsn-list-id-only.eml"), plain).kind == "unverified"
    assert classify(fixture(conn, "postfix-hard.eml"), plain).kind == "unverified"


def test_message_key_ignores_header_changes_but_not_the_body():
    a = b"Message-ID: <x@y>\nSubject: s\n\nbody\n"
    b = b"Status: RO\nMessage-ID: <x@y>\nSubject: s\n\nbody\n"
    assert message_key(a, "<x@y>") == message_key(b, "<x@y>")
    assert message_key(a, "<x@y>") != message_key(a.replace(b"body", b"other"), "<x@y>")
    assert message_key(a, "<x@y>") != message_key(a, "<z@y>")


def test_soft_score_is_half_a_point_a_day_and_resets_after_a_quiet_week():
    day = dt.date(2022, 1, 1)
    assert score_days([day, day, day]) == 0.5
    assert score_days([day + dt.timedelta(days=n) for n in range(6)]) == 3.0
    assert score_days([day, day + dt.timedelta(days=1), day + dt.timedelta(days=9)]) == 0.5


def test_verp_tokens_are_short_signed_and_case_insensitive():
    from digest.tokens import verp_address, verp_delivery, verp_is_valid, verp_token

    token = verp_token(SECRET, LIST_ID, 123_456_789, ISSUE, "Reader@Example.org")
    address = verp_address(BOUNCE_ADDRESS, token)
    assert len(address.split("@")[0]) <= 64 and re.fullmatch(r"[0-9a-z.]+", token)
    assert verp_delivery(token.upper()) == 123_456_789
    assert verp_is_valid(SECRET, LIST_ID, token.upper(), ISSUE, "reader@example.org")
    assert not verp_is_valid(SECRET, LIST_ID, token, "2022-01-01", "reader@example.org")
    assert not verp_is_valid(SECRET, LIST_ID, token, ISSUE, "other@example.org")
    assert not verp_is_valid("another secret", LIST_ID, token, ISSUE, "reader@example.org")
    assert not verp_is_valid(SECRET, "other.list", token, ISSUE, "reader@example.org")
    forged = token[:-1] + ("a" if token[-1] != "a" else "b")
    assert not verp_is_valid(SECRET, LIST_ID, forged, ISSUE, "reader@example.org")
    assert verp_delivery("not-a-token") is None and verp_delivery("1.short") is None
