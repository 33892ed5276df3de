"""digest: build a newsletter digest from Markdown story files, export it and send it.

The names below are imported on first use, so ``digest --help`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Newsletter": "config",
    "Project": "config",
    "Settings": "config",
    "load_project": "config",
    "ConfigError": "errors",
    "ContentError": "errors",
    "DigestError": "errors",
    "DigestErrors": "errors",
    "SendError": "errors",
    "TemplateError": "errors",
    "BuiltIssue": "export",
    "build_issue": "export",
    "export_issue": "export",
    "Issue": "issue",
    "load_issue": "issue",
    "MessageTemplate": "message",
    "Recipient": "message",
    "RenderedIssue": "render",
    "render_issue": "render",
    "Story": "stories",
    "read_story": "stories",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'digest' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
