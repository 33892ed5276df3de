"""Check an issue before it goes out: every error the build finds, plus editorial warnings."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import lxml.html

from .clientcss import client_warnings
from .compose import INIT_EXAMPLES, SITE_URL_NOTE
from .config import Project, toml_line
from .errors import DigestError, DigestErrors
from .images import email_srcs, local_images, published_url, story_images
from .issue import Issue, earlier_urls, load_issue, read_manifest, resolve_issue_dir, story_files
from .links import is_site_address
from .message import MessageTemplate, Recipient
from .publish.archive import SITE_FOLDER
from .render import HTML_TEMPLATE, TEXT_TEMPLATE, make_environment, render_issue
from .stories import Story, front_line, markdown_tokens, read_story

GMAIL_CLIP_BYTES = 102 * 1024
STYLE_BLOCK_BYTES = 16 * 1024
SUBJECT_CHARS = 78
MARKER = re.compile(r"\b(TK|TODO|XXX)\b")
_SAMPLE = Recipient("reader@example.org", {"name": "Sample Reader"})


@dataclass(frozen=True)
class Finding:
    """One problem: where, how bad, what, and what to do."""

    severity: str  # "error" or "warning"
    message: str
    path: str | None = None
    line: int | None = None
    hint: str | None = None

    def format(self) -> str:
        where = f"{self.path}:{self.line}" if self.path and self.line else (self.path or "")
        return f"{where}: {self.severity}: {self.message}" if where else (f"{self.severity}: {self.message}")

    def format_with_hint(self) -> str:
        """Return the finding's line, then its hint (if any) on an indented line."""
        return self.format() + (f"\n  hint: {self.hint}" if self.hint else "")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == "warning" for f in self.findings)

    def summary(self) -> str:
        e, w = self.errors, self.warnings
        return f"{e} error{'s' * (e != 1)}, {w} warning{'s' * (w != 1)}"


class _Collector:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.findings: list[Finding] = []

    def add(
        self,
        severity: str,
        message: str,
        path: Path | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.findings.append(Finding(severity, message, self._shown(path), line, hint))

    def error_from(self, error: DigestError, severity: str = "error") -> None:
        for e in error.errors if isinstance(error, DigestErrors) else [error]:
            self.add(severity, e.message, e.path, e.line, e.hint)

    def _shown(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return str(Path(path).resolve().relative_to(self.base.resolve()))
        except ValueError:
            return str(path)


def report_of(error: DigestError, base: Path | None = None, issue_dir: Path | None = None) -> Report:
    """Return a Report of errors found before the issue could be checked (digest.toml, a
    missing issue), so that ``check --json`` gives them as findings too; with *issue_dir*,
    also what its stories say on their own, read without the newsletter's settings, so
    that a typo in digest.toml does not hide them until it is fixed."""
    out = _Collector(base or Path.cwd())
    out.error_from(error)
    if issue_dir is not None:
        try:
            read_manifest(issue_dir)
        except DigestError as e:
            out.error_from(e)
        partial, broken = _readable_part(out, issue_dir, errors=True)
        # The checks of the stories' own text (markers, links, a url without a source);
        # the earlier issues' urls need the settings (recent_issues), so not those.
        _check_stories(out, dataclasses.replace(partial, stories=partial.stories + broken), {})
    return Report(tuple(out.findings))


def check_issue(project: Project, ref: str | Path, base: Path | None = None) -> Report:
    """Validate an issue without sending anything; return all findings."""
    out = _Collector(base or Path.cwd())
    ref = resolve_issue_dir(project, ref)  # a missing issue is an error of the command itself
    _check_examples(out, project)
    try:  # .env: a line it cannot read, or a misspelt setting, would stop the send
        project.settings()
    except DigestError as e:
        out.error_from(e)
    try:
        issue = load_issue(project, ref)
    except DigestError as e:
        out.error_from(e)
        # Keep going with the stories that could be read: their warnings are shown too.
        partial, broken = _readable_part(out, ref)
        try:
            read_manifest(partial.path)
        except DigestError:
            pass  # an issue.toml that cannot be read is among the errors: its keys are unknown
        else:
            _check_manifest(out, partial)
        _check_bounces(out, project)
        _check_one_click(out, project)
        # A story with errors is looked through too (its body's links, a url without a
        # source), so that every problem of the story comes in this one run.
        _check_stories(
            out, dataclasses.replace(partial, stories=partial.stories + broken), earlier_urls(project, partial)
        )
        out.error_from(DigestErrors(client_warnings(project, partial)), "warning")
        return Report(tuple(out.findings))
    for warning in issue.warnings:
        out.error_from(warning, "warning")
    try:
        rendered = render_issue(project, issue, personal=True)
        message: MessageTemplate | None = MessageTemplate(rendered, secret="check")
    except DigestError as e:
        out.error_from(e)
        message = None
    _check_manifest(out, issue)
    _check_bounces(out, project)
    _check_one_click(out, project)
    _check_stories(out, issue, earlier_urls(project, issue))
    _check_published_images(out, project, issue)
    out.error_from(DigestErrors(client_warnings(project, issue)), "warning")
    if message is not None:
        _check_message(out, project, issue, message)
    return Report(tuple(out.findings))


def _check_one_click(out: _Collector, project: Project) -> None:
    """RFC 8058's one-click unsubscribe is for https links only: an http one goes without it."""
    url = project.newsletter.unsubscribe_url
    if url.lower().startswith("http://"):
        out.add(
            "warning",
            "unsubscribe_url is http://: messages go without List-Unsubscribe-Post, so Gmail's and "
            "Yahoo's one-click unsubscribe (RFC 8058, https only) is not offered",
            project.config_path,
            toml_line(project.config_path.read_text(encoding="utf-8"), "unsubscribe_url"),
            "serve the unsubscribe page over https and write its https:// address",
        )


def _check_bounces(out: _Collector, project: Project) -> None:
    if not project.newsletter.bounce_address:  # issue 12: bounces
        out.add(
            "warning",
            "no bounce_address: bounces go to the From address and are not processed",
            project.config_path,
            None,
            'set bounce_address = "bounces@<your '
            "domain>\" under [newsletter] and read it with 'digest bounces'",
        )


def _readable_part(out: _Collector, issue_dir: Path, errors: bool = False) -> tuple[Issue, tuple[Story, ...]]:
    """Return the issue with only the stories that parse (for their warnings), and what could
    be read of the stories with errors (for the checks of their front matter and body).
    With *errors*, the stories' errors are reported too (load_issue has not said them)."""
    stories = []
    broken: list[Story] = []
    for path in story_files(issue_dir):
        try:
            story, warnings = read_story(path)
        except DigestError as e:  # reported by load_issue, or here; its warnings still count
            if errors:
                out.error_from(e)
            for warning in getattr(e, "warnings", ()):
                out.error_from(warning, "warning")
            if getattr(e, "story", None) is not None:
                broken.append(e.story)  # its markers are looked for with the rest
            else:
                _check_markers(out, path)
            continue
        stories.append(story)
        for warning in warnings:
            out.error_from(warning, "warning")
    try:
        meta, _ = read_manifest(issue_dir)
    except DigestError:
        meta = {}
    subject, preheader = meta.get("subject", ""), meta.get("preheader", "")
    issue = Issue(
        slug=issue_dir.name,
        path=issue_dir,
        subject=subject if isinstance(subject, str) else "",
        title="",
        date=None,
        number=None,
        preheader=preheader if isinstance(preheader, str) else "",
        stories=tuple(stories),
    )
    return issue, tuple(broken)


def _check_markers(out: _Collector, path: Path) -> None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return
    for number, text in enumerate(lines, 1):
        m = MARKER.search(text)
        if m:
            out.add(
                "warning", f"leftover {m.group(1)} marker", path, number, "finish or remove the placeholder"
            )


def _check_examples(out: _Collector, project: Project) -> None:
    """Warn about the example values 'digest init' wrote, until they are replaced."""
    path = project.config_path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return
    newsletter = project.newsletter
    values = {
        "from": newsletter.sender,
        "reply_to": newsletter.reply_to,
        "base_url": newsletter.base_url,
        "list_id": newsletter.list_id,
        "unsubscribe_url": newsletter.unsubscribe_url,
        "unsubscribe_mailto": newsletter.unsubscribe_mailto,
        "disclaimer": newsletter.disclaimer,
    }
    for key, example in INIT_EXAMPLES.items():
        value = values.get(key) or ""
        if example in value:
            out.add(
                "warning",
                f"'{key}' is still the example 'digest init' wrote",
                path,
                toml_line(text, key),
                f"put the newsletter's own {key} in digest.toml",
            )


def _check_manifest(out: _Collector, issue: Issue) -> None:
    manifest = issue.manifest
    text = manifest.read_text(encoding="utf-8-sig")
    lines = text.splitlines()

    def line_of(key: str) -> int | None:
        return toml_line(text, key)

    if len(issue.subject) > SUBJECT_CHARS:
        out.add(
            "warning",
            f"the subject is {len(issue.subject)} characters (over {SUBJECT_CHARS})",
            manifest,
            line_of("subject"),
            "inboxes cut long subjects; shorten it",
        )
    if not issue.preheader:
        out.add(
            "warning",
            "the preheader is empty",
            manifest,
            line_of("preheader"),
            'add preheader = "..." (the preview line inboxes show after the subject)',
        )
    for number, text in enumerate(lines, 1):
        if MARKER.search(text):
            out.add(
                "warning",
                f"leftover {MARKER.search(text).group(1)} marker",
                manifest,
                number,
                "finish or remove the placeholder",
            )


def _check_stories(out: _Collector, issue: Issue, earlier: dict[str, str]) -> None:
    seen_urls: dict[str, Story] = {}
    seen_titles: dict[str, Story] = {}
    for story in issue.stories:
        text_lines = story.path.read_text(encoding="utf-8").splitlines()
        for number, text in enumerate(text_lines, 1):
            m = MARKER.search(text)
            if m:
                out.add(
                    "warning",
                    f"leftover {m.group(1)} marker",
                    story.path,
                    number,
                    "finish or remove the placeholder",
                )
            if number < story.body_line and text.startswith("url:") and SITE_URL_NOTE in text:
                out.add(
                    "warning",
                    "the url is the site that 'digest import' found, not the article",
                    story.path,
                    number,
                    "put the article's address there, or "
                    "delete the '# import:' note if the site is all there is",
                )
        # A bare site (https://tass.com/) names the source, not an article: stories from
        # the same site share it, and it goes out in every issue.
        if story.url and not is_site_address(story.url):
            if story.url in seen_urls:
                out.add(
                    "warning",
                    f"the same url as {seen_urls[story.url].path.name}",
                    story.path,
                    front_line(story, "url"),
                    "is this story in twice?",
                )
            seen_urls.setdefault(story.url, story)
            if story.url in earlier:
                out.add(
                    "warning",
                    f"this url is in an earlier issue too: {earlier[story.url]}",
                    story.path,
                    front_line(story, "url"),
                    "readers of that issue have seen this story (the last 'recent_issues' issues "
                    "by date are compared, sent or not)",
                )
        if story.url and not story.source:
            out.add(
                "warning",
                "the story has a url but no source",
                story.path,
                front_line(story, "url"),
                "add 'source: <publisher>' to credit it",
            )
        key = story.title.casefold()
        if key and key in seen_titles:
            out.add(
                "warning",
                f"the same title as {seen_titles[key].path.name}",
                story.path,
                front_line(story, "title"),
                "is this story in twice?",
            )
        seen_titles.setdefault(key, story)
        _check_body_links(out, story)


def _check_published_images(out: _Collector, project: Project, issue: Issue) -> None:
    """Warn about a picture of the issue folder whose copy in site/ is missing or out of date:
    the email links the published copy, so the archive goes online before the send."""
    base_url = project.newsletter.base_url
    if not base_url:
        return  # each local image is an error of the build
    site = project.root / SITE_FOLDER
    found, _ = local_images(issue)
    for local in found:
        copy = site / issue.slug / local.path
        if copy.is_file() and copy.read_bytes() == local.file.read_bytes():
            continue
        state = "has changed since it was published" if copy.is_file() else "is not published yet"
        out.add(
            "warning",
            f"the image {local.image.shown} {state} ({SITE_FOLDER}/{issue.slug}/{local.path}); "
            f"readers load it from {published_url(base_url, issue.slug, local.path)}",
            local.image.story.path,
            local.image.line,
            f"run 'digest publish {issue.slug}' and put {SITE_FOLDER}/ online before you send "
            f"(this looks in {SITE_FOLDER}/ only: ignore it if you publish with --out elsewhere)",
        )


def _check_body_links(out: _Collector, story: Story) -> None:
    for token in markdown_tokens(story.body):
        for child in token.children or []:
            line = story.body_line + token.map[0] if token.map else story.body_line
            if child.type == "link_open":
                problem = _link_problem(child.attrGet("href") or "")
                if problem:
                    out.add("warning", problem, story.path, line, "use a full https:// link")
            elif child.type == "image" and not (child.content or "").strip():
                out.add(
                    "warning",
                    "an image has no alt text",
                    story.path,
                    line,
                    "write ![what the picture shows](src)",
                )


def _link_problem(href: str) -> str | None:
    href = href.strip()
    try:
        scheme = urlsplit(href).scheme.lower()
        urlsplit(href).port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"a link that is not a valid address ({href[:60]})"
    if not href or href == "#":
        return "an empty link"
    if scheme == "javascript":
        return f"a javascript: link ({href[:40]})"
    if not scheme:
        return f"a relative link ({href[:60]}) does not work in an email"
    return None


def _check_message(out: _Collector, project: Project, issue: Issue, message: MessageTemplate) -> None:
    env = make_environment(project.templates_dir)
    html_template = Path(env.get_template(HTML_TEMPLATE).filename)
    text_template = Path(env.get_template(TEXT_TEMPLATE).filename)
    raw = message.personalise(_SAMPLE)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    html_part = msg.get_body(("html",))
    html = html_part.get_content()
    text = msg.get_body(("plain",)).get_content()
    unsubscribe = message.unsubscribe_url(_SAMPLE.email)
    if unsubscribe not in text:
        out.add(
            "error",
            "the text part has no unsubscribe link",
            text_template,
            None,
            "keep {{ unsubscribe_url }} in the template's footer",
        )
    if unsubscribe.replace("&", "&amp;") not in html:
        out.add(
            "error",
            "the HTML part has no unsubscribe link",
            html_template,
            None,
            'keep <a href="{{ unsubscribe_url }}"> in the template\'s footer',
        )
    size = len(html_part.get_payload())
    if size > GMAIL_CLIP_BYTES:
        out.add(
            "warning",
            f"the HTML part is {size / 1024:.0f} KB as sent; Gmail clips messages over 102 KB",
            issue.path,
            None,
            "cut stories or shorten the template",
        )
    doc = lxml.html.document_fromstring(html)
    for style in doc.iter("style"):
        length = len((style.text or "").encode())
        if length > STYLE_BLOCK_BYTES:
            out.add(
                "warning",
                f"a <style> block of {length / 1024:.0f} KB (over 16 KB; Gmail drops it)",
                html_template,
                None,
                "trim the media queries",
            )
    # The stories' images (checked for alt text in the story files), as written and as linked.
    story_srcs = {image.src for s in issue.stories for image in story_images(s)}
    story_srcs |= set(email_srcs(issue, project.newsletter.base_url)[0].values())
    for img in doc.iter("img"):
        if not (img.get("alt") or "").strip() and img.get("src") not in story_srcs:
            out.add(
                "warning", "an image has no alt text", html_template, None, "give every <img> an alt attribute"
            )
    body_hrefs = {
        child.attrGet("href")
        for s in issue.stories
        for t in markdown_tokens(s.body)
        for child in (t.children or [])
        if child.type == "link_open"
    }
    for a in doc.iter("a"):
        href = a.get("href")
        if href is None or href in body_hrefs or href.startswith("mailto:"):
            continue
        problem = _link_problem(href)
        if problem:
            out.add("warning", problem, html_template, None, "use a full https:// link")
