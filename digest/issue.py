"""Collect and order an issue's stories; read the issue manifest (issue.toml)."""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .config import Project, control_character, control_hint, read_toml, toml_line
from .errors import ContentError, DigestError, raise_all
from .headers import clean_value
from .stories import STORY_SUFFIXES, Story, read_story

MANIFEST = "issue.toml"
# Names the web archive (publish) uses at its root, and the readers' web app beside it:
# no issue may be called so.
RESERVED_SLUGS = frozenset(
    {
        "page",
        "sources",
        "archive.css",
        "feed.atom",
        "feed.json",
        "sitemap.xml",
        "robots.txt",
        "index.html",
        "subscribe",
        "unsubscribe",
        "confirm",
    }
)
# An issue slug is a single path segment made of characters that need no escaping in a URL.
SAFE_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*\Z")
_KNOWN = ("subject", "title", "date", "number", "preheader", "order")


@dataclass(frozen=True)
class Issue:
    """A newsletter issue: its manifest and its stories in their final order."""

    slug: str
    path: Path
    subject: str
    title: str
    date: dt.date | None
    number: int | None
    preheader: str
    stories: tuple[Story, ...]
    warnings: tuple[DigestError, ...] = field(default=(), compare=False)

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST


def resolve_issue_dir(project: Project, ref: str | Path) -> Path:
    """Turn ISSUE (a slug under issues/ or a folder path) into an existing folder."""
    return issue_dir_in(project.issues_dir, ref)


def issue_dir_in(issues_dir: Path, ref: str | Path) -> Path:
    """``resolve_issue_dir`` with the project's issues/ folder given (for a project whose
    digest.toml cannot be read)."""
    ref_path = Path(ref)
    candidates = [issues_dir / ref_path] if len(ref_path.parts) == 1 else []
    candidates.append(ref_path if ref_path.is_absolute() else Path.cwd() / ref_path)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    known = sorted(p.name for p in issues_dir.glob("*/") if p.is_dir())
    raise ContentError(
        f"no issue '{ref}'",
        path=issues_dir,
        hint=("known issues: " + ", ".join(known)) if known else "create one with 'digest new'",
    )


def story_files(issue_dir: Path) -> list[Path]:
    """Return the story files of an issue folder, sorted by file name."""
    return sorted(
        (p for p in issue_dir.iterdir() if p.suffix in STORY_SUFFIXES and p.is_file()),
        key=lambda p: p.name,
    )


def read_manifest(issue_dir: Path) -> tuple[dict, str]:
    """Return the parsed issue.toml and its text."""
    path = issue_dir / MANIFEST
    if not path.exists():
        raise ContentError(
            f"no {MANIFEST}",
            path=issue_dir,
            hint="create the issue with 'digest new', or add issue.toml with subject = \"...\"",
        )
    return read_toml(path, ContentError, "check the quoting; see the README for the issue.toml keys")


def load_issue(project: Project, ref: str | Path) -> Issue:
    """Read an issue folder and its stories; raise every problem found, all at once."""
    issue_dir = resolve_issue_dir(project, ref)
    errors: list[DigestError] = []
    warnings: list[DigestError] = []
    manifest_path = issue_dir / MANIFEST
    try:
        meta, text = read_manifest(issue_dir)
    except DigestError as e:
        errors.append(e)
        meta, text = {}, ""

    def line_of(key: str) -> int | None:
        return toml_line(text, key)

    unknown = [key for key in meta if key not in _KNOWN]
    subject = meta.get("subject") or meta.get("title")
    typo = None  # an unknown key that stands for the missing subject
    if text and (not isinstance(subject, str) or not subject.strip()):
        typo = next((k for k in unknown if difflib.get_close_matches(k.lower(), ["subject"], n=1)), None)
        errors.append(
            ContentError(
                "no 'subject'" + (f" (unknown key '{typo}': did you mean 'subject'?)" if typo else ""),
                path=manifest_path,
                line=(line_of(typo) or 1) if typo else 1,
                hint=f"rename '{typo}' to 'subject'"
                if typo
                else 'add subject = "..." (the email\'s subject line)',
            )
        )
        subject = ""
    for key in unknown:
        if key == typo:
            continue  # reported with the missing subject
        close = difflib.get_close_matches(key.lower(), _KNOWN, n=1)
        errors.append(
            ContentError(
                f"unknown key '{key}'" + (f": did you mean '{close[0]}'?" if close else ""),
                path=manifest_path,
                line=line_of(key),
                hint=(f"rename it to '{close[0]}'; " if close else "") + "known keys: " + ", ".join(_KNOWN),
            )
        )
    title = meta.get("title") or subject or ""
    if not isinstance(title, str):
        errors.append(
            ContentError(
                "'title' must be text", path=manifest_path, line=line_of("title"), hint='write title = "..."'
            )
        )
        title = subject if isinstance(subject, str) else ""
    date = meta.get("date")
    if isinstance(date, str):
        try:
            date = dt.date.fromisoformat(date)
        except ValueError:
            errors.append(
                ContentError(
                    f"'date' is not a date: {date!r}",
                    path=manifest_path,
                    line=line_of("date"),
                    hint="write date = 2021-12-31",
                )
            )
            date = None
    elif isinstance(date, dt.datetime):
        date = date.date()
    elif date is not None and not isinstance(date, dt.date):
        errors.append(
            ContentError(
                "'date' is not a date", path=manifest_path, line=line_of("date"), hint="write date = 2021-12-31"
            )
        )
        date = None
    number = meta.get("number")
    if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
        errors.append(
            ContentError(
                "'number' must be a whole number",
                path=manifest_path,
                line=line_of("number"),
                hint="write number = 12",
            )
        )
        number = None
    preheader = meta.get("preheader", "")
    if not isinstance(preheader, str):
        errors.append(
            ContentError(
                "'preheader' must be text",
                path=manifest_path,
                line=line_of("preheader"),
                hint='write preheader = "..."',
            )
        )
        preheader = ""
    for key in ("subject", "title", "preheader"):  # they go into the Subject, the page and the text
        value = meta.get(key)
        found = control_character(value, allowed="\n\t") if isinstance(value, str) else None
        if found:
            errors.append(
                ContentError(
                    f"'{key}' holds a control character ({found})",
                    path=manifest_path,
                    line=line_of(key),
                    hint=control_hint(found),
                )
            )

    stories: dict[str, Story] = {}
    files = story_files(issue_dir)
    for path in files:
        try:
            story, story_warnings = read_story(path)
        except DigestError as e:
            errors.extend(e.errors if hasattr(e, "errors") else [e])
            stories.setdefault(path.stem, None)  # type: ignore[arg-type]
            continue
        warnings.extend(story_warnings)
        if stories.get(story.slug) is not None:
            other = stories[story.slug].path.name
            errors.append(
                ContentError(
                    f"two stories have the slug '{story.slug}' ({other} and {path.name})",
                    path=path,
                    hint="rename one of the files",
                )
            )
            continue
        stories[story.slug] = story
    if not files:
        errors.append(
            ContentError(
                "the issue has no stories",
                path=issue_dir,
                hint="add story files (*.md) to the folder, for example with 'digest add'",
            )
        )

    order = meta.get("order", [])
    if not isinstance(order, list) or not all(isinstance(s, str) for s in order):
        errors.append(
            ContentError(
                "'order' must be a list of story slugs",
                path=manifest_path,
                line=line_of("order"),
                hint='write order = ["first-story", ...]',
            )
        )
        order = []
    ordered: list[Story] = []
    seen: set[str] = set()
    for slug in order:
        if slug in seen:
            errors.append(
                ContentError(
                    f"'order' names '{slug}' twice",
                    path=manifest_path,
                    line=line_of("order"),
                    hint="list each story once",
                )
            )
            continue
        seen.add(slug)
        if slug not in stories:
            errors.append(
                ContentError(
                    f"'order' names a missing story '{slug}'",
                    path=manifest_path,
                    line=line_of("order"),
                    hint=f"there is no {slug}.md in {issue_dir.name}/; fix the name or remove it from order",
                )
            )
            continue
        if stories[slug] is not None:
            ordered.append(stories[slug])
    ordered.extend(s for slug, s in stories.items() if slug not in seen and s is not None)
    raise_all(errors)
    return Issue(
        slug=issue_dir.name,
        path=issue_dir,
        subject=clean_value(subject),  # one line; a no-break or ideographic space stays
        title=clean_value(str(title)),
        date=date,
        number=number,
        preheader=clean_value(preheader),
        stories=tuple(ordered),
        warnings=tuple(warnings),
    )


def earlier_urls(project: Project, issue: Issue) -> dict[str, str]:
    """Return url -> issue slug for the stories of the last few issues before this one."""
    limit = project.newsletter.recent_issues
    if not limit or not project.issues_dir.is_dir():
        return {}
    key = (issue.date.isoformat() if issue.date else "", issue.slug)
    others = []
    for folder in project.issues_dir.iterdir():
        if not folder.is_dir() or folder.resolve() == issue.path.resolve():
            continue
        if not (folder / MANIFEST).is_file():
            continue
        try:
            date = _manifest_date(folder)
        except DigestError:  # an unreadable neighbour is its own check's business
            continue
        if (date, folder.name) < key:
            others.append(((date, folder.name), folder))
    urls: dict[str, str] = {}
    for _, folder in sorted(others)[-limit:]:
        for path in sorted(folder.glob("*.md")):
            try:
                story, _ = read_story(path)
            except DigestError:
                continue
            if story.url:
                urls[story.url] = folder.name
    return urls


def _manifest_date(folder: Path) -> str:
    meta, _ = read_manifest(folder)
    date = meta.get("date")
    return date.isoformat() if hasattr(date, "isoformat") else str(date or "")


def check_slug(issue_dir: Path) -> DigestError | None:
    """Return the problem with an issue folder's name as a URL path segment, if any."""
    slug = issue_dir.name
    if not SAFE_SLUG.match(slug):
        return ContentError(
            f"the issue name {slug!r} is not safe in a web address",
            path=issue_dir,
            hint="rename the folder: a letter or digit first, then letters, digits, '-', '_', '.' "
            "or '~' only, such as 2022-01-03",
        )
    if slug.lower() in RESERVED_SLUGS:
        return ContentError(
            f"the issue name {slug!r} is reserved by the web archive",
            path=issue_dir,
            hint="rename the folder, such as 2022-01-03",
        )
    return None
