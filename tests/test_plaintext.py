from __future__ import annotations

import random
import re
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.plaintext import tokens_to_text, wrap
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
    assert _words(" ".join(body)) == _words(text)
    room = max(width - len(indent), 1)
    for line in body:  # a line over the width holds one word that is longer alone
        assert len(line) <= room or " " not in line


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
