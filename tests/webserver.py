"""`digest serve` as a subprocess on a free loopback port, and a small HTTP client for the tests."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str


class Serve:
    """Run `python -m digest --project DIR serve --port 0`; stop it by PID."""

    def __init__(self, project: Path, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digest", "--project", str(project), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        line = self._first_line()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.stop()
            raise RuntimeError(f"digest serve did not start: {line!r} {self.process.stderr.read()}")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _first_line(self) -> str:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()))
        reader.start()
        reader.join(30)
        return result[0] if result else ""

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)

    def local(self, public_url: str) -> str:
        """Map a public URL (https://news.example/...) onto this server, as a proxy would."""
        parts = urlsplit(public_url)
        return f"{self.url}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def request(
        self, method: str, url: str, body: bytes | str | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        return request(method, url if url.startswith("http") else self.url + url, body, headers)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def request(
    method: str, url: str, body: bytes | str | None = None, headers: dict[str, str] | None = None
) -> Answer:
    """Send one request (no redirects followed); return status, headers and text."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        data = body.encode() if isinstance(body, str) else body
        conn.request(method, path or "/", body=data, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read().decode("utf-8", "replace"))
    finally:
        conn.close()
