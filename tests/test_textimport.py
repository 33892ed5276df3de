from __future__ import annotations

from pathlib import Path

import pytest

from digest.config import load_project
from digest.errors import ContentError
from digest.issue import load_issue
from digest.render import lead
from digest.textimport import decode_input, split_digest

from .conftest import EXAMPLE, FIXTURES

DISCLAIMER = (
    "We remind our readers that publication of articles on our site does not mean that we "
    "agree with what is written. Our policy is to publish anything which we consider of "
    "interest, so as to assist our readers in forming their opinions. Sometimes we even "
    "publish articles with which we totally disagree, since we believe it is important for "
    "our readers to be informed on as wide a spectrum of views as possible."
)


def _split(name: str, disclaimer: str = DISCLAIMER):
    path = FIXTURES / name
    return split_digest(decode_input(path.read_bytes(), path), disclaimer, path)


def test_seed_splits_into_four_stories() -> None:
    result = _split("seed.txt")
    assert result.notes == []
    assert result.disclaimer_found
    assert [(s.dateline, s.source, s.site) for s in result.stories] == [
        ("MOSCOW, December 31", "TASS", "tass.com"),  # written '/ TASS /.'
        ("MOSCOW, December 31", "TASS", "tass.com"),  # written '/TASS/.'
        (None, None, None),
        (None, None, "www.rt.com"),
    ]
    assert result.stories[2].read_also == [
        {"title": "Europol Says EU Faces Second Migrant Wave as Coronavirus Crisis Takes Hold"}]
    assert [len(s.paragraphs) for s in result.stories] == [3, 3, 1, 3]


def test_import_of_the_seed_reproduces_the_example_issue(project: Path) -> None:
    from digest.compose import import_digest, new_issue

    proj = load_project()
    new_issue(proj, "imported")
    import_digest(proj, "imported", (FIXTURES / "seed.txt").read_bytes(), FIXTURES / "seed.txt")
    imported = load_issue(proj, "imported").stories
    example = load_issue(proj, EXAMPLE).stories
    assert [s.slug for s in imported] == [s.slug for s in example]
    for got, want in zip(imported, example, strict=True):
        assert got.title == want.title
        assert got.dateline == want.dateline
        assert lead(got) == lead(want)  # "MOSCOW, December 31. /TASS/."
        assert got.host == want.host  # "Continue reading at <host>"
        assert got.read_also == want.read_also
        assert got.body_text == want.body_text
        # The seed names no publisher for the RT story; the example's editor added one.
        if want.dateline:
            assert got.source == want.source


def test_second_digest() -> None:
    result = _split("second-digest.txt")
    assert result.disclaimer_found
    assert [s.title for s in result.stories] == [
        "Harbour strike ends after three weeks of talks",
        "Central bank holds rates, signals cut in June",
        "Letter from the editor",
    ]
    harbour, bank, letter = result.stories
    assert (harbour.dateline, harbour.source, harbour.url) == (
        "ROTTERDAM, March 3", "ANP", "https://nltimes.nl/")
    assert harbour.paragraphs[0].startswith("Dock workers voted")
    assert (bank.source, bank.site) == ("Reuters", "www.reuters.com")
    assert bank.read_also == [{"title": "Why the euro fell after the decision",
                               "url": "https://example.org/euro-falls"}]
    assert letter.paragraphs == [
        "Thank you for reading the hundredth issue of this digest. We read every reply you send."]
    assert result.notes == []


def test_a_differing_disclaimer_is_reported_not_dropped() -> None:
    result = _split("seed.txt", DISCLAIMER.replace("totally disagree", "disagree"))
    assert not result.disclaimer_found
    assert len(result.notes) == 1
    note = result.notes[0]
    assert note.message.startswith(
        "the closing paragraph looks like the disclaimer but differs from digest.toml's")
    assert "+ totally" in note.message
    assert note.line == 29


def test_unplaced_paragraphs_are_reported(tmp_path: Path) -> None:
    text = ("Title\n\nBody line.\nContinue reading at a.com\nStray line after it.\n\n"
            "Read also:\nSomething\n\nAn orphan paragraph that ends with a full stop.\n")
    result = split_digest(text, DISCLAIMER, tmp_path / "in.txt")
    assert [(n.line, n.message) for n in result.notes] == [
        (5, "text after 'Continue reading' not placed: 'Stray line after it.'"),
        (10, "paragraph not placed in any story: 'An orphan paragraph that ends with a full stop.'"),
    ]


@pytest.mark.parametrize("raw, message", [
    (b"", "the file is empty"),
    (b"  \n\n", "the file is empty"),
    (b"\x89PNG\r\n\x1a\n\0\0\0", "this is a binary file, not a plain-text digest"),
    (b"email,name\na@example.com,Ann\nb@example.com,Bob\n",
     "this looks like CSV, not a plain-text digest"),
    (b"Title\n\n\xff\xfe text\n", "not UTF-8 text"),
])
def test_bad_input(tmp_path: Path, raw: bytes, message: str) -> None:
    with pytest.raises(ContentError) as e:
        decode_input(raw, tmp_path / "in")
    assert e.value.message == message
