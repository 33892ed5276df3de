"""Split a plain-text digest (the shape of the seed) into stories.

The shape: blocks separated by blank lines. A story is a title line, then its
paragraphs (one per line), the first of which may open with a dateline such as
``MOSCOW, December 31. /TASS/.``; it may end with ``Continue reading at <site>``
and be followed by a ``Read also:`` block. The closing paragraph is the
newsletter's disclaimer.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .compose import INIT_EXAMPLES
from .errors import ContentError, DigestError

# "MOSCOW, December 31. /TASS/." or "ZÜRICH, 13 June. / SWISS INFO /.": a place in capitals
# (any script), a date, then the source between slashes. The comma and the full stop may be
# the script's own: "الرباط، 6 مارس. /الجزيرة/.", "東京、3月6日。/NHK/。" (a CJK date is
# written "3月6日" or "3월 6일", and no space need follow an ideographic comma).
_COMMA = r"(?:,\s+|[،、，]\s*)"
_FULL_STOP = r"[.。．]"
DATELINE = re.compile(
    rf"^(?P<dateline>(?P<place>[^\W\d_][^\W\d_ .'’-]*(?:[ .'’-]+[^\W\d_]+)*\.?){_COMMA}"
    r"(?:[^\W\d_]+\.?\s+\d{1,2}|\d{1,2}\s+[^\W\d_]+|\d{1,2}\s*[月월]\s*\d{1,2}\s*[日일]))"
    rf"{_FULL_STOP}\s*/\s*(?P<source>[^/]{{1,40}}?)\s*/{_FULL_STOP}?\s*(?P<rest>.*)$"
)
CONTINUE = re.compile(r"^Continue reading at\s+(?P<site>\S+?)\.?$", re.IGNORECASE)
READ_ALSO = re.compile(r"^Read also:?\s*(?P<rest>.*)$", re.IGNORECASE)
URL = re.compile(r"^https?://\S+$")
# How a paragraph ends, and a title does not: the script's own full stop too ("本文です。").
_TERMINAL = (".", "!", "?", "…", "”", '"', "»", ":", ";", "。", "．", "！", "？")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]])")
_MD_BLOCK_START = re.compile(r"^(\s*)([#>+-]|\d+[.)])(\s)")
# Wording that marks a paragraph as an editorial disclaimer, not a story's text.
DISCLAIMER_WORDS = re.compile(
    r"\b(disclaimer|remind our readers|does not (?:necessarily )?(?:mean|imply|reflect) that we"
    r"|(?:do|does) not necessarily (?:reflect|represent)|views expressed|we (?:do not|don't) "
    r"(?:necessarily )?(?:agree|endorse))\b",
    re.IGNORECASE,
)


_PLACEHOLDER = INIT_EXAMPLES["disclaimer"]


@dataclass
class ImportedStory:
    """A story found in the text: front matter fields and Markdown paragraphs."""

    title: str
    line: int
    paragraphs: list[str] = field(default_factory=list)
    dateline: str | None = None
    source: str | None = None
    site: str | None = None
    read_also: list[dict[str, str]] = field(default_factory=list)
    closed: bool = False

    @property
    def url(self) -> str | None:
        return f"https://{self.site}/" if self.site else None

    def body(self) -> str:
        return "\n\n".join(_markdown_text(p) for p in self.paragraphs)


@dataclass
class ImportResult:
    stories: list[ImportedStory]
    notes: list[DigestError]  # paragraphs not placed, a disclaimer that differs, ...
    disclaimer_found: bool


def decode_input(raw: bytes, path: Path) -> str:
    """Check the input is a plain-text digest, not empty, binary or CSV."""
    if not raw.strip():
        raise ContentError("the file is empty", path=path, hint="give a plain-text digest")
    if b"\0" in raw[:8192]:
        raise ContentError(
            "this is a binary file, not a plain-text digest",
            path=path,
            hint="copy the digest's text into a .txt file",
        )
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ContentError("not UTF-8 text", path=path, line=line, hint="save the text as UTF-8") from e
    lines = [ln for ln in text.splitlines() if ln.strip()][:20]
    if len(lines) >= 2:
        commas = [ln.count(",") for ln in lines]
        if (
            min(commas) >= 1
            and len(set(commas)) == 1
            and not any(ln.rstrip().endswith((".", "”")) for ln in lines)
        ):
            raise ContentError(
                "this looks like CSV, not a plain-text digest",
                path=path,
                line=1,
                hint="import takes the text of a digest; a subscriber list goes to "
                "'digest subscribers import' (or 'digest send --list')",
            )
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_digest(text: str, disclaimer: str, path: Path) -> ImportResult:
    """Split the text into stories; report every paragraph that is not placed.

    The closing paragraph is never part of a story: the newsletter's disclaimer
    is dropped, one that resembles it but differs is reported with the difference,
    and one that reads like a disclaimer or stands apart after the last story's
    text is reported and not imported.
    """
    blocks = _blocks(text)
    stories: list[ImportedStory] = []
    notes: list[DigestError] = []
    wanted = " ".join(disclaimer.split())
    disclaimer_found = False
    if blocks:  # the closing paragraph: the last line of the last block
        line_no, lines = blocks[-1]
        # Lines after the disclaimer in its own block (no blank line between) are not part of
        # it: each is reported with its line, and the disclaimer is judged on its own.
        last = next((i for i in range(len(lines) - 1, -1, -1) if _closing_like(lines[i], wanted)), None)
        if last is not None and last < len(lines) - 1:
            for offset, extra in enumerate(lines[last + 1 :], last + 1):
                if extra.strip():
                    notes.append(
                        ContentError(
                            f"text after the closing paragraph, not imported: {extra.strip()[:60]!r}",
                            path=path,
                            line=line_no + offset,
                            hint="add it to a story by hand if it belongs there",
                        )
                    )
            lines = lines[: last + 1]
            blocks[-1] = (line_no, lines)
        closing = " ".join(lines[-1].split())
        closing_line = line_no + len(lines) - 1
        if _closing_like(lines[-1], wanted):
            if closing == wanted:
                disclaimer_found = True
            elif _similar(closing, wanted):
                notes.append(_disclaimer_differs(closing, wanted, path, closing_line))
            else:
                notes.append(_closing_not_imported(closing, path, closing_line))
            blocks[-1] = (line_no, lines[:-1])
            if not blocks[-1][1]:
                blocks.pop()
    current: ImportedStory | None = None
    index = 0
    while index < len(blocks):
        line_no, lines = blocks[index]
        joined = " ".join(" ".join(lines).split())
        next_block = blocks[index + 1][1] if index + 1 < len(blocks) else None
        index += 1
        if joined == wanted:
            disclaimer_found = True
            current = None
            continue
        also = READ_ALSO.match(lines[0])
        if also:
            titles = ([also.group("rest")] if also.group("rest") else []) + lines[1:]
            if not titles and next_block is not None:
                titles = blocks[index][1]
                index += 1
            if current is None:
                notes.append(
                    ContentError(
                        "a 'Read also' with no story before it was not placed",
                        path=path,
                        line=line_no,
                        hint="move it after a story",
                    )
                )
                continue
            for title in titles:
                if URL.match(title.strip()) and current.read_also:
                    current.read_also[-1]["url"] = title.strip()
                else:
                    current.read_also.append({"title": title.strip()})
            current.closed = True
            continue
        if _is_title(lines, next_block, current):
            if index == len(blocks) and _similar(joined, wanted):
                notes.append(_disclaimer_differs(joined, wanted, path, line_no))
                continue
            current = ImportedStory(title=lines[0].strip(), line=line_no)
            stories.append(current)
            continue
        if next_block is None and current is not None and not current.closed and current.paragraphs:
            if not any(CONTINUE.match(line.strip()) for line in lines):
                # A block of its own after the last story's text, with nothing that ties it
                # to the story: the digest's closing, never merged into the story.
                notes.append(_after_last_story(joined, current, path, line_no))
                continue
        if current is None or current.closed:
            if _similar(joined, wanted):  # the disclaimer, reworded (a block may follow it)
                notes.append(_disclaimer_differs(joined, wanted, path, line_no))
            else:
                notes.append(
                    ContentError(
                        f"paragraph not placed in any story: {joined[:60]!r}",
                        path=path,
                        line=line_no,
                        hint="give it a title line, or add it to a story by hand",
                    )
                )
            continue
        for offset, line in enumerate(lines):
            line = line.strip()
            cont = CONTINUE.match(line)
            if cont:
                current.site = cont.group("site")
                current.closed = True
                for extra, rest in enumerate(lines[offset + 1 :], 1):
                    if rest.strip():
                        notes.append(
                            ContentError(
                                f"text after 'Continue reading' not placed: {rest.strip()[:60]!r}",
                                path=path,
                                line=line_no + offset + extra,
                                hint="start a new story with a title line",
                            )
                        )
                break
            if not current.paragraphs and current.dateline is None:
                m = DATELINE.match(line)
                if m and m.group("place") == m.group("place").upper():
                    current.dateline = m.group("dateline")
                    current.source = m.group("source").strip()
                    line = m.group("rest")
            if line:
                current.paragraphs.append(line)
    for story in stories:
        if not story.paragraphs:
            notes.append(
                ContentError(
                    f"story {story.title!r} has no text",
                    path=path,
                    line=story.line,
                    hint="check the blank lines around it",
                )
            )
    return ImportResult(stories, notes, disclaimer_found)


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 0
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            if not current:
                start = number
            current.append(line.rstrip())
        elif current:
            blocks.append((start, current))
            current = []
    if current:
        blocks.append((start, current))
    return blocks


def _is_title(lines: list[str], next_block: list[str] | None, current: ImportedStory | None) -> bool:
    """A title is one short line without closing punctuation, followed by text."""
    if len(lines) != 1 or next_block is None:
        return False
    line = lines[0].strip()
    if len(line) > 200 or CONTINUE.match(line) or READ_ALSO.match(line):
        return False
    if current is None or current.closed:
        return True
    return not line.endswith(_TERMINAL) and bool(current.paragraphs)


def _closing_like(line: str, wanted: str) -> bool:
    """Whether a line is the disclaimer, a reworded one, or reads like one."""
    text = " ".join(line.split())
    return bool(text) and (text == wanted or _similar(text, wanted) or _reads_like_disclaimer(text))


def _reads_like_disclaimer(paragraph: str) -> bool:
    """Tell whether a paragraph reads like an editorial disclaimer (init's placeholder or the like)."""
    if _similar(paragraph, _PLACEHOLDER) or DISCLAIMER_WORDS.search(paragraph):
        return True
    # The placeholder's wording inside a longer paragraph ("... publication of articles on our
    # site does not mean that we agree with what is written. Our policy ...").
    words, placeholder = paragraph.lower().split(), _PLACEHOLDER.lower().split()
    match = difflib.SequenceMatcher(None, words, placeholder, autojunk=False)
    return sum(b.size for b in match.get_matching_blocks()) >= 0.7 * len(placeholder)


def _closing_not_imported(found: str, path: Path, line: int) -> DigestError:
    return ContentError(
        f"the closing paragraph is not digest.toml's disclaimer; it was not imported: {found[:60]!r}",
        path=path,
        line=line,
        hint="the email always carries the disclaimer from digest.toml; put this wording there if "
        "it is the newsletter's disclaimer, or add the text to a story by hand",
    )


def _after_last_story(found: str, story: ImportedStory, path: Path, line: int) -> DigestError:
    return ContentError(
        f"the last paragraph was not imported: it stands apart after story {story.title!r}, "
        f"like a closing paragraph: {found[:60]!r}",
        path=path,
        line=line,
        hint="if it belongs to that story, add it to the story's file by hand; if it is the "
        "newsletter's disclaimer, put it in digest.toml",
    )


def _similar(a: str, b: str) -> bool:
    return difflib.SequenceMatcher(None, a, b).ratio() > 0.6


def _disclaimer_differs(found: str, wanted: str, path: Path, line: int) -> DigestError:
    words_a, words_b = found.split(), wanted.split()
    diff = [d for d in difflib.ndiff(words_b, words_a) if d[:1] in "+-"][:6]
    return ContentError(
        "the closing paragraph looks like the disclaimer but differs from digest.toml's; "
        "it was not imported (" + " ".join(diff) + ")",
        path=path,
        line=line,
        hint="the email always carries the disclaimer from digest.toml; update it there if "
        "the new wording is right",
    )


def _markdown_text(paragraph: str) -> str:
    """Escape what Markdown would otherwise read as formatting."""
    text = _MD_SPECIAL.sub(r"\\\1", paragraph)
    return _MD_BLOCK_START.sub(r"\1\\\2\3", text)
