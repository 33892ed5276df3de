"""Commands that compose an issue: init, new, add, import, ls, move, rm."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import DigestError
from . import State, _shown, cli, warn_all


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--name", default="My Newsletter", show_default=True, help="The newsletter's name.")
def init(directory: Path, name: str) -> None:
    """Create a newsletter project: digest.toml, .env.example, issues/ and .gitignore.

    Refuses to overwrite any existing file.

    \b
    Example:
        digest init my-newsletter --name "The Morning Brief"
    """
    from ..compose import init_project

    for path in init_project(directory, name):
        click.echo(f"created {_shown(path)}")
    click.echo("next: edit digest.toml (name, from, disclaimer), then 'digest new'")


@cli.command()
@click.argument("slug", required=False)
@click.option("--title", help="The subject line (default: newsletter name and date).")
@click.option("--date", type=click.DateTime(["%Y-%m-%d"]), help="The issue's date (default: today).")
@click.option("--preheader", default="", help="The line inboxes show after the subject.")
@click.pass_obj
def new(state: State, slug: str | None, title: str | None, date, preheader: str) -> None:
    """Create a new issue folder with its issue.toml; SLUG defaults to the date.

    \b
    Example:
        digest new --date 2021-12-31 --title "Putin and Biden talk again" --preheader "What was said"
    """
    from ..compose import new_issue

    folder = new_issue(state.project(), slug, title, date.date() if date else None, preheader)
    click.echo(f"created {_shown(folder / 'issue.toml')}")


@cli.command()
@click.argument("issue")
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--title", required=True, help="The headline.")
@click.option("--source", help="The publisher, e.g. TASS.")
@click.option("--url", help="The original article (shown as 'Continue reading at <site>').")
@click.option("--dateline", help="e.g. 'MOSCOW, December 31'.")
@click.option("--position", type=click.IntRange(min=1), help="Place in the order (1 = first).")
@click.option("--after", metavar="STORY", help="Place after this story (its slug).")
@click.pass_obj
def add(
    state: State,
    issue: str,
    file: str | None,
    title: str,
    source: str | None,
    url: str | None,
    dateline: str | None,
    position: int | None,
    after: str | None,
) -> None:
    """Add a story to ISSUE; the body comes from FILE, standard input (-) or $EDITOR.

    \b
    Examples:
        digest add 2021-12-31 --title "Kremlin praises talks" --source TASS body.md
        echo "Text of the story." | digest add 2021-12-31 --title "Short one" -
    """
    from ..compose import add_story

    if position is not None and after is not None:
        raise DigestError("--position and --after exclude each other", hint="give one of them")
    body = _read_body(file)
    path = add_story(
        state.project(),
        issue,
        title,
        body,
        position=position,
        after=after,
        source=source,
        url=url,
        dateline=dateline,
    )
    click.echo(f"created {_shown(path)}")


_EDITOR_MARK = "# Write the story in Markdown above this line."


def _read_body(file: str | None) -> str:
    if file == "-" or (file is None and not sys.stdin.isatty()):
        return _decode(sys.stdin.buffer.read(), "<stdin>")
    if file is not None:
        try:
            return _decode(Path(file).read_bytes(), file)
        except OSError as e:
            raise DigestError(
                f"cannot read: {e.strerror}",
                path=file,
                hint="give the story's text file, '-' for standard input, or no FILE for $EDITOR",
            ) from e
    text = click.edit(f"\n{_EDITOR_MARK}\n", extension=".md")
    above, _, below = (text or "").partition(_EDITOR_MARK)
    body = above.strip() or below.strip()  # written below the line: taken all the same
    if not body:
        raise DigestError("no story text was written", hint="nothing was added")
    return body


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DigestError("not UTF-8 text", path=name, hint="save the text as UTF-8") from e


@cli.command("import")
@click.argument("issue")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.pass_obj
def import_(state: State, issue: str, file: str) -> None:
    """Split a plain-text digest into story files appended to ISSUE.

    The text is blocks separated by blank lines: a title line, then the story's
    paragraphs (the first may open with 'MOSCOW, December 31. /TASS/.'),
    optionally 'Continue reading at <site>' and a 'Read also:' block; the
    newsletter's disclaimer closes it. Text that is not placed is reported; a
    closing paragraph is never merged into the last story.

    \b
    Example:
        digest new 2021-12-31 && digest import 2021-12-31 digest.txt
    """
    from ..compose import import_digest

    if file == "-":
        raw, source = sys.stdin.buffer.read(), Path("<stdin>")
    else:
        source = Path(file)
        try:
            raw = source.read_bytes()
        except OSError as e:
            raise DigestError(
                f"cannot read: {e.strerror}",
                path=source,
                hint="give the plain-text digest to split into stories, or '-' for standard input",
            ) from e
    paths, notes = import_digest(state.project(), issue, raw, source)
    for path in paths:
        click.echo(f"created {_shown(path)}")
    warn_all(notes)
    click.echo(
        f"imported {len(paths)} stor{'y' if len(paths) == 1 else 'ies'}"
        + (f"; {len(notes)} note(s) above" if notes else "")
    )


@cli.command("ls")
@click.argument("issue")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def ls(state: State, issue: str, as_json: bool) -> None:
    """List ISSUE's stories in their final order: position, slug, title, source, words.

    \b
    Example:
        digest ls 2021-12-31
    """
    import json

    from ..issue import load_issue

    loaded = load_issue(state.project(), issue)
    rows = [
        {"position": n, "slug": s.slug, "title": s.title, "source": s.source, "words": s.words}
        for n, s in enumerate(loaded.stories, 1)
    ]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    warn_all(loaded.warnings)
    width = max(len(r["slug"]) for r in rows)
    for r in rows:
        click.echo(
            f"{r['position']:>3}  {r['slug']:<{width}}  {r['words']:>5}w  "
            f"{r['source'] or '-':<10}  {r['title']}"
        )


@cli.command()
@click.argument("issue")
@click.argument("story")
@click.argument("position", type=click.IntRange(min=1), required=False)
@click.option("--before", metavar="STORY", help="Put it before this story.")
@click.option("--after", metavar="STORY", help="Put it after this story.")
@click.pass_obj
def move(
    state: State, issue: str, story: str, position: int | None, before: str | None, after: str | None
) -> None:
    """Move STORY to POSITION (1 = first), or before/after another story.

    \b
    Examples:
        digest move 2021-12-31 five-key-takeaways-from-latest-putin-biden-call 1
        digest move 2021-12-31 my-story --after other-story
    """
    from ..compose import move_story

    if sum(x is not None for x in (position, before, after)) != 1:
        raise DigestError(
            "say where: a POSITION, --before STORY or --after STORY", hint="give exactly one of them"
        )
    order = move_story(state.project(), issue, story, position=position, before=before, after=after)
    click.echo(f"moved {story} to position {order.index(story) + 1} of {len(order)}")


@cli.command()
@click.argument("issue")
@click.argument("story")
@click.pass_obj
def rm(state: State, issue: str, story: str) -> None:
    """Remove STORY from ISSUE: delete its file and take it out of the order.

    \b
    Example:
        digest rm 2021-12-31 five-key-takeaways-from-latest-putin-biden-call
    """
    from ..compose import remove_story

    path = remove_story(state.project(), issue, story)
    click.echo(f"removed {_shown(path)}")
