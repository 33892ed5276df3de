"""Benchmark `digest publish`: an archive of generated issues, first run and no-change rerun.

The baseline, measured in the same run, renders the same issues through the email
pipeline only (read the stories, render and inline the email, no files written); the
floor reads the same issues and renders nothing.
Each timed run starts with the story cache empty, as a new process would.

    python benchmarks/publish.py                 # 1,000 issues
    python benchmarks/publish.py --issues 200    # quicker
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import digest.stories  # noqa: E402
from digest.config import load_project  # noqa: E402
from digest.issue import load_issue  # noqa: E402
from digest.publish import publish_site  # noqa: E402
from digest.render import render_issue  # noqa: E402

EXAMPLE = REPO / "issues" / "2021-12-31"
SOURCES = ("TASS", "RT", "Reuters", "AFP", "ANP", "AP")


def make_archive(folder: Path, issues: int) -> list[str]:
    """A project with *issues* issues of four stories each, made from the example's."""
    shutil.copy(REPO / "digest.toml", folder / "digest.toml")
    stories = [p.read_text(encoding="utf-8") for p in sorted(EXAMPLE.glob("*.md"))]
    start = dt.date(2020, 1, 1)
    slugs = []
    for n in range(issues):
        day = start + dt.timedelta(days=n)
        slug = f"{day.isoformat()}"
        issue = folder / "issues" / slug
        issue.mkdir(parents=True)
        (issue / "issue.toml").write_text(
            f'subject = "Issue {n}: the day in brief"\ndate = {day}\nnumber = {n + 1}\n'
            f'preheader = "What happened on {day:%d %B %Y}."\n',
            encoding="utf-8",
        )
        for k, text in enumerate(stories):
            text = text.replace("title: ", f"title: {n}.{k} ", 1)
            text = text.replace("source: ", f"source: {SOURCES[(n + k) % len(SOURCES)]} #", 1)
            (issue / f"story-{k}.md").write_text(text, encoding="utf-8")
        slugs.append(slug)
    return slugs


def timed(work) -> tuple[float, object]:
    digest.stories._cache.clear()  # as in a new process
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        result = work()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digest-publish-bench-") as tmp:
        root = Path(tmp)
        slugs = make_archive(root, args.issues)
        project = load_project(root)
        now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

        def email_only() -> int:
            for slug in slugs:
                render_issue(project, load_issue(project, slug))
            return len(slugs)

        def read_only() -> int:
            for slug in slugs:
                load_issue(project, slug)
            return len(slugs)

        baseline, _ = timed(email_only)
        floor, _ = timed(read_only)
        first, done = timed(lambda: publish_site(project, named=tuple(slugs), now=now))
        rerun, again = timed(lambda: publish_site(project, now=now))
        story = root / "issues" / slugs[len(slugs) // 2] / "story-0.md"
        story.write_text(story.read_text(encoding="utf-8") + "\nOne more line.\n", encoding="utf-8")
        changed, edited = timed(lambda: publish_site(project, now=now))
        files = len(done.changes.written)
        print(
            f"publish, {args.issues} issues ({files} files), first run: {first:.2f} s; "
            f"baseline (email pipeline only, same issues): {baseline:.2f} s; "
            f"ratio {first / baseline:.2f}x"
        )
        print(
            f"publish, no-change rerun: {rerun:.2f} s, {len(again.changes.written)} files "
            f"written; ratio {rerun / baseline:.2f}x of the baseline"
        )
        print(
            f"reading the same issues only (no rendering): {floor:.2f} s; publish is "
            f"{first / floor:.2f}x of that"
        )
        print(
            f"publish, one story changed: {changed:.2f} s, {len(edited.changes.written)} files "
            f"written ({', '.join(edited.changes.written[:4])}...)"
        )
        assert again.changes.written == [] and len(done.issues) == args.issues


if __name__ == "__main__":
    main()
