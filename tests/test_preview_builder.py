"""The preview outlives any failed rebuild: it shows the error and comes back when the file is fixed."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import pytest

import digest.preview.builder as builder_module
from digest.preview import start_preview

from .conftest import EXAMPLE

KREMLIN = "kremlin-praises-putin-biden-talks-as-constructive-aide.md"


@pytest.fixture
def preview(project: Path):
    srv, shutdown = start_preview(project, EXAMPLE, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    time.sleep(1)  # let the file watcher start
    yield srv
    shutdown()
    thread.join(5)


def _get(srv, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _until(srv, predicate, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = _get(srv, "/email.txt")
        if predicate(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_an_invalid_url_shows_its_line_then_recovers(preview, project: Path) -> None:
    path = project / "issues" / EXAMPLE / KREMLIN
    good = path.read_text(encoding="utf-8")
    path.write_text(good.replace("url: ", 'url: "http://[oops"\nxurl: ', 1), encoding="utf-8")
    text = _until(preview, lambda t: t.startswith("Error:"))
    line = good.split("\n").index(next(ln for ln in good.split("\n") if ln.startswith("url:"))) + 1
    assert text == (  # as the CLI prints it, with its hint
        f"Error: issues/{EXAMPLE}/{KREMLIN}:{line}: 'url' is not an http(s) link: 'http://[oops'\n"
        "  hint: write the article's full address\n"
    )
    path.write_text(good, encoding="utf-8")
    text = _until(preview, lambda t: not t.startswith("Error:"))
    assert "Kremlin" in text and not text.startswith("Error:")


def test_an_unexpected_exception_does_not_stop_the_preview(
    preview, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = builder_module.build_issue

    def build_that_crashes_on_boom(project_, issue_dir, **options):
        if "BOOM" in (issue_dir / KREMLIN).read_text(encoding="utf-8"):
            raise RuntimeError("boom in a rebuild")
        return real(project_, issue_dir, **options)

    monkeypatch.setattr(builder_module, "build_issue", build_that_crashes_on_boom)
    path = project / "issues" / EXAMPLE / KREMLIN
    good = path.read_text(encoding="utf-8")
    path.write_text(good + "\nBOOM\n", encoding="utf-8")
    text = _until(preview, lambda t: t.startswith("Error:"))
    assert text == (
        "Error: internal error: RuntimeError: boom in a rebuild\n"
        "  hint: run the command again with --verbose to see the traceback, and report it "
        "if the input looks right\n"
    )
    assert "internal error" in _get(preview, "/email.html")
    path.write_text(good.replace("The Kremlin", "The Kremlin again", 1), encoding="utf-8")
    text = _until(preview, lambda t: "Kremlin again" in t)
    assert "Kremlin again" in text
