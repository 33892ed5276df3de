"""The readers' pages: Jinja2 templates (project over defaults) and the security headers."""

from __future__ import annotations

from pathlib import Path

import jinja2
from werkzeug.wrappers import Response

from ..config import Project
from ..render import default_templates_dir

FOLDER = "web/reader"

# No script at all; styles only from our own stylesheet; forms post only to us.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the links carry tokens
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def make_environment(project: Project) -> jinja2.Environment:
    """Return the pages' environment: the project's templates/web/reader/ over the defaults.

    An override can extend the default it replaces: ``{% extends "!default/base.html" %}``.
    """
    defaults = jinja2.FileSystemLoader(str(default_templates_dir() / FOLDER))
    loaders: list[jinja2.BaseLoader] = []
    own = project.templates_dir / FOLDER
    if own.resolve() != (default_templates_dir() / FOLDER).resolve():
        loaders.append(jinja2.FileSystemLoader(str(own)))
    loaders += [defaults, jinja2.PrefixLoader({"!default": defaults}, delimiter="/")]
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def stylesheet(project: Project) -> Path:
    """Return the pages' stylesheet: the project's own, else the default."""
    own = project.templates_dir / FOLDER / "style.css"
    return own if own.is_file() else default_templates_dir() / FOLDER / "style.css"


def secure(response: Response) -> Response:
    """Add the security headers every answer carries."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def page(env: jinja2.Environment, name: str, context: dict, status: int = 200) -> Response:
    """Render a page template into a secured HTML response."""
    html = env.get_template(name).render(**context)
    return secure(Response(html, status=status, mimetype="text/html"))
