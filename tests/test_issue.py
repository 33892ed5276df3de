from __future__ import annotations

from pathlib import Path

import pytest

from digest.config import load_project
from digest.errors import ContentError, DigestError, DigestErrors
from digest.issue import load_issue, read_manifest

from .conftest import EXAMPLE, story, write


def test_example_issue_order(project: Path) -> None:
    issue = load_issue(load_project(), EXAMPLE)
    assert [s.title for s in issue.stories] == [
        "Kremlin praises Putin-Biden talks as constructive – aide",
        "Putin said new sanctions could cause complete severance of Russian-US ties – Kremlin aide",
        # As in the seed, with its no-break spaces.
        "Statement by Press Secretary Jen\xa0Psaki on President\xa0Biden’s Phone Call with "
        "President Vladimir Putin of\xa0Russia",
        "Five key takeaways from latest Putin-Biden call",
    ]
    assert issue.stories[2].read_also[0].title == (
        "Europol Says EU Faces Second Migrant Wave as Coronavirus Crisis Takes Hold"
    )
    assert issue.stories[2].url is None


def test_order_first_then_file_names(project: Path, small_issue: Path) -> None:
    story(small_issue / "c-third.md", "Third")
    write(small_issue / "issue.toml", 'subject = "S"\norder = ["c-third"]\n')
    issue = load_issue(load_project(), "small")
    assert [s.slug for s in issue.stories] == ["c-third", "a-first", "b-second"]


def test_issue_by_path(project: Path, small_issue: Path) -> None:
    assert load_issue(load_project(), "issues/small").slug == "small"


def test_missing_issue(project: Path) -> None:
    with pytest.raises(ContentError) as e:
        load_issue(load_project(), "nope")
    assert e.value.message == "no issue 'nope'"
    assert "2021-12-31" in e.value.hint


def test_empty_issue_folder(project: Path) -> None:
    folder = project / "issues" / "empty"
    write(folder / "issue.toml", 'subject = "S"\n')
    with pytest.raises(ContentError) as e:
        load_issue(load_project(), "empty")
    assert e.value.message == "the issue has no stories"


def test_order_naming_a_missing_story(project: Path, small_issue: Path) -> None:
    write(small_issue / "issue.toml", 'subject = "S"\n\norder = ["a-first", "ghost"]\n')
    with pytest.raises(ContentError) as e:
        load_issue(load_project(), "small")
    assert (e.value.message, e.value.line) == ("'order' names a missing story 'ghost'", 3)


def test_two_stories_with_the_same_slug(project: Path, small_issue: Path) -> None:
    story(small_issue / "a-first.markdown", "Again")
    with pytest.raises(ContentError) as e:
        load_issue(load_project(), "small")
    assert e.value.message == "two stories have the slug 'a-first' (a-first.markdown and a-first.md)"


def test_every_problem_is_reported_in_one_run(project: Path, small_issue: Path) -> None:
    write(small_issue / "issue.toml", 'subject = "S"\norder = ["ghost"]\n')
    write(small_issue / "c.md", "---\nsource: X\n---\n")
    (small_issue / "d.md").write_bytes(b"---\ntitle: \xff\n---\n")
    with pytest.raises(DigestErrors) as e:
        load_issue(load_project(), "small")
    found = sorted((err.path.name, err.message) for err in e.value.errors)
    assert found == [
        ("c.md", "front matter has no 'title'"),
        ("c.md", "the story has no text"),
        ("d.md", "not UTF-8 text"),
        ("issue.toml", "'order' names a missing story 'ghost'"),
    ]


def test_missing_manifest(project: Path) -> None:
    story(project / "issues" / "bare" / "a.md")
    with pytest.raises(ContentError) as e:
        load_issue(load_project(), "bare")
    assert e.value.message == "no issue.toml"


def test_an_unknown_key_is_an_error_with_a_close_match(project: Path, small_issue: Path) -> None:
    write(small_issue / "issue.toml", 'subject = "S"\npre_header = ""\nfoo = 1\n')
    with pytest.raises(DigestErrors) as e:
        load_issue(load_project(), small_issue)
    assert [(x.message, x.line, x.hint) for x in e.value.errors] == [
        (
            "unknown key 'pre_header': did you mean 'preheader'?",
            2,
            "rename it to 'preheader'; known keys: subject, title, date, number, preheader, order",
        ),
        ("unknown key 'foo'", 3, "known keys: subject, title, date, number, preheader, order"),
    ]


def test_a_misspelt_subject_is_named_in_the_missing_subject_error(project: Path, small_issue: Path) -> None:
    write(small_issue / "issue.toml", '# the subject\nsubjet = "Thursday"\n')
    with pytest.raises(ContentError) as e:  # one error for one typo
        load_issue(load_project(), small_issue)
    assert (e.value.message, e.value.line, e.value.hint) == (
        "no 'subject' (unknown key 'subjet': did you mean 'subject'?)",
        2,
        "rename 'subjet' to 'subject'",
    )


def test_a_control_character_in_issue_toml_is_an_error(project: Path, small_issue: Path) -> None:
    write(small_issue / "issue.toml", 'subject = "S\\u001b[2J"\npreheader = "p\\r"\n')
    with pytest.raises(DigestErrors) as e:
        load_issue(load_project(), "small")
    assert [(err.message, err.line) for err in e.value.errors] == [
        ("'subject' holds a control character (U+001B)", 1),
        ("'preheader' holds a control character (U+000D)", 2),
    ]


@pytest.mark.parametrize("day", ["2024-13-05", "2024-02-30", "2024-1-5"])
def test_a_date_in_issue_toml_that_is_no_day_is_named_so(project: Path, day: str) -> None:
    """TOML's own words for 2024-13-05 were 'Expected newline or end of document'."""
    folder = project / "issues" / "dated"
    write(folder / "issue.toml", f'subject = "S"\ndate = {day}\n')
    with pytest.raises(DigestError) as e:
        read_manifest(folder)
    assert (e.value.message, e.value.line) == (f"invalid TOML: 'date' is not a day of the calendar: {day}", 2)
    assert "YYYY-MM-DD" in e.value.hint
