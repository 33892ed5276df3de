from __future__ import annotations

from pathlib import Path

import pytest

from digest.config import load_project
from digest.errors import ContentError
from digest.issue import load_issue
from digest.render import lead, render_issue
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


@pytest.mark.parametrize(
    "line, dateline, source, rest",
    [
        # The script's own comma: Arabic (U+060C), ideographic (U+3001), fullwidth (U+FF0C);
        # and its full stop (U+3002, U+FF0E), with no space after it.
        ("الرباط، 6 مارس. /الجزيرة/. نص الخبر.", "الرباط، 6 مارس", "الجزيرة", "نص الخبر."),
        ("東京、3月6日。/NHK/。本文です。", "東京、3月6日", "NHK", "本文です。"),
        ("北京，3月6日．/新华社/．正文。", "北京，3月6日", "新华社", "正文。"),
        ("서울, 3월 6일. /연합뉴스/. 본문입니다.", "서울, 3월 6일", "연합뉴스", "본문입니다."),
    ],
)
def test_datelines_with_the_scripts_own_punctuation(
    tmp_path: Path, line: str, dateline: str, source: str, rest: str
) -> None:
    text = f"A title\n\n{line}\nContinue reading at example.org\n"
    result = split_digest(text, DISCLAIMER, tmp_path / "x.txt")
    assert result.notes == []
    (found,) = result.stories
    assert (found.dateline, found.source, found.paragraphs) == (dateline, source, [rest])


def test_a_paragraph_ending_with_a_cjk_full_stop_is_not_a_title(tmp_path: Path) -> None:
    text = "見出し\n\n東京、3月6日。/NHK/。本文です。\n\n二段落目です。\n\n三段落目です。\n"
    text += "Continue reading at nhk.or.jp\n"
    result = split_digest(text, DISCLAIMER, tmp_path / "x.txt")
    assert result.notes == []
    assert [(s.title, s.paragraphs) for s in result.stories] == [
        ("見出し", ["本文です。", "二段落目です。", "三段落目です。"])
    ]


def test_a_cjk_dateline_imports_and_renders_with_its_own_full_stop(project: Path) -> None:
    from digest.compose import import_digest, new_issue

    proj = load_project()
    new_issue(proj, "tokyo")
    text = f"見出し\n\n東京、3月6日。/NHK/。本文です。\nContinue reading at nhk.or.jp\n\n{DISCLAIMER}\n"
    import_digest(proj, "tokyo", text.encode(), Path("tokyo.txt"))
    (story,) = load_issue(proj, "tokyo").stories
    assert (story.dateline, story.source, story.body) == ("東京、3月6日", "NHK", "本文です。")
    assert lead(story) == "東京、3月6日。/NHK/。"  # not "東京、3月6日. /NHK/."
    assert story.body_text == "東京、3月6日。/NHK/。本文です。"  # as the digest wrote it
    rendered = render_issue(proj, load_issue(proj, "tokyo"))
    assert "\n東京、3月6日。/NHK/。本文です。\n" in rendered.text
    assert ">東京、3月6日。/NHK/。</span>本文です。</p>" in rendered.html


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


@pytest.mark.parametrize("between", ["\n", "\n\n"])
def test_text_after_a_reworded_disclaimer_is_reported_apart(tmp_path: Path, between: str) -> None:
    """A paragraph after the disclaimer (a blank line between or not) is reported on its
    own line; it was folded into the disclaimer's difference, or the disclaimer was called
    a paragraph placed in no story."""
    seed = (FIXTURES / "seed.txt").read_text(encoding="utf-8").replace("totally", "strongly")
    text = seed.rstrip("\n") + between + "Stray paragraph at the end.\n"
    result = split_digest(text, DISCLAIMER, tmp_path / "in.txt")
    assert len(result.stories) == 4 and not result.disclaimer_found
    notes = sorted((n.line, n.message) for n in result.notes)
    assert notes[0][0] == 29 and notes[0][1].startswith(
        "the closing paragraph looks like the disclaimer but differs from digest.toml's"
    )
    assert "- totally + strongly" in notes[0][1] and "Stray" not in notes[0][1]
    stray = "'Stray paragraph at the end.'"
    assert notes[1] == (
        (30, f"text after the closing paragraph, not imported: {stray}")
        if between == "\n"
        else (31, f"paragraph not placed in any story: {stray}")
    )


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


def _fresh_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner) -> Path:
    """A project as 'digest init' writes it (the placeholder disclaimer), as cwd."""
    from digest.cli import cli

    monkeypatch.chdir(tmp_path)
    for key in [k for k in __import__("os").environ if k.startswith("DIGEST_")]:
        monkeypatch.delenv(key)
    assert runner.invoke(cli, ["init"]).exit_code == 0
    assert runner.invoke(cli, ["new", "--date", "2022-03-03"]).exit_code == 0
    return tmp_path


def test_a_fresh_project_never_glues_the_closing_paragraph_into_the_last_story(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner
) -> None:
    """The README's path: init, new, import a digest whose disclaimer is not the placeholder."""
    from digest.cli import cli

    _fresh_project(tmp_path, monkeypatch, runner)
    source = FIXTURES / "second-digest.txt"
    result = runner.invoke(cli, ["import", "2022-03-03", str(source)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "created issues/2022-03-03/harbour-strike-ends-after-three-weeks-of-talks.md\n"
        "created issues/2022-03-03/central-bank-holds-rates-signals-cut-in-june.md\n"
        "created issues/2022-03-03/letter-from-the-editor.md\n"
        "imported 3 stories; 1 note(s) above\n"
    )
    assert result.stderr == (
        f"Warning: {source}:21: the closing paragraph is not digest.toml's disclaimer; it was not "
        "imported: 'We remind our readers that publication of articles on our si'\n"
        "  hint: the email always carries the disclaimer from digest.toml; put this wording there "
        "if it is the newsletter's disclaimer, or add the text to a story by hand\n"
    )
    letter = (tmp_path / "issues" / "2022-03-03" / "letter-from-the-editor.md").read_text()
    assert "remind our readers" not in letter
    assert letter.rstrip().endswith("We read every reply you send.")


def test_the_seed_into_a_fresh_project_reports_its_disclaimer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner
) -> None:
    from digest.cli import cli

    _fresh_project(tmp_path, monkeypatch, runner)
    source = FIXTURES / "seed.txt"
    result = runner.invoke(cli, ["import", "2022-03-03", str(source)])
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("imported 4 stories; 1 note(s) above\n")
    assert result.stderr.startswith(
        f"Warning: {source}:29: the closing paragraph is not digest.toml's disclaimer; it was not imported"
    )
    stories = load_issue(load_project(), "2022-03-03").stories
    assert not any("remind our readers" in s.body for s in stories)


PLACEHOLDER = "Publication of an article in this newsletter does not mean that we agree with what is written."


@pytest.mark.parametrize(
    "closing",
    [
        PLACEHOLDER,  # init's placeholder, when digest.toml says something else
        "The views expressed in these articles are the authors' own.",
        DISCLAIMER.replace("We remind our readers that p", "P"),  # far from digest.toml's
    ],
)
@pytest.mark.parametrize("apart", [True, False])
def test_a_closing_that_reads_like_a_disclaimer_is_reported(tmp_path: Path, closing: str, apart: bool) -> None:
    """No 'Continue reading' closes the last story; the closing is in its block or apart from it."""
    text = "A title\n\nThe text.\n" + ("\n" if apart else "") + closing + "\n"
    result = split_digest(text, "Our own, entirely different closing words.", tmp_path / "x.txt")
    (found,) = result.stories
    assert found.paragraphs == ["The text."]
    assert not result.disclaimer_found
    assert [(n.line, n.message) for n in result.notes] == [
        (
            5 if apart else 4,
            f"the closing paragraph is not digest.toml's disclaimer; it was not imported: {closing[:60]!r}",
        )
    ]


def test_a_paragraph_apart_after_the_last_story_is_reported_not_merged(tmp_path: Path) -> None:
    text = "A title\n\nThe text.\n\nThanks for reading, see you next week.\n"
    result = split_digest(text, DISCLAIMER, tmp_path / "x.txt")
    (found,) = result.stories
    assert found.paragraphs == ["The text."]
    (note,) = result.notes
    assert (note.line, note.message) == (
        5,
        "the last paragraph was not imported: it stands apart after story 'A title', like a "
        "closing paragraph: 'Thanks for reading, see you next week.'",
    )
    assert note.hint.startswith("if it belongs to that story, add it to the story's file by hand")


def test_a_last_story_in_two_blocks_that_ends_with_its_attribution_is_kept(tmp_path: Path) -> None:
    text = "A title\n\nThe text.\n\nMore text.\nContinue reading at a.com\n\n" + DISCLAIMER + "\n"
    result = split_digest(text, DISCLAIMER, tmp_path / "x.txt")
    assert result.notes == [] and result.disclaimer_found
    assert result.stories[0].paragraphs == ["The text.", "More text."]
