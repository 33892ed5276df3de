from __future__ import annotations

import random
import textwrap

from digest.plaintext import tokens_to_text, wrap
from digest.stories import markdown_tokens


def test_wrap_gives_the_lines_textwrap_gives() -> None:
    rng = random.Random(7)
    words = ["a", "the", "Kremlin", "constructive,", "“Overall,", "<…>", "—", "de-escalation",
             "https://www.rt.com/russia/545040-putin-biden-call-takeaways/", "x" * 90]
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
        indent = rng.choice(["", "- ", "> 1. "])
        expected = textwrap.fill(text, 76, initial_indent=indent,
                                 subsequent_indent=" " * len(indent),
                                 break_long_words=False, break_on_hyphens=False)
        assert wrap(text, 76, indent) == expected


def test_no_break_spaces_stay() -> None:
    text = "President\xa0Biden " * 10
    assert "President\xa0Biden" in wrap(text)
    assert all(len(line) <= 76 for line in wrap(text).splitlines())


def test_markdown_as_text() -> None:
    source = ("First *para* with a [link](https://example.com/a).\n\n"
              "- one\n- two\n\n1. first\n2. second\n\n> quoted words\n\n    code line\n")
    assert tokens_to_text(markdown_tokens(source), lead="PARIS, May 1.") == (
        "PARIS, May 1. First para with a link <https://example.com/a>.\n\n"
        "- one\n\n- two\n\n1. first\n\n2. second\n\n> quoted words\n\n    code line")
