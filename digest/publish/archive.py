"""Decide what the archive holds: the published issues, their URLs and their dates.

An issue is published once its send has started (the send journal has it) or once
it was named on the command line (remembered in .digest/archive.json); drafts
never are. Dates never come from the clock of the run that writes the pages:
``published`` is the issue's date (else the first publish), ``updated`` moves
only when the issue's content hash changes, and both are stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..atomic import write_atomically
from ..config import Project, toml_line
from ..db import private_dir
from ..errors import ConfigError, ContentError, DigestError, raise_all
from ..issue import MANIFEST, Issue, resolve_issue_dir

STATE_NAME = "archive.json"
SITE_FOLDER = "site"  # where 'digest publish' writes the site without --out, in the project
SITE_MARK = ".digest-site.json"


@dataclass(frozen=True)
class Site:
    """Where the archive lives on the web: ``base_url`` without its trailing slash."""

    base_url: str

    @property
    def path(self) -> str:
        """Return the URL path the site is served at, always ending with '/'."""
        return urlsplit(self.base_url).path.rstrip("/") + "/"

    def url(self, path: str = "") -> str:
        """Return the absolute URL of a site path such as '2021-12-31/'."""
        return f"{self.base_url}/{path}"


@dataclass(frozen=True)
class Dates:
    """An issue's stored dates and the content hash they belong to."""

    published: dt.datetime
    updated: dt.datetime
    content_hash: str


def site_of(project: Project) -> Site:
    """Return the site from digest.toml's base_url, or raise a clear error."""
    base = project.newsletter.base_url
    path = project.config_path
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    line = toml_line(text, "base_url", fallback="[newsletter]")
    if not base:
        raise ConfigError(
            "publishing needs 'base_url' in [newsletter]",
            path=path,
            line=line,
            hint='add base_url = "https://example.org" (where the site is served; '
            'the emails\' "Read on the web" links point there)',
        )
    parts = urlsplit(str(base).strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"'base_url' is not an absolute http(s) URL: {base!r}",
            path=path,
            line=line,
            hint='write the scheme and host: base_url = "https://example.org"',
        )
    if parts.query or parts.fragment:
        raise ConfigError(
            f"'base_url' has a query or fragment: {base!r}",
            path=path,
            line=line,
            hint="give the site's address only, such as https://example.org/digest",
        )
    return Site(str(base).strip().rstrip("/"))


def check_out_dir(project: Project, out: Path) -> Path:
    """Return the resolved output folder, refusing one that would overwrite the project."""
    out = out.resolve()
    root = project.root.resolve()
    guarded = {
        "issues/": project.issues_dir,
        "templates/": project.templates_dir,
        f"{project.state_dir.name}/": project.state_dir,
    }
    for name, folder in guarded.items():
        folder = folder.resolve()
        if out == folder or folder in out.parents:
            raise ContentError(
                f"the output folder is inside {name}",
                path=out,
                hint="publish into a folder of its own, such as site/ (the default)",
            )
    if out == root or out in root.parents:
        raise ContentError(
            "the output folder holds the project",
            path=out,
            hint="publish into a folder of its own, such as site/ (the default)",
        )
    if out.exists() and not out.is_dir():
        raise ContentError("the output folder is a file", path=out, hint="choose a folder for the site")
    # A folder of dot-files only (a fresh git checkout, .nojekyll) counts as empty.
    if (
        out.is_dir()
        and not (out / SITE_MARK).is_file()
        and any(not p.name.startswith(".") for p in out.iterdir())
    ):
        raise ContentError(
            "the output folder is not empty and was not written by 'digest publish'",
            path=out,
            hint="choose a new or empty folder; digest removes stale files from its own site folder only",
        )
    return out


def select_issues(
    project: Project, named: tuple[str, ...], state: dict
) -> tuple[list[Path], set[str], set[str]]:
    """Return the published issues' folders (sent, named now or before), those named now,
    and those published whatever was named now (sent, or named before)."""
    folders: dict[str, Path] = {}
    errors: list[DigestError] = []
    for ref in named:
        try:
            folder = resolve_issue_dir(project, ref)
        except DigestError as e:
            errors.append(e)
            continue
        if folder.name in folders and folders[folder.name] != folder:
            errors.append(
                ContentError(
                    f"two issues are named {folder.name!r}",
                    path=folder,
                    hint="issue folder names are their web addresses",
                )
            )
        folders[folder.name] = folder
    raise_all(errors)
    named_now = set(folders)
    candidates = sorted(p for p in project.issues_dir.glob("*/") if (p / MANIFEST).is_file())
    sent = _started_sends(project, [p.name for p in candidates])
    by_right = set()
    for folder in candidates:
        remembered = state.get(folder.name, {}).get("named", False)
        if folder.name in sent or remembered:
            folders.setdefault(folder.name, folder.resolve())
            by_right.add(folder.name)
    return [folders[slug] for slug in sorted(folders)], named_now, by_right


def _started_sends(project: Project, slugs: list[str]) -> set[str]:
    """Return the slugs whose send has started, from the send journal (read only); not one
    cancelled before any message of it could reach a reader (``Journal.withdrawn``)."""
    from ..send import JOURNAL_NAME
    from ..send.journal import Journal

    path = project.state_dir / JOURNAL_NAME
    if not path.is_file():
        return set()
    journal = Journal(path)
    try:
        return {slug for slug in slugs if journal.sends(slug) and not journal.withdrawn(slug)}
    finally:
        journal.close()


def content_hash(*parts: str) -> str:
    """Return the hash that says whether an issue changed (its title, summary, content)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()


def date_issue(issue: Issue, content: str, state: dict, now: dt.datetime) -> Dates:
    """Return the issue's dates, carried over from *state* while its content is the same.

    The first publish records ``published`` (the issue's date at 00:00 UTC, or *now*);
    a changed content hash moves ``updated`` to *now*, the moment the change is published.
    """
    known = state.get(issue.slug)
    if issue.date is not None:
        published = dt.datetime.combine(issue.date, dt.time(), dt.UTC)
    elif known and known.get("published"):
        published = _parse(known["published"])
    else:
        published = now
    if known and known.get("hash") == content and known.get("updated"):
        updated = max(_parse(known["updated"]), published)
    elif known and known.get("hash"):
        updated = max(now, published)  # the content changed since the last publish
    else:
        updated = published
    return Dates(published, updated, content)


def read_state(project: Project) -> dict:
    """Return what earlier publishes recorded, per issue slug."""
    path = project.state_dir / STATE_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ContentError(
            f"cannot read the archive's state: {e}",
            path=path,
            hint="restore the file, or delete it (published dates then start again from the issues' dates)",
        ) from e
    return data.get("issues", {}) if isinstance(data, dict) else {}


def write_state(project: Project, state: dict) -> bool:
    """Write the archive's state if it changed; return whether it was written."""
    path = project.state_dir / STATE_NAME
    data = (
        json.dumps({"version": 1, "issues": state}, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    ).encode("utf-8")
    if path.is_file() and path.read_bytes() == data:
        return False
    private_dir(path.parent)  # .digest/ holds the readers' data too: the owner's alone
    write_atomically({path: data})
    return True


def state_entry(dates: Dates, named: bool) -> dict:
    """Return the stored form of an issue's dates."""
    entry = {
        "hash": dates.content_hash,
        "published": rfc3339(dates.published),
        "updated": rfc3339(dates.updated),
    }
    if named:
        entry["named"] = True
    return entry


def rfc3339(moment: dt.datetime) -> str:
    """Return an RFC 3339 UTC timestamp such as 2021-12-31T00:00:00Z."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
