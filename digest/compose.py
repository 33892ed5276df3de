"""Compose from the command line: new projects, new issues, adding, moving, removing stories.

issue.toml is edited with tomlkit, so its comments and layout survive.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from email.headerregistry import Address
from pathlib import Path

import tomlkit
import yaml
from slugify import slugify

from .atomic import write_atomically
from .config import CONFIG_NAME, Project
from .errors import ContentError, DigestError
from .headers import clean_value
from .issue import MANIFEST, check_slug, read_manifest, resolve_issue_dir, story_files
from .links import is_http_url

log = logging.getLogger(__name__)

SLUG_LENGTH = 60
# The example address 'digest init' writes; 'digest check' flags it until it is replaced.
EXAMPLE_FROM = "newsletter@example.org"
# The values 'digest init' writes that stand for the newsletter's own.
INIT_EXAMPLES = {
    "from": EXAMPLE_FROM,
    "reply_to": "editors@example.org",
    "base_url": "https://example.org",
    "list_id": "newsletter.example.org",
    "unsubscribe_url": "https://example.org/unsubscribe",
    "unsubscribe_mailto": "unsubscribe@example.org",
    "disclaimer": "Publication of an article in this newsletter does not mean that we agree with "
    "what is written.",
}
# Written after a url that 'digest import' made from "Continue reading at <site>"; 'digest
# check' warns about it until the editor gives the article's address (or deletes the note).
SITE_URL_NOTE = "# import: only the site is known; put the article's address here"

DIGEST_TOML = '''\
# The newsletter's identity. Machine settings and secrets (SMTP server,
# password, signing key) go in .env or the environment: see .env.example.
[newsletter]
# Shown in the masthead and the List-Id header.
name = {name}
# The From address of every message.
from = {sender}
# Where replies go (optional).
reply_to = "editors@example.org"
# Your web site (the archive 'digest publish' writes): adds a "Read on the web" link to
# <base_url>/<issue>/, and the email links the issue folder's pictures there (optional;
# needed for such pictures: publish the issue before you send it).
base_url = "https://example.org"
# Identifies the list to mail clients (List-Id header).
list_id = "newsletter.example.org"
# The unsubscribe page. {{email}} and {{token}} are filled in per recipient;
# the token is an HMAC of the address signed with DIGEST_SECRET.
unsubscribe_url = "https://example.org/unsubscribe?email={{email}}&token={{token}}"
# An address that unsubscribes by mail (optional, in List-Unsubscribe).
unsubscribe_mailto = "unsubscribe@example.org"
# The language of the email (<html lang>).
language = "en"
# How many earlier issues 'digest check' searches for links that already went out.
recent_issues = 5
# The editorial disclaimer, printed in the footer of every email.
disclaimer = """
Publication of an article in this newsletter does not mean that we agree with
what is written.
"""

# Source names by site: 'digest import' and 'digest add --url' fill in a story's
# source from the site of its url when the text gives none (optional).
# [sources]
# "tass.com" = "TASS"
# "www.rt.com" = "RT"
'''

ENV_EXAMPLE = """\
# Copy to .env and fill in. .env is never committed; the environment wins over it.
# SMTP server that sends the newsletter.
DIGEST_SMTP_HOST=smtp.example.org
# 587 for STARTTLS, 465 for TLS, 25 for none.
DIGEST_SMTP_PORT=587
# Login for the SMTP server (leave empty for none).
DIGEST_SMTP_USERNAME=
# Password for the SMTP server. Never printed or logged.
DIGEST_SMTP_PASSWORD=
# starttls (default), tls, or none (none only to a server on this machine).
DIGEST_SMTP_SECURITY=starttls
# A CA certificate file for a server whose certificate a private CA signed (optional).
DIGEST_SMTP_CAFILE=
# Secret key that signs unsubscribe links (any long random string).
DIGEST_SECRET=
# The mailbox 'digest bounces --imap' reads (the one bounce_address delivers to).
DIGEST_IMAP_HOST=
# 993 for TLS (default), 143 for starttls.
DIGEST_IMAP_PORT=993
DIGEST_IMAP_USERNAME=
# Password for the IMAP mailbox. Never printed or logged.
DIGEST_IMAP_PASSWORD=
# The folder to read (default INBOX).
DIGEST_IMAP_FOLDER=INBOX
# tls (default), starttls, or none; DIGEST_IMAP_CAFILE for a private CA (optional).
DIGEST_IMAP_SECURITY=tls
DIGEST_IMAP_CAFILE=
# Where processed messages move (optional; default 'processed' in your personal
# namespace, INBOX.processed on servers that keep folders under INBOX).
DIGEST_IMAP_PROCESSED=
"""

GITIGNORE = """\
# digest: build output and local state (send journal, suppression list)
/build/
/.digest/
.env
"""


def init_project(folder: Path, name: str = "My Newsletter") -> list[Path]:
    """Create a newsletter project in *folder*; refuse if any of its files exists."""
    name = clean_value(name)  # one line; a no-break or ideographic space stays
    if not name.strip():  # nothing but spaces, a no-break or ideographic one included
        raise ContentError("the newsletter needs a name", hint='give --name "The Morning Brief"')
    files = {
        folder / CONFIG_NAME: DIGEST_TOML.format(
            name=_toml_string(name),
            sender=_toml_string(str(Address(display_name=name, addr_spec=EXAMPLE_FROM))),
        ),
        folder / ".env.example": ENV_EXAMPLE,
        folder / ".gitignore": GITIGNORE,
    }
    existing = [p for p in files if p.exists()]
    if existing:
        raise ContentError(
            f"already exists: {', '.join(p.name for p in existing)}",
            path=folder,
            hint="digest init never overwrites files; choose an empty folder",
        )
    write_atomically({p: text.encode() for p, text in files.items()})
    (folder / "issues").mkdir(exist_ok=True)
    return [*files, folder / "issues"]


def _toml_string(value: str) -> str:
    """Return *value* as a TOML basic string (quotes, backslashes and controls escaped)."""
    return tomlkit.string(value).as_string()


def new_issue(
    project: Project,
    slug: str | None = None,
    title: str | None = None,
    date: dt.date | None = None,
    preheader: str = "",
) -> Path:
    """Create issues/<slug>/issue.toml; the slug defaults to the date (today)."""
    date = date or dt.date.today()
    slug = slug or date.isoformat()
    if slug != slugify(slug, lowercase=False, regex_pattern=r"[^-a-zA-Z0-9_.]+"):
        raise ContentError(
            f"not a usable issue name: {slug!r}",
            path=project.issues_dir,
            hint="use letters, digits, '-', '_' and '.', e.g. 2021-12-31",
        )
    unsafe = check_slug(project.issues_dir / slug)  # what the archive (and the email's link) needs
    if unsafe is not None:
        raise ContentError(
            unsafe.message,
            path=project.issues_dir,
            hint="choose another name: a letter or digit first, then letters, digits, '-', '_', "
            "'.' or '~', such as the date: 2021-12-31",
        )
    folder = project.issues_dir / slug
    if folder.exists():
        raise ContentError(
            "the issue already exists",
            path=folder,
            hint="choose another name, or add stories with 'digest add'",
        )
    doc = tomlkit.document()
    doc.add(tomlkit.comment("The issue's subject line, date and preheader (the inbox preview)."))
    doc["subject"] = clean_value(title) or f"{project.newsletter.name}, {date.strftime('%-d %B %Y')}"
    doc["date"] = date
    doc["preheader"] = clean_value(preheader)  # one line
    doc.add(tomlkit.comment("The stories in the order they appear (others follow by file name)."))
    doc["order"] = _order_array([])
    write_atomically({folder / MANIFEST: tomlkit.dumps(doc).encode()})
    return folder


def story_document(title: str, body: str, **meta: object) -> str:
    """Return a story file: YAML front matter (each value on one line, without control
    characters: ``clean_value``), then the Markdown body."""
    fields = {
        "title": clean_value(title),
        **{k: clean_value(v) if isinstance(v, str) else v for k, v in meta.items() if v},
    }
    front = yaml.safe_dump(fields, allow_unicode=True, sort_keys=False, width=1000)
    return f"---\n{front}---\n{body.strip()}\n"


def unique_slug(title: str, taken: set[str]) -> str:
    """Make a story slug from a title (transliterated, at most 60 characters), unique."""
    # An apostrophe joins, not splits: "Editor's letter" -> editors-letter.
    base = slugify(re.sub("['\u2019]", "", title), max_length=SLUG_LENGTH, word_boundary=True) or "story"
    slug, n = base, 2
    while slug in taken:
        slug = f"{base}-{n}"
        n += 1
    return slug


def current_order(issue_dir: Path) -> list[str]:
    """Return the slugs of an issue in their final order (without reading the stories)."""
    meta, _ = read_manifest(issue_dir)
    slugs = [p.stem for p in story_files(issue_dir)]
    listed = [s for s in meta.get("order", []) if isinstance(s, str) and s in slugs]
    return listed + [s for s in slugs if s not in listed]


def place(
    order: list[str],
    slug: str,
    position: int | None = None,
    before: str | None = None,
    after: str | None = None,
    path: Path | None = None,
) -> list[str]:
    """Return *order* with *slug* put at a 1-based position, before or after a story."""
    rest = [s for s in order if s != slug]
    if position is not None:
        if not 1 <= position <= len(rest) + 1:
            raise ContentError(
                f"position {position} is out of range",
                path=path,
                hint=f"choose a position from 1 to {len(rest) + 1}",
            )
        index = position - 1
    elif before or after:
        anchor = before or after
        if anchor == slug:
            raise ContentError(
                f"'{slug}' cannot move {'before' if before else 'after'} itself",
                path=path,
                hint="name another story, or give a position (see them with 'digest ls ISSUE')",
            )
        if anchor not in rest:
            raise ContentError(
                f"no story '{anchor}' in the issue", path=path, hint="see the slugs with 'digest ls ISSUE'"
            )
        index = rest.index(anchor) + (1 if after else 0)
    else:
        index = len(rest)
    return rest[:index] + [slug] + rest[index:]


def add_story(
    project: Project,
    ref: str | Path,
    title: str,
    body: str,
    *,
    position: int | None = None,
    after: str | None = None,
    **meta: object,
) -> Path:
    """Write a new story file and record its place in issue.toml."""
    issue_dir = resolve_issue_dir(project, ref)
    if not body.strip():
        raise ContentError(
            "the story has no text",
            path=issue_dir,
            hint="give the text in a file, on standard input or in $EDITOR; nothing was added",
        )
    if meta.get("url") and not is_http_url(meta["url"]):
        raise ContentError(
            f"--url is not an http(s) link: {meta['url']!r}",
            hint="give the article's full address, e.g. https://tass.com/politics/1",
        )
    if not meta.get("source") and meta.get("url"):
        meta["source"] = project.newsletter.source_for(str(meta["url"]))
    order = current_order(issue_dir)
    slug = unique_slug(title, {p.stem for p in story_files(issue_dir)})
    new_order = place(order, slug, position=position, after=after, path=issue_dir / MANIFEST)
    path = issue_dir / f"{slug}.md"
    write_atomically(
        {
            path: story_document(title, body, **meta).encode("utf-8"),
            issue_dir / MANIFEST: manifest_with_order(issue_dir, new_order),
        }
    )
    return path


def move_story(
    project: Project,
    ref: str | Path,
    slug: str,
    *,
    position: int | None = None,
    before: str | None = None,
    after: str | None = None,
) -> list[str]:
    """Change a story's place in the order; return the new order."""
    issue_dir = resolve_issue_dir(project, ref)
    order = current_order(issue_dir)
    _require(order, slug, issue_dir)
    new_order = place(order, slug, position, before, after, path=issue_dir / MANIFEST)
    write_atomically({issue_dir / MANIFEST: manifest_with_order(issue_dir, new_order)})
    return new_order


def remove_story(project: Project, ref: str | Path, slug: str) -> Path:
    """Delete a story file and take it out of the order."""
    issue_dir = resolve_issue_dir(project, ref)
    order = current_order(issue_dir)
    _require(order, slug, issue_dir)
    path = next(p for p in story_files(issue_dir) if p.stem == slug)
    write_atomically({issue_dir / MANIFEST: manifest_with_order(issue_dir, [s for s in order if s != slug])})
    path.unlink()
    return path


def manifest_with_order(issue_dir: Path, order: list[str]) -> bytes:
    """Return issue.toml with its order replaced, comments and layout kept."""
    text = (issue_dir / MANIFEST).read_text(encoding="utf-8")
    doc = tomlkit.parse(text)
    doc["order"] = _order_array(order)
    return tomlkit.dumps(doc).encode("utf-8")


def _order_array(order: list[str]) -> tomlkit.items.Array:
    array = tomlkit.array()
    array.extend(order)
    return array.multiline(bool(order))


def _require(order: list[str], slug: str, issue_dir: Path) -> None:
    if slug not in order:
        raise ContentError(
            f"no story '{slug}' in the issue",
            path=issue_dir,
            hint="see the slugs with 'digest ls " + issue_dir.name + "'",
        )


def import_digest(
    project: Project, ref: str | Path, raw: bytes, source: Path
) -> tuple[list[Path], list[DigestError]]:
    """Split a plain-text digest into story files appended to the issue, in order.

    Returns the files written and the notes on text that was not placed.
    """
    from .textimport import decode_input, split_digest

    issue_dir = resolve_issue_dir(project, ref)
    order = current_order(issue_dir)
    result = split_digest(decode_input(raw, source), project.newsletter.disclaimer, source)
    if not any(story.paragraphs for story in result.stories):
        raise ContentError(
            "no story found", path=source, hint="a story is a title line, a blank line, then its text"
        )
    taken = {p.stem for p in story_files(issue_dir)}
    outputs: dict[Path, bytes] = {}
    for story in result.stories:
        if not story.paragraphs:
            continue  # reported in the notes; an empty story is never written
        slug = unique_slug(story.title, taken)
        taken.add(slug)
        order.append(slug)
        document = story_document(
            story.title,
            story.body(),
            source=story.source or project.newsletter.source_for(story.url),
            dateline=story.dateline,
            url=story.url,
            read_also=story.read_also,
        )
        if story.url:  # only the site is known: say so where the editor will see it
            document = re.sub(r"(?m)^(url: .*)$", lambda m: f"{m.group(1)}  {SITE_URL_NOTE}", document, count=1)
        outputs[issue_dir / f"{slug}.md"] = document.encode("utf-8")
    outputs[issue_dir / MANIFEST] = manifest_with_order(issue_dir, order)
    write_atomically(outputs)
    return [p for p in outputs if p.name != MANIFEST], result.notes
