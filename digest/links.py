"""Links in stories and settings: which are usable http(s) URLs, and which site they name."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from .headers import ascii_domain

# What a URL may carry as it is; anything else (non-ASCII text) is percent-encoded as UTF-8.
# '{' and '}' stay: unsubscribe_url's {email} and {token}.
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~{}"
# What a URL path keeps as it is (RFC 3986 pchar and '/'); the rest is percent-encoded.
PATH_SAFE = "/:@!$&'()*+,;=~"


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


def ascii_url(url: str) -> str:
    """Return *url* in ASCII: the host in IDNA form, other non-ASCII text percent-encoded.

    A URL goes into headers (List-Unsubscribe), which are 7-bit; it stays the same link.
    An ASCII URL is returned as it is. Raise ValueError for a host IDNA cannot write.
    """
    if url.isascii():
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    host = parts.hostname or ""
    if host and not host.isascii():
        userinfo = netloc.rpartition("@")[0]
        port = f":{parts.port}" if parts.port is not None else ""
        netloc = (f"{quote(userinfo, safe=_URL_SAFE)}@" if userinfo else "") + (ascii_domain(host) + port)
    return urlunsplit(
        (
            parts.scheme,
            netloc if netloc.isascii() else quote(netloc, safe=_URL_SAFE),
            quote(parts.path, safe=_URL_SAFE),
            quote(parts.query, safe=_URL_SAFE),
            quote(parts.fragment, safe=_URL_SAFE),
        )
    )


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
