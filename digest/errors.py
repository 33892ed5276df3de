"""Errors that carry the file, the line and a remedy."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class DigestError(Exception):
    """A problem with the user's input, reported as ``path:line: message`` plus a hint."""

    def __init__(
        self,
        message: str,
        path: Path | str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        self.hint = hint

    def location(self, relative_to: Path | None = None) -> str:
        """Return ``path[:line]`` (relative to *relative_to* where possible), or ''."""
        if self.path is None:
            return ""
        shown = self.path
        if relative_to is not None:
            try:
                shown = self.path.resolve().relative_to(relative_to.resolve())
            except ValueError:
                pass
        return f"{shown}:{self.line}" if self.line else str(shown)

    def format(self, relative_to: Path | None = None) -> str:
        """Return the one-line message, prefixed with its location."""
        where = self.location(relative_to)
        return f"{where}: {self.message}" if where else self.message

    def __str__(self) -> str:
        return self.format()


class ConfigError(DigestError):
    """digest.toml, .env or the environment is missing or wrong."""


class ContentError(DigestError):
    """A story file or an issue folder is wrong."""


class TemplateError(DigestError):
    """A template fails to render or drops something every email must carry."""


class SendError(DigestError):
    """Sending could not go on (server refused, authentication failed, ...)."""


class DigestErrors(DigestError):
    """Several problems found in one run; all are reported together."""

    def __init__(self, errors: Iterable[DigestError]) -> None:
        self.errors = list(errors)
        super().__init__(f"{len(self.errors)} problem(s)")


def raise_all(errors: list[DigestError]) -> None:
    """Raise the one error, or all of them together; do nothing when there are none."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise DigestErrors(errors)


def internal_error(error: BaseException) -> DigestError:
    """Describe an unexpected exception (a bug, not the input) as one line with a hint."""
    text = str(error).strip()
    what = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    return DigestError(
        f"internal error: {what}",
        hint="run the command again with --verbose to see the traceback, and "
        "report it if the input looks right",
    )
