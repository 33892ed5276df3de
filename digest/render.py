"""Render an issue through the Jinja templates into an HTML part and a text part."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import jinja2
from markupsafe import Markup

from . import images
from .config import Newsletter, Project
from .errors import DigestError, TemplateError, raise_all
from .issue import Issue, check_slug
from .language import language_direction
from .mergefields import Fields, NoReader, Placeholders, Slot, check_templates, slot_index
from .plaintext import lead_gap, picture, wrap
from .stories import Image, Story

log = logging.getLogger(__name__)

_URL_KEEP = "!#$%&'()*+,/:;=?@[]~"  # what a URL keeps as it is (its % escapes too)

HTML_TEMPLATE = "email.html"
TEXT_TEMPLATE = "email.txt"


def default_templates_dir() -> Path:
    """Return the packaged default templates (wheel) or the checkout's templates/."""
    packaged = Path(__file__).parent / "_templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


@dataclass(frozen=True)
class RenderedIssue:
    """The issue's two parts, rendered and inlined once; slots are filled per recipient."""

    issue: Issue
    newsletter: Newsletter
    subject: str
    html: str
    text: str
    slots: tuple[Slot, ...]
    unsubscribe_url: str
    personal: bool
    placeholders: Placeholders | None = None  # the build's merge-field placeholders (personal)


def lead(story: Story) -> str:
    """Return the dateline that opens a story, as the seed writes it."""
    return story.lead


def _language_attributes(story: Story) -> Markup:
    """' lang="…" dir="…"' for a story in a language of its own (its front matter's
    'language'), so it is laid out, read aloud and hyphenated as that language; else ''."""
    if not story.language:
        return Markup("")
    return Markup(f' lang="{escape(story.language)}" dir="{language_direction(story.language)}"')


def _picture_text(image: Image) -> str:
    """A story's picture as the text part writes it: '[Picture: alt] <url>', the address
    percent-encoded as the HTML part's link resolves (a space would split it when wrapped)."""
    return picture(image.alt, quote(image.src, safe=_URL_KEEP))


def _story_html(story: Story) -> Markup:
    html = story.body_html
    dateline = lead(story)
    if dateline:
        span = f'<span class="dateline">{escape(dateline)}</span>{lead_gap(dateline)}'
        html = html.replace("<p>", "<p>" + span, 1) if html.startswith("<p>") else (f"<p>{span}</p>\n{html}")
    return Markup(html)


def _story_text(story: Story) -> str:
    return story.body_text


def make_environment(project_templates: Path | None) -> jinja2.Environment:
    """Return the Jinja environment: project templates over the packaged defaults.

    ``{% extends "!default/email.html" %}`` reaches the default a project file replaces.
    The environment is reused until a project template is added, removed or changed.
    """
    return _environment(project_templates, _fingerprint(project_templates))


def _fingerprint(folder: Path | None) -> tuple:
    if folder is None or not folder.is_dir():
        return ()
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()))


@lru_cache(maxsize=8)
def _environment(project_templates: Path | None, fingerprint: tuple) -> jinja2.Environment:
    defaults = jinja2.FileSystemLoader(str(default_templates_dir()))
    loaders: list[jinja2.BaseLoader] = []
    # The project folder may not exist yet: FileSystemLoader looks on every load.
    if project_templates is not None and project_templates.resolve() != (default_templates_dir().resolve()):
        loaders.append(jinja2.FileSystemLoader(str(project_templates)))
    loaders += [defaults, jinja2.PrefixLoader({"!default": defaults}, delimiter="/")]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["story_html"] = _story_html
    env.filters["language_attributes"] = _language_attributes
    env.filters["story_text"] = _story_text
    env.filters["picture_text"] = _picture_text
    env.filters["wrap"] = wrap
    env.filters["lead"] = lead
    # A template written when an export's recipient was None still reads it so.
    env.tests["none"] = lambda value: value is None or isinstance(value, NoReader)
    return env


def render_issue(
    project: Project, issue: Issue, *, personal: bool = False, local_images: bool = False
) -> RenderedIssue:
    """Render and inline the issue once.

    With *personal*, recipient fields and the unsubscribe link are left as
    placeholders for message.py; without, the copy is the same for everybody.
    A picture of the issue folder is linked at its published URL (images.py), and
    every problem that keeps one from readers is raised with the template's; with
    *local_images* (the preview, which serves the folder) its src stays as written.
    """
    problems: list[DigestError] = []
    shown = issue
    if not local_images:
        shown, problems = images.for_email(issue, project.newsletter.base_url)
    # The email links <base_url>/<slug>/ ("Read on the web"): a name the archive refuses
    # (reserved, or needing escaping) would be a dead link.
    slug_problem = check_slug(issue.path) if project.newsletter.base_url else None
    if slug_problem is not None:
        problems.insert(0, slug_problem)
    try:
        rendered = _render_issue(project, issue, shown, personal)
    except DigestError as e:
        raise_all(problems + getattr(e, "errors", [e]))
        raise
    raise_all(problems)
    return rendered


def _render_issue(project: Project, issue: Issue, shown: Issue, personal: bool) -> RenderedIssue:
    from .inline import inline_css

    newsletter = project.newsletter
    env = make_environment(project.templates_dir)
    slots: list[Slot] = []
    raise_all(check_templates(env, (HTML_TEMPLATE, TEXT_TEMPLATE)))
    placeholders = Placeholders.new() if personal else None
    if placeholders is not None:
        recipient: Fields | NoReader = Fields(slots, placeholders)
        unsubscribe = Markup(placeholders.token(slot_index(slots, Slot("unsubscribe_url"))))
    else:
        recipient = NoReader()
        unsubscribe = generic_unsubscribe_url(newsletter)
    context = {
        "newsletter": newsletter,
        "issue": shown,
        "stories": shown.stories,
        "recipient": recipient,
        "unsubscribe_url": unsubscribe,
        "web_url": _web_url(newsletter, issue),
    }
    html_template, html = _render(env, HTML_TEMPLATE, context)
    text_template, text = _render(env, TEXT_TEMPLATE, context)
    html = inline_css(html)
    _check_disclaimer(newsletter, html, text, html_template, text_template)
    if placeholders is not None:
        _check_placeholders(placeholders, ((html_template, html), (text_template, text)))
    return RenderedIssue(
        issue=issue,
        newsletter=newsletter,
        subject=issue.subject,
        html=html,
        text=text,
        slots=tuple(slots),
        unsubscribe_url=generic_unsubscribe_url(newsletter),
        personal=personal,
        placeholders=placeholders,
    )


def _check_placeholders(placeholders: Placeholders, parts: tuple[tuple[Path, str], ...]) -> None:
    """Fail the build if a template changed a merge field's placeholder (e.g. a filter)."""
    problems: list[DigestError] = []
    for template, content in parts:
        for found in placeholders.leftovers(content)[:1]:
            problems.append(
                TemplateError(
                    f"a merge field was changed while rendering and would reach readers as {found.strip()!r}",
                    path=template,
                    hint="print merge fields as they are: {{ recipient.name }}; no filter, slice "
                    "or string method on them",
                )
            )
    raise_all(problems)


def generic_unsubscribe_url(newsletter: Newsletter) -> str:
    """Return the unsubscribe URL of a copy that is not addressed to one person.

    Query parameters that carry {email} or {token} are left out.
    """
    parts = urlsplit(newsletter.unsubscribe_url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if "{email}" not in v and "{token}" not in v
    ]
    path = parts.path.replace("{email}", "").replace("{token}", "")
    return urlunsplit(parts._replace(path=path, query=urlencode(query)))


def _web_url(newsletter: Newsletter, issue: Issue) -> str | None:
    if not newsletter.base_url:
        return None
    return f"{newsletter.base_url.rstrip('/')}/{issue.slug}/"


def _render(env: jinja2.Environment, name: str, context: dict) -> tuple[Path, str]:
    try:
        template = env.get_template(name)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(
            f"template syntax error: {e.message}",
            path=e.filename,
            line=e.lineno,
            hint="see https://jinja.palletsprojects.com/templates/",
        ) from e
    except jinja2.TemplateNotFound as e:
        raise TemplateError(
            f"template not found: {e.name}", hint="check the name in {% extends %} or {% include %}"
        ) from e
    try:
        return Path(template.filename or name), template.render(context)
    except RecursionError:
        raise TemplateError(
            "the templates extend or include themselves without end",
            path=template.filename,
            hint="a template in the default templates' own folder (templates/ of digest's repository, "
            'which an install from it uses) cannot extend "!default/...": it is itself; put overrides '
            "in a project of your own (digest init)",
        ) from None
    except jinja2.UndefinedError as e:
        path, line = _template_frame(template.filename)
        message, close = _undefined(e.message or "")
        raise TemplateError(
            f"template uses an undefined variable: {message}",
            path=path,
            line=line,
            hint=f"did you mean '{close}'?"
            if close
            else "check the spelling; the README lists what templates can use",
        ) from e
    except jinja2.TemplateError as e:
        path, line = _template_frame(template.filename)
        raise TemplateError(f"template error: {e}", path=path, line=line) from e


_NO_ATTRIBUTE = re.compile(r"'(?:[\w.]+\.)?(\w+) object' has no attribute '(\w+)'")


def _undefined(message: str) -> tuple[str, str | None]:
    """Jinja's "'digest.issue.Issue object' has no attribute 'titel'" in the words of the
    templates ("'issue' has no 'titel'"), and the name it resembles, if any."""
    m = _NO_ATTRIBUTE.fullmatch(message)
    known = {"Issue": Issue, "Story": Story, "Newsletter": Newsletter}
    if m is None or m[1] not in known:
        return message, None
    cls = known[m[1]]
    names = [f.name for f in dataclasses.fields(cls)] + [n for n in dir(cls) if not n.startswith("_")]
    close = difflib.get_close_matches(m[2], names, n=1)
    return f"'{m[1].lower()}' has no '{m[2]}'", close[0] if close else None


def _template_frame(fallback: str | None) -> tuple[str | None, int | None]:
    """Find the innermost template file and line in the current traceback."""
    tb = sys.exc_info()[2]
    found: tuple[str | None, int | None] = (fallback, None)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".html", ".txt")):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _normalised(text: str) -> str:
    return " ".join(text.split())


def _check_disclaimer(
    newsletter: Newsletter, html: str, text: str, html_template: Path, text_template: Path
) -> None:
    import lxml.html

    disclaimer = _normalised(newsletter.disclaimer)
    problems: list[DigestError] = []
    if escape(disclaimer, quote=False) in html:  # as the default template prints it
        html_text = disclaimer
    else:  # split across tags or re-spaced: compare the text a reader sees
        html_text = _normalised(lxml.html.document_fromstring(html).text_content()) if html else ""
    plain = disclaimer if disclaimer in text else _normalised(text)
    for template, content in ((html_template, html_text), (text_template, plain)):
        # The text part may break a line between two wide characters (Japanese, Chinese),
        # where no space was: compare without the white space too.
        if disclaimer not in content and "".join(disclaimer.split()) not in "".join(content.split()):
            problems.append(
                TemplateError(
                    "the rendered email does not carry the editorial disclaimer",
                    path=template,
                    hint="keep {{ newsletter.disclaimer }} in the template (or extend the default "
                    "template and keep its footer block)",
                )
            )
    raise_all(problems)
