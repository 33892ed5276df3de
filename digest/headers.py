"""Message headers, built by the standard library's email.headerregistry and email.policy.

Display names become RFC 2047 encoded words with the address outside them;
lines fold at 78 octets where possible and never exceed 998. Every folded
header is parsed back and compared with the value it carries: text that the
policy alone would not give back (an ASCII value that looks like an encoded
word, ``=?...?=``, or "=?" beside encoded words) is encoded whole, so a reader
always sees exactly the value.
"""

from __future__ import annotations

import email.errors
import email.policy
import re
from email.header import Header, decode_header, make_header
from email.headerregistry import Address
from email.utils import formataddr
from functools import lru_cache

import idna

CRLF = "\r\n"
# SMTP line ends, no 8-bit headers, fold at 78.
POLICY = email.policy.SMTP.clone(max_line_length=78)
_READ = email.policy.default
# A display name of words that need neither quoting nor encoding (RFC 5322 atext and spaces).
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


# Bidi embedding, override and isolate controls: a name holding one could reorder what
# a mail client shows beside it (the address).
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
# What folds into one ASCII space: ASCII white space (CR, LF, TAB, ...), the other control
# characters (C0, DEL, C1: a list's stray NUL or ESC) and the line and paragraph separators.
_BREAKS = re.compile("[\x00-\x20\x7f-\x9f\u2028\u2029]+")


def clean_value(value: str | None) -> str:
    """Fold CR, LF, TAB, runs of ASCII spaces and control characters into single spaces and
    drop bidi controls, so a value cannot break a header or a line, nor reorder its neighbours.

    Other Unicode spaces stay as written: a no-break space (« mot »), a narrow one, an
    ideographic space in a Japanese name (headers encode them; the text part keeps them).
    """
    return _BREAKS.sub(" ", _BIDI_CONTROLS.sub("", str(value or ""))).strip(" ")


def unstructured_header(name: str, value: str) -> bytes:
    """Return ``Name: value`` folded and encoded (Subject, List-Id, ...), CRLF-ended."""
    value = clean_value(value)
    folded = _folded(name, value)
    if (
        folded is None
        or str(_parse(name, folded)) != value
        or _glued(folded)
        or _longest(folded) > 78
        or _could_be_misread(value)
        # CPython can glue an encoded word to the text beside it (". =?utf-8?q?=C2=A0?=."),
        # which RFC 2047 does not allow and other decoders leave undecoded.
        or _rfc2047_text(folded) != value
    ):
        folded = _encoded_whole(name, value, "").encode("ascii")
    return _verified(name, folded, lambda h: str(h) == value and _rfc2047_text(folded) == value)


_ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def _glued(folded: bytes) -> bool:
    """Whether an encoded word touches anything but white space (RFC 2047 5(1): it must be
    separated from text beside it; email.header lets '(' or ')' touch it, stricter
    decoders then show it raw: "Tokyo =?utf-8?b?44CA?=(update)")."""
    value = folded.split(b":", 1)[1]
    for m in _ENCODED_WORD.finditer(value):
        before, after = value[m.start() - 1 : m.start()], value[m.end() : m.end() + 1]
        if before not in (b" ", b"\t", b"\n") or after not in (b"", b" ", b"\t", b"\r"):
            return True
    return False


def _could_be_misread(value: str) -> bool:
    """Whether text that looks like part of an encoded word ("=?") would be left raw where a
    decoder could take it for one: beside the encoded words of a non-ASCII value
    ("Tip: =?utf-8?b? is how ... =?utf-8?b?4oCT?=": a decoder runs from the first "=?" to the
    last "?="), or anywhere a lenient decoder (email.header's) reads it otherwise."""
    if "=?" not in value:
        return False
    return not value.isascii() or _rfc2047_text(value.encode("ascii")) != value


def _rfc2047_text(folded: bytes) -> str | None:
    """Return unstructured text as a lenient RFC 2047 decoder (email.header) reads it, the
    folds unfolded (None if it does not decode)."""
    text = folded.decode("ascii")
    if text.endswith(CRLF) and ":" in text:
        text = text.split(":", 1)[1].removesuffix(CRLF).replace(CRLF, "").lstrip(" ")
    try:
        return str(make_header(decode_header(text)))
    except (email.errors.MessageError, UnicodeError, LookupError, ValueError):
        return None


def list_id_header(description: str, list_id: str) -> bytes:
    """Return the List-Id header: the description as a phrase, then ``<list-id>`` (RFC 2919).

    The description is a phrase, as a display name is: written as address_header writes
    one (atoms as they are, quoted where it holds a special such as ``,`` or ``"``,
    encoded words where it is not ASCII), so ``"Brief, Morning" <brief.example.org>``
    is never read as the list ``Brief``.
    """
    description = clean_value(description)
    tail = f"<{clean_value(list_id).strip('<>')}>"
    if not description:
        return _verified("List-Id", f"List-Id: {tail}{CRLF}".encode("ascii"), lambda h: str(h) == tail)
    # Written as an address header (Reply-To: one octet longer than List-Id, so no line
    # grows) with a stand-in address as long as the list id, which then takes its place.
    stand_in = _stand_in(tail)
    written = address_header("Reply-To", description, stand_in)
    head, found, rest = written.removeprefix(b"Reply-To:").rpartition(f"<{stand_in}>".encode("ascii"))
    if not found or rest != CRLF.encode():
        raise ValueError(f"cannot write the List-Id header: {written[:80]!r}")
    folded = b"List-Id:" + head + tail.encode("ascii") + rest
    return _verified("List-Id", folded, lambda h: _list_description(folded, tail) == description)


def _stand_in(tail: str) -> str:
    """An address as long as the List-Id's ``<list-id>`` tail, that a From header can carry."""
    return "x@" + "x" * max(len(tail) - 4, 1)


def _list_description(folded: bytes, tail: str) -> str | None:
    """Return the description of a List-Id header as a phrase reads (RFC 2919, RFC 2047 6.2):
    the header read as a From header whose address is the list id's stand-in."""
    value = folded.decode("ascii").split(":", 1)[1]
    if not value.rstrip().endswith(tail):
        return None
    stand_in = _stand_in(tail)
    as_from = f"From:{value.rstrip().removesuffix(tail)}<{stand_in}>{CRLF}".encode("ascii")
    parsed = _parse("From", as_from)
    if (
        parsed is None
        or parsed.defects
        or len(parsed.addresses) != 1
        or parsed.addresses[0].addr_spec != stand_in
    ):
        return None
    return _display_name(parsed.addresses[0], as_from, stand_in)


def address_header(name: str, display: str | None, addr_spec: str) -> bytes:
    """Return ``Name: display <address>``: the display name encoded, the address never."""
    display = clean_value(display)
    addr_spec = ascii_address(addr_spec, utf8_local=True)
    if not addr_spec.isascii():
        # RFC 6532: a UTF-8 local part is written as is (the message goes with SMTPUTF8);
        # the display name is still encoded, so fold with an ASCII stand-in and swap it in.
        domain = addr_spec.rpartition("@")[2]
        stand_in = f"x@{domain}".encode("ascii")
        head, _, tail = address_header(name, display, stand_in.decode()).rpartition(stand_in)
        return head + addr_spec.encode("utf-8") + tail
    if not display:
        return f"{name}: {addr_spec}{CRLF}".encode("ascii")
    if len(display) + len(addr_spec) < 60 and "=?" not in display and _PLAIN_PHRASE.fullmatch(display):
        return f"{name}: {display} <{addr_spec}>{CRLF}".encode("ascii")  # the common case
    if (
        display.isascii()
        and display.isprintable()
        and "=?" not in display
        and len(display) + len(addr_spec) < 60
    ):
        return f"{name}: {formataddr((display, addr_spec))}{CRLF}".encode("ascii")
    return _address_header(name, display, addr_spec)


def ascii_address(addr_spec: str, utf8_local: bool = False) -> str:
    """Return the address with an internationalised domain in its ASCII (IDNA) form.

    A non-ASCII local part cannot be written in a 7-bit header (it needs SMTPUTF8):
    it is an error unless *utf8_local* allows it.
    """
    addr_spec = addr_spec.strip()
    if addr_spec.isascii():
        return addr_spec
    local, _, domain = addr_spec.rpartition("@")
    if not local.isascii() and not utf8_local:
        raise ValueError(f"the address {addr_spec!r} has a non-ASCII local part (needs SMTPUTF8)")
    try:
        return f"{local}@{ascii_domain(domain)}"
    except ValueError as e:
        raise ValueError(f"the domain of {addr_spec!r} cannot be written in ASCII") from e


def ascii_domain(domain: str) -> str:
    """Return a domain in its ASCII form: IDNA 2008 with UTS #46 mapping, as email-validator
    gives an address's domain for the envelope (Python's own 'idna' codec is IDNA 2003,
    which maps 'straße.de' to another domain, 'strasse.de'). Raise ValueError."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except UnicodeError as e:  # idna.IDNAError included
        raise ValueError(f"the domain {domain!r} cannot be written in ASCII: {e}") from e


@lru_cache(maxsize=4096)
def _address_header(name: str, display: str, addr_spec: str) -> bytes:
    folded = _folded(name, Address(display_name=display, addr_spec=addr_spec))

    def same(h, folded: bytes) -> bool:
        found = h.addresses
        return (
            len(found) == 1
            and found[0].addr_spec == addr_spec
            and _display_name(found[0], folded, addr_spec) == display
        )

    # CPython folds a long name with a special in it ("Prof. Dr. med. …") without its
    # quotes, which reads back with a defect: encoded words hold it faithfully.
    parsed = _parse(name, folded) if folded is not None else None
    if parsed is None or parsed.defects or not same(parsed, folded) or _longest(folded) > 78:
        folded = _encoded_whole(name, display, f"<{addr_spec}>").encode("ascii")
    return _verified(name, folded, lambda h: same(h, folded))


def _display_name(found: Address, folded: bytes, addr_spec: str) -> str | None:
    """Return the display name as RFC 2047 (6.2) reads it (None if it does not decode).

    CPython's address parser keeps the folding space between two encoded words
    of a display name; RFC 2047 says to ignore it, as mail clients do.
    """
    value = folded.decode("ascii").split(":", 1)[1].replace(CRLF, "")
    phrase = value.rpartition(f"<{addr_spec}>")[0].strip()
    if "=?" not in phrase or phrase.startswith('"'):
        return found.display_name
    try:
        return str(make_header(decode_header(phrase)))
    except (email.errors.MessageError, UnicodeError, LookupError):  # "=?utf-8?b? é": not what it says
        return None


def mailbox_header(name: str, value: str) -> bytes:
    """Return an address header from ``Name <address>`` text as digest.toml holds it."""
    display, addr_spec = parse_mailbox(value) or ("", value)
    return address_header(name, display, addr_spec)


def parse_mailbox(text: str) -> tuple[str, str] | None:
    """Return (display name, address) of one mailbox such as ``"Brief, Morning" <a@b.org>``.

    Return None if the text is not exactly one valid mailbox.
    """
    try:
        header = _READ.header_factory("From", clean_value(text))
        addresses = header.addresses
    except (ValueError, IndexError, TypeError):
        return None
    except AttributeError:  # CPython's parser on an obsolete phrase (".NET Weekly <…>")
        return _parse_mailbox_plainly(clean_value(text))
    if header.defects or len(addresses) != 1 or not addresses[0].domain:
        return None
    return addresses[0].display_name, addresses[0].addr_spec


def _parse_mailbox_plainly(text: str) -> tuple[str, str] | None:
    """``display <address>`` read without the header parser: the address checked on its own."""
    display, _, rest = text.rpartition("<")
    if not rest.endswith(">") or "<" in display or ">" in display:
        return None
    found = parse_mailbox(rest[:-1])
    if found is None or found[0]:
        return None
    display = display.strip()
    if len(display) > 1 and display[0] == display[-1] == '"':
        display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return display, found[1]


def _encoded_whole(name: str, text: str, tail: str) -> str:
    """Encode all of *text* as RFC 2047 words, then *tail* (an address) unencoded."""
    words = Header(text, "utf-8", header_name=name).encode(linesep=CRLF)
    last = words.rsplit(CRLF, 1)[-1]
    if CRLF not in words:
        last = f"{name}: {last}"  # the first line holds the header's name too
    if tail:
        joiner = f"{CRLF} " if len(last) + len(tail) + 1 > 78 else " "
        words = f"{words}{joiner}{tail}"
    return f"{name}: {words}{CRLF}"


def _longest(folded: bytes) -> int:
    return max(map(len, folded.split(b"\r\n")))


def _folded(name: str, value: object) -> bytes | None:
    """CPython's own fold of *value* (text or an Address), or None where it cannot: it
    decodes text that looks like an encoded word ("=?UTF-8?Q?J=C3?=", cut short) and then
    fails to encode what it made of it."""
    try:
        return POLICY.fold_binary(name, POLICY.header_factory(name, value))
    except (UnicodeError, email.errors.MessageError):
        return None
    except (AttributeError, TypeError, IndexError):  # CPython's folder on some obsolete
        return None  # phrases (".NET Weekly: …", a leading '.'): encoded words hold them


def _parse(name: str, folded: bytes):
    """Parse a folded header back as a mail reader would (``email.policy``'s
    header_source_parse): the blanks after the colon go, the CRLFs of the folds go, and
    the blanks after them stay. A fold that leaves the first line empty ("List-Id:" and
    the value on the next) so reads back with a space in front. None where CPython's
    parser itself fails on it (AttributeError on some obsolete phrases)."""
    first, *more = folded.decode("ascii").removesuffix(CRLF).split(CRLF)
    value = first.split(":", 1)[1].lstrip(" \t") + "".join(more)
    try:
        return _READ.header_factory(name, value)
    except (AttributeError, TypeError, IndexError):
        return None


def _verified(name: str, folded: bytes, same) -> bytes:
    parsed = _parse(name, folded)
    if parsed is None or parsed.defects or not same(parsed) or _longest(folded) > 998:
        raise ValueError(f"cannot encode the {name} header faithfully: {folded[:80]!r}")
    return folded
