"""Read story files (YAML front matter + Markdown) into Story objects."""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt

from .config import control_character, control_hint
from .errors import ContentError, DigestError, DigestErrors
from .language import is_language_tag, suggested_tag
from .links import is_http_url, site_of
from .plaintext import CJK_FULL_STOP, ideographic, tokens_to_text

log = logging.getLogger(__name__)

STORY_SUFFIXES = (".md", ".markdown")
KNOWN_KEYS = (
    "title",
    "source",
    "url",
    "dateline",
    "read_also",
    "section",
    "author",
    "date",
    "image",
    "language",
)

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class _BadDate:
    """A value YAML reads as a date (2024-02-30) that does not exist, kept with its line.

    PyYAML's own timestamp constructor raises for the whole document, which hid every
    other problem of the story; this one lets the story report it with the rest.
    """

    text: str
    line: int  # of the front matter, from 0
    reason: str


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """The safe loader, but a date that does not exist is a _BadDate, not an exception."""


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> object:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except (ValueError, TypeError, AttributeError) as e:  # a day the month lacks; '!!timestamp foo'
        reason = str(e) if isinstance(e, ValueError) else "not a date"
        if "timedelta" in reason:  # Python's words for a zone offset past 24 hours
            reason = "its time zone is more than 24 hours off UTC"
        return _BadDate(str(node.value) or "''", node.start_mark.line, reason)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)
# YAML errors whose context mark, not the problem mark, is the line to fix.
_STARTS_AT_CONTEXT = ("while parsing a flow", "while scanning a quoted scalar", "while scanning a simple key")
# CommonMark with raw HTML disabled: '<…>' or '<script>' in a story shows as text.
_markdown = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")


@dataclass(frozen=True)
class Link:
    """A related link ("Read also"); the url is optional."""

    title: str
    url: str | None = None


@dataclass(frozen=True)
class Image:
    src: str
    alt: str


@dataclass(frozen=True)
class Story:
    """One news story: its front matter and its Markdown body, rendered once."""

    slug: str
    path: Path
    title: str
    body: str
    body_html: str
    body_text: str  # the plain-text form, dateline first, wrapped
    body_line: int
    source: str | None = None
    url: str | None = None
    dateline: str | None = None
    read_also: tuple[Link, ...] = ()
    section: str | None = None
    author: str | None = None
    date: str | None = None
    image: Image | None = None
    language: str | None = None  # a BCP 47 tag, where the story is not in the newsletter's language

    @property
    def lead(self) -> str:
        """Return the dateline that opens the story, as the seed writes it."""
        return lead_of(self.dateline, self.source)

    @property
    def host(self) -> str | None:
        """Return the site name shown in "Continue reading at <host>"."""
        return site_of(self.url) or None

    @property
    def words(self) -> int:
        """The body's words; in Chinese and Japanese, written without spaces, its characters
        (as word counts of those languages go), not a whole paragraph as one."""
        return sum(
            1 if token.isascii() else (sum(ideographic(c) for c in token) or 1) for token in self.body.split()
        )


@dataclass(frozen=True)
class _Cached:
    stamp: tuple[int, int]
    story: Story
    warnings: tuple[DigestError, ...]


_cache: dict[Path, _Cached] = {}


def read_story(path: Path) -> tuple[Story, list[DigestError]]:
    """Read one story file; return it with its warnings, or raise every error it has.

    A file whose size and modification time did not change is not parsed again.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise ContentError(f"cannot read story: {e.strerror}", path=path) from e
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _cache.get(path)
    if cached is not None and cached.stamp == stamp:
        return cached.story, list(cached.warnings)
    story, warnings = _parse_story(path, path.read_bytes())
    _cache[path] = _Cached(stamp, story, tuple(warnings))
    return story, warnings


def _parse_story(path: Path, raw: bytes) -> tuple[Story, list[DigestError]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ContentError("not UTF-8 text", path=path, line=line, hint="save the story as UTF-8") from e
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    front, body, body_line = _split_front_matter(path, text)
    try:
        meta = yaml.load(front, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        # An unclosed '[', '{' or quote, or a line with no ':': YAML notices only later
        # (often at the end), so name the line where the broken value starts.
        if str(getattr(e, "context", "")).startswith(_STARTS_AT_CONTEXT):
            mark = getattr(e, "context_mark", None) or mark
        last = len(front.rstrip().splitlines()) - 1  # a mark at the end: the last line given
        raise ContentError(
            f"malformed YAML front matter: {problem}",
            path=path,
            line=min(mark.line, max(last, 0)) + 2 if mark else 2,
            hint="front matter is 'key: value' lines; quote values that contain ': ' or start with '[' or '{'",
        ) from e
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ContentError(
            "front matter is not a mapping of keys to values",
            path=path,
            line=2,
            hint="write front matter as 'key: value' lines, for example 'title: ...'",
        )
    return _build_story(path, text, front, meta, body, body_line)


def _split_front_matter(path: Path, text: str) -> tuple[str, str, int]:
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise ContentError(
            "no front matter",
            path=path,
            line=1,
            hint="start the file with a '---' line, then 'title: ...', then another '---' line",
        )
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            front = "\n".join(lines[1:index])
            body = "\n".join(lines[index + 1 :])
            return front, body, index + 2
    raise ContentError(
        "front matter is not closed",
        path=path,
        line=1,
        hint="end the front matter with a line holding only '---'",
    )


def _key_lines(front: str) -> dict[str, int]:
    """Return the file line of each top-level front-matter key (computed on demand)."""
    try:
        node = yaml.compose(front, Loader=_Loader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 2 for k, _ in node.value if isinstance(k.value, str)}


def _build_story(
    path: Path, text: str, front: str, meta: dict[Any, Any], body: str, body_line: int
) -> tuple[Story, list[DigestError]]:
    errors: list[DigestError] = []
    warnings: list[DigestError] = []
    lines: dict[str, int] | None = None

    def where(key: str) -> int:
        nonlocal lines
        if lines is None:
            lines = _key_lines(front)
        return lines.get(key, 2)

    def error(key: str, message: str, hint: str) -> None:
        errors.append(ContentError(message, path=path, line=where(key), hint=hint))

    flagged: set[str] = set()  # keys whose value was reported already
    meta = dict(meta)
    for key, value in list(meta.items()):
        bad = _bad_dates(key) + _bad_dates(value)
        for date in bad:
            errors.append(
                ContentError(
                    f"invalid date in '{key.text if isinstance(key, _BadDate) else key}': "
                    f"{date.text} ({date.reason})",
                    path=path,
                    line=date.line + 2,
                    hint="write dates as YYYY-MM-DD with a day the month has, "
                    "or quote the value to keep it as text",
                )
            )
        if isinstance(key, _BadDate):
            del meta[key]
        elif bad:
            meta[key] = None  # reported: not also 'empty' or 'must be text'
            flagged.add(str(key))

    def text_field(key: str) -> str | None:
        value = meta.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            error(key, f"'{key}' must be text", f"write '{key}: some text'")
            return None
        value = str(value).strip()
        if controlled(key, value):
            return None
        return value or None

    def controlled(key: str, value: str) -> bool:
        """Report a control character in a value (it would reach the plain-text part, a
        bare CR say, or the page as it is); return whether there was one."""
        found = control_character(value, allowed="\n\t")
        if found:
            error(key, f"'{key}' holds a control character ({found})", control_hint(found))
            flagged.add(key)
        return bool(found)

    title = text_field("title")
    if title is None and "title" not in meta:
        errors.append(
            ContentError(
                "front matter has no 'title'",
                path=path,
                line=1,
                hint="add 'title: ...' to the front matter",
            )
        )
    elif title is None and "title" not in flagged:
        error("title", "'title' is empty", "write the story's headline after 'title:'")

    url = written_url = text_field("url")
    if url is not None and not is_http_url(url):
        error("url", f"'url' is not an http(s) link: {url!r}", "write the article's full address")
        url = None

    date_value = meta.get("date")
    date: str | None
    if isinstance(date_value, (dt.date, dt.datetime)):
        date = date_value.isoformat()
    else:
        date = text_field("date")

    read_also: list[Link] = []
    raw_links = meta.get("read_also")
    if raw_links is not None:
        if isinstance(raw_links, (str, dict)):
            raw_links = [raw_links]
        if not isinstance(raw_links, list):
            error("read_also", "'read_also' must be a list", "write '- title: ...' items, url optional")
        else:
            for item in raw_links:
                if isinstance(item, str) and controlled("read_also", item):
                    continue
                if isinstance(item, str) and item.strip():
                    read_also.append(Link(item.strip()))
                elif isinstance(item, dict) and isinstance(item.get("title"), str):
                    if controlled("read_also", item["title"]):
                        continue
                    link_url = item.get("url")
                    if link_url is not None and not is_http_url(link_url):
                        error(
                            "read_also",
                            f"read_also url is not an http(s) link: {link_url!r}",
                            "write the full address, or leave the url out",
                        )
                        link_url = None
                    read_also.append(Link(item["title"].strip(), link_url))
                else:
                    error(
                        "read_also",
                        "each 'read_also' item needs a 'title'",
                        "write '- title: ...' (and optionally '  url: https://...')",
                    )

    language = text_field("language")
    if language is not None and not is_language_tag(language):
        fixed = suggested_tag(language)
        error(
            "language",
            f"'language' is not a BCP 47 language tag: {language!r}",
            f"write language: {fixed}"
            if fixed
            else "the story's language as an ISO 639 code of 2 or 3 letters, a script and a region "
            "if need be: ar, ja, pa-Arab",
        )
        language = None

    image: Image | None = None
    raw_image = meta.get("image")
    if raw_image is not None:
        if not isinstance(raw_image, dict) or not isinstance(raw_image.get("src"), str):
            error("image", "'image' needs 'src'", "write 'image: {src: ..., alt: ...}'")
        elif not isinstance(raw_image.get("alt"), str) or not raw_image["alt"].strip():
            error(
                "image",
                "'image' has no 'alt' text",
                "describe the picture in 'alt:' for readers who cannot see it",
            )
        elif not controlled("image", raw_image["src"]) and not controlled("image", raw_image["alt"]):
            image = Image(raw_image["src"].strip(), raw_image["alt"].strip())

    for key in meta:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(str(key).lower(), KNOWN_KEYS, n=1)
            warnings.append(
                ContentError(
                    f"unknown front matter key '{key}' (ignored)",
                    path=path,
                    line=where(str(key)),
                    hint=f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(KNOWN_KEYS),
                )
            )

    source = text_field("source")
    dateline = text_field("dateline")
    section = text_field("section")
    author = text_field("author")
    if not body.strip():
        errors.append(
            ContentError(
                "the story has no text",
                path=path,
                line=body_line,
                hint="write the story below the front matter, or remove it with 'digest rm'",
            )
        )
    tokens = _markdown.parse(body)  # parsed once, for both parts
    story = Story(
        slug=path.stem,
        path=path,
        title=title or "",
        body=body.strip("\n"),
        body_html=_render_html(tokens),
        body_text=tokens_to_text(tokens, lead_of(dateline, source)),
        body_line=body_line,
        source=source,
        url=url,
        dateline=dateline,
        read_also=tuple(read_also),
        section=section,
        author=author,
        date=date,
        image=image,
        language=language,
    )
    if errors:  # the warnings go with them: 'digest check' reports both at once
        errors.sort(key=lambda e: e.line or 0)  # in the file's order
        problem = errors[0] if len(errors) == 1 else DigestErrors(errors)
        problem.warnings = tuple(warnings)
        # What could be read, for 'digest check' to look through too (the body's links, a
        # url without a source): never rendered, so its url is kept as written.
        problem.story = dataclasses.replace(story, url=written_url)
        raise problem
    return story, warnings


def _bad_dates(value: object, seen: set[int] | None = None) -> list[_BadDate]:
    """Return the dates that do not exist in a front-matter value (or key), nested or not.

    A YAML alias can make a value hold itself (``foo: &x [*x]``): each list or mapping is
    looked through once.
    """
    if isinstance(value, _BadDate):
        return [value]
    if not isinstance(value, (dict, list)):
        return []
    seen = set() if seen is None else seen
    if id(value) in seen:
        return []
    seen.add(id(value))
    items = [x for pair in value.items() for x in pair] if isinstance(value, dict) else value
    return [bad for item in items for bad in _bad_dates(item, seen)]


def front_line(story: Story, key: str) -> int | None:
    """Return the line of *key* in the story's front matter (for a finding), if it is there."""
    for number, text in enumerate(story.path.read_text(encoding="utf-8").splitlines(), 1):
        if number >= story.body_line:
            return None
        if text.startswith(f"{key}:"):
            return number
    return None


def lead_of(dateline: str | None, source: str | None) -> str:
    """Return "MOSCOW, December 31. /TASS/." (or "" without a dateline).

    A Chinese or Japanese dateline keeps its script's full stop: "東京、3月6日。/NHK/。".
    """
    if not dateline:
        return ""
    stop, gap = (CJK_FULL_STOP, "") if ideographic(dateline[-1]) else (".", " ")
    return f"{dateline}{stop}{gap}/{source}/{stop}" if source else f"{dateline}{stop}"


def body_parts(body: str, image_srcs: Mapping[str, str], lead: str = "") -> tuple[str, str]:
    """Return a Markdown body as HTML and as the text part writes it (after *lead*, the
    dateline), parsed once, each image whose src *image_srcs* names given its new src.

    The email links a picture of the issue folder at its published address (see images.py).
    """
    tokens = _with_srcs(body, image_srcs)
    return _render_html(tokens), tokens_to_text(tokens, lead)


def _with_srcs(body: str, image_srcs: Mapping[str, str]) -> list:
    tokens = _markdown.parse(body)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image" and child.attrGet("src") in image_srcs:
                child.attrSet("src", image_srcs[child.attrGet("src")])
    return tokens


def _render_html(tokens: list) -> str:
    return _markdown.renderer.render(tokens, _markdown.options, {})


def markdown_tokens(source: str) -> list:
    """Return the markdown-it token stream of *source* (for the plain-text part)."""
    return _markdown.parse(source)
