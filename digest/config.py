"""The newsletter's identity from digest.toml, and the project folder (settings.py: .env)."""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, DigestError, raise_all
from .headers import ascii_address, clean_value, parse_mailbox
from .language import is_language_tag, language_direction, suggested_tag
from .links import ascii_url, is_http_url, site_of
from .settings import Settings, load_settings

CONFIG_NAME = "digest.toml"
MAX_UNSUBSCRIBE_URL = 600  # leaves a List-Unsubscribe line room for a long address and its token
STATE_DIR = ".digest"

_REQUIRED = ("name", "from", "disclaimer", "unsubscribe_url", "list_id")
_OPTIONAL = (
    "reply_to",
    "base_url",
    "unsubscribe_mailto",
    "language",
    "direction",
    "recent_issues",
    "bounce_address",
    "bounce_threshold",
)
_TOML_LINE = re.compile(r"at line (\d+)")
# Values that reach a header, the envelope or the text part: no control character (a bare
# CR, a NUL, an escape code: they break a line or a header) nor bidi embedding, override or
# isolate control (they reorder what is shown beside them; headers would drop them).
_SHOWN_KEYS = (
    "name",
    "from",
    "reply_to",
    "disclaimer",
    "list_id",
    "unsubscribe_url",
    "unsubscribe_mailto",
    "base_url",
    "bounce_address",
)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_DISCLAIMER_SPACE = "\t\n\r"  # a multi-line TOML string: its line breaks fold into spaces
# RFC 2919: list-label "." namespace, dot-atom text (ASCII).
_LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+")


@dataclass(frozen=True)
class Newsletter:
    """The newsletter's identity, as written in digest.toml."""

    name: str
    sender: str
    disclaimer: str
    unsubscribe_url: str
    list_id: str
    reply_to: str | None = None
    base_url: str | None = None
    unsubscribe_mailto: str | None = None
    language: str = "en"
    recent_issues: int = 5
    direction: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict)  # site -> source name ([sources])
    bounce_address: str | None = None  # VERP envelope senders: local+token@domain
    bounce_threshold: float = 3.0  # soft-bounce score that marks a subscriber bounced

    @property
    def text_direction(self) -> str:
        """Return "rtl" or "ltr": `direction` as written, else from the language."""
        if self.direction:
            return self.direction
        return language_direction(self.language)

    def source_for(self, url: str | None) -> str | None:
        """Return the source name [sources] gives the site of *url* (www. or not), if any."""
        host = site_of(url or "")
        if not host:
            return None
        return (
            self.sources.get(host)
            or self.sources.get(host.removeprefix("www."))
            or (self.sources.get(f"www.{host}"))
        )

    @property
    def sender_domain(self) -> str:
        """Return the domain of the From address (for Message-IDs)."""
        mailbox = parse_mailbox(self.sender)
        domain = mailbox[1].rpartition("@")[2] if mailbox else ""
        try:  # an internationalised domain in its ASCII form: a Message-ID is 7-bit
            return ascii_address(f"x@{domain}").rpartition("@")[2] if domain else "localhost"
        except ValueError:
            return "localhost"


@dataclass(frozen=True)
class Project:
    """A newsletter project folder: digest.toml, issues/, templates/, local state."""

    root: Path
    newsletter: Newsletter

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def issues_dir(self) -> Path:
        return self.root / "issues"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    def settings(self, environ: Mapping[str, str] | None = None) -> Settings:
        """Read machine settings from .env, overridden by the environment."""
        return load_settings(self.root / ".env", os.environ if environ is None else environ)


def find_project_root(start: Path | None = None) -> Path:
    """Walk up from *start* to the first folder holding digest.toml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise ConfigError(
        f"no {CONFIG_NAME} in {here} or any folder above it",
        hint="run digest inside a newsletter project, pass --project DIR, or create one with 'digest init'",
    )


def load_project(project_dir: Path | None = None) -> Project:
    """Find the project (or use *project_dir*) and read its digest.toml."""
    if project_dir is not None:
        root = Path(project_dir).resolve()
        if not (root / CONFIG_NAME).is_file():
            raise ConfigError(
                f"no {CONFIG_NAME} here",
                path=root,
                hint="point --project at the folder that holds digest.toml",
            )
    else:
        root = find_project_root()
    return Project(root=root, newsletter=load_newsletter(root / CONFIG_NAME))


def load_newsletter(path: Path) -> Newsletter:
    """Read and validate digest.toml; report every problem at once."""
    data, text = read_toml(path, ConfigError, "check the quoting and the [newsletter] table (https://toml.io)")
    table = data.get("newsletter")
    if not isinstance(table, dict):
        close = difflib.get_close_matches("newsletter", [str(k) for k in data], n=1, cutoff=0.7)
        raise ConfigError(
            f"no [newsletter] table (there is [{close[0]}]: a typo?)" if close else "no [newsletter] table",
            path=path,
            line=next(
                (n for n, row in enumerate(text.splitlines(), 1) if close and row.strip() == f"[{close[0]}]"),
                None,
            ),
            hint=f"name the table [newsletter], not [{close[0]}]"
            if close
            else "start the file with [newsletter] and set name, from, disclaimer, ...",
        )
    problems: list[DigestError] = []
    for key in _REQUIRED:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            blank = isinstance(value, str)  # there, but nothing in it
            problems.append(
                ConfigError(
                    f"'{key}' in [newsletter] is empty" if blank else f"[newsletter] has no '{key}'",
                    path=path,
                    line=_line_of(text, key),
                    hint=f'add {key} = "..." under [newsletter]'
                    + (" (every issue carries the editorial disclaimer)" if key == "disclaimer" else ""),
                )
            )
    for key in table:
        if key not in _REQUIRED and key not in _OPTIONAL:
            problems.append(
                ConfigError(
                    f"unknown key '{key}' in [newsletter]",
                    path=path,
                    line=_line_of(text, key),
                    hint=f"did you mean '{close[0]}'?"
                    if (close := difflib.get_close_matches(key, _REQUIRED + _OPTIONAL, n=1, cutoff=0.75))
                    else "known keys: " + ", ".join(_REQUIRED + _OPTIONAL),
                )
            )
    for key in ("from", "reply_to"):
        value = table.get(key)
        if value is not None and (
            not isinstance(value, str) or parse_mailbox(value) is None or not _idna_ok(parse_mailbox(value)[1])
        ):
            problems.append(
                ConfigError(
                    f"'{key}' is not an email address: {value!r}",
                    path=path,
                    line=_line_of(text, key),
                    hint='write it as "Name <address@example.org>"; a name with a comma or '
                    "a quote goes in double quotes, in TOML: "
                    r'from = "\"Brief, Morning\" <a@example.org>"',
                )
            )
    mailto = table.get("unsubscribe_mailto")
    if mailto is not None and (
        not isinstance(mailto, str)
        or parse_mailbox(mailto) is None
        or parse_mailbox(mailto)[0]
        or _ascii_mailbox(mailto) is None
    ):
        problems.append(
            ConfigError(
                f"'unsubscribe_mailto' is not an email address: {mailto!r}",
                path=path,
                line=_line_of(text, "unsubscribe_mailto"),
                hint='write unsubscribe_mailto = "unsubscribe@example.org" (a plain address; '
                "its local part in ASCII: it goes into the List-Unsubscribe header)",
            )
        )
    for key in ("base_url",):
        value = table.get(key)
        if value is not None and (not is_http_url(value) or _ascii_url_or_none(value) is None):
            problems.append(
                ConfigError(
                    f"'{key}' must be an http(s) URL: {value!r}",
                    path=path,
                    line=_line_of(text, key),
                    hint="write the full address, e.g. https://example.org",
                )
            )
    for key in ("language",):
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            problems.append(
                ConfigError(
                    f"'{key}' must be text", path=path, line=_line_of(text, key), hint=f'write {key} = "..."'
                )
            )
        elif value is not None and not is_language_tag(value):
            fixed = suggested_tag(value)
            problems.append(
                ConfigError(
                    f"'{key}' is not a BCP 47 language tag: {value!r}",
                    path=path,
                    line=_line_of(text, key),
                    hint=f'write {key} = "{fixed}"'
                    if fixed
                    else "a language's ISO 639 code of 2 or 3 letters, then a script and a region "
                    'if need be, joined by hyphens: "en", "ar-EG", "pa-Arab"',
                )
            )
    sources, source_problems = _read_sources(data.get("sources"), path, text)
    problems += source_problems
    for key in data:
        if key not in ("newsletter", "sources"):
            problems.append(
                ConfigError(
                    f"unknown table [{key}]",
                    path=path,
                    line=toml_line(text, key, fallback=f"[{key}]"),
                    hint="digest.toml has [newsletter] and [sources]",
                )
            )
    unsub = table.get("unsubscribe_url")
    if isinstance(unsub, str) and not is_http_url(unsub.replace("{", "").replace("}", "")):
        problems.append(
            ConfigError(
                "'unsubscribe_url' must be an http(s) URL",
                path=path,
                line=_line_of(text, "unsubscribe_url"),
                hint="it may contain {email} and {token}, filled in per recipient",
            )
        )
    elif isinstance(unsub, str) and ("{email}" in unsub) != ("{token}" in unsub):
        # The token signs the address: a link with one of them cannot be checked, and the
        # one-click unsubscribe (RFC 8058) would answer and unsubscribe nobody.
        have, lack = ("{token}", "{email}") if "{token}" in unsub else ("{email}", "{token}")
        problems.append(
            ConfigError(
                f"'unsubscribe_url' has {have} but not {lack}: the link needs both to unsubscribe anyone",
                path=path,
                line=_line_of(text, "unsubscribe_url"),
                hint="write both, as ?email={email}&token={token}, or neither "
                "(digest then adds ?email=…&token=… itself)",
            )
        )
    elif isinstance(unsub, str):
        try:
            too_long = len(ascii_url(unsub.strip())) > MAX_UNSUBSCRIBE_URL
        except ValueError as e:
            problems.append(
                ConfigError(
                    f"'unsubscribe_url' cannot be written in ASCII: {e}",
                    path=path,
                    line=_line_of(text, "unsubscribe_url"),
                    hint="check the host name of the link",
                )
            )
        else:
            if too_long:
                problems.append(
                    ConfigError(
                        f"'unsubscribe_url' is too long for the List-Unsubscribe header "
                        f"(over {MAX_UNSUBSCRIBE_URL} characters)",
                        path=path,
                        line=_line_of(text, "unsubscribe_url"),
                        hint="a header line is at most 998 octets, and each reader's address and "
                        "token go in it too",
                    )
                )
    recent = table.get("recent_issues", 5)
    if not isinstance(recent, int) or isinstance(recent, bool) or recent < 0:
        problems.append(
            ConfigError(
                "'recent_issues' must be a whole number",
                path=path,
                line=_line_of(text, "recent_issues"),
                hint="write recent_issues = 5 (how many earlier issues 'digest check' "
                "compares urls with; 0: none)",
            )
        )
    direction = table.get("direction")
    if direction is not None and direction not in ("ltr", "rtl"):
        problems.append(
            ConfigError(
                f'\'direction\' must be "ltr" or "rtl", not {direction!r}',
                path=path,
                line=_line_of(text, "direction"),
                hint="leave it out to take it from 'language'",
            )
        )
    problems += _bounce_problems(table, path, text)
    # A value its own check refused already (an address with CR/LF in it) is not reported twice.
    reported = {key for key in _SHOWN_KEYS for err in problems if err.message.startswith(f"'{key}' ")}
    problems += _control_problems(table, path, text, skip=reported)
    list_id = table.get("list_id")
    if isinstance(list_id, str) and list_id.strip() and not _LIST_ID.fullmatch(list_id.strip().strip("<>")):
        problems.append(
            ConfigError(
                f"'list_id' is not a list id (RFC 2919): {list_id!r}",
                path=path,
                line=_line_of(text, "list_id"),
                hint='write it like a domain name you own, e.g. list_id = "news.example.org" '
                "(ASCII letters, digits and hyphens, at least one dot; no spaces)",
            )
        )
    raise_all(problems)
    return Newsletter(
        name=table["name"].strip(),
        sender=table["from"].strip(),
        disclaimer=clean_value(table["disclaimer"]),  # one line; « mot » keeps its no-break spaces
        unsubscribe_url=ascii_url(unsub.strip()),
        list_id=table["list_id"].strip().strip("<>"),
        reply_to=table.get("reply_to"),
        base_url=_ascii_url_or_none(table["base_url"]) if table.get("base_url") else None,
        unsubscribe_mailto=_ascii_mailbox(mailto) if mailto is not None else None,
        language=table.get("language", "en"),
        recent_issues=recent,
        direction=direction,
        sources=sources,
        bounce_address=_ascii_mailbox(table.get("bounce_address") or "") or None,
        bounce_threshold=float(table.get("bounce_threshold", 3.0)),
    )


def control_character(value: str, allowed: str = "") -> str | None:
    """Return the first control character of *value* (C0, DEL, C1, a line or paragraph
    separator, a bidi embedding, override or isolate) not in *allowed*, as ``U+XXXX``."""
    for m in _CONTROL.finditer(value):
        if m.group() not in allowed:
            return f"U+{ord(m.group()):04X}"
    return None


def control_hint(found: str) -> str:
    if found in ("U+000D", "U+000A", "U+0009"):
        return (
            "write the value on one line with plain spaces "
            "(a bare \\r, \\n or \\t breaks a header or the plain-text part)"
        )
    if "U+202A" <= found <= "U+202E" or "U+2066" <= found <= "U+2069":
        return "remove it: a bidi control reorders the text shown beside it (U+200E/U+200F marks are allowed)"
    return "remove it: control characters break headers and the plain-text part"


def _control_problems(table: dict, path: Path, text: str, skip: set[str]) -> list[DigestError]:
    """Report each value that would carry a control character into a header or the text part
    (the white space around a value is not kept, so it does not count)."""
    problems: list[DigestError] = []
    for key in _SHOWN_KEYS:
        value = table.get(key)
        if not isinstance(value, str) or key in skip:
            continue
        found = control_character(value.strip(), _DISCLAIMER_SPACE if key == "disclaimer" else "")
        if found:
            problems.append(
                ConfigError(
                    f"'{key}' holds a control character ({found})",
                    path=path,
                    line=_line_of(text, key),
                    hint=control_hint(found),
                )
            )
    return problems


def _read_sources(table: object, path: Path, text: str) -> tuple[dict[str, str], list[DigestError]]:
    """Read [sources]: site (host name) -> source name."""
    if table is None:
        return {}, []
    if not isinstance(table, dict):
        return {}, [
            ConfigError(
                "'sources' must be a table",
                path=path,
                line=toml_line(text, "sources", fallback="[sources]"),
                hint='write [sources] then lines like "tass.com" = "TASS"',
            )
        ]
    sources: dict[str, str] = {}
    problems: list[DigestError] = []
    for site, name in table.items():
        host = site.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
        if not isinstance(name, str) or not name.strip() or not host or "/" in host:
            problems.append(
                ConfigError(
                    f"[sources] entry {site!r} must map a site to a source name",
                    path=path,
                    line=toml_line(text, f'"{site}"') or toml_line(text, site, fallback="[sources]"),
                    hint='write "tass.com" = "TASS"',
                )
            )
            continue
        found = control_character(name)
        if found:
            problems.append(
                ConfigError(
                    f"[sources] entry {site!r} holds a control character ({found})",
                    path=path,
                    line=toml_line(text, f'"{site}"') or toml_line(text, site, fallback="[sources]"),
                    hint=control_hint(found),
                )
            )
            continue
        sources[host] = name.strip()
    return sources, problems


def _ascii_url_or_none(url: str) -> str | None:
    """The URL in ASCII (an IDN host in IDNA form: the links of the archive and the email
    read the same everywhere), or None if its host cannot be written so."""
    try:
        return ascii_url(url.strip())
    except ValueError:
        return None


def _idna_ok(address: str) -> bool:
    """Whether the address's domain can be written in ASCII (IDNA 2008)."""
    try:
        ascii_address(address, utf8_local=True)
    except ValueError:
        return False
    return True


def _ascii_mailbox(value: str) -> str | None:
    """Return the address of a plain mailbox, its domain in IDNA form, or None if it is not
    one (a display name, a non-ASCII local part, CR/LF, anything but one address)."""
    mailbox = parse_mailbox(value) if value.strip() == " ".join(value.split()) else None
    if mailbox is None or mailbox[0] or any(c in mailbox[1] for c in "<> \t\r\n\0"):
        return None
    try:
        address = ascii_address(mailbox[1])
    except ValueError:
        return None
    return address if address.isascii() else None


def _bounce_problems(table: dict, path: Path, text: str) -> list[DigestError]:
    """Check bounce_address (room for a VERP token in its local part) and bounce_threshold."""
    problems: list[DigestError] = []
    bounce = table.get("bounce_address")
    local = bounce.strip().rpartition("@")[0] if isinstance(bounce, str) else ""
    if bounce is not None and (
        not isinstance(bounce, str)
        or not local
        or "+" in local
        or not bounce.strip().rpartition("@")[2]
        or "<" in bounce
        or _ascii_mailbox(bounce) is None  # one plain address: it becomes the SMTP envelope sender
    ):
        problems.append(
            ConfigError(
                f"'bounce_address' must be a plain address: {bounce!r}",
                path=path,
                line=_line_of(text, "bounce_address"),
                hint='write bounce_address = "bounces@example.org" (no name, '
                "no '+': digest adds +<token> per message)",
            )
        )
    elif bounce is not None and len(local) + 30 > 64:
        problems.append(
            ConfigError(
                "'bounce_address' leaves no room for the VERP token (a local part is at most 64 octets)",
                path=path,
                line=_line_of(text, "bounce_address"),
                hint="use a local part of at most 34 characters",
            )
        )
    limit = table.get("bounce_threshold", 3.0)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
        problems.append(
            ConfigError(
                "'bounce_threshold' must be a positive number",
                path=path,
                line=_line_of(text, "bounce_threshold"),
                hint="3 is Mailman's default (0.5 per day with a soft bounce)",
            )
        )
    return problems


_TOML_DAY = re.compile(r"\s*([\w-]+)\s*=\s*(\d{4}-\d{1,2}-\d{1,2})\b")


def _is_day(text: str) -> bool:
    """Whether *text* is a day as TOML writes one: YYYY-MM-DD, a day the month has."""
    try:
        return len(text) == 10 and dt.date.fromisoformat(text) is not None
    except ValueError:
        return False


def read_toml(path: Path, error: type[DigestError], hint: str) -> tuple[dict, str]:
    """Read a TOML file; return its data and its text, or raise *error* with the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is allowed
    except UnicodeDecodeError as e:
        raise error("not UTF-8 text", path=path, hint="save the file as UTF-8") from e
    except OSError as e:
        raise error(f"cannot read: {e.strerror}", path=path) from e
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        m = _TOML_LINE.search(str(e))
        line = int(m.group(1)) if m else None
        what = str(e).split(" (at")[0]
        lines = text.splitlines()
        row = lines[line - 1] if line is not None and line <= len(lines) else ""
        if what.startswith("Cannot overwrite a value") and line is not None:  # a key given twice
            key = row.split("=", 1)[0].strip()
            what, hint = f"'{key}' is set twice", f"keep one '{key} = ...' in the table"
        elif (m := _TOML_DAY.match(row)) and not _is_day(m[2]):  # 2024-13-05: 'Expected newline'
            what = f"'{m[1]}' is not a day of the calendar: {m[2]}"
            hint = "write the date as YYYY-MM-DD with a day the month has, e.g. 2024-03-05"
        raise error(f"invalid TOML: {what}", path=path, line=line, hint=hint) from e


def toml_line(text: str, key: str, fallback: str | None = None) -> int | None:
    """Return the 1-based line where *key* is assigned (else the line *fallback*), if any."""
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if pattern.match(line):
            return number
    for number, line in enumerate(lines, 1):
        if fallback is not None and line.strip() == fallback:
            return number
    return None


def _line_of(text: str, key: str) -> int | None:
    return toml_line(text, key, fallback="[newsletter]")
