"""Preview an issue in a browser, live: the exact email, rebuilt when a file changes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from .builder import Builder
from .server import PreviewServer, bind

log = logging.getLogger(__name__)

__all__ = ["Builder", "PreviewServer", "start_preview"]


def start_preview(
    project_dir: Path, ref: str, host: str = "127.0.0.1", port: int | None = None
) -> tuple[PreviewServer, Callable[[], None]]:
    """Build the issue, bind the server and start watching files.

    Returns the server (call ``serve_forever``) and a function that stops it all.
    """
    builder = Builder(project_dir, ref)
    server = bind(host, port, builder)
    stop = threading.Event()
    watcher = threading.Thread(target=builder.watch, args=(stop,), name="digest-watch", daemon=True)
    watcher.start()

    def shutdown() -> None:
        stop.set()
        builder.close()  # ends the event streams
        server.shutdown()
        server.server_close()

    return server, shutdown
