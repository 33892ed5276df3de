"""Build an issue and write its HTML, text and .eml files atomically."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .atomic import write_atomically
from .config import Project
from .errors import DigestError
from .issue import Issue, load_issue
from .message import MessageTemplate
from .render import RenderedIssue, render_issue

log = logging.getLogger(__name__)

FORMATS = ("html", "text", "eml")
SUFFIX = {"html": ".html", "text": ".txt", "eml": ".eml"}


@dataclass(frozen=True)
class BuiltIssue:
    """Everything an export or a preview shows: the issue, its parts and its message."""

    issue: Issue
    rendered: RenderedIssue
    date: str | None = None

    @cached_property
    def message(self) -> MessageTemplate:
        """The MIME message, encoded only when an .eml is asked for."""
        return MessageTemplate(self.rendered, date=self.date)

    @cached_property
    def eml(self) -> bytes:
        return self.message.personalise(None)

    def output(self, fmt: str) -> bytes:
        """Return the bytes of one export format."""
        if fmt == "html":
            return self.rendered.html.encode("utf-8")
        if fmt == "text":
            return self.rendered.text.encode("utf-8")
        if fmt == "eml":
            return self.eml
        raise ValueError(fmt)


def build_issue(
    project: Project, ref: str | Path, *, date: str | None = None, local_images: bool = False
) -> BuiltIssue:
    """Read, render, inline and wrap an issue in its (non-personalised) message.

    The issue folder's pictures are linked at their published URLs; with *local_images*
    (the preview) they keep the src the story gives.
    """
    issue = load_issue(project, ref)
    return BuiltIssue(issue, render_issue(project, issue, personal=False, local_images=local_images), date)


def export_issue(
    project: Project, ref: str | Path, out_dir: Path, formats: tuple[str, ...] = FORMATS
) -> list[Path]:
    """Build the issue, then write the chosen formats into *out_dir*; return the paths."""
    built = build_issue(project, ref)
    taken = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if taken is not None and not taken.is_dir():
        raise DigestError(
            "is a file, not a folder",
            path=taken,
            hint="give --out a folder (it is made if missing), or '-' for standard output",
        )
    outputs = {out_dir / f"{built.issue.slug}{SUFFIX[f]}": built.output(f) for f in formats}
    write_atomically(outputs)
    return list(outputs)
