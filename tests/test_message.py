from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from html import escape
from pathlib import Path

import pytest

from digest.config import load_project
from digest.issue import load_issue
from digest.message import MessageTemplate, Recipient, clean_value, verify_unsubscribe_token
from digest.render import render_issue

from .conftest import EXAMPLE, write

NAMES = [
    "Ada Lovelace",
    "Zoë Ørsted-Łukasiewicz",
    "A = B <c@d> & \"quotes\" 'too'",
    "Evil\r\nBcc: victim@example.com",
    "=?utf-8?q?encoded?= =3D=3D",
    "",
    "Ж" * 120,
]


@pytest.fixture
def greeting_project(project: Path) -> Path:
    write(
        project / "templates" / "email.html",
        """
        {% extends "!default/email.html" %}
        {% block header %}<tr><td class="masthead">Dear {{ recipient.get("name", "reader") }},
        your plan: {{ recipient.plan }}</td></tr>{% endblock %}
    """,
    )
    write(
        project / "templates" / "email.txt",
        """
        {% extends "!default/email.txt" %}
        {% block header %}Dear {{ recipient.get("name", "reader") }} ({{ recipient.plan }}),
        {% endblock %}
    """,
    )
    return project


def _template(secret: str = "k") -> MessageTemplate:
    project = load_project()
    return MessageTemplate(render_issue(project, load_issue(project, EXAMPLE), personal=True), secret=secret)


def _reference(template: MessageTemplate, recipient: Recipient) -> EmailMessage:
    """Build the same message the slow way: one EmailMessage per recipient."""
    rendered = template.rendered
    unsub = template.unsubscribe_url(recipient.email)

    def value(index: int) -> str:
        slot = template.slots[index]
        if slot.field == "unsubscribe_url":
            return unsub
        if slot.field == "email":
            return recipient.email
        return clean_value(recipient.fields.get(slot.field)) or slot.default

    msg = EmailMessage()
    msg["Subject"] = template.subject
    token_re = rendered.placeholders.pattern
    msg.set_content(token_re.sub(lambda m: value(int(m.group(1))), rendered.text))
    msg.add_alternative(token_re.sub(lambda m: escape(value(int(m.group(1)))), rendered.html), subtype="html")
    # As sent: the SMTP policy (CRLF line ends), like our messages.
    wire = msg.as_bytes(policy=email.policy.SMTP)
    return email.message_from_bytes(wire, policy=email.policy.default)


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


@pytest.mark.parametrize("name", NAMES)
def test_substitution_equals_a_per_recipient_email_message(greeting_project, name) -> None:
    template = _template()
    recipient = Recipient("reader+tag@example.com", {"name": name, "plan": "a=b&c<d"})
    raw = template.personalise(recipient)
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")
    ours = email.message_from_bytes(raw, policy=email.policy.default)
    ref = _reference(template, recipient)
    for kind in ("plain", "html"):
        # Line ends aside (the reference picks base64 for some values, which keeps LF).
        assert _lf(ours.get_body((kind,)).get_content()) == _lf(ref.get_body((kind,)).get_content())
    text = ours.get_body(("plain",)).get_content()
    expected_name = clean_value(name) or "reader"
    assert f"Dear {expected_name} (a=b&c<d)," in text
    assert f"Dear {escape(expected_name)}," in ours.get_body(("html",)).get_content()
    # No header injection: the CR/LF in a name never starts a header.
    assert ours["Bcc"] is None
    assert ours["To"].addresses[0].addr_spec == "reader+tag@example.com"
    # Python's parser puts a space between adjacent encoded words, which RFC 2047
    # (section 6.2) says to drop; compare without white space for the long name.
    shown = ours["To"].addresses[0].display_name
    assert shown.replace(" ", "") == clean_value(name).replace(" ", "")


def test_headers_of_a_personal_message(project: Path) -> None:
    template = _template(secret="s3cret")
    raw = template.personalise(Recipient("Ann@Example.com", {"name": "Ann"}))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    unsub = msg["List-Unsubscribe"]
    assert "=?" not in unsub
    https, mailto = [u.strip(" <>") for u in unsub.split(",")]
    assert https.startswith("https://worlddigest.example.org/unsubscribe?email=Ann@Example.com&token=")
    assert mailto == "mailto:unsubscribe@worlddigest.example.org?subject=unsubscribe"
    token = https.rsplit("=", 1)[1]
    assert verify_unsubscribe_token("s3cret", "world-digest.worlddigest.example.org", "ann@example.com", token)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] == "The World Digest <world-digest.worlddigest.example.org>"
    assert https in msg.get_body(("plain",)).get_content()
    assert https.replace("&", "&amp;") in msg.get_body(("html",)).get_content()


def test_message_id_is_stable_per_issue_and_recipient(project: Path) -> None:
    a, b = _template(), _template()
    assert a.message_id("x@example.com") == b.message_id("X@example.com")
    assert a.message_id("x@example.com") != a.message_id("y@example.com")


def test_message_id_is_keyed_with_the_secret(project: Path) -> None:
    """Only the secret's holder can work out a reader's Message-ID (a server's log tells
    our copies by it: send/serverlog.py); without a secret, a plain hash."""
    import hashlib

    keyed, other = _template("k"), _template("another secret")
    mid = keyed.message_id("x@example.com")
    assert mid != other.message_id("x@example.com")
    local, domain = mid.strip("<>").split("@")
    assert len(local) == 32 and int(local, 16) >= 0 and domain == keyed._domain
    key = f"{keyed._issue_key}\nx@example.com\n{keyed.subject}".encode()
    assert local != hashlib.sha256(key).hexdigest()[:32]
    project = load_project()
    plain = MessageTemplate(render_issue(project, load_issue(project, EXAMPLE)))
    unkeyed = hashlib.sha256(key.replace(b"x@example.com", b"")).hexdigest()[:32]
    assert plain.message_id(None) == f"<{unkeyed}@{keyed._domain}>"


def test_long_list_unsubscribe_is_folded_between_uris_only(project: Path) -> None:
    template = _template()
    raw = template.personalise(Recipient("a" * 60 + "@" + "b" * 60 + ".example.com"))
    header = raw.split(b"List-Unsubscribe: ", 1)[1].split(b"\r\nList-Unsubscribe-Post")[0]
    lines = header.split(b"\r\n")
    assert len(lines) == 2 and lines[1].startswith(b" <mailto:")
    assert b"=?" not in header


def test_non_ascii_subject_is_encoded(project: Path) -> None:
    issue_toml = project / "issues" / EXAMPLE / "issue.toml"
    issue_toml.write_text(
        issue_toml.read_text().replace(
            'subject = "Putin and Biden talk again: what was said"',
            'subject = "Путин и Байден — a long subject that needs folding at some point, surely"',
        ),
        encoding="utf-8",
    )
    raw = _template().personalise(None)
    assert b"Subject: =?utf-8?" in raw
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"].startswith("Путин и Байден — a long subject")


@pytest.mark.parametrize("name", [".Dot at the start", "..two", "a.b", "x" * 80 + ".y"])
def test_wire_form_is_the_message_dot_stuffed(greeting_project, name) -> None:
    """SMTP DATA is built from segments stuffed once; it must equal stuffing the whole."""
    template = _template()
    template.date = "Fri, 31 Dec 2021 12:00:00 +0000"  # both forms in the same second
    recipient = Recipient("reader@example.com", {"name": name, "plan": ".starts with a dot"})
    plain = template.personalise(recipient)
    wire = template.personalise(recipient, wire=True)
    stuffed = plain.replace(b"\r\n.", b"\r\n..")
    assert wire == (b"." + stuffed if stuffed.startswith(b".") else stuffed) + b".\r\n"


def test_an_address_that_would_make_list_unsubscribe_too_long_is_refused(project: Path) -> None:
    # A local part of 64 octets is valid and percent-encodes to 3 characters an octet.
    template = _template()
    ok = Recipient("a" * 60 + "@example.org")
    assert max(len(line) for line in template.personalise(ok).split(b"\r\n")) <= 998
    long_domain = ".".join(["d" * 60] * 3) + ".example.org"
    too_long = Recipient("é" * 30 + "@" + long_domain)
    object.__setattr__(template.newsletter, "unsubscribe_url", "https://example.org/u?" + "x" * 600)
    with pytest.raises(ValueError, match="List-Unsubscribe header would be over 998 octets"):
        template.pieces(too_long, wire=True)


def test_a_mailto_unsubscribe_with_uri_characters_in_its_local_part_is_percent_encoded(project: Path) -> None:
    template = _template()
    object.__setattr__(template.newsletter, "unsubscribe_mailto", "un?sub#scribe%&x@example.org")
    message = email.message_from_bytes(
        template.personalise(Recipient("a@example.org")), policy=email.policy.strict
    )
    assert "<mailto:un%3Fsub%23scribe%25%26x@example.org?subject=unsubscribe>" in message["List-Unsubscribe"]


def test_merge_fields_keep_unicode_spaces_and_lose_bidi_controls(greeting_project) -> None:
    template = _template()
    recipient = Recipient("reader@example.com", {"name": "山田\u3000太郎\u202e", "plan": "«\u00a0Pro\u00a0»"})
    msg = email.message_from_bytes(template.personalise(recipient), policy=email.policy.strict)
    assert "Dear 山田\u3000太郎 («\u00a0Pro\u00a0»)," in msg.get_body(("plain",)).get_content()
    assert "Dear 山田\u3000太郎," in msg.get_body(("html",)).get_content()
    assert msg["To"].addresses[0].display_name == "山田\u3000太郎"


def test_every_header_line_is_within_78_octets(project: Path) -> None:
    # The common copy: a reader's List-Unsubscribe link, one URI, cannot fold.
    template = _template()
    raw = template.personalise()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78, head
    assert b"Content-Type: multipart/alternative;\r\n boundary=" in head
    msg = email.message_from_bytes(raw, policy=email.policy.strict)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_boundary() == template.boundary
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    # Each part's headers too.
    for part in raw.split(f"--{template.boundary}".encode())[1:-1]:
        part_head = part.split(b"\r\n\r\n", 1)[0]
        assert max(len(line) for line in part_head.split(b"\r\n")) <= 78
