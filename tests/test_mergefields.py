"""Merge fields cannot misfire: refused when a template transforms them, never confused with text."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from digest.cli import cli
from digest.config import load_project
from digest.errors import DigestError, TemplateError
from digest.issue import load_issue
from digest.message import MessageTemplate, Recipient
from digest.render import render_issue

from .conftest import EXAMPLE, story, write


def _template() -> MessageTemplate:
    project = load_project()
    return MessageTemplate(render_issue(project, load_issue(project, EXAMPLE), personal=True), secret="k")


def _errors(error: DigestError) -> list[DigestError]:
    return getattr(error, "errors", [error])


@pytest.mark.parametrize(
    "expression, what",
    [
        ("{{ recipient.name | upper }}", "the filter 'upper'"),
        ("{{ recipient.get('name', 'reader') | title }}", "the filter 'title'"),
        ("{% if recipient.name %}Hi{% endif %}", "a condition"),
        ("{{ 'x' if recipient.city else 'y' }}", "a condition"),
        ("{% if recipient.name is defined %}Hi{% endif %}", "the test 'defined'"),
        ("{% if recipient.plan == 'gold' %}Hi{% endif %}", "a comparison"),
        ("{{ recipient.name.upper() }}", "an attribute, index or call"),
        ("{{ recipient.name[:3] }}", "an attribute, index or call"),
        ("{{ unsubscribe_url | urlencode }}", "the filter 'urlencode'"),
    ],
)
def test_a_transformed_merge_field_is_refused_with_template_and_line(
    project: Path, expression: str, what: str
) -> None:
    template = write(
        project / "templates" / "email.txt",
        f'{{% extends "!default/email.txt" %}}\n{{% block header %}}\nDear {expression},\n{{% endblock %}}\n',
    )
    with pytest.raises(TemplateError) as e:
        render_issue(load_project(), load_issue(load_project(), EXAMPLE), personal=True)
    assert e.value.path == template and e.value.line == 3, e.value
    assert e.value.message.startswith(what)
    # The same template is refused for an export too: it would misfire as soon as it is sent.
    with pytest.raises(TemplateError):
        render_issue(load_project(), load_issue(load_project(), EXAMPLE))


def test_printing_a_merge_field_is_allowed(project: Path) -> None:
    write(
        project / "templates" / "email.txt",
        '{% extends "!default/email.txt" %}\n{% block header %}\n'
        "Dear {{ recipient.get('name', 'reader') | e }} {{ recipient.city if recipient else '' }}"
        ",\n{% set n = recipient.name %}{{ n }}\n{% endblock %}\n",
    )
    raw = _template().personalise(Recipient("a@example.org", {"name": "Ann", "city": "Oslo"}))
    text = email.message_from_bytes(raw, policy=email.policy.default).get_body(("plain",))
    assert "Dear Ann Oslo," in text.get_content()


def test_a_field_changed_through_a_variable_fails_the_build(project: Path) -> None:
    template = write(
        project / "templates" / "email.txt",
        '{% extends "!default/email.txt" %}\n{% block header %}\n'
        "{% set n = recipient.name %}Dear {{ n | upper }},\n{% endblock %}\n",
    )
    with pytest.raises(TemplateError) as e:
        render_issue(load_project(), load_issue(load_project(), EXAMPLE), personal=True)
    assert e.value.path == template
    assert "merge field was changed" in e.value.message and "@@DIGEST-" in e.value.message


def test_story_text_that_looks_like_a_placeholder_stays_text(project: Path) -> None:
    story(
        project / "issues" / EXAMPLE / "zz-tricky.md",
        "Tricky",
        body="Literal @@digest.0@@ and @@digest-0.1@@ and @@DIGEST.2@@ here.",
    )
    template = _template()
    raw = template.personalise(Recipient("reader@example.org", {"name": "Ann"}))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()
    assert "Literal @@digest.0@@ and @@digest-0.1@@ and @@DIGEST.2@@ here." in text
    assert text.count(template.unsubscribe_url("reader@example.org")) == 1
    # The export (no recipient) carries the text too.
    assert "@@digest.0@@" in template.personalise(None).decode()


def test_placeholders_differ_per_build_but_the_content_hash_does_not(project: Path) -> None:
    a, b = _template(), _template()
    assert a.rendered.placeholders.nonce != b.rendered.placeholders.nonce
    assert a.content_hash == b.content_hash and a.boundary == b.boundary


def test_check_reports_a_transformed_merge_field(project: Path, runner) -> None:
    write(
        project / "templates" / "email.html",
        '{% extends "!default/email.html" %}\n{% block header %}\n'
        "<tr><td>{{ recipient.name | upper }}</td></tr>\n{% endblock %}\n",
    )
    write(
        project / "templates" / "email.txt",
        '{% extends "!default/email.txt" %}\n{% block header %}\n'
        "{% if recipient.name %}Dear you{% endif %}\n{% endblock %}\n",
    )
    result = runner.invoke(cli, ["check", EXAMPLE])
    assert result.exit_code == 1
    assert (
        "templates/email.html:3: error: the filter 'upper' is applied to the merge field "
        "recipient.name" in result.output
    )
    assert (
        "templates/email.txt:3: error: a condition is applied to the merge field "
        "recipient.name" in result.output
    )


def test_export_of_a_story_holding_placeholder_text(project: Path, runner) -> None:
    story(project / "issues" / EXAMPLE / "zz-tricky.md", "Tricky", body="Literal @@digest.0@@.")
    result = runner.invoke(cli, ["export", EXAMPLE, "--out", "OUT"])
    assert result.exit_code == 0, result.output
    assert "Literal @@digest.0@@." in (project / "OUT" / f"{EXAMPLE}.txt").read_text()


def test_a_template_that_greets_by_name_exports_for_nobody_in_particular(project: Path, runner) -> None:
    # The README's way to greet with a default; an export or the archive has no reader,
    # so the fields read as for a reader whose row leaves them empty.
    for name, prefix in (("email.txt", ""), ("email.html", "<p>")):
        write(
            project / "templates" / name,
            f'{{% extends "!default/{name}" %}}\n{{% block header %}}\n'
            f"{prefix}Dear {{{{ recipient.get('name', 'reader') }}}}, [{{{{ recipient.name }}}}]"
            "{% if recipient %} at {{ recipient.email }}{% endif %}"
            "{% if recipient is none %} (for nobody){% endif %}\n{% endblock %}\n",
        )
    result = runner.invoke(cli, ["export", EXAMPLE, "--out", "OUT"])
    assert result.exit_code == 0, result.output
    assert "Dear reader, [] (for nobody)\n" in (project / "OUT" / f"{EXAMPLE}.txt").read_text()
    assert "<p>Dear reader, [] (for nobody)" in (project / "OUT" / f"{EXAMPLE}.html").read_text()
    raw = _template().personalise(Recipient("a@example.org", {"name": "Ann"}))
    text = email.message_from_bytes(raw, policy=email.policy.default).get_body(("plain",))
    assert "Dear Ann, [Ann] at a@example.org\r\n" in text.get_content()  # a reader: not none
    result = runner.invoke(cli, ["publish", EXAMPLE])  # the archive renders the issue too
    assert result.exit_code == 0, result.output


def test_the_story_partial_greets_nobody_in_particular_on_the_archive_too(project: Path, runner) -> None:
    # The archive renders the email's story partial: a reader-less recipient there as well,
    # equal to none and printed as nothing, as the None it replaces.
    write(
        project / "templates" / "partials" / "story.html",
        '{% include "!default/partials/story.html" %}\n'
        "<p>For {{ recipient.get('name', 'every reader') }}[{{ recipient }}]"
        "{% if recipient == none %} (none){% endif %}</p>\n",
    )
    result = runner.invoke(cli, ["publish", EXAMPLE])
    assert result.exit_code == 0, result.output
    assert "<p>For every reader[] (none)</p>" in (project / "site" / EXAMPLE / "index.html").read_text()
    result = runner.invoke(cli, ["export", EXAMPLE, "--out", "OUT"])
    assert result.exit_code == 0, result.output
    assert "For every reader[] (none)" in (project / "OUT" / f"{EXAMPLE}.html").read_text()
