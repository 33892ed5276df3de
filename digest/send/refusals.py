"""What an SMTP refusal means for a send: try this reader again later, this reader's
failure, or the session's (the send stops, nobody is marked failed).

A reply's code says temporary or permanent, not whose fault it is. Most refusals of
RCPT or of the message are the reader's; a few are the sender's whatever the reader,
and failing reader after reader for them (until 20 in a row stop the send) would mark a
whole list failed for a setting of the sender's:

- a login required or refused (530, 535), TLS required first, a refused sender (5xx to
  MAIL), a message larger than the server takes (552 to MAIL, 5.3.4);
- at RCPT, 4xx or 5xx: a refusal to relay ("Relay access denied": no login, or a client
  the relay does not trust), and Postfix's refusals of the sender, the client (a DNS
  blocklist too) or its HELO name, which its default ``smtpd_delay_reject = yes`` gives
  at RCPT ("<bounces+…@…>: Sender address rejected: Domain not found"); the same at
  MAIL or DATA. Given at RCPT they may still be one reader's (a restriction class for
  that recipient): the send loop takes them as the session's only for a reader never
  refused so before, in a run that delivered nothing yet (``ambiguous``).

These are read from the reply's own first line: without the addresses it echoes (a
reader named relay-denied@… is still a reader) and without a reply it quotes from the
reader's own server ("… said: 554 5.7.1 Relay access denied"). A refusal of the
message's content, the same for every reader, is told apart in the send loop: the
first readers of a run refused alike at the end of their message, nothing delivered
(``alike_key``, ``loop.SendLoop.message_refused``).
"""

from __future__ import annotations

import re

from .replies import PermanentFailure, SessionRefused, TemporaryFailure, Throttled, reply_text

_AGAIN = "then run the same command again"

LOGIN_HINT = (
    "nobody was marked failed; check the login (DIGEST_SMTP_USERNAME, DIGEST_SMTP_PASSWORD) "
    f"and the sender address the server allows, {_AGAIN}"
)
STARTTLS_HINT = (
    "nobody was marked failed; the server wants TLS first: set DIGEST_SMTP_SECURITY=starttls "
    f"(with DIGEST_SMTP_CAFILE for a private CA), {_AGAIN}"
)
RELAY_HINT = (
    "nobody was marked failed; the server does not pass mail on for this connection: give it "
    "the login it wants (DIGEST_SMTP_USERNAME, DIGEST_SMTP_PASSWORD), or let this machine relay "
    f"(Postfix: mynetworks), {_AGAIN}"
)
TOO_BIG_HINT = (
    "nobody was marked failed; make the issue smaller ('ls -l' of its .eml after 'digest export' "
    f"shows its size) or raise the server's limit (Postfix: message_size_limit), {_AGAIN}"
)
QUOTA_HINT = (
    "nobody was marked failed; the server takes no more mail from this sender for now (a "
    "sending quota or rate, per day or hour): run the same command once it resets (with "
    "--rate below its limit), or raise the quota"
)
# A sending quota or rate used up, in a 5xx (the sender's, whatever the enhanced code says):
# Gmail and Google Workspace "550 5.4.5 Daily user sending quota exceeded" and "Daily SMTP
# relay limit exceeded for user", Office 365 "554 5.2.0 STOREDRV.Submission.Exception:
# SubmissionQuotaExceededException" and "550 5.1.90 … reached your daily limit for message
# recipients", SES "554 Message rejected: Sending suspended for this account", Exim's
# "550 Sender rate exceeds …" (ratelimit with deny), "sending limit exceeded" (hosts).
_MAILBOX = re.compile(rb"[245]\.2\.[0-9]{1,3}\b")  # the reader's mailbox (a full one's daily quota)
_QUOTA = re.compile(
    rb"\bsending (quota|limit)\b|submissionquotaexceeded|\brelay limit\b|\bsending (suspended|paused)\b"
    rb"|\bsender rate\b",
    re.I,
)
# A daily limit: the sender's, unless it is the reader's mailbox's.
_DAILY = re.compile(rb"\bdaily (user |message )?(sending )?(limit|quota)\b", re.I)
# Postfix's refusals of the session, given at RCPT while smtpd_delay_reject = yes (its
# default), else at MAIL (the sender), the greeting (the client) or DATA.
_SENDER_HINT = (
    "nobody was marked failed; the server refuses the envelope sender (bounce_address, or "
    "from, in digest.toml: with bounce_address each message's sender is bounces+<token>@ "
    "its domain, which must resolve and be allowed; Postfix: smtpd_sender_restrictions), "
    f"{_AGAIN}"
)
_CLIENT_HINT = (
    "nobody was marked failed; the server refuses this machine as a client (Postfix: "
    f"smtpd_client_restrictions, mynetworks; a DNS blocklist), {_AGAIN}"
)
_POSTFIX = [
    (re.compile(rb"\bsender address rejected\b", re.I), _SENDER_HINT),
    (re.compile(rb"\bclient host rejected\b|\bclient host \S* blocked using\b", re.I), _CLIENT_HINT),
    (
        re.compile(rb"\bhelo command rejected\b", re.I),
        "nobody was marked failed; the server refuses the name this machine greets it with "
        f"(HELO; Postfix: smtpd_helo_restrictions), {_AGAIN}",
    ),
    (
        re.compile(rb"\bdata command rejected\b", re.I),
        "nobody was marked failed; the server refuses the message's DATA command for this "
        f"connection (Postfix: smtpd_data_restrictions), {_AGAIN}",
    ),
]


def _postfix_hint(words: bytes) -> str | None:
    return next((hint for pattern, hint in _POSTFIX if pattern.search(words)), None)


# A refusal to relay: Postfix "Relay access denied", Exim "relay not permitted", Sendmail
# "Relaying denied", Exchange "Unable to relay", Gmail "Mail relay denied" and "Invalid
# credentials for relay", qmail "not in my list of allowed rcpthosts".
_RELAY_REFUSED = re.compile(
    rb"\brelay(ing)?\b.{0,20}\b(denied|not permitted|refused|prohibited)\b|\bunable to relay\b"
    rb"|\bcredentials for relay\b|\ballowed rcpthosts\b",
    re.I,
)
_ADDRESS = re.compile(rb"\S*@\S*|<[^>]*>")
_QUOTED = re.compile(rb"\bsaid:|\bin reply to\b|\brefused to talk\b|\bverification failed\b", re.I)
# Enhanced codes of the reader's address or mailbox (RFC 3463: X.1.0-X.1.6, X.2.x; X.1.7
# and X.1.8 are the sender's).
_READERS_CODE = re.compile(rb"[245]\.(1\.[0-6]|2\.[0-9]{1,3})\b")
_ENHANCED = re.compile(rb"[245]\.[0-9]{1,3}\.[0-9]{1,3}\b")

# A server limiting how fast this client sends, not refusing a reader: Postfix's anvil
# ("450 4.7.1 Error: too much mail from 127.0.0.1", "too many recipients from"), Exim's
# ratelimit ("451 Sender rate exceeds 100 messages per 1h"), Amazon SES
# ("454 Throttling failure: Maximum sending rate exceeded"), Gmail ("421 4.7.28 … unusual
# rate"), Exchange ("451 4.7.500 Server busy"), and "rate limit" in any wording. A reply with
# the enhanced code of the reader's mailbox (Gmail's "450 4.2.1 … receiving mail at a rate
# that prevents additional messages") is that reader's, as are greylisting and Postfix's
# "Recipient address rejected" (a restriction for that recipient).
_THROTTLED = re.compile(
    rb"\btoo (much mail|many (messages|mails?|e-?mails|recipients)) from\b|\bthrottl"
    rb"|\brate[- ]?limit|\b(sending|sender|message|unusual) rate\b|\brate\b.{0,20}\bexceed"
    rb"|\bserver busy\b|\bslow down\b|\btoo fast\b",
    re.I,
)


def throttling(code: int, message: bytes) -> bool:
    """Whether a 4xx reply says the server takes mail more slowly than it is given."""
    if not 400 <= code < 500 or _READERS_CODE.match(message):
        return False
    words = own_words(message)
    lowered = words.lower()
    return bool(_THROTTLED.search(words)) and b"greylist" not in lowered and b"recipient address" not in lowered


def own_words(message: bytes) -> bytes:
    """The reply's first line, without the addresses it echoes and any reply it quotes."""
    first = message.split(b"\n", 1)[0]
    quoted = _QUOTED.search(first)
    if quoted:
        first = first[: quoted.start()]
    return _ADDRESS.sub(b" ", first)


def _session_hint(code: int, message: bytes, command: str) -> tuple[str | None, bool]:
    """The hint for a reply that refuses the session (None for one about this reader), and
    whether it is ambiguous: given at RCPT, it may still be one reader's."""
    words = own_words(message)
    if command in ("RCPT", "MAIL", "DATA"):  # 4xx or 5xx: waiting would not change it
        hint = _postfix_hint(words)
        if hint is not None:
            return hint, command == "RCPT"
    if command == "RCPT" and not _READERS_CODE.match(message) and _RELAY_REFUSED.search(words):
        return RELAY_HINT, True
    if code < 500:
        return None, False
    if b"starttls" in words.lower():  # 530 5.7.0 Must issue a STARTTLS command first
        return STARTTLS_HINT, False
    if _QUOTA.search(words) or (
        _DAILY.search(words) and not _MAILBOX.match(message) and b"mailbox" not in words.lower()
    ):
        return QUOTA_HINT, False
    if code in (530, 535):  # authentication required / refused, whatever the command
        return LOGIN_HINT, False
    if command == "MAIL":
        # 552 with an enhanced code other than 5.3.4 is a quota, say: refused, not too large.
        if message.startswith(b"5.3.4") or (code == 552 and not _ENHANCED.match(message)):
            return TOO_BIG_HINT, False
        return LOGIN_HINT, False  # the server refuses our sender (or needs a login)
    if command == "the message" and message.startswith(b"5.3.4"):
        return TOO_BIG_HINT, False  # (552 alone there is also one reader's full mailbox, 5.2.2)
    # Any other 5xx to RCPT or to the message concerns that one message: failing the
    # session for it would stop every rerun at the same reader.
    return None, False


def failure_of(code: int, message: bytes, command: str) -> tuple[Exception, bool]:
    """Return the failure a reply means and whether the connection must be dropped.

    A refusal of the session (``_session_hint``) stops the send; otherwise 4xx is
    temporary (421: the server is closing the connection) and 5xx this reader's.
    """
    reply = reply_text(code, message)
    hint, ambiguous = _session_hint(code, message, command)
    if hint is not None:
        refused = f"the server refused the send at {command}: {reply}"
        return SessionRefused(refused, hint=hint, reply=reply, ambiguous=ambiguous), True
    if 400 <= code < 500:
        kind = Throttled if throttling(code, message) else TemporaryFailure
        return kind(reply), code == 421
    return PermanentFailure(reply, command=command), False


def alike_key(reply: str, address: str) -> str | None:
    """What two readers' refusals share when they refuse the same thing (the reply without
    the addresses it names), or None for a refusal of the reader at *address*: one that
    names the address, says "Recipient address rejected" (Postfix) or has an enhanced code
    of the reader's address or mailbox."""
    code, _, text = reply.partition(" ")
    message = text.encode("utf-8", "replace")
    lowered = text.lower()
    if _READERS_CODE.match(message) or address.lower() in lowered or "recipient address rejected" in lowered:
        return None
    # Words with a digit are ids (amavisd "id=12345-01", Gmail's trailing id): left out.
    words = own_words(message).decode("utf-8", "replace").lower().split()
    return f"{code} {' '.join('#' if any(c.isdigit() for c in w) else w for w in words)}"
