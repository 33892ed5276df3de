"""Rebuild the previewed issue when its files change; keep the last result whole."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from ..config import CONFIG_NAME, Project, load_project
from ..errors import DigestError, DigestErrors, internal_error
from ..export import BuiltIssue, build_issue
from ..issue import resolve_issue_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """One build: either the issue or the errors that stopped it."""

    version: int
    built: BuiltIssue | None
    errors: tuple[DigestError, ...]


class Builder:
    """Holds the latest snapshot; readers never see a half-built one."""

    def __init__(self, project_dir: Path, ref: str) -> None:
        self.project_dir = project_dir
        self.project: Project = load_project(project_dir)
        self.issue_dir = resolve_issue_dir(self.project, ref)
        self._changed = threading.Condition()
        self._snapshot = Snapshot(0, None, ())
        self.closed = False
        self.rebuild()

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def rebuild(self) -> Snapshot:
        """Build the issue again and publish the result (or its errors)."""
        try:
            self.project = load_project(self.project_dir)
            # The server serves the issue folder's pictures: the email shows them as written.
            built = build_issue(self.project, self.issue_dir, local_images=True)
            errors: tuple[DigestError, ...] = ()
        except DigestErrors as e:
            built, errors = None, tuple(e.errors)
        except DigestError as e:
            built, errors = None, (e,)
        except Exception as e:  # noqa: BLE001 - the preview outlives any failed rebuild
            log.debug("rebuild failed", exc_info=True)
            built, errors = None, (internal_error(e),)
        with self._changed:
            self._snapshot = Snapshot(self._snapshot.version + 1, built, errors)
            self._changed.notify_all()
        if errors:
            log.warning("build failed: %s", "; ".join(e.format() for e in errors))
        return self._snapshot

    def wait_for_change(self, version: int, timeout: float) -> Snapshot:
        """Block until a snapshot newer than *version* exists, or *timeout* passes."""
        with self._changed:
            self._changed.wait_for(lambda: self.closed or self._snapshot.version != version, timeout)
            return self._snapshot

    def close(self) -> None:
        """Wake every waiter for good (the server is stopping)."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def watches(self, path: Path) -> bool:
        """Return whether a change to *path* should rebuild the preview."""
        root = self.project.root
        if path.name.startswith(".") and path.name != ".env":
            return False  # editors' swap files, atomic-write temporaries
        if path in (root / CONFIG_NAME, root / ".env"):
            return True
        return path.is_relative_to(self.issue_dir) or path.is_relative_to(self.project.templates_dir)

    def watch(self, stop: threading.Event) -> None:
        """Rebuild on every relevant change until *stop* is set (runs in a thread)."""
        from watchfiles import watch

        def relevant(_change, path: str) -> bool:
            return self.watches(Path(path))

        for changes in watch(
            self.project.root,
            watch_filter=relevant,
            stop_event=stop,
            debounce=150,
            step=50,
            rust_timeout=500,
            yield_on_timeout=False,
        ):
            log.info("changed: %s", ", ".join(sorted({Path(p).name for _, p in changes})))
            try:
                self.rebuild()
            except Exception:  # noqa: BLE001 - publishing failed; keep watching
                log.exception("rebuild failed")
