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
        {"title": "Europol Says EU Faces Second Migrant Wave as Coronavirus Crisis Takes Hold"}
    ]
    assert [len(s.paragraphs) for s in result.stories] == [3, 3, 1, 3]


def test_import_of_the_seed_reproduces_the_example_issue(project: Path) -> None:
    """The example issue carries exactly what the seed gives: nothing lost, nothing invented."""
    from digest.compose import import_digest, new_issue

    proj = load_project()
    new_issue(proj, "imported")
    paths, notes = import_digest(proj, "imported", (FIXTURES / "seed.txt").read_bytes(), FIXTURES / "seed.txt")
    assert notes == []
    imported = load_issue(proj, "imported").stories
    example = load_issue(proj, EXAMPLE).stories
    assert [s.slug for s in imported] == [s.slug for s in example]
    for got, want in zip(imported, example, strict=True):
        assert got.title == want.title
        assert got.dateline == want.dateline
        assert got.source == want.source  # RT comes from digest.toml's [sources]
        assert lead(got) == lead(want)  # "MOSCOW, December 31. /TASS/."
        assert got.url == want.url  # the site the seed names, not an invented article
        assert got.host == want.host  # "Continue reading at <host>"
        assert got.read_also == want.read_also
        assert got.body == want.body
        assert got.body_text == want.body_text
    assert [(s.source, s.url) for s in example] == [
        ("TASS", "https://tass.com/"),
        ("TASS", "https://tass.com/"),
        (None, None),
        ("RT", "https://www.rt.com/"),
    ]
    # The import marks the site addresses for the editor; the example's editor accepted them.
    assert all("# import: only the site is known" in p.read_text() for p in paths if "url:" in p.read_text())


@pytest.mark.parametrize(
    "dateline, place",
    [
        ("ZÜRICH, June 13. /SWISS INFO/.", "ZÜRICH, June 13"),
        ("SÃO PAULO, June 13. / Folha /.", "SÃO PAULO, June 13"),
        ("MÜNCHEN, 13 Juni. /dpa/.", "MÜNCHEN, 13 Juni"),
        ("KYIV, June 13. /Ukrinform/.", "KYIV, June 13"),
        ("ХАРКІВ, 13 червня. /Укрінформ/.", "ХАРКІВ, 13 червня"),
    ],
)
def test_datelines_outside_ascii(tmp_path: Path, dateline: str, place: str) -> None:
    text = f"A title\n\n{dateline} The text of the story.\nContinue reading at example.ch\n"
    result = split_digest(text, DISCLAIMER, tmp_path / "x.txt")
    assert result.notes == []
    (found,) = result.stories
    assert (found.dateline, found.paragraphs) == (place, ["The text of the story."])
    assert found.source == dateline.split("/")[1].strip()


@pytest.mark.parametrize("closed", [True, False])
def test_a_closing_paragraph_that_differs_is_never_glued_to_a_story(tmp_path: Path, closed: bool) -> None:
    changed = DISCLAIMER.replace("totally disagree", "strongly disagree")
    text = (
        "A title\n\nMOSCOW, December 31. /TASS/. The text.\n"
        + ("Continue reading at tass.com\n" if closed else "")
        + "\n"
        + changed
        + "\n"
    )
    result = split_digest(text, DISCLAIMER, tmp_path / "x.txt")
    (found,) = result.stories
    assert found.paragraphs == ["The text."]
    (note,) = result.notes
    assert note.line == (6 if closed else 5)
    assert "differs from digest.toml's" in note.message
    assert "(- totally + strongly)" in note.message


def test_the_closing_paragraph_inside_the_last_block_is_taken_off(tmp_path: Path) -> None:
    text = "A title\n\nThe text.\n" + DISCLAIMER + "\n"
    result = split_digest(text, DISCLAIMER, tmp_path / "x.txt")
    assert result.disclaimer_found and result.notes == []
    assert result.stories[0].paragraphs == ["The text."]


def test_sources_table_fills_the_source(project: Path, runner) -> None:
    from digest.cli import cli

    (project / "issues" / "new").mkdir()
    (project / "issues" / "new" / "issue.toml").write_text('subject = "S"\n')
    (project / "in.txt").write_text(
        "First\n\nText one.\nContinue reading at www.rt.com\n\n"
        "Second\n\nText two.\nContinue reading at tass.com\n"
    )
    result = runner.invoke(cli, ["import", "new", "in.txt"])
    assert result.exit_code == 0, result.output
    stories = load_issue(load_project(), "new").stories
    assert [(s.title, s.source, s.url) for s in stories] == [
        ("First", "RT", "https://www.rt.com/"),
        ("Second", "TASS", "https://tass.com/"),
    ]
    result = runner.invoke(
        cli,
        ["add", "new", "--title", "Third", "--url", "https://www.rt.com/news/1-x/", "-"],
        input="Text three.\n",
    )
    assert result.exit_code == 0, result.output
    third = load_issue(load_project(), "new").stories[-1]
    assert (third.source, third.url) == ("RT", "https://www.rt.com/news/1-x/")


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
        "ROTTERDAM, March 3",
        "ANP",
        "https://nltimes.nl/",
    )
    assert harbour.paragraphs[0].startswith("Dock workers voted")
    assert (bank.source, bank.site) == ("Reuters", "www.reuters.com")
    assert bank.read_also == [
        {"title": "Why the euro fell after the decision", "url": "https://example.org/euro-falls"}
    ]
    assert letter.paragraphs == [
        "Thank you for reading the hundredth issue of this digest. We read every reply you send."
    ]
    assert result.notes == []


def test_a_differing_disclaimer_is_reported_not_dropped() -> None:
    result = _split("seed.txt", DISCLAIMER.replace("totally disagree", "disagree"))
    assert not result.disclaimer_found
    assert len(result.notes) == 1
    note = result.notes[0]
    assert note.message.startswith(
        "the closing paragraph looks like the disclaimer but differs from digest.toml's"
    )
    assert "+ totally" in note.message
    assert note.line == 29


def test_unplaced_paragraphs_are_reported(tmp_path: Path) -> None:
    text = (
        "Title\n\nBody line.\nContinue reading at a.com\nStray line after it.\n\n"
        "Read also:\nSomething\n\nAn orphan paragraph that ends with a full stop.\n"
    )
    result = split_digest(text, DISCLAIMER, tmp_path / "in.txt")
    assert [(n.line, n.message) for n in result.notes] == [
        (5, "text after 'Continue reading' not placed: 'Stray line after it.'"),
        (10, "paragraph not placed in any story: 'An orphan paragraph that ends with a full stop.'"),
    ]


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "the file is empty"),
        (b"  \n\n", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n\0\0\0", "this is a binary file, not a plain-text digest"),
        (b"email,name\na@example.com,Ann\nb@example.com,Bob\n", "this looks like CSV, not a plain-text digest"),
        (b"Title\n\n\xff\xfe text\n", "not UTF-8 text"),
    ],
)
def test_bad_input(tmp_path: Path, raw: bytes, message: str) -> None:
    with pytest.raises(ContentError) as e:
        decode_input(raw, tmp_path / "in")
    assert e.value.message == message
