"""The readers' web app: a WSGI application for unsubscribing, subscribing and confirming.

``create_app(project)`` returns it; ``digest serve`` runs it on waitress.
"""

from __future__ import annotations

from .app import Options, ReaderApp, create_app

__all__ = ["Options", "ReaderApp", "create_app"]
