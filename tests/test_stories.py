from __future__ import annotations

from pathlib import Path

import pytest

from digest.errors import ContentError, DigestError, DigestErrors
from digest.stories import body_parts, lead_of, read_story

from .conftest import REPO, write


def test_example_story_reads() -> None:
    story, warnings = read_story(
        REPO / "issues/2021-12-31/kremlin-praises-putin-biden-talks-as-constructive-aide.md"
    )
    assert warnings == []
    assert story.title == "Kremlin praises Putin-Biden talks as constructive – aide"
    assert story.source == "TASS"
    assert story.dateline == "MOSCOW, December 31"
    assert story.host == "tass.com"
    # The seed's literal '<…>' is text, not a tag.
    assert "I would say that &lt;…&gt; these talks" in story.body_html


def test_raw_html_in_the_body_is_escaped(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.md",
        """
        ---
        title: T
        ---
        Hello <script>alert(1)</script> and <b>bold</b>.
    """,
    )
    story, _ = read_story(path)
    assert "<script>" not in story.body_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in story.body_html
    assert "&lt;b&gt;bold&lt;/b&gt;" in story.body_html


def test_missing_title(tmp_path: Path) -> None:
    path = write(tmp_path / "s.md", "---\nsource: TASS\n---\nBody\n")
    with pytest.raises(ContentError) as e:
        read_story(path)
    assert (e.value.message, e.value.line) == ("front matter has no 'title'", 1)
    assert e.value.hint == "add 'title: ...' to the front matter"


def test_malformed_yaml_reports_the_file_line(tmp_path: Path) -> None:
    path = write(tmp_path / "s.md", "---\ntitle: ok\nsource: [unclosed\n---\nBody\n")
    with pytest.raises(ContentError) as e:
        read_story(path)
    assert e.value.message.startswith("malformed YAML front matter")
    assert e.value.line == 3  # the line of 'source', whose '[' is never closed


@pytest.mark.parametrize(
    "front, line",
    [
        ("title: [Letter from the editor\nsource: X\n", 2),  # unclosed '[': the key's line
        ("title: [Letter from the editor\n", 2),
        ("title: X\nsource: [a,\n  b\n", 3),  # a flow list over two lines: where it opens
        ("title: {a: b\nsource: c\n", 2),
        ('title: "unclosed\nsource: X\n', 2),  # unclosed quote
        ("title: X\njust text\nsource: Y\n", 3),  # a line with no ':'
        ("title: X\n  bad: indent\nsource: Y\n", 3),  # where YAML says the problem is
        ("title: a: b\n", 2),
        ("title: [\n", 2),  # YAML points past the end: the last line given
    ],
)
def test_malformed_yaml_names_the_line_to_fix(tmp_path: Path, front: str, line: int) -> None:
    path = write(tmp_path / "s.md", f"---\n{front}---\nBody\n")
    with pytest.raises(ContentError) as e:
        read_story(path)
    assert e.value.message.startswith("malformed YAML front matter: ")
    assert e.value.line == line


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.md"
    path.write_bytes("---\ntitle: caf\u00e9\n---\n".encode("latin-1"))
    with pytest.raises(ContentError) as e:
        read_story(path)
    assert (e.value.message, e.value.line) == ("not UTF-8 text", 2)


def test_no_front_matter(tmp_path: Path) -> None:
    path = write(tmp_path / "s.md", "Just text\n")
    with pytest.raises(ContentError) as e:
        read_story(path)
    assert e.value.message == "no front matter"


def test_unknown_key_is_a_warning_naming_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "s.md", "---\ntitle: T\nsoruce: TASS\n---\nBody\n")
    story, warnings = read_story(path)
    assert story.title == "T"
    assert [(w.message, w.path, w.line) for w in warnings] == [
        ("unknown front matter key 'soruce' (ignored)", path, 3)
    ]


def test_all_problems_of_a_story_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.md",
        """
        ---
        url: not-a-link
        image:
          src: a.png
        ---
        Body
    """,
    )
    with pytest.raises(DigestErrors) as e:
        read_story(path)
    assert sorted(err.message for err in e.value.errors) == [
        "'image' has no 'alt' text",
        "'url' is not an http(s) link: 'not-a-link'",
        "front matter has no 'title'",
    ]


def test_a_date_that_does_not_exist_hides_no_other_problem(tmp_path: Path) -> None:
    # PyYAML raised for the whole front matter: only the date was reported, and the rest
    # (the missing title, the bad url, the unknown keys) came after it was fixed.
    path = write(
        tmp_path / "s.md",
        "---\ntitel: Typo in key\nsorce: AFP\nurl: htps://example.com/y\ndate: 2024-02-30\n---\nBody\n",
    )
    with pytest.raises(DigestErrors) as e:
        read_story(path)
    assert [(err.message, err.line) for err in e.value.errors] == [
        ("front matter has no 'title'", 1),
        ("'url' is not an http(s) link: 'htps://example.com/y'", 4),
        ("invalid date in 'date': 2024-02-30 (day is out of range for month)", 5),
    ]
    assert e.value.errors[2].hint == (
        "write dates as YYYY-MM-DD with a day the month has, or quote the value to keep it as text"
    )
    assert [(w.message, w.line, w.hint) for w in e.value.warnings] == [
        ("unknown front matter key 'titel' (ignored)", 2, "did you mean 'title'?"),
        ("unknown front matter key 'sorce' (ignored)", 3, "did you mean 'source'?"),
    ]
    # What could be read comes with the errors, for 'digest check' to look through.
    assert (e.value.story.url, e.value.story.body) == ("htps://example.com/y", "Body")


@pytest.mark.parametrize(
    "front, line",
    [
        ("title: 2021-02-30\n", 2),  # a date in another key: no "'title' is empty" too
        ("title: T\nread_also:\n  - title: X\n  - title: 2021-13-01\n", 5),
        ("title: T\ndate: 2021-02-29 10:00:00\n", 3),
    ],
)
def test_a_date_that_does_not_exist_is_one_error_on_its_line(tmp_path: Path, front: str, line: int) -> None:
    path = write(tmp_path / "s.md", f"---\n{front}---\nBody\n")
    with pytest.raises(ContentError) as e:
        read_story(path)
    assert e.value.message.startswith("invalid date in ")
    assert e.value.line == line


def test_dates_that_exist_read_as_before(tmp_path: Path) -> None:
    path = write(tmp_path / "s.md", '---\ntitle: T\ndate: 2024-02-29\nsection: "2021-02-30"\n---\nBody\n')
    story, warnings = read_story(path)
    assert (story.date, story.section, warnings) == ("2024-02-29", "2021-02-30", [])


def test_an_unknown_key_far_from_any_known_one_lists_them(tmp_path: Path) -> None:
    path = write(tmp_path / "s.md", "---\ntitle: T\nfoo: bar\n---\nBody\n")
    _, warnings = read_story(path)
    assert [w.hint for w in warnings] == [
        "known keys: title, source, url, dateline, read_also, section, author, date, image, language"
    ]


def test_read_also_and_image(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.md",
        """
        ---
        title: T
        read_also:
          - title: Other
            url: https://example.com/other
          - title: No link
        image: {src: "https://example.com/a.png", alt: "A map"}
        ---
        Body
    """,
    )
    story, _ = read_story(path)
    assert [(link.title, link.url) for link in story.read_also] == [
        ("Other", "https://example.com/other"),
        ("No link", None),
    ]
    assert story.image is not None and story.image.alt == "A map"


def test_unchanged_files_are_not_parsed_again(tmp_path: Path, monkeypatch) -> None:
    import digest.stories as stories

    path = write(tmp_path / "s.md", "---\ntitle: T\n---\nBody\n")
    first, _ = read_story(path)
    calls = []
    monkeypatch.setattr(stories, "_parse_story", lambda *a: calls.append(a))
    assert read_story(path)[0] is first
    assert calls == []


def test_body_html_gives_named_images_a_new_src(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    path.write_text(
        "---\ntitle: T\n---\n![Map](map.png) ![Café](<café.png>) ![Remote](https://example.com/r.png)\n",
        encoding="utf-8",
    )
    story, _ = read_story(path)
    assert body_parts(story.body, {}, story.lead) == (story.body_html, story.body_text)
    html, _ = body_parts(
        story.body, {"map.png": "https://example.org/i/map.png", "caf%C3%A9.png": "https://x/c"}
    )
    assert html == story.body_html.replace('src="map.png"', 'src="https://example.org/i/map.png"').replace(
        'src="caf%C3%A9.png"', 'src="https://x/c"'
    )
    assert 'src="https://example.com/r.png"' in html


def test_a_control_character_in_a_front_matter_value_is_an_error(tmp_path: Path) -> None:
    # A bare CR in a source or dateline reached the plain-text part (SMTP smuggling's tool).
    path = write(
        tmp_path / "a.md",
        '---\ntitle: "Folded\\nover two lines"\nsource: "R\\rT"\ndateline: "MOSCOW\\u202e"\n---\nText.\n',
    )
    with pytest.raises(DigestErrors) as e:
        read_story(path)
    assert [(err.message, err.line) for err in e.value.errors] == [
        ("'source' holds a control character (U+000D)", 3),
        ("'dateline' holds a control character (U+202E)", 4),
    ]


def test_control_characters_in_read_also_and_image_are_errors_once(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.md",
        "---\n"
        'title: "Story\\x1b[31m one"\n'
        'read_also:\n  - title: "Bad\\x1b[31mtitle"\n  - "Also\\u202ebad"\n'
        'image: {src: a.png, alt: "Bell\\x07"}\n'
        "---\nText.\n",
    )
    with pytest.raises(DigestErrors) as e:
        read_story(path)
    assert [(err.message, err.line) for err in e.value.errors] == [
        ("'title' holds a control character (U+001B)", 2),  # not also "'title' is empty"
        ("'read_also' holds a control character (U+001B)", 3),
        ("'read_also' holds a control character (U+202E)", 3),
        ("'image' holds a control character (U+0007)", 6),
    ]


@pytest.mark.parametrize(
    "dateline, source, lead",
    [
        ("MOSCOW, December 31", "TASS", "MOSCOW, December 31. /TASS/."),
        ("東京、3月6日", "NHK", "東京、3月6日。/NHK/。"),  # the script's own full stop
        ("北京，3月6日", None, "北京，3月6日。"),
        ("서울, 3월 6일", "연합뉴스", "서울, 3월 6일. /연합뉴스/."),  # Korean writes '.'
        ("الرباط، 6 مارس", "الجزيرة", "الرباط، 6 مارس. /الجزيرة/."),
    ],
)
def test_the_lead_ends_as_the_datelines_script_does(dateline: str, source: str | None, lead: str) -> None:
    assert lead_of(dateline, source) == lead


@pytest.mark.parametrize(
    ("front", "problem"),
    [
        ("foo: &x [*x]", None),  # an alias that holds itself: read once, no endless look
        ("foo: &y {a: *y}", None),
        ("date: !!timestamp foo", "invalid date in 'date': foo (not a date)"),
        ("date: !!timestamp ''", "invalid date in 'date': '' (not a date)"),
        (
            "date: 2024-01-01T10:00:00+99:00",
            "invalid date in 'date': 2024-01-01T10:00:00+99:00 (its time zone is more than 24 hours off UTC)",
        ),
    ],
)
def test_odd_yaml_in_the_front_matter_gets_a_clear_answer(tmp_path: Path, front: str, problem) -> None:
    path = tmp_path / "s.md"
    path.write_text(f"---\ntitle: T\n{front}\n---\nText.\n", encoding="utf-8")
    if problem is None:
        story, warnings = read_story(path)
        assert story.title == "T" and [w.message for w in warnings] == [
            "unknown front matter key 'foo' (ignored)"
        ]
    else:
        with pytest.raises(DigestError) as e:
            read_story(path)
        assert (e.value.message, e.value.line) == (problem, 3)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("The Kremlin is satisfied with the talks.", 7),
        ("東京港に新ターミナルが開業した。", 15),  # a character a word (not the 。), as Japanese counts go
        ("서울에서 회의가 열렸다", 3),  # Korean is written with spaces: its words
        ("Le président a dit « non ».", 7),
    ],
)
def test_a_story_s_words_are_counted_as_its_language_counts_them(tmp_path: Path, body: str, words: int) -> None:
    path = tmp_path / "s.md"
    path.write_text(f"---\ntitle: T\n---\n{body}\n", encoding="utf-8")
    story, _ = read_story(path)
    assert story.words == words
