from __future__ import annotations

import re
from pathlib import Path

import lxml.html
import pytest

from digest.config import load_project
from digest.errors import TemplateError
from digest.issue import load_issue
from digest.render import render_issue

from .conftest import EXAMPLE, write


def _render(personal: bool = False):
    project = load_project()
    return render_issue(project, load_issue(project, EXAMPLE), personal=personal)


def test_html_is_inlined_and_keeps_media_queries(project: Path) -> None:
    html = _render().html
    doc = lxml.html.document_fromstring(html)
    assert doc.get("lang") == "en"
    assert not doc.xpath("//link[@rel='stylesheet']")
    styles = doc.xpath("//style")
    assert len(styles) == 2  # media queries; Outlook.com's dark-mode rules apart
    css = styles[0].text
    assert "@media only screen and (max-width: 620px)" in css
    assert "@media (prefers-color-scheme: dark)" in css
    assert "!important" in css  # premailer's strip_important would make them lose
    # Every element a plain rule styles carries its style inline.
    for cls in (
        "container",
        "story",
        "story-title",
        "continue",
        "read-also",
        "footer",
        "disclaimer",
        "preheader",
        "dateline",
    ):
        elements = doc.find_class(cls)
        assert elements, cls
        assert all(el.get("style") for el in elements), cls
    for table in doc.xpath("//table"):
        assert table.get("role") == "presentation"
    assert doc.find_class("container")[0].get("width") == "100%"  # 600 in Outlook's own table


def test_html_reads_like_the_seed(project: Path) -> None:
    doc = lxml.html.document_fromstring(_render().html)
    titles = [h.text_content() for h in doc.find_class("story-title")]
    assert titles[0] == "Kremlin praises Putin-Biden talks as constructive – aide"
    assert len(titles) == 4
    text = " ".join(doc.text_content().split())
    assert "I would say that <…> these talks were quite constructive,” Ushakov said." in text
    assert "MOSCOW, December 31. /TASS/. The Kremlin is satisfied" in text
    continues = [(a.text_content(), a.get("href")) for p in doc.find_class("continue") for a in p.iter("a")]
    assert [c[0] for c in continues] == ["tass.com", "tass.com", "www.rt.com"]
    read_also = doc.find_class("read-also")[0].text_content()
    assert "Europol Says EU Faces Second Migrant Wave" in read_also
    assert "We remind our readers that publication of articles" in text
    assert doc.find_class("preheader")[0].text_content().startswith("The Kremlin calls")


def test_text_part_is_wrapped_and_shows_links(project: Path) -> None:
    text = _render().text
    for line in text.splitlines():
        assert len(line) <= 76 or re.search(r"https?://\S+$", line), line
    assert "Continue reading at tass.com: https://tass.com/" in text
    assert "Read also:\nEurope" in text.replace("Europol", "Europe", 1)
    assert "<…>" in text
    assert "We remind our readers that publication of articles on our site does not mean" in text


def test_rendering_is_reproducible(project: Path) -> None:
    a, b = _render(), _render()
    assert (a.html, a.text) == (b.html, b.text)


def test_override_that_drops_the_disclaimer_fails_naming_it(project: Path) -> None:
    template = write(
        project / "templates" / "email.html",
        """
        {% extends "!default/email.html" %}
        {% block footer %}<tr><td>Bye</td></tr>{% endblock %}
    """,
    )
    with pytest.raises(TemplateError) as e:
        _render()
    assert e.value.message == "the rendered email does not carry the editorial disclaimer"
    assert e.value.path == template


def test_a_cjk_disclaimer_wrapped_between_ideographs_is_found(project: Path) -> None:
    """The text part breaks a long Japanese line between two ideographs, with no space:
    every build failed, 'the rendered email does not carry the editorial disclaimer'."""
    disclaimer = "本ニュースレターへの記事の掲載は、編集部が記事の内容に同意することを意味しません。"
    config = project / "digest.toml"
    text = config.read_text(encoding="utf-8")
    start = text.index("disclaimer")
    end = text.index('"""', text.index('"""', start) + 3) + 3
    config.write_text(text[:start] + f'disclaimer = """{disclaimer}"""' + text[end:], encoding="utf-8")
    rendered = _render()
    assert disclaimer not in rendered.text  # wrapped over two lines
    assert disclaimer in "".join(rendered.text.split()) and disclaimer in rendered.html


def test_override_can_extend_the_default(project: Path) -> None:
    write(
        project / "templates" / "email.html",
        """
        {% extends "!default/email.html" %}
        {% block header %}<tr><td class="masthead">Custom masthead</td></tr>{% endblock %}
    """,
    )
    html = _render().html
    assert "Custom masthead" in html
    assert "We remind our readers" in html


def test_a_template_that_reaches_itself_without_end_is_one_clear_error(project: Path, runner) -> None:
    # As an override of this repository's own templates/ extending "!default/..." (itself,
    # with an install from this repository) did: a RecursionError, an "internal error".
    template = write(
        project / "templates" / "email.txt", '{{ newsletter.disclaimer }}{% include "email.txt" %}\n'
    )
    with pytest.raises(TemplateError) as e:
        _render()
    assert e.value.message == "the templates extend or include themselves without end"
    assert e.value.path == template
    from digest.cli import cli

    result = runner.invoke(cli, ["export", EXAMPLE, "--out", "OUT"])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: templates/email.txt: the templates extend or include themselves without end\n  hint: "
    )
    assert not (project / "OUT").exists()


def test_undefined_variable_names_template_and_line(project: Path) -> None:
    template = write(
        project / "templates" / "email.txt",
        """
        {{ newsletter.disclaimer }}
        {{ issue.subjcet }}
    """,
    )
    with pytest.raises(TemplateError) as e:
        _render()
    # In the templates' words, not Python's ("'digest.issue.Issue object' has no attribute").
    assert e.value.message == "template uses an undefined variable: 'issue' has no 'subjcet'"
    assert e.value.hint == "did you mean 'subject'?"
    assert (e.value.path, e.value.line) == (template, 2)


def test_template_syntax_error(project: Path) -> None:
    template = write(project / "templates" / "email.txt", "{% if %}\n")
    with pytest.raises(TemplateError) as e:
        _render()
    assert (e.value.path, e.value.line) == (template, 1)


def test_personal_render_leaves_placeholders(project: Path) -> None:
    rendered = _render(personal=True)
    assert [s.field for s in rendered.slots] == ["unsubscribe_url", "email"]
    token = rendered.placeholders.token
    assert token(0) in rendered.html and token(1) in rendered.text


FRENCH_HTML = """
{% extends "!default/email.html" %}
{% block footer %}
<tr>
<td class="footer">
<p class="disclaimer">{{ newsletter.disclaimer }}</p>
<p class="footer-links"><a class="footer-link" href="{{ unsubscribe_url }}">Se désabonner</a></p>
</td>
</tr>
{% endblock %}
"""

FRENCH_TEXT = """
{% extends "!default/email.txt" %}
{% block story scoped %}

{{ story.title | wrap }}

{{ story | story_text }}
{% if story.url %}

Lire la suite sur {{ story.host }} : {{ story.url }}
{% endif %}
{% endblock %}
{% block footer %}
{{ newsletter.disclaimer | wrap }}

Se désabonner : {{ unsubscribe_url }}
{% endblock %}
"""


def test_the_fixed_words_can_be_written_in_the_newsletters_language(project: Path) -> None:
    """The README's recipe: the story partial, and the footer and story blocks, overridden."""
    from digest.render import default_templates_dir

    partial = (default_templates_dir() / "partials" / "story.html").read_text(encoding="utf-8")
    partial = (
        partial.replace("Continue reading “{{ story.title }}” at", "Lire « {{ story.title }} » sur")
        .replace("Continue reading at ", "Lire la suite sur ")
        .replace("Read also:", "Lire aussi :")
    )
    write(project / "templates" / "partials" / "story.html", partial)
    write(project / "templates" / "email.html", FRENCH_HTML)
    write(project / "templates" / "email.txt", FRENCH_TEXT)
    rendered = _render()
    for part in (rendered.html, rendered.text):
        assert "Lire la suite sur" in part and "Se désabonner" in part
        assert "Continue reading" not in part and "Unsubscribe" not in part
        assert "We remind our readers" in part  # the disclaimer stays
    assert "Lire aussi :" in rendered.html


def test_a_story_in_a_language_of_its_own_is_marked_so(project: Path) -> None:
    """An Arabic story in an English newsletter: its title, picture and text carry its lang
    and dir (laid out right to left, read aloud as Arabic); the newsletter's own words
    around it ("Continue reading at") keep the newsletter's."""
    folder = project / "issues" / EXAMPLE
    story = sorted(folder.glob("*.md"))[0]
    text = story.read_text(encoding="utf-8")
    story.write_text(text.replace("---\n", "---\nlanguage: ar\n", 1), encoding="utf-8")
    html = _render().html
    tree = lxml.html.fromstring(html)
    marked = tree.xpath('//*[@lang="ar"]')
    assert [(e.tag, e.get("class"), e.get("dir")) for e in marked] == [
        ("h2", "story-title", "rtl"),
        ("div", "story-body", "rtl"),
    ]
    continues = tree.xpath('//p[@class="continue"]')
    assert continues and all(p.get("lang") is None for p in continues)
    assert len(tree.xpath("//*[@lang]")) == len(tree.xpath('//*[@lang="en"]')) + 2  # the others: none


@pytest.mark.parametrize(("written", "hint"), [("ar_EG", "write language: ar-EG"), ("arabic", "ISO 639 code")])
def test_a_story_language_that_is_not_a_tag_is_an_error(project: Path, written: str, hint: str) -> None:
    from digest.errors import DigestError
    from digest.stories import read_story

    story = project / "issues" / EXAMPLE / "zz-story.md"
    write(story, f"---\ntitle: T\nlanguage: {written}\n---\nText.\n")
    with pytest.raises(DigestError) as e:
        read_story(story)
    assert (e.value.message, e.value.line) == (f"'language' is not a BCP 47 language tag: {written!r}", 3)
    assert hint in e.value.hint
