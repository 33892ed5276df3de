"""Render the archive's pages from templates/web/archive/: issues, index, sources, sitemap."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import jinja2
from markupsafe import Markup
from slugify import slugify

from ..config import Newsletter
from ..errors import TemplateError
from ..issue import Issue
from ..mergefields import NoReader
from ..render import _render
from ..stories import Story
from .archive import Site, rfc3339

ISSUES_PER_PAGE = 20
STORIES_PER_PAGE = 50
PAGE = "web/archive/{}"


@dataclass(frozen=True)
class Entry:
    """One published issue: where it lives, its dates, and its content as HTML."""

    issue: Issue
    path: str  # site path, such as "2021-12-31/"
    url: str
    published: dt.datetime
    updated: dt.datetime
    content: Markup  # the stories and the disclaimer, links relative to the issue's page
    description: str

    @property
    def day(self) -> dt.date:
        return self.issue.date or self.published.date()

    @property
    def title(self) -> str:
        return self.issue.title


@dataclass(frozen=True)
class Source:
    """A publisher stories are attributed to, and its stories, newest first."""

    name: str
    slug: str
    items: tuple[tuple[Entry, Story], ...]

    @property
    def path(self) -> str:
        return f"sources/{self.slug}/"


def render_content(env: jinja2.Environment, newsletter: Newsletter, issue: Issue) -> Markup:
    """Render an issue's stories (each with its anchor) and the disclaimer."""
    context = {"newsletter": newsletter, "issue": issue, "stories": issue.stories, "recipient": NoReader()}
    _, html = _render(env, PAGE.format("content.html"), context)  # the email's story partial: no reader
    return Markup(html)


def describe(issue: Issue) -> str:
    """Return the page description: the preheader, else the headlines."""
    if issue.preheader:
        return issue.preheader
    text = "; ".join(s.title for s in issue.stories)
    return text if len(text) <= 200 else text[:199].rsplit(" ", 1)[0] + "…"


def sources_of(entries: list[Entry]) -> list[Source]:
    """Group the stories of every entry by their source's slug."""
    names: dict[str, str] = {}
    items: dict[str, list[tuple[Entry, Story]]] = {}
    for entry in entries:
        for story in entry.issue.stories:
            if not story.source:
                continue
            slug = slugify(story.source) or "source-" + hashlib.sha1(story.source.encode()).hexdigest()[:8]
            names[slug] = min(names.get(slug, story.source), story.source)
            items.setdefault(slug, []).append((entry, story))
    return [Source(names[slug], slug, tuple(items[slug])) for slug in sorted(items)]


class Pages:
    """Render every page of the site into {site path: bytes}."""

    def __init__(self, env: jinja2.Environment, newsletter: Newsletter, site: Site) -> None:
        self.env = env
        self.newsletter = newsletter
        self.site = site
        self.files: dict[str, bytes] = {}
        self.lastmod: dict[str, dt.datetime] = {}

    def render(self, entries: list[Entry]) -> dict[str, bytes]:
        """Render the whole site; *entries* are newest first."""
        for index, entry in enumerate(entries):
            newer = entries[index - 1] if index > 0 else None
            older = entries[index + 1] if index + 1 < len(entries) else None
            self.page(
                "issue.html",
                entry.path,
                entry.updated,
                entry.title,
                entry.description,
                "article",
                entry=entry,
                issue=entry.issue,
                stories=entry.issue.stories,
                newer=newer,
                older=older,
            )
        self.paginated(
            "index.html",
            "",
            entries,
            ISSUES_PER_PAGE,
            self.newsletter.name,
            f"Every issue of {self.newsletter.name}, newest first",
            lambda e: e.updated,
        )
        sources = sources_of(entries)
        newest = max((e.updated for e in entries), default=_EPOCH)
        self.page(
            "sources.html",
            "sources/",
            newest,
            f"Sources · {self.newsletter.name}",
            f"The publishers of the stories in {self.newsletter.name}",
            "website",
            sources=sources,
        )
        for source in sources:
            self.paginated(
                "source.html",
                source.path,
                list(source.items),
                STORIES_PER_PAGE,
                f"{source.name} · {self.newsletter.name}",
                f"Stories from {source.name} in {self.newsletter.name}",
                lambda item: item[0].updated,
                source=source,
            )
        self.files["archive.css"] = self._template("archive.css", {}).encode("utf-8")
        self.files["sitemap.xml"] = self._sitemap()
        self.files["robots.txt"] = (
            f"User-agent: *\nAllow: /\n\nSitemap: {self.site.url('sitemap.xml')}\n"
        ).encode()
        return self.files

    def paginated(
        self,
        template: str,
        path: str,
        items: list,
        per_page: int,
        title: str,
        description: str,
        updated: Callable,
        **context,
    ) -> None:
        """Render *items* over numbered pages: path, then path/page/2/, ..."""
        chunks = [items[i : i + per_page] for i in range(0, len(items), per_page)] or [[]]
        paths = [path] + [f"{path}page/{n}/" for n in range(2, len(chunks) + 1)]
        for number, chunk in enumerate(chunks, 1):
            pagination = {
                "number": number,
                "count": len(chunks),
                "newer": paths[number - 2] if number > 1 else None,
                "older": paths[number] if number < len(chunks) else None,
            }
            shown = title if number == 1 else f"{title} · page {number}"
            self.page(
                template,
                paths[number - 1],
                max(map(updated, chunk), default=_EPOCH),
                shown,
                description,
                "website",
                items=chunk,
                pagination=pagination,
                **context,
            )

    def page(
        self, template: str, path: str, lastmod: dt.datetime, title: str, description: str, kind: str, **context
    ) -> None:
        """Render one page to ``path/index.html`` and check it carries the disclaimer."""
        depth = path.count("/")

        def rel(target: str = "") -> str:
            return ("../" * depth + target) or "./"

        page = {
            "path": path,
            "url": self.site.url(path),
            "title": title,
            "description": description,
            "type": kind,
        }
        html = self._template(
            template,
            {"newsletter": self.newsletter, "page": page, "rel": rel, "site": self._site_context(), **context},
        )
        self._check_disclaimer(html, template)
        self.files[f"{path}index.html"] = html.encode("utf-8")
        self.lastmod[path] = lastmod

    def _template(self, name: str, context: dict) -> str:
        return _render(self.env, PAGE.format(name), context)[1]

    def _site_context(self) -> dict:
        return {
            "base_url": self.site.base_url,
            "home": self.site.url(),
            "atom_url": self.site.url("feed.atom"),
            "json_url": self.site.url("feed.json"),
            "subscribe_url": self.site.url("subscribe"),
        }

    def _check_disclaimer(self, html: str, template: str) -> None:
        disclaimer = " ".join(self.newsletter.disclaimer.split())
        if escape(disclaimer, quote=False) in html:
            return
        import lxml.html

        if disclaimer not in " ".join(lxml.html.document_fromstring(html).text_content().split()):
            name = PAGE.format(template)
            raise TemplateError(
                "the rendered web page does not carry the editorial disclaimer",
                path=_template_path(self.env, name),
                hint="keep {{ newsletter.disclaimer }} in the template (or extend "
                f'"!default/{name}" and keep its footer block)',
            )

    def _sitemap(self) -> bytes:
        lines = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">',
        ]
        for path in sorted(self.lastmod):
            lines.append(
                f"<url><loc>{xml_escape(self.site.url(path))}</loc>"
                f"<lastmod>{rfc3339(self.lastmod[path])}</lastmod></url>"
            )
        lines.append("</urlset>\n")
        return "\n".join(lines).encode("utf-8")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _template_path(env: jinja2.Environment, name: str) -> Path | str:
    try:
        return env.get_template(name).filename or name
    except jinja2.TemplateError:
        return name
