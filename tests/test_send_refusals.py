"""What a refusal means for the send (refusals.failure_of): this reader's, or the session's."""

from __future__ import annotations

import pytest

from digest.send.refusals import QUOTA_HINT, alike_key, failure_of
from digest.send.replies import PermanentFailure, SessionRefused, TemporaryFailure, Throttled


@pytest.mark.parametrize(
    "reply",
    [
        b"5.7.1 <reader@example.com>: Relay access denied",  # Postfix, reject_unauth_destination
        b"relay not permitted",  # Exim
        b"5.7.1 <reader@example.com>... Relaying denied",  # Sendmail
        b"5.7.54 SMTP; Unable to relay recipient in non-accepted domain",  # Exchange
        b"5.7.0 Mail relay denied [192.0.2.1]",  # Gmail's relay service
        b"Relaying prohibited",
        b"sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",  # qmail
        b"5.7.1 Invalid credentials for relay [192.0.2.1]",  # Google Workspace's relay
    ],
)
def test_a_refusal_to_relay_at_rcpt_refuses_the_session(reply: bytes) -> None:
    failure, drop = failure_of(554, reply, "RCPT")
    assert isinstance(failure, SessionRefused) and drop
    assert "DIGEST_SMTP_USERNAME" in failure.hint and "mynetworks" in failure.hint


@pytest.mark.parametrize(
    "reply",
    [
        b"5.1.1 <reader@example.com>: Recipient address rejected: User unknown in relay recipient table",
        b"5.7.1 recipient refused by policy",
        b"5.7.1 <reader@example.com>: Recipient address rejected: Access denied",
        b"5.1.1 The email account that you tried to reach does not exist",
        # Relay words in the reader's own address, or in a reply quoted from the reader's server.
        b"5.1.1 <relay-denied@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
        b"5.7.1 <anna@relay-prohibited.example>: Recipient address rejected: Access denied",
        b"5.1.1 <bob@example.net>: Recipient address rejected: undeliverable address: host "
        b"mx.example.net[192.0.2.7] said: 554 5.7.1 <bob@example.net>: Relay access denied "
        b"(in reply to RCPT TO command)",
        b"Callout verification failed:\n550 relay not permitted",  # Exim
    ],
)
def test_any_other_5xx_at_rcpt_is_the_readers(reply: bytes) -> None:
    failure, drop = failure_of(550, reply, "RCPT")
    assert isinstance(failure, PermanentFailure) and not drop


@pytest.mark.parametrize(
    "reply",
    [
        b"4.1.2 <relay-denied@nosuch.invalid>: Recipient address rejected: Domain not found",
        b"4.1.1 <bob@example.net>: Recipient address rejected: unverified address: host "
        b"relay.ex.io[10.0.0.1] refused to talk to me: 421 busy",
    ],
)
def test_a_4xx_about_one_reader_stays_temporary(reply: bytes) -> None:
    failure, drop = failure_of(450, reply, "RCPT")
    assert isinstance(failure, TemporaryFailure) and not drop


def test_relay_words_in_a_reply_to_the_message_are_that_messages() -> None:
    failure, _ = failure_of(554, b"5.7.1 Relay access denied", "the message")
    assert isinstance(failure, PermanentFailure)


def test_a_4xx_refusal_to_relay_refuses_the_session_too() -> None:
    # Postfix's default (defer_unauth_destination) answers a client that may not relay with
    # 454: deferring reader after reader would not change that.
    failure, drop = failure_of(454, b"4.7.1 <reader@example.com>: Relay access denied", "RCPT")
    assert isinstance(failure, SessionRefused) and drop
    assert "mynetworks" in failure.hint


def test_any_other_4xx_at_rcpt_is_temporary() -> None:
    failure, drop = failure_of(
        450, b"4.2.0 <reader@example.com>: Recipient address rejected: Greylisted", "RCPT"
    )
    assert isinstance(failure, TemporaryFailure) and not drop


@pytest.mark.parametrize("code,command", [(530, "RCPT"), (535, "AUTH"), (550, "MAIL"), (553, "MAIL")])
def test_a_login_required_or_a_refused_sender_refuses_the_session(code: int, command: str) -> None:
    failure, drop = failure_of(code, b"5.7.0 no", command)
    assert isinstance(failure, SessionRefused) and drop
    assert "the sender address the server allows" in failure.hint


@pytest.mark.parametrize(
    "code,reply,command",
    [
        (552, b"5.3.4 Message size exceeds fixed limit", "the message"),  # Postfix, no SIZE declared
        (552, b"5.3.4 Message size exceeds fixed maximum message size", "MAIL"),  # Postfix, SIZE=
        (552, b"Error: message size exceeds fixed maximum message size", "MAIL"),  # aiosmtpd
        (554, b"5.3.4 Message too big for system", "the message"),
    ],
)
def test_a_message_too_large_for_the_server_refuses_the_session(code: int, reply: bytes, command: str) -> None:
    failure, drop = failure_of(code, reply, command)
    assert isinstance(failure, SessionRefused) and drop
    assert "message_size_limit" in failure.hint


def test_a_552_quota_at_mail_stops_the_send_without_the_size_hint() -> None:
    failure, _ = failure_of(552, b"5.2.2 sender over quota", "MAIL")
    assert isinstance(failure, SessionRefused)
    assert "message_size_limit" not in failure.hint


def test_one_readers_size_limit_at_rcpt_is_that_readers() -> None:
    failure, _ = failure_of(552, b"5.3.4 <reader@example.com>: message too large for this mailbox", "RCPT")
    assert isinstance(failure, PermanentFailure)


@pytest.mark.parametrize("code", [552, 554])
def test_a_full_mailbox_at_the_message_is_that_readers(code: int) -> None:
    failure, _ = failure_of(code, b"5.2.2 <reader@example.com>: mailbox full", "the message")
    assert isinstance(failure, PermanentFailure)


# Postfix's smtpd_delay_reject = yes (its default) gives its refusals of the sender, the
# client and the HELO name at RCPT: they are the session's, 4xx or 5xx.
@pytest.mark.parametrize(
    "code,reply,hint",
    [
        (
            554,
            b"5.7.1 <bounces+x@worlddigest.example.org>: Sender address rejected: Access denied",
            "bounce_address",
        ),
        (
            450,
            b"4.1.8 <bounces+x@worlddigest.example.org>: Sender address rejected: Domain not found",
            "resolve",
        ),
        (554, b"5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied", "smtpd_client_restrictions"),
        (554, b"5.7.1 <[127.0.0.1]>: Helo command rejected: Host not found", "smtpd_helo_restrictions"),
        (554, b"5.7.1 Service unavailable; Client host [127.0.0.1] blocked using rbl.test", "blocklist"),
    ],
)
def test_postfixs_delayed_refusals_of_the_session_at_rcpt(code: int, reply: bytes, hint: str) -> None:
    failure, drop = failure_of(code, reply, "RCPT")
    assert isinstance(failure, SessionRefused) and drop
    assert hint in failure.hint and "nobody was marked failed" in failure.hint


def test_a_refusal_of_data_for_the_session() -> None:
    failure, _ = failure_of(554, b"5.5.1 <DATA>: Data command rejected: Multi-recipient bounce", "DATA")
    assert isinstance(failure, SessionRefused) and "smtpd_data_restrictions" in failure.hint


def test_tls_required_first_names_the_security_setting() -> None:
    failure, _ = failure_of(530, b"5.7.0 Must issue a STARTTLS command first", "MAIL")
    assert isinstance(failure, SessionRefused) and "DIGEST_SMTP_SECURITY=starttls" in failure.hint


def test_a_recipient_address_rejected_stays_the_readers() -> None:
    failure, _ = failure_of(
        554, b"5.7.1 <blocked@example.com>: Recipient address rejected: Access denied", "RCPT"
    )
    assert isinstance(failure, PermanentFailure)


def test_refusals_of_the_message_alike_for_different_readers() -> None:
    a = alike_key("550 5.7.1 newsletters are not allowed here", "anna@example.com")
    b = alike_key("550 5.7.1 newsletters are not allowed here", "bob@example.org")
    assert a is not None and a == b


@pytest.mark.parametrize(
    "reply",
    [
        "554 5.7.1 <anna@example.com>: Recipient address rejected: Access denied",  # end-of-data check
        "550 5.7.1 message to anna@example.com refused by policy",  # names the reader
        "552 5.2.2 mailbox full",  # the reader's mailbox
        "550 5.1.1 user unknown",
    ],
)
def test_a_refusal_about_the_reader_is_never_alike(reply: str) -> None:
    assert alike_key(reply, "anna@example.com") is None


@pytest.mark.parametrize("code", [450, 554])
def test_a_sender_refusal_at_mail_names_the_sender(code: int) -> None:
    # smtpd_delay_reject = no: Postfix refuses the sender at MAIL itself, 4xx (its domain not
    # found) or 5xx; either stops the send, with the sender's hint, not the login's.
    failure, _ = failure_of(
        code, b"4.1.8 <bounces+x@worlddigest.example.org>: Sender address rejected: x", "MAIL"
    )
    assert isinstance(failure, SessionRefused) and not failure.ambiguous
    assert "bounce_address" in failure.hint and "DIGEST_SMTP_USERNAME" not in failure.hint


def test_only_refusals_given_at_rcpt_are_ambiguous() -> None:
    at_rcpt, _ = failure_of(554, b"5.7.1 <b@x.org>: Sender address rejected: Access denied", "RCPT")
    relay, _ = failure_of(554, b"5.7.1 <r@x.org>: Relay access denied", "RCPT")
    login, _ = failure_of(530, b"5.7.0 Authentication required", "MAIL")
    assert at_rcpt.ambiguous and relay.ambiguous and not login.ambiguous


@pytest.mark.parametrize(
    "code,reply,command",
    [
        (450, b"4.7.1 Error: too much mail from 127.0.0.1", "MAIL"),  # Postfix's anvil
        (450, b"4.7.1 <r@example.com>: Error: too many recipients from 127.0.0.1", "RCPT"),
        (454, b"Throttling failure: Maximum sending rate exceeded.", "MAIL"),  # Amazon SES
        (454, b"Throttling failure: Daily message quota exceeded.", "MAIL"),
        (421, b"4.7.28 Our system has detected an unusual rate of unsolicited mail", "the message"),
        (451, b"4.7.500 Server busy. Please try again later from [192.0.2.1]", "MAIL"),  # Exchange
        (421, b"4.7.0 Rate limit exceeded, slow down", "MAIL"),
        (450, b"Ratelimit reached for sender, try later", "RCPT"),
        (451, b"4.3.2 Sending rate for this account exceeded", "DATA"),
        (451, b"Sender rate exceeds 100 messages per 1h", "MAIL"),  # Exim's ratelimit
    ],
)
def test_a_4xx_for_the_pace_is_throttled(code: int, reply: bytes, command: str) -> None:
    failure, drop = failure_of(code, reply, command)
    assert isinstance(failure, Throttled), failure
    assert drop == (code == 421)


@pytest.mark.parametrize(
    "code,reply",
    [
        # The reader's mailbox gets too much (Gmail): X.2.1 is the reader's.
        (
            450,
            b"4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
            b"additional messages from being delivered",
        ),
        (451, b"4.7.1 Greylisted, too many messages from a new sender, try again later"),
        (451, b"4.3.0 Local error in processing"),
        (452, b"4.2.2 Mailbox full, quota exceeded"),
        (450, b"4.1.1 <rate-limit@example.com>: Recipient address rejected: try again"),
        (550, b"5.7.1 Daily sending rate exceeded"),  # 5xx: never a pause
        (452, b"Too many messages for this mailbox"),
        (452, b"4.5.3 Too many recipients"),  # per message (digest sends one)
        (450, b"4.7.1 <r@example.com>: Recipient address rejected: rate limit exceeded for this recipient"),
    ],
)
def test_other_replies_are_not_throttled(code: int, reply: bytes) -> None:
    failure, _ = failure_of(code, reply, "RCPT")
    assert not isinstance(failure, Throttled), failure


@pytest.mark.parametrize(
    "code,reply,command",
    [
        (550, b"5.4.5 Daily user sending quota exceeded. https://support.google.com/a/answer/166852", "MAIL"),
        (550, b"5.4.5 Daily sending quota exceeded.", "RCPT"),
        (554, b"5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed", "the message"),
        (550, b"Sending limit exceeded for this account", "DATA"),
        (550, b"5.4.5 Daily SMTP relay limit exceeded for user. https://support.google.com/a", "RCPT"),
        (
            550,
            b"5.1.90 Your message can't be sent because you've reached your daily limit for message recipients",
            "RCPT",
        ),
        (554, b"Message rejected: Sending suspended for this account.", "the message"),
        (550, b"Sender rate exceeds 100 messages per 1h", "RCPT"),  # Exim: ratelimit with deny
    ],
)
def test_a_used_up_sending_quota_refuses_the_session(code: int, reply: bytes, command: str) -> None:
    failure, drop = failure_of(code, reply, command)
    assert isinstance(failure, SessionRefused) and drop and not failure.ambiguous
    assert failure.hint == QUOTA_HINT


@pytest.mark.parametrize(
    "reply",
    [
        b"5.2.2 <r@example.com>: Mailbox quota exceeded",
        b"5.2.2 Mailbox full: daily quota exceeded",
        b"Mailbox has exceeded its daily limit of incoming messages",
    ],
)
def test_a_readers_full_mailbox_is_not_a_sending_quota(reply: bytes) -> None:
    failure, _ = failure_of(552, reply, "RCPT")
    assert isinstance(failure, PermanentFailure)
