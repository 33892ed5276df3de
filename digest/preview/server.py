"""The preview's HTTP server: the page, the email's parts, live-reload events, issue assets."""

from __future__ import annotations

import json
import logging
import mimetypes
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..check import GMAIL_CLIP_BYTES
from ..errors import DigestError
from .builder import Builder, Snapshot

log = logging.getLogger(__name__)

PAGE = (Path(__file__).parent / "page.html").read_bytes()
ASSET_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg"}
KEEPALIVE_SECONDS = 15.0
LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def _loopback_name(host: str) -> bool:
    """Whether *host*, as written, is a loopback address (127.0.0.0/8, ::1) or localhost.

    Never looked up (settings.is_loopback resolves a name): a name that rebinds to
    127.0.0.1 must not pass for this machine's."""
    import ipaddress

    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def error_page(errors: tuple[DigestError, ...], base: Path) -> bytes:
    """Show the build's errors as the CLI prints them, in place of the email."""
    items = []
    for e in errors:
        text = f"Error: {e.format(base)}" + (f"\n  hint: {e.hint}" if e.hint else "")
        items.append(f'<pre class="error">{escape(text)}</pre>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Build failed</title>'
        "<style>body{font:14px/1.5 system-ui,sans-serif;margin:24px;color:#1d1d1f}"
        "h1{font-size:18px;color:#b00020}pre{white-space:pre-wrap;background:#fff4f4;"
        "border-left:4px solid #b00020;padding:10px 14px}</style></head><body>"
        "<h1>The issue does not build</h1>"
        + "".join(items)
        + "<p>Fix the file and save: the preview comes back by itself.</p></body></html>"
    ).encode("utf-8")


class PreviewServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], builder: Builder) -> None:
        self.builder = builder
        super().__init__(address, PreviewHandler)


class PreviewHandler(BaseHTTPRequestHandler):
    server: PreviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s - %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:  # noqa: N802
        if not self._host_allowed():
            return self._send(
                b"The preview answers only to this machine's own names (localhost, 127.0.0.1).\n",
                "text/plain; charset=utf-8",
                head,
                HTTPStatus.MISDIRECTED_REQUEST,
            )
        path = urlsplit(self.path).path
        snap = self.server.builder.snapshot
        base = self.server.builder.project.root
        if path in ("/", "/index.html"):
            return self._send(PAGE, "text/html; charset=utf-8", head)
        if path == "/events":
            return self._events(snap)
        if path == "/state.json":
            return self._send(json.dumps(self._state(snap)).encode(), "application/json", head)
        if path == "/email.html":
            body = snap.built.output("html") if snap.built else error_page(snap.errors, base)
            return self._send(body, "text/html; charset=utf-8", head)
        if path == "/email.txt":
            body = snap.built.output("text") if snap.built else self._error_text(snap, base)
            return self._send(body, "text/plain; charset=utf-8", head)
        if path == "/message.eml":
            body = snap.built.output("eml") if snap.built else self._error_text(snap, base)
            return self._send(body, "text/plain; charset=utf-8", head)
        asset = self._asset(path)
        if asset is None:
            return self._send(b"Not found\n", "text/plain; charset=utf-8", head, HTTPStatus.NOT_FOUND)
        return self._send(
            asset.read_bytes(),
            mimetypes.guess_type(asset.name)[0] or "application/octet-stream",
            head,
            csp=True,
        )

    def _host_allowed(self) -> bool:
        """On loopback, only a request for a loopback name: a page elsewhere whose name
        rebinds to 127.0.0.1 (DNS rebinding) cannot read the unpublished draft."""
        if not _loopback_name(self.server.server_address[0]):
            return True  # served on the network on purpose (--host): any name may reach it
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return _loopback_name(name.strip("[]"))

    def _state(self, snap: Snapshot) -> dict:
        built = snap.built
        return {
            "version": snap.version,
            "subject": built.issue.subject if built else self.server.builder.issue_dir.name,
            "stories": len(built.issue.stories) if built else 0,
            "html_bytes": built.message.html_part_size if built else 0,  # as sent, as 'check' counts
            "clip_kb": GMAIL_CLIP_BYTES // 1024,
            "error": [e.format(self.server.builder.project.root) for e in snap.errors] or None,
        }

    @staticmethod
    def _error_text(snap: Snapshot, base: Path) -> bytes:
        return (
            "\n".join(
                f"Error: {e.format(base)}" + (f"\n  hint: {e.hint}" if e.hint else "") for e in snap.errors
            )
            + "\n"
        ).encode()

    def _asset(self, url_path: str) -> Path | None:
        """Resolve an image of the issue folder; anything else (or outside it) is None."""
        rel = unquote(url_path).lstrip("/")
        if not rel or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in rel.split("/")):
            return None
        root = self.server.builder.issue_dir.resolve()
        candidate = (root / rel).resolve()
        if not candidate.is_relative_to(root) or candidate.suffix.lower() not in ASSET_SUFFIXES:
            return None
        return candidate if candidate.is_file() else None

    def _send(
        self, body: bytes, content_type: str, head: bool, status: HTTPStatus = HTTPStatus.OK, csp: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if csp:  # an image of the issue folder (an SVG may hold a script): never run as a page
            self.send_header(
                "Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox"
            )
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _events(self, snap: Snapshot) -> None:
        """Server-Sent Events: the build version now, then at every rebuild."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        version = snap.version
        try:
            self.wfile.write(f"retry: 500\ndata: {version}\n\n".encode())
            self.wfile.flush()
            while not self.server.builder.closed:
                new = self.server.builder.wait_for_change(version, KEEPALIVE_SECONDS)
                if new.version != version:
                    version = new.version
                    self.wfile.write(f"data: {version}\n\n".encode())
                else:
                    self.wfile.write(b": keepalive\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass


def bind(host: str, port: int | None, builder: Builder) -> PreviewServer:
    """Bind to *port*, or to the first free port from 8000 when none is given."""
    candidates = [port] if port is not None else list(range(8000, 8100))
    last: OSError | None = None
    for candidate in candidates:
        try:
            return PreviewServer((host, candidate), builder)
        except OSError as e:
            last = e
    if port is not None:
        raise DigestError(
            f"cannot listen on {host}:{port}: {last.strerror if last else ''}",
            hint="choose another --port, or leave it out to take a free one",
        )
    raise DigestError(f"no free port on {host} from 8000 to 8099", hint="pass --port N")
