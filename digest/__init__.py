"""digest: build a newsletter digest from Markdown story files, export it and send it."""

from __future__ import annotations

from .config import Newsletter, Project, Settings, load_project
from .errors import ConfigError, ContentError, DigestError, DigestErrors, SendError, TemplateError
from .export import BuiltIssue, build_issue, export_issue
from .issue import Issue, load_issue
from .message import MessageTemplate, Recipient
from .render import RenderedIssue, render_issue
from .stories import Story, read_story

__version__ = "0.1.0"

__all__ = [
    "BuiltIssue", "ConfigError", "ContentError", "DigestError", "DigestErrors", "Issue",
    "MessageTemplate", "Newsletter", "Project", "Recipient", "RenderedIssue", "SendError",
    "Settings", "Story", "TemplateError", "build_issue", "export_issue", "load_issue",
    "load_project", "read_story", "render_issue",
]
