"""The archive's feeds: Atom (RFC 4287) and JSON Feed 1.1, one entry per issue."""

from __future__ import annotations

import json
import re
import uuid
import xml.etree.ElementTree as ET

from ..config import Newsletter
from .archive import Site, rfc3339
from .site import Entry

FEED_ENTRIES = 20
ATOM_NS = "http://www.w3.org/2005/Atom"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
# Characters XML 1.0 does not allow, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def feed_id(newsletter: Newsletter, slug: str | None = None) -> str:
    """Return a stable id: a name-based UUID of the list and the issue, not of the domain."""
    name = newsletter.list_id + (f"/{slug}" if slug is not None else "")
    return uuid.uuid5(uuid.NAMESPACE_URL, f"digest:{name}").urn


def absolute_content(entry: Entry) -> str:
    """Return the entry's HTML with every link and image made absolute (feed readers need it)."""
    import lxml.html

    wrapper = lxml.html.fragment_fromstring(str(entry.content), create_parent="div")
    wrapper.make_links_absolute(entry.url, resolve_base_href=False)
    html = lxml.html.tostring(wrapper, encoding="unicode")
    return html.removeprefix("<div>").removesuffix("</div>").strip() + "\n"


def atom_feed(newsletter: Newsletter, site: Site, entries: list[Entry]) -> bytes:
    """Return feed.atom for the newest entries (newest first)."""
    shown = entries[:FEED_ENTRIES]
    feed = ET.Element("feed", {"xmlns": ATOM_NS, "xml:lang": newsletter.language})
    _text(feed, "id", feed_id(newsletter))
    _text(feed, "title", newsletter.name)
    _text(feed, "subtitle", f"Every issue of {newsletter.name}")
    _text(feed, "updated", rfc3339(max((e.updated for e in shown), default=_epoch())))
    ET.SubElement(feed, "link", {"rel": "self", "type": "application/atom+xml", "href": site.url("feed.atom")})
    ET.SubElement(feed, "link", {"rel": "alternate", "type": "text/html", "href": site.url()})
    author = ET.SubElement(feed, "author")
    _text(author, "name", newsletter.name)
    _text(author, "uri", site.url())
    for entry in shown:
        item = ET.SubElement(feed, "entry")
        _text(item, "id", feed_id(newsletter, entry.issue.slug))
        _text(item, "title", entry.title)
        ET.SubElement(item, "link", {"rel": "alternate", "type": "text/html", "href": entry.url})
        _text(item, "published", rfc3339(entry.published))
        _text(item, "updated", rfc3339(entry.updated))
        _text(item, "summary", entry.description)
        _text(item, "content", absolute_content(entry), type="html")
    ET.indent(feed, space="")
    body = ET.tostring(feed, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n").encode("utf-8")


def json_feed(newsletter: Newsletter, site: Site, entries: list[Entry]) -> bytes:
    """Return feed.json (JSON Feed 1.1) for the newest entries (newest first)."""
    feed = {
        "version": JSON_FEED_VERSION,
        "title": newsletter.name,
        "home_page_url": site.url(),
        "feed_url": site.url("feed.json"),
        "description": f"Every issue of {newsletter.name}",
        "language": newsletter.language,
        "authors": [{"name": newsletter.name, "url": site.url()}],
        "items": [
            {
                "id": feed_id(newsletter, entry.issue.slug),
                "url": entry.url,
                "title": entry.title,
                "summary": entry.description,
                "content_html": absolute_content(entry),
                "date_published": rfc3339(entry.published),
                "date_modified": rfc3339(entry.updated),
                "tags": sorted({s.source for s in entry.issue.stories if s.source}),
            }
            for entry in entries[:FEED_ENTRIES]
        ],
    }
    return (json.dumps(feed, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    element.text = _NOT_XML.sub("", text)
    return element


def _epoch():
    import datetime as dt

    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
