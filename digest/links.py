"""Links in stories and settings: which are usable http(s) URLs, and which site they name."""

from __future__ import annotations

from urllib.parse import urlsplit


def is_http_url(value: object) -> bool:
    """Return whether *value* is an absolute http(s) URL with a host, that parses."""
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
        return False
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def site_of(url: str | None) -> str:
    """Return the site of a URL (its host, lower case), or '' if it has none."""
    try:
        return (urlsplit((url or "").strip()).hostname or "").lower()
    except ValueError:
        return ""


def is_site_address(url: str | None) -> bool:
    """Return whether *url* is a bare site address (https://tass.com/), not an article's."""
    if not is_http_url(url):
        return False
    parts = urlsplit(url.strip())
    return parts.path in ("", "/") and not parts.query and not parts.fragment
