from __future__ import annotations

import random
import re
import textwrap
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.plaintext import _wide_lines, tokens_to_text, wrap
from digest.stories import markdown_tokens


def test_wrap_gives_the_lines_textwrap_gives() -> None:
    rng = random.Random(7)
    words = [
        "a",
        "the",
        "Kremlin",
        "constructive,",
        "“Overall,",
        "<…>",
        "—",
        "de-escalation",
        "https://www.rt.com/russia/545040-putin-biden-call-takeaways/",
        "x" * 90,
    ]
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
        indent = rng.choice(["", "- ", "> 1. "])
        expected = textwrap.fill(
            text,
            76,
            initial_indent=indent,
            subsequent_indent=" " * len(indent),
            break_long_words=False,
            break_on_hyphens=False,
        )
        assert wrap(text, 76, indent) == expected


def test_the_display_width_path_gives_textwraps_lines_for_narrow_text() -> None:
    # wrap() takes a regular expression where every character is one column; the path that
    # counts display columns must give the same lines there.
    rng = random.Random(8)
    words = ["Кремль", "«\u00a0mot\u00a0»", "“Overall,", "Ünïcödé", "—", "https://example.org/ä", "x" * 90]
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
        room = rng.randint(1, 80)
        expected = textwrap.wrap(text, room, break_long_words=False, break_on_hyphens=False)
        assert _wide_lines(text, room) == expected


def test_no_break_spaces_stay() -> None:
    text = "President\xa0Biden " * 10
    assert "President\xa0Biden" in wrap(text)
    assert all(len(line) <= 76 for line in wrap(text).splitlines())


def test_markdown_as_text() -> None:
    source = (
        "First *para* with a [link](https://example.com/a).\n\n"
        "- one\n- two\n\n1. first\n2. second\n\n> quoted words\n\n    code line\n"
    )
    assert tokens_to_text(markdown_tokens(source), lead="PARIS, May 1.") == (
        "PARIS, May 1. First para with a link <https://example.com/a>.\n\n"
        "- one\n\n- two\n\n1. first\n\n2. second\n\n> quoted words\n\n    code line"
    )


# Every kind of space Unicode knows, the ASCII ones wrap folds and the ones it keeps in a word.
SPACES = (
    " \t\n\r\f\v\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u200b\u2028\u2029\u202f\u205f\u3000\ufeff\x1c\x1d\x1e\x1f\x85"
)
_FOLDED = re.compile(r"[ \t\n\r\f\v]+")


def _words(text: str) -> list[str]:
    return [w for w in _FOLDED.split(text) if w]


@settings(max_examples=400, deadline=None)
@given(
    text=st.lists(
        st.one_of(
            st.text(min_size=1, max_size=12),
            st.sampled_from(list(SPACES)),
            st.text(
                alphabet=st.characters(blacklist_categories=("Cs",)), min_size=60, max_size=200
            ),  # longer than a line
            st.sampled_from(["…aaaa\u00a0»", "«\u00a0mot", "x" * 90 + "\u00a0!"]),
            # Wide text with no spaces, closing and opening punctuation, combining marks.
            st.text(alphabet="日本語かなカナ한국어。、「」ーっ\u3099\u0301\u200dxé/:", min_size=1, max_size=80),
            st.sampled_from(["https://例え.jp/パス/パス", "www.例え.jp/パス"]),
        ),
        max_size=40,
    ).map("".join),
    width=st.integers(min_value=1, max_value=100),
    indent=st.sampled_from(["", "- ", "> 1. ", "    "]),
)
def test_wrap_keeps_every_word_in_order(text: str, width: int, indent: str) -> None:
    out = wrap(text, width, indent)
    lines = out.split("\n")
    body = [line[len(indent) :] for line in lines]
    assert lines[0].startswith(indent) and all(ln.startswith(" " * len(indent)) for ln in lines[1:])
    # Every character in order: lines break at a folded space, or inside a word only
    # between two wide characters (never before a combining mark, never in a URL).
    folded = _FOLDED.sub(" ", text).strip(" ")
    at = 0
    for number, line in enumerate(body):
        assert folded[at : at + len(line)] == line
        at += len(line)
        if number == len(body) - 1:
            assert at == len(folded)
        elif folded[at] == " ":
            at += 1
        else:
            # The character before the break (with its marks) and the one after it are wide.
            before = _base_before(line)
            after = folded[at]
            assert _wide(before) and _wide(after), (line, after)
            assert not unicodedata.category(after).startswith("M") and "\u200d" not in (before, after)
            word = folded[:at].rpartition(" ")[2]
            assert "://" not in word and not word.startswith("www.")
    room = max(width - len(indent), 1)
    for line in body:  # a line over the width holds one word (or a piece) that is longer alone
        assert _columns(line) <= room or " " not in line


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _columns(line: str) -> int:
    """Display width, at least: a wide character two columns; a combining mark, a format
    character, a modifier, a hangul vowel or final jamo and what a zero width joiner joins none."""
    columns = 0
    for i, c in enumerate(line):
        if (
            unicodedata.category(c) in ("Mn", "Me", "Mc", "Cf", "Sk")
            or 0x1160 <= ord(c) <= 0x11FF
            or 0xD7B0 <= ord(c) <= 0xD7FF
            or (i and line[i - 1] == "\u200d")
        ):
            continue
        columns += 2 if _wide(c) else 1
    return columns


def _base_before(line: str) -> str:
    """The character that starts the last cluster of *line* (its marks and joined ones after it)."""
    i = len(line) - 1
    while i > 0 and (
        unicodedata.category(line[i]).startswith("M")
        or 0x1160 <= ord(line[i]) <= 0x11FF
        or "\u200d" in (line[i], line[i - 1])
    ):
        i -= 1
    return line[i]


def test_long_word_touching_a_no_break_space_is_kept() -> None:
    word = "a" * 80 + "\u00a0»"
    assert wrap(f"Il a dit {word} et puis", 20) == f"Il a dit\n{word}\net puis"


def test_a_heading_is_upper_cased_but_never_its_urls() -> None:
    source = (
        "## Read [the Report](https://example.org/Reports/Q1.PDF) now\n\n"
        "# See <https://Ex.org/A> or www.Ex.org/B\n"
    )
    assert tokens_to_text(markdown_tokens(source)) == (
        "READ THE REPORT <https://example.org/Reports/Q1.PDF> NOW\n\nSEE https://Ex.org/A OR www.Ex.org/B"
    )


def test_a_dateline_before_a_heading_is_a_paragraph_of_its_own_as_in_the_html() -> None:
    # The HTML part (render.py) puts the dateline in the first paragraph only when the story
    # opens with one; before a heading, a list or a quote it is a paragraph of its own.
    lead = "ZÜRICH, June 13. /Reuters/."
    assert tokens_to_text(markdown_tokens("## Market update\n\nShares rose."), lead=lead) == (
        "ZÜRICH, June 13. /Reuters/.\n\nMARKET UPDATE\n\nShares rose."
    )
    assert tokens_to_text(markdown_tokens("- one\n- two"), lead=lead) == (
        "ZÜRICH, June 13. /Reuters/.\n\n- one\n\n- two"
    )
    assert tokens_to_text(markdown_tokens("Shares rose.\n\n## Later"), lead=lead) == (
        "ZÜRICH, June 13. /Reuters/. Shares rose.\n\nLATER"
    )
    assert tokens_to_text(markdown_tokens(""), lead=lead) == lead


def _display(text: str) -> list[int]:
    return [_columns(line) for line in text.split("\n")]


def test_japanese_around_a_link_still_wraps() -> None:
    """A link ('<…>', as the text part writes one) kept the rest of its space-free word
    from breaking: a 338-column line. (A bare link runs to the end of its word: an IRI
    may hold wide characters.)"""
    link = "<https://example.jp/news/2024>"
    sentence = "参加者は各国の代表団で、会議は三日間にわたって行われる予定です。"
    text = f"東京で国際会議{link}が開かれた。" + sentence * 4
    out = wrap(text)
    assert max(_display(out)) <= 76
    assert out.replace("\n", "") == text and any(link in line for line in out.splitlines())


def test_korean_and_japanese_wrap_at_76_display_columns() -> None:
    korean = "한국어 문장은 띄어쓰기를 사용합니다 " * 8
    out = wrap(korean)
    assert max(_display(out)) <= 76 and out.replace("\n", "").replace(" ", "") == korean.replace(" ", "")
    japanese = "日本語の文章は空白を使わずに書かれます。これは長い段落で、行を折り返す必要があります。" * 3
    out = wrap(japanese)
    # The third line ends before "で、": a line never starts with "、".
    assert _display(out) == [76, 76, 74, 32]
    assert out.replace("\n", "") == japanese
    chinese = "中华人民共和国成立于一九四九年" * 10  # 300 columns, no space at all
    assert _display(wrap(chinese, 20, "- ")) == [20] * 16 + [14]  # the indent included


def test_a_wide_line_never_starts_with_closing_punctuation() -> None:
    # Kinsoku: "。" and "」" stay with the word before them, "「" with the word after it.
    out = wrap("あいうえお。「かきくけこ」さしすせそ", 12)
    assert all(line[0] not in "。」" and line[-1] != "「" for line in out.split("\n")), out


def test_urls_combining_marks_and_other_scripts_are_never_broken() -> None:
    url = "https://例え.jp/長いパス/長いパス/長いパス/長いパス/長いパス/長いパス/長いパス"
    assert wrap(f"見て {url} 終わり", 20) == f"見て\n{url}\n終わり"
    accents = "e\u0301" * 30  # 30 columns: a combining accent takes none
    assert wrap(f"{accents} x", 32) == f"{accents} x"
    thai = "ภาษาไทยไม่เว้นวรรคระหว่างคำ" * 4  # no dictionary here: kept whole, never cut blindly
    assert wrap(f"ก {thai} ข", 20) == f"ก\n{thai}\nข"
    # Decomposed hangul (leading, vowel, final jamo) and a kana with its combining mark are one character each.
    assert wrap("\u1100\u1161\u11a8" * 40, 10).split("\n")[0] == "\u1100\u1161\u11a8" * 5
    assert "\n\u3099" not in wrap("か\u3099" * 60, 10)


def test_pictures_are_written_with_their_alt_text_and_address() -> None:
    # A picture was '[alt]' with no address; the text part writes links as 'text <url>'.
    source = (
        "![A *map* of the port](<maps/wide map.png>) and ![](https://example.com/a.png)\n\n"
        "## See ![the map](m.png)"
    )
    assert tokens_to_text(markdown_tokens(source)) == (
        "[Picture: A map of the port] <maps/wide%20map.png> and [Picture]\n"
        "<https://example.com/a.png>\n\n"
        "SEE [PICTURE: THE MAP] <m.png>"
    )
