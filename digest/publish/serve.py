"""Serve a published site over WSGI (Werkzeug), as a static host would, on waitress."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.security import safe_join
from werkzeug.utils import redirect, send_from_directory
from werkzeug.wrappers import Request, Response

from ..errors import DigestError
from ..links import PATH_SAFE

log = logging.getLogger(__name__)

# Pages and feeds change when an issue is published: always revalidate (ETag, Last-Modified).
REVALIDATE = (".html", ".atom", ".json", ".xml", ".txt", ".css")
ASSET_MAX_AGE = 86400
TYPES = {
    ".atom": "application/atom+xml",
    ".html": "text/html",
    ".css": "text/css",
    ".xml": "application/xml",
    ".txt": "text/plain",
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Content-Security-Policy": "default-src 'self'; img-src * data:; script-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action *",
}


def base_path_of(base_url_path: str) -> str:
    """Return a URL path as the site's mount point: '/' or '/digest/'."""
    stripped = base_url_path.strip("/")
    return f"/{stripped}/" if stripped else "/"


def _with_query(location: str, request: Request) -> str:
    """A redirect's location that keeps the request's query (a feed reader's '?utm=…')."""
    query = request.query_string.decode("latin-1")
    return f"{location}?{query}" if query else location


def static_app(site_dir: Path, base_path: str = "/") -> Callable:
    """Return a WSGI app that serves *site_dir* at *base_path* (GET and HEAD only).

    ``dir/`` serves ``dir/index.html``; ``dir`` redirects to ``dir/``; hidden files
    (the site's file list) and anything outside the folder are 404.
    """
    root = Path(site_dir).resolve()
    link_base = base_path_of(base_path)  # as links write it (percent-encoded)
    base = base_path_of(unquote(base_path))  # as the request's path comes (decoded)

    def respond(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(valid_methods=["GET", "HEAD"])
        path = request.path
        if path == base.rstrip("/") and base != "/":
            return redirect(_with_query(link_base, request), 301)
        if not path.startswith(base):
            raise NotFound()
        rel = path[len(base) :]
        parts = PurePosixPath(rel).parts
        if (
            rel.startswith("/")  # '/news//etc' would name /etc itself
            or "//" in rel
            or any(p.startswith(".") or p == ".." for p in parts)
            or "\\" in rel
            or "\0" in rel
            or safe_join(str(root), rel) is None
        ):
            raise NotFound()
        if rel == "" or rel.endswith("/"):
            rel += "index.html"
        elif (root / rel).is_dir():
            return redirect(_with_query(quote(path + "/", safe=PATH_SAFE), request), 301)
        suffix = PurePosixPath(rel).suffix.lower()
        mimetype = (
            "application/feed+json"
            if rel == "feed.json"
            else TYPES.get(suffix) or mimetypes.guess_type(rel)[0] or "application/octet-stream"
        )
        response = send_from_directory(
            root,
            rel,
            request.environ,
            mimetype=mimetype,
            max_age=None if suffix in REVALIDATE else ASSET_MAX_AGE,
        )
        if suffix in REVALIDATE:
            response.cache_control.no_cache = True
            response.cache_control.public = True
        return response

    def app(environ, start_response):
        request = Request(environ)
        try:
            response = respond(request)
        except HTTPException as e:
            response = e.get_response(environ)
            response.cache_control.no_store = True
        response.headers.update(SECURITY_HEADERS)
        return response(environ, start_response)

    return app


def serve_site(
    site_dir: Path, base_path: str, host: str, port: int, ready: Callable[[str], None] | None = None
) -> None:
    """Serve the site on waitress until interrupted; *ready* gets the address first."""
    import waitress

    try:
        server = waitress.create_server(
            static_app(site_dir, base_path), host=host, port=port, threads=4, ident="digest"
        )
    except OSError as e:
        raise DigestError(
            f"cannot listen on {host}:{port}: {e.strerror}", hint="choose another --port (0 takes any free one)"
        ) from e
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.effective_port}{base_path_of(base_path)}"
    if ready is not None:
        ready(url)
    try:
        server.run()
    finally:
        server.close()
