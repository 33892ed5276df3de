"""Turn a story's Markdown into wrapped plain text for the text/plain part."""

from __future__ import annotations

import re
import textwrap
import unicodedata
from functools import lru_cache

WIDTH = 76  # display columns: an East Asian wide or fullwidth character takes two
# Fold ASCII white space only: a no-break space stays where the editor put it.
_SPACES = re.compile(r"[ \t\n\r\f\v]+")
# A word that holds a link ("<https://例え.jp/パス>"): never broken, whatever its script.
_LINK_WORD = re.compile(r"://|www\.|mailto:", re.IGNORECASE)
# Wide characters a line may not start with (closing brackets and punctuation, small kana,
# the prolonged sound mark) or end with (opening brackets): the simplest line-breaking
# rules of Japanese and Chinese (kinsoku).
_NO_START = set(
    "、。，．：；？！）〕］｝〉》」』】〙〗〟’”・ー゛゜ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶ々〻"
)
_NO_END = set("（〔［｛〈《「『【〘〖〝‘“")
CJK_FULL_STOP = "。"


def ideographic(char: str) -> bool:
    """Whether *char* is a letter of Chinese or Japanese (an ideograph or a kana): text that
    ends its sentences with 。, not '.'."""
    return unicodedata.name(char, "").startswith(
        ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH", "HIRAGANA", "KATAKANA")
    )


def lead_gap(lead: str) -> str:
    """Return what goes between a dateline and the text after it: a space, or nothing after a
    CJK full stop ("東京、3月6日。/NHK/。本文です。"), as that text is written."""
    return "" if lead.endswith(CJK_FULL_STOP) else " "


def wrap(text: str, width: int = WIDTH, indent: str = "") -> str:
    """Wrap one paragraph greedily at ``width`` display columns, never breaking URLs.

    Lines break at ASCII spaces, and between two East Asian wide characters (ideographs,
    kana, hangul syllables: text with no spaces); never inside a word of other scripts, a
    URL or a character with its combining marks. A wide character counts two columns, a
    combining mark none. For ASCII text this gives the lines of textwrap.fill(...,
    break_long_words=False, break_on_hyphens=False), with one regular expression instead
    of a Python loop.
    """
    text = _SPACES.sub(" ", text).strip(" ")
    room = max(width - len(indent), 1)
    if text.isascii() or all(_char_width(c) == _NARROW for c in set(text)):  # a column a character
        lines = [m.group(1) or m.group(2) for m in _line_pattern(room).finditer(text)]
    else:
        lines = _wide_lines(text, room)
    follow = "\n" + " " * len(indent)
    return indent + follow.join(lines)


@lru_cache(maxsize=8)
def _line_pattern(room: int) -> re.Pattern[str]:
    # As much as fits, ending before a space (or the end); else one long word alone.
    # A word is everything between two ASCII spaces: a no-break space is part of it.
    return re.compile(rf"(.{{1,{room}}})(?: |$)|([^ ]+)(?: |$)", re.DOTALL)


def _wide_lines(text: str, room: int) -> list[str]:
    """Greedy lines of *text* (ASCII spaces already folded) by display width."""
    lines: list[str] = []
    line: list[str] = []
    used = 0
    for word in text.split(" "):
        for i, (piece, columns) in enumerate(_pieces(word)):
            gap = 1 if i == 0 and line else 0  # the space between two words
            if line and used + gap + columns > room:
                lines.append("".join(line))
                line, used, gap = [], 0, 0
            if gap:
                line.append(" ")
            line.append(piece)
            used += gap + columns
    lines.append("".join(line))
    return lines


def _pieces(word: str) -> list[tuple[str, int]]:
    """Split a word where a line may break inside it (between two wide characters) and
    give each piece's width in columns."""
    if word.isascii():
        return [(word, len(word))]
    clusters = _clusters(word)
    if len(clusters) == 1:
        return [(word, clusters[0][1])]
    links = _link_spans(word)
    pieces: list[tuple[str, int]] = []
    start = end = columns = 0
    for (a, columns_a, wide_a), (b, _, wide_b) in zip(clusters, clusters[1:], strict=False):
        columns += columns_a
        end += len(a)
        inside_link = any(first < end < last for first, last in links)
        if wide_a and wide_b and a[0] not in _NO_END and b[0] not in _NO_START and not inside_link:
            pieces.append((word[start:end], columns))
            start, columns = end, 0
    pieces.append((word[start:], columns + clusters[-1][1]))
    return pieces


def _link_spans(word: str) -> list[tuple[int, int]]:
    """Where the links of a word run, never to be broken: '<…>' around one (as the text part
    writes a link), so the words written on after it still break; a bare link runs to the
    end of the word (an IRI may hold wide characters: 'https://例え.jp/パス')."""
    spans = []
    for m in _LINK_WORD.finditer(word):
        start = m.start()
        while start and (word[start - 1].isalnum() or word[start - 1] in "+.-") and word[start - 1].isascii():
            start -= 1  # back over the scheme ("https")
        if start and word[start - 1] == "<":
            close = word.find(">", m.end())
            spans.append((start - 1, len(word) if close < 0 else close + 1))
            continue
        spans.append((start, len(word)))
    return spans


def _clusters(word: str) -> list[tuple[str, int, bool]]:
    """Split *word* into characters with the marks that go with them (combining marks,
    variation selectors, hangul vowel and final jamo, what a zero width joiner joins),
    each with its width in columns and whether it is wide (its first character)."""
    clusters: list[tuple[str, int, bool]] = []
    joined = False  # the last character was a zero width joiner
    for char in word:
        columns, extends = _char_width(char)
        if clusters and (extends or joined):
            text, width, wide = clusters[-1]
            # A joined emoji shows as one: only a spacing mark adds a column.
            clusters[-1] = (text + char, width + (columns if extends else 0), wide)
        else:
            clusters.append((char, columns, columns == 2))
        joined = char == "\u200d"
    return clusters


_NARROW = (1, False)


@lru_cache(maxsize=4096)
def _char_width(char: str) -> tuple[int, bool]:
    """Return (columns, whether it joins the character before it)."""
    code = ord(char)
    category = unicodedata.category(char)
    if category in ("Mn", "Me", "Mc") or 0x1160 <= code <= 0x11FF or 0xD7B0 <= code <= 0xD7FF:
        return (1 if category == "Mc" else 0), True
    if 0x1F3FB <= code <= 0x1F3FF or char == "\u200d":  # skin tone modifiers, ZWJ
        return 0, True
    if category == "Cf":
        return 0, False
    return (2 if unicodedata.east_asian_width(char) in ("W", "F") else 1), False


def tokens_to_text(tokens: list, lead: str = "", width: int = WIDTH) -> str:
    """Render a markdown-it token stream as plain text: paragraphs wrapped, links as URLs,
    pictures as their alt text and URL.

    *lead* (a dateline) is put in front of the first paragraph, as the HTML part puts it;
    when the story opens with anything else (a heading, a list, a quote) the dateline is a
    paragraph of its own before it, as in the HTML part. Headings are upper-cased, their
    links and URLs never (a URL's path is case-sensitive).
    """
    blocks: list[str] = []
    prefix: list[str] = []  # list markers of the current nesting
    counters: list[int] = []
    quotes = 0
    # The HTML part puts the dateline inside the first paragraph only when the story opens
    # with one (render.py _story_html); otherwise in a paragraph of its own.
    pending_lead = lead if tokens and tokens[0].type == "paragraph_open" else ""
    if lead and not pending_lead:
        blocks.append(wrap(lead, width))
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        kind = tok.type
        if kind in ("bullet_list_open", "ordered_list_open"):
            counters.append(int(tok.attrGet("start") or 1) if kind == "ordered_list_open" else 0)
        elif kind in ("bullet_list_close", "ordered_list_close"):
            counters.pop()
        elif kind == "list_item_open":
            if counters and counters[-1]:
                prefix.append(f"{counters[-1]}. ")
                counters[-1] += 1
            else:
                prefix.append("- ")
        elif kind == "list_item_close":
            prefix.pop()
        elif kind == "inline":
            heading = i > 0 and tokens[i - 1].type == "heading_open"
            text = _inline_text(tok.children or [], upper=heading)
            if pending_lead:
                text = f"{pending_lead}{lead_gap(pending_lead)}{text}"
                pending_lead = ""
            if heading:
                blocks.append(wrap(text, width))
            else:
                indent = "".join(" " * len(p) for p in prefix[:-1]) + (prefix[-1] if prefix else "")
                blocks.append(wrap(text, width, "> " * quotes + indent))
        elif kind == "blockquote_open":
            quotes += 1
        elif kind == "blockquote_close":
            quotes -= 1
        elif kind in ("fence", "code_block"):
            blocks.append(textwrap.indent(tok.content.rstrip("\n"), "    "))
        elif kind == "hr":
            blocks.append("-" * 20)
        i += 1
    if pending_lead:
        blocks.insert(0, wrap(pending_lead, width))
    return "\n\n".join(blocks)


# A URL or an address written out in text: a heading's upper-casing leaves it as written.
_URL = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://|www\.|mailto:)\S+|[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+")


def _upper_words(text: str) -> str:
    """Upper-case *text* except the URLs and addresses in it."""
    out: list[str] = []
    last = 0
    for m in _URL.finditer(text):
        out += [text[last : m.start()].upper(), m.group()]
        last = m.end()
    out.append(text[last:].upper())
    return "".join(out)


def _inline_text(children: list, upper: bool = False) -> str:
    """Render one inline token's children; with *upper* (a heading) its words upper-cased,
    never a link's target, a URL, an address or code."""
    out: list[str] = []
    href_stack: list[str | None] = []
    for child in children:
        kind = child.type
        if kind == "text":
            href = href_stack[-1] if href_stack else None
            keep = not upper or (href is not None and child.content == href)  # an autolink's URL
            out.append(child.content if keep else _upper_words(child.content))
        elif kind == "code_inline":
            out.append(child.content)
        elif kind in ("softbreak", "hardbreak"):
            out.append(" ")
        elif kind == "link_open":
            href_stack.append(child.attrGet("href"))
            out.append("")
        elif kind == "link_close":
            href = href_stack.pop() if href_stack else None
            label_end = "".join(out).rstrip()
            if href and not label_end.endswith(href):
                out.append(f" <{href}>")
        elif kind == "image":
            # The alt text as the HTML part writes it: its words, without their Markdown.
            alt = _inline_text(child.children) if child.children else child.content
            label = picture(alt.strip(), "")
            src = child.attrGet("src")
            out.append((_upper_words(label) if upper else label) + (f" <{src}>" if src else ""))
    return "".join(out)


def picture(alt: str, src: str) -> str:
    """Return a picture as the text part writes it: its alt text, then its address as a link
    is written ('[Picture: A map of the port] <https://…/maps/wide%20map.png>')."""
    label = f"[Picture: {alt}]" if alt else "[Picture]"
    return f"{label} <{src}>" if src else label
