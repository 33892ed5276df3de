"""The readers' WSGI application: unsubscribe (page and RFC 8058 one-click), subscribe, confirm.

Paths are the public URLs' own: the unsubscribe link's path, and ``/subscribe``
and ``/confirm`` under ``base_url``'s path. A GET never changes anything (mail
scanners and link previews fetch every link); every change is a POST carrying
a signed token. One SQLite connection per server thread.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import BaseConverter, Map, Rule
from werkzeug.utils import send_from_directory
from werkzeug.wrappers import Request, Response

from .. import db, subscribers, tokens
from ..config import Project
from ..errors import ConfigError, DigestError
from ..headers import clean_value
from ..links import PATH_SAFE
from ..send.recipients import envelope_address, normalise_address
from ..settings import Settings
from . import mail
from .limits import Limit, allow, refund, seconds_left
from .pages import make_environment, page, secure, stylesheet

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # bytes: a form here holds an address, a name and a token
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
PER_ADDRESS = Limit(3, 3600.0)  # confirmation emails to one address per hour
PER_CLIENT = Limit(20, 3600.0)  # subscribe requests from one client per hour


class BadRequest(HTTPException):
    """A 400 that renders as a page saying what to do."""

    code = 400

    def __init__(self, title: str, text: str) -> None:
        super().__init__(text)
        self.title, self.text = title, text


@dataclass(frozen=True)
class Options:
    confirm_days: int = 7
    per_address: Limit = PER_ADDRESS
    per_client: Limit = PER_CLIENT
    static_dir: Path | None = None  # a published site, served under base_url's path


class AddressConverter(BaseConverter):
    """An address in a path-form unsubscribe link: '/' may be in its local part (RFC 5322
    atext), never in its domain; only a path holding an '@' then a domain is one, so the
    archive's pages and pictures under the same path are never taken for an unsubscribe."""

    regex = r"[^@]+@[^/@]+"
    part_isolating = False  # the local part may hold '/'

    def to_url(self, value: str) -> str:
        return quote(value, safe="@")  # as message.py writes the link


def _route(url_path: str, project: Project) -> str:
    """A URL path as werkzeug's rules match it: decoded ('/nöws' for a link to '/n%C3%B6ws')."""
    decoded = unquote(url_path)
    if "<" in decoded or ">" in decoded:  # a rule's converter syntax: no route could match it
        raise ConfigError(
            f"the path {url_path!r} of base_url or unsubscribe_url holds '<' or '>', which "
            "digest serve cannot route",
            path=project.root / "digest.toml",
            hint="choose a path without them",
        )
    return decoded


def _this_url(request: Request, path: str | None = None) -> str:
    """The request's own URL, for a form to post back to: its path encoded again (a decoded
    '?' or '#' of an address would end the path there), or *path* (encoded already), and
    its query as it came."""
    if path is None:
        path = quote(request.path, safe=PATH_SAFE)
    query = request.query_string.decode("latin-1")
    path = quote(request.script_root, safe=PATH_SAFE) + path
    return f"{path}?{query}" if query else path


class ReaderApp:
    """The WSGI application for one newsletter project."""

    def __init__(self, project: Project, settings: Settings, options: Options) -> None:
        if not settings.secret:
            raise ConfigError(
                "DIGEST_SECRET is not set; it signs and checks every link",
                path=project.root / ".env",
                hint="set it in .env (or the environment) to the same value the sends used",
            )
        self.project, self.settings, self.options = project, settings, options
        self.newsletter = project.newsletter
        self.env = make_environment(project)
        self.db_path = project.state_dir / db.DB_NAME
        db.connect(self.db_path).close()  # create or migrate once, before serving
        self._local = threading.local()
        self._site = None  # the published site's WSGI app, made on first use
        unsub = urlsplit(self.newsletter.unsubscribe_url)
        self.public_root = (self.newsletter.base_url or f"{unsub.scheme}://{unsub.netloc}").rstrip("/")
        self.base = urlsplit(self.public_root).path.rstrip("/")  # as links write it (encoded)
        # Werkzeug matches the decoded path ('/nöws' for a link to '/n%C3%B6ws').
        route_base = _route(self.base, project)
        # Where the unsubscribe link carries the address and the token: path or query.
        self.query_names = {v.strip("{}"): k for k, v in parse_qsl(unsub.query) if v in ("{email}", "{token}")}
        path = _route(unsub.path, project).replace("{email}", "<address:email>").replace("{token}", "<token>")
        if "{email}" not in unsub.path and "email" not in self.query_names:
            self.query_names = {"email": "email", "token": "token"}  # message.py appends them
        self.unsubscribe_path = unsub.path
        self._path_form = "{email}" in unsub.path or "{token}" in unsub.path
        rules = [
            Rule(path or "/", endpoint="unsubscribe", methods=["GET", "POST"]),
            Rule(f"{route_base}/subscribe", endpoint="subscribe", methods=["GET", "POST"]),
            Rule(f"{route_base}/confirm", endpoint="confirm", methods=["GET", "POST"]),
            Rule(f"{route_base}/_digest/reader.css", endpoint="style", methods=["GET"]),
        ]
        if options.static_dir is not None:  # the archive (issue 14): everything else under base
            rules += [
                Rule(f"{route_base}/", endpoint="static", methods=["GET"]),
                Rule(f"{route_base}/<path:path>", endpoint="static", methods=["GET"]),
            ]
        self.routes = Map(
            rules, strict_slashes=False, merge_slashes=False, converters={"address": AddressConverter}
        )

    # -- WSGI ------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = Request(environ)
        request.max_content_length = MAX_BODY
        request.max_form_memory_size = MAX_BODY
        endpoint = "-"
        try:
            endpoint, values = self.routes.bind_to_environ(environ).match()
            response = getattr(self, f"on_{endpoint}")(request, **values)
        except BadRequest as e:
            response = self.error(e.code, e.title, e.text)
        except HTTPException as e:
            response = self.error(e.code or 500, e.name, e.description or "")
            if e.code == 405:
                response.headers["Allow"] = ", ".join(e.valid_methods or [])  # type: ignore[attr-defined]
        except sqlite3.OperationalError:
            log.exception("database busy")
            response = self.error(
                503,
                "Please try again",
                "The service is busy. Nothing was changed; please try again in a minute.",
            )
            response.headers["Retry-After"] = "60"  # RFC 9110 10.2.3: what the page says
        except Exception:
            # The route's name, never the path or query: they hold addresses and tokens.
            log.exception("error answering %s %s: 500", request.method, endpoint)
            response = self.error(500, "Something went wrong", "Nothing was changed. Please try again later.")
        return response(environ, start_response)

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = db.connect(self.db_path)
        return conn

    def context(self, **extra) -> dict:
        return {
            "newsletter": self.newsletter,
            "base": self.base,
            "subscribe_url": f"{self.base}/subscribe",
            "stylesheet": f"{self.base}/_digest/reader.css",
            **extra,
        }

    def error(self, status: int, title: str, text: str) -> Response:
        return page(self.env, "error.html", self.context(status=status, title=title, text=text), status=status)

    # -- unsubscribe -----------------------------------------------------------------

    def on_unsubscribe(self, request: Request, email: str | None = None, token: str | None = None) -> Response:
        if email is None and "email" in self.query_names:
            email = request.args.get(self.query_names["email"])
        if token is None and "token" in self.query_names:
            token = request.args.get(self.query_names["token"])
        if request.method == "POST":
            form = self.form(request)
        if not email and not token:
            if request.method == "POST":  # a one-click request that names nobody did nothing
                raise BadRequest("This link is not valid", "It names no address to unsubscribe.")
            return page(self.env, "how_to_unsubscribe.html", self.context())
        self.check("unsubscribe", email or "", token or "")
        if request.method != "POST":
            return page(
                self.env,
                "unsubscribe.html",
                self.context(address=email, action=_this_url(request, self._link_path(email, token))),
            )
        one_click = form.get("List-Unsubscribe") == "One-Click"
        subscribers.set_status(
            self.conn(), email, "unsubscribed", "web: one-click" if one_click else "web: unsubscribe page"
        )
        return page(self.env, "unsubscribed.html", self.context(address=email))

    def _link_path(self, email: str | None, token: str | None) -> str | None:
        """The path of a path-form unsubscribe link, as message.py writes it (the address
        percent-encoded but for '@': a '/./' of its local part must not reach a browser,
        which would take it for a dot segment); None for a link with a query."""
        if not self._path_form:
            return None
        return self.unsubscribe_path.replace("{email}", quote(email or "", safe="@")).replace(
            "{token}", quote(token or "", safe="")
        )

    # -- subscribe and confirm -------------------------------------------------------

    def on_subscribe(self, request: Request) -> Response:
        if request.method != "POST":
            return page(self.env, "subscribe.html", self.context(address="", name="", problem=None))
        form = self.form(request)
        raw, name = form.get("email", ""), form_name(form.get("name", ""))
        try:
            address = normalise_address(raw)
        except ValueError as e:
            return page(
                self.env,
                "subscribe.html",
                self.context(address=raw, name=name, problem=f"That is not an email address: {e}"),
                status=400,
            )
        conn, client = self.conn(), client_bucket(request.remote_addr)
        subscribers.purge_unconfirmed(conn, self.options.confirm_days * 86400)
        if not allow(conn, f"client:{client}", self.options.per_client):
            wait = seconds_left(conn, f"client:{client}", self.options.per_client)
            limited = self.error(
                429,
                "Too many requests",
                "Too many subscribe requests came from your network. Please try again in an hour.",
            )
            limited.headers["Retry-After"] = str(wait)  # RFC 6585 4: when the window ends
            return limited
        # The same answer whether the address is new, active or unsubscribed.
        bucket = f"address:{db.address_hash(canonical_address(address))}"
        if allow(conn, bucket, self.options.per_address):
            token = tokens.sign_confirm(self.settings.secret or "", self.newsletter.list_id, address, name)
            query = {"email": address, "token": token, **({"name": name} if name else {})}
            url = f"{self.public_root}/confirm?" + urlencode(query, quote_via=quote, safe="@")
            message = mail.confirmation(self.env, self.newsletter, address, url, self.options.confirm_days)
            try:
                mail.send(self.settings, message)
            except DigestError as e:  # SendError, or ConfigError: no SMTP server set
                # A refused recipient's reply quotes the address: the log gets the rest.
                log.error("%s", re.sub(re.escape(address), "<address>", str(e), flags=re.IGNORECASE))
                refund(conn, bucket)  # no email went: it is not one of the address's few an hour
                unavailable = self.error(
                    503,
                    "Please try again later",
                    "We could not send the confirmation email just now. Nothing "
                    "was changed; please try again later.",
                )
                unavailable.headers["Retry-After"] = "300"
                return unavailable
            # Once the email went out (so that 'nothing was changed' holds when it did not),
            # a new address is kept as unconfirmed, without fields; a known one (active,
            # unsubscribed, bounced...) is left exactly as it is. The name travels, signed,
            # in the link and is applied only when the confirmation is posted.
            subscribers.add(conn, address, None, "unconfirmed", "web: subscribe form")
        else:
            log.info("confirmation not sent: the per-address limit is reached")
        return page(self.env, "subscribe_sent.html", self.context(address=address))

    def on_confirm(self, request: Request) -> Response:
        email, token = request.args.get("email", ""), request.args.get("token", "")
        name = form_name(request.args.get("name", ""))
        if request.method == "POST":
            self.form(request)
        issued = self.check("confirm", email, token, name)
        since = subscribers.last_suppressing_event(self.conn(), email)
        if since is not None and issued is None:  # a link from before issue times were signed
            raise BadRequest(
                "This link is no longer valid",
                "This confirmation link is from an older version of the site and "
                "cannot be checked against your unsubscribe. To subscribe again, "
                "ask for a new link on the subscribe page.",
            )
        if since is not None and issued is not None and since > issued:
            raise BadRequest(
                "This link is no longer valid",
                "You unsubscribed after this confirmation link was sent. To "
                "subscribe again, ask for a new link on the subscribe page.",
            )
        if request.method != "POST":
            return page(
                self.env,
                "confirm.html",
                self.context(address=email, action=_this_url(request)),
            )
        subscribers.reactivate(self.conn(), email, "web: confirmed link", {"name": name} if name else None)
        return page(self.env, "confirmed.html", self.context(address=email))

    # -- files -----------------------------------------------------------------------

    def on_style(self, request: Request) -> Response:
        css = stylesheet(self.project)
        return secure(send_from_directory(css.parent, css.name, request.environ))

    def on_static(self, request: Request, path: str = "") -> Response:
        """Serve the published site (digest publish) as a static host would."""
        if self._site is None:
            from ..publish import static_app

            self._site = static_app(self.options.static_dir, self.base or "/")
        response = Response.from_app(self._site, request.environ)
        if response.status_code == 404:  # not published (yet): the app's own page and headers
            raise NotFound()
        return response

    # -- helpers ---------------------------------------------------------------------

    def check(self, purpose: str, email: str, token: str, name: str = "") -> float | None:
        """Verify a link's token; return a confirmation's issue time; raise a 400 page that says what to do."""
        secret, scope = self.settings.secret or "", self.newsletter.list_id
        try:
            if purpose == "confirm":
                ttl = self.options.confirm_days * 86400
                return tokens.verify_confirm(secret, scope, email, token, ttl, name)
            tokens.verify(secret, purpose, scope, email, token)
            return None
        except tokens.TokenError as e:
            if e.expired:
                raise BadRequest(
                    "This link has expired",
                    "Confirmation links are valid for "
                    f"{self.options.confirm_days} days. Ask for a new one on the "
                    "subscribe page.",
                ) from None
            what = (
                "use the unsubscribe link of the newest email you received, or write to us"
                if purpose == "unsubscribe"
                else "ask for a new one on the subscribe page"
            )
            raise BadRequest(
                "This link is not valid",
                "The link may have been cut short or changed when it was copied. "
                f"Nothing was changed. Please {what}.",
            ) from None

    def form(self, request: Request) -> dict[str, str]:
        """Return a POST's form fields: form content types only, UTF-8 only, size-limited."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise _too_large()
        mimetype = request.mimetype
        if mimetype == "" and not request.get_data(cache=True):
            return {}
        if mimetype not in FORM_TYPES:
            raise _unsupported()
        if mimetype == "multipart/form-data":
            fields = dict(request.form)
            if any("\ufffd" in v for v in fields.values()):
                raise BadRequest("Unreadable form", "The form was not sent as UTF-8 text.")
            return fields
        body = request.get_data(cache=True)
        try:
            return dict(
                parse_qsl(
                    body.decode("ascii"),
                    keep_blank_values=True,
                    encoding="utf-8",
                    errors="strict",
                    max_num_fields=20,
                )
            )
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(
                "Unreadable form", "The form was not sent as UTF-8 text. Nothing was changed."
            ) from None


# Domains that deliver every spelling of a local part with dots anywhere to one mailbox.
_DOTS_IGNORED = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def canonical_address(address: str) -> str:
    """Return the mailbox a per-address limit counts, as coarse as a stranger's inbox is:
    lower-case, the domain in its IDNA form (``bücher.de`` is ``xn--bcher-kva.de``),
    without a '+tag', and for Gmail without the dots it ignores (``v.ictim@googlemail.com``
    is ``victim@gmail.com``). Counting two mailboxes as one only makes the limit stricter."""
    local, _, domain = envelope_address(address.strip()).lower().rpartition("@")
    local = local.split("+", 1)[0] or local
    domain = domain.rstrip(".")
    if domain in _DOTS_IGNORED:
        domain = _DOTS_IGNORED[domain]
        local = local.replace(".", "") or local
    return f"{local}@{domain}"


def form_name(value: str) -> str:
    """Return the name a reader gave, as it is kept: on one line, without control characters
    (a terminal escape sequence, say) or bidi controls (``headers.clean_value``: a no-break
    or ideographic space stays), at most 200 characters."""
    name = clean_value(value)[:200].strip(" ")
    return name if name.strip() else ""  # only spaces (no-break, ideographic): no name


def client_bucket(remote: str | None) -> str:
    """Return the client a per-client limit counts: the IPv4 address, or the IPv6 /64."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or "unknown"
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


def _too_large() -> HTTPException:
    from werkzeug.exceptions import RequestEntityTooLarge

    return RequestEntityTooLarge()


def _unsupported() -> HTTPException:
    from werkzeug.exceptions import UnsupportedMediaType

    return UnsupportedMediaType()


def create_app(
    project: Project, settings: Settings | None = None, options: Options | None = None, proxies: int = 0
):
    """Return the readers' WSGI application for *project*.

    With *proxies*, trust that many reverse proxies' X-Forwarded-For/-Proto/-Host.
    """
    app = ReaderApp(project, settings or project.settings(), options or Options())
    if proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        return ProxyFix(app, x_for=proxies, x_proto=proxies, x_host=proxies)
    return app
