"""Publish the archive: a static site of every published issue, with feeds and a sitemap.

``publish_site`` gathers everything first (issues, dates, pages, feeds), then writes
only the files whose bytes changed. ``static_app`` serves a published site over WSGI.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Project
from ..errors import DigestError, raise_all
from ..images import site_files
from ..issue import check_slug, load_issue
from ..render import make_environment
from .archive import (
    SITE_FOLDER,
    check_out_dir,
    content_hash,
    date_issue,
    read_state,
    select_issues,
    site_of,
    state_entry,
    write_state,
)
from .feeds import atom_feed, json_feed
from .output import Changes, sync_folder
from .site import Entry, Pages, describe, render_content

log = logging.getLogger(__name__)

__all__ = ["Published", "publish_site", "static_app"]


@dataclass
class Published:
    """What a publish did: the folder, the issues in it, the files written and removed."""

    out: Path
    issues: list[str]
    changes: Changes
    warnings: list[DigestError] = field(default_factory=list)


def publish_site(
    project: Project, out: Path | None = None, named: tuple[str, ...] = (), now: dt.datetime | None = None
) -> Published:
    """Write the archive of *project* into *out* (default: site/ in the project).

    Every problem is reported at once, before anything is written.
    """
    site = site_of(project)
    out_dir = check_out_dir(project, out if out is not None else project.root / SITE_FOLDER)
    state = read_state(project)
    folders, named_slugs, by_right = select_issues(project, named, state)
    on_site = out_dir == (project.root / SITE_FOLDER).resolve()
    errors: list[DigestError] = []
    issues = []
    for folder in folders:
        problem = check_slug(folder)
        if problem is not None:
            errors.append(problem)
            continue
        try:
            issues.append(load_issue(project, folder))
        except DigestError as e:
            errors.extend(getattr(e, "errors", [e]))
    raise_all(errors)

    env = make_environment(project.templates_dir)
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    files: dict[str, bytes] = {}
    entries: list[Entry] = []
    warnings: list[DigestError] = []
    new_state: dict = {}
    for issue in issues:
        warnings.extend(issue.warnings)
        content = render_content(env, project.newsletter, issue)
        description = describe(issue)
        dates = date_issue(issue, content_hash(issue.title, description, content), state, now)
        path = f"{issue.slug}/"
        entries.append(Entry(issue, path, site.url(path), dates.published, dates.updated, content, description))
        remembered = state.get(issue.slug, {}).get("named", False)
        # A name is remembered for the project's own site only: a draft published to a
        # scratch '--out' folder to look at it must not go up with the next publish, nor
        # leave its dates behind (its first publish on the site is its date of publication).
        if on_site or issue.slug in by_right:
            new_state[issue.slug] = state_entry(dates, remembered or (on_site and issue.slug in named_slugs))
        for item in site_files(issue):  # every picture of the issue folder its stories show
            if isinstance(item, DigestError):
                warnings.append(item)
            else:
                files[item[0]] = item[1]
    # Keep what is known of issues not in this site (a deleted folder may come back).
    new_state = {**{k: v for k, v in state.items() if k not in new_state}, **new_state}
    entries.sort(key=lambda e: (e.published, e.issue.number or 0, e.issue.slug), reverse=True)
    files.update(Pages(env, project.newsletter, site).render(entries))
    files["feed.atom"] = atom_feed(project.newsletter, site, entries)
    files["feed.json"] = json_feed(project.newsletter, site, entries)

    changes = sync_folder(out_dir, files)
    write_state(project, new_state)
    return Published(out_dir, [e.issue.slug for e in entries], changes, warnings)


def static_app(site_dir: Path | str, base_path: str = "/"):
    """Return a WSGI app serving the published site in *site_dir* at *base_path*."""
    from .serve import static_app as make

    return make(Path(site_dir), base_path)
