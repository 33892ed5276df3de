"""Settings: the newsletter's identity from digest.toml, machine settings from .env/environment."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from .errors import ConfigError, DigestError, raise_all
from .headers import ascii_address, parse_mailbox
from .links import ascii_url, is_http_url, site_of

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
# Languages written right to left (primary subtag); `direction` in digest.toml overrides.
_RTL_LANGUAGES = {"ar", "arc", "ckb", "dv", "fa", "he", "iw", "ks", "ps", "sd", "syr", "ug", "ur", "yi"}
_TOML_LINE = re.compile(r"at line (\d+)")


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
        primary = self.language.replace("_", "-").split("-")[0].lower()
        return "rtl" if primary in _RTL_LANGUAGES else "ltr"

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
class Settings:
    """Machine settings and secrets from the environment and .env; never printed."""

    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_security: str = "starttls"
    smtp_cafile: str | None = None
    secret: str | None = field(default=None, repr=False)


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


def is_loopback(host: str) -> bool:
    """Return whether every address of *host* is on this machine (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


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
        raise ConfigError(
            "no [newsletter] table",
            path=path,
            hint="start the file with [newsletter] and set name, from, disclaimer, ...",
        )
    problems: list[DigestError] = []
    for key in _REQUIRED:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(
                ConfigError(
                    f"[newsletter] has no '{key}'",
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
                    hint="known keys: " + ", ".join(_REQUIRED + _OPTIONAL),
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
                "'recent_issues' must be a whole number", path=path, line=_line_of(text, "recent_issues")
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
    raise_all(problems)
    return Newsletter(
        name=table["name"].strip(),
        sender=table["from"].strip(),
        disclaimer=" ".join(table["disclaimer"].split()),
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


# Every setting digest reads from .env (bounces/mailboxes.py reads the DIGEST_IMAP_ ones).
KNOWN_SETTINGS = frozenset(
    {
        "DIGEST_SMTP_HOST",
        "DIGEST_SMTP_PORT",
        "DIGEST_SMTP_USERNAME",
        "DIGEST_SMTP_PASSWORD",
        "DIGEST_SMTP_SECURITY",
        "DIGEST_SMTP_CAFILE",
        "DIGEST_SECRET",
        "DIGEST_IMAP_HOST",
        "DIGEST_IMAP_PORT",
        "DIGEST_IMAP_USERNAME",
        "DIGEST_IMAP_PASSWORD",
        "DIGEST_IMAP_FOLDER",
        "DIGEST_IMAP_SECURITY",
        "DIGEST_IMAP_CAFILE",
        "DIGEST_IMAP_PROCESSED",
    }
)


def _dotenv_line(dotenv_path: Path, name: str) -> int | None:
    """The line of .env that sets *name* (the last one, which python-dotenv keeps)."""
    text = dotenv_path.read_text(encoding="utf-8-sig")
    pattern = re.compile(rf"\s*(?:export\s+)?{re.escape(name)}\s*=")
    lines = [i for i, row in enumerate(text.splitlines(), 1) if pattern.match(row)]
    return lines[-1] if lines else None


def _unknown_settings(dotenv_path: Path, names: Iterable[str]) -> list[DigestError]:
    """A DIGEST_ name in .env that digest does not know: a typo would drop a setting silently."""
    problems: list[DigestError] = []
    for name in sorted(n for n in names if n.startswith("DIGEST_") and n not in KNOWN_SETTINGS):
        line = _dotenv_line(dotenv_path, name)
        close = difflib.get_close_matches(name, KNOWN_SETTINGS, n=1)
        problems.append(
            ConfigError(
                f"unknown setting {name}",
                path=dotenv_path,
                line=line,
                hint=f"did you mean {close[0]}?" if close else "see 'Configuration and secrets' in the README",
            )
        )
    return problems


def read_dotenv(dotenv_path: Path) -> dict[str, str | None]:
    """Return the settings of .env (none if there is no file); raise for text that is not
    UTF-8 and for a DIGEST_ name digest does not know. A byte-order mark is allowed."""
    if not dotenv_path.is_file():
        return {}
    try:
        values = dotenv_values(dotenv_path, encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError("not UTF-8 text", path=dotenv_path, hint="save .env as UTF-8") from e
    raise_all(_unknown_settings(dotenv_path, values))
    return dict(values)


def load_settings(dotenv_path: Path, environ: Mapping[str, str]) -> Settings:
    """Merge .env (if any) under the environment and validate the SMTP settings."""
    values = read_dotenv(dotenv_path)
    values.update({k: v for k, v in environ.items() if k.startswith("DIGEST_")})

    def where(name: str) -> dict:
        """The .env line a bad value came from, or nothing when the environment set it."""
        if name in environ or not dotenv_path.is_file():
            return {"path": None, "line": None}
        return {"path": dotenv_path, "line": _dotenv_line(dotenv_path, name)}

    port_text = values.get("DIGEST_SMTP_PORT")
    port: int | None = None
    if port_text:
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError(port)
        except ValueError as e:
            raise ConfigError(
                f"DIGEST_SMTP_PORT is not a port number (1 to 65535): {port_text!r}",
                **where("DIGEST_SMTP_PORT"),
                hint="set DIGEST_SMTP_PORT=587 (STARTTLS), 465 (TLS) or 25",
            ) from e
    security = (values.get("DIGEST_SMTP_SECURITY") or "starttls").lower()
    if security not in ("starttls", "tls", "none"):
        raise ConfigError(
            f"DIGEST_SMTP_SECURITY must be starttls, tls or none, not {security!r}",
            **where("DIGEST_SMTP_SECURITY"),
            hint="starttls is the default and right for port 587",
        )
    return Settings(
        smtp_host=values.get("DIGEST_SMTP_HOST") or None,
        smtp_port=port,
        smtp_username=values.get("DIGEST_SMTP_USERNAME") or None,
        smtp_password=values.get("DIGEST_SMTP_PASSWORD") or None,
        smtp_security=security,
        smtp_cafile=values.get("DIGEST_SMTP_CAFILE") or None,
        secret=values.get("DIGEST_SECRET") or None,
    )


def read_toml(path: Path, error: type[DigestError], hint: str) -> tuple[dict, str]:
    """Read a TOML file; return its data and its text, or raise *error* with the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error("not UTF-8 text", path=path, hint="save the file as UTF-8") from e
    except OSError as e:
        raise error(f"cannot read: {e.strerror}", path=path) from e
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        m = _TOML_LINE.search(str(e))
        raise error(
            f"invalid TOML: {str(e).split(' (at')[0]}",
            path=path,
            line=int(m.group(1)) if m else None,
            hint=hint,
        ) from e


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
