"""Machine settings and secrets: the SMTP server and DIGEST_SECRET from .env and the environment.

digest.toml (config.py) says what the newsletter is; this says where it goes from this
machine. Secrets never go in digest.toml, and are never printed.
"""

from __future__ import annotations

import difflib
import io
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv.parser import parse_stream

from .errors import ConfigError, DigestError, raise_all


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


def is_loopback(host: str) -> bool:
    """Return whether every address of *host* is on this machine (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return all_loopback([info[4][0] for info in infos])


def all_loopback(addresses: list[str]) -> bool:
    """Whether there are addresses and every one is on this machine (127.0.0.0/8, ::1)."""
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def parse_port(text: str) -> int:
    """Return a TCP port number (1 to 65535); raise ValueError for anything else."""
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(port)
    return port


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
    UTF-8, for a line it cannot read and for a DIGEST_ name digest does not know (all of
    them at once). A byte-order mark is allowed."""
    values, problems = read_dotenv_checked(dotenv_path)
    raise_all(problems)
    return values


def read_dotenv_checked(dotenv_path: Path) -> tuple[dict[str, str | None], list[DigestError]]:
    """Return the settings of the lines of .env that can be read, and the problems of the
    others (for a caller that reports them with its own); raise for text that is not UTF-8."""
    if not dotenv_path.is_file():
        return {}, []
    try:
        text = dotenv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError("not UTF-8 text", path=dotenv_path, hint="save .env as UTF-8") from e
    # A line python-dotenv cannot read is dropped with a log line of its own: a setting
    # (a password with a quote in it, say) would be missing without a word.
    bindings = list(parse_stream(io.StringIO(text)))
    unreadable = [
        ConfigError(
            "cannot read this line: it is not NAME=value",
            path=dotenv_path,
            line=binding.original.line,
            hint='quote a value holding spaces, quotes or \'#\': NAME="..." (a \\" inside it), '
            "or make the line a comment with '#'",
        )
        for binding in bindings
        if binding.error
    ]
    names = [binding.key for binding in bindings if binding.key]
    problems: list[DigestError] = [*unreadable, *_unknown_settings(dotenv_path, names)]
    # Values are taken as written, as python-dotenv's dotenv_values(interpolate=False) gives
    # them: its default would expand ${NAME} (even in single quotes), so a generated
    # password holding one would change without a word. The last of a name wins.
    values = {b.key: b.value for b in bindings if b.key is not None and not b.error}
    return values, problems


def setting_source(dotenv_path: Path, environ: Mapping[str, str], name: str) -> dict[str, Path | int | None]:
    """Where a bad value of *name* came from, as ConfigError's path and line: its .env line,
    or nothing when the environment set it (the environment wins over .env)."""
    if name in environ or not dotenv_path.is_file():
        return {"path": None, "line": None}
    return {"path": dotenv_path, "line": _dotenv_line(dotenv_path, name)}


def load_settings(dotenv_path: Path, environ: Mapping[str, str]) -> Settings:
    """Merge .env (if any) under the environment and validate the SMTP settings; raise
    every problem found at once."""
    values, problems = read_dotenv_checked(dotenv_path)
    values.update({k: v for k, v in environ.items() if k.startswith("DIGEST_")})

    def where(name: str) -> dict:
        return setting_source(dotenv_path, environ, name)

    port_text = values.get("DIGEST_SMTP_PORT")
    port: int | None = None
    if port_text:
        try:
            port = parse_port(port_text)
        except ValueError:
            problems.append(
                ConfigError(
                    f"DIGEST_SMTP_PORT is not a port number (1 to 65535): {port_text!r}",
                    **where("DIGEST_SMTP_PORT"),
                    hint="set DIGEST_SMTP_PORT=587 (STARTTLS), 465 (TLS) or 25",
                )
            )
    security = (values.get("DIGEST_SMTP_SECURITY") or "starttls").lower()
    if security not in ("starttls", "tls", "none"):
        problems.append(
            ConfigError(
                f"DIGEST_SMTP_SECURITY must be starttls, tls or none, not {security!r}",
                **where("DIGEST_SMTP_SECURITY"),
                hint="starttls is the default and right for port 587",
            )
        )
    raise_all(sorted(problems, key=lambda problem: problem.line or 0))  # in the file's order
    return Settings(
        smtp_host=values.get("DIGEST_SMTP_HOST") or None,
        smtp_port=port,
        smtp_username=values.get("DIGEST_SMTP_USERNAME") or None,
        smtp_password=values.get("DIGEST_SMTP_PASSWORD") or None,
        smtp_security=security,
        smtp_cafile=values.get("DIGEST_SMTP_CAFILE") or None,
        secret=values.get("DIGEST_SECRET") or None,
    )
