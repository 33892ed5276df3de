"""The command that publishes the archive: publish (and --serve)."""

from __future__ import annotations

from pathlib import Path

import click

from . import State, _shown, cli, warn_all


@cli.command()
@click.argument("issues", nargs=-1)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write the site into (default: site/ in the project).",
)
@click.option("--serve", is_flag=True, help="Then serve the site at base_url's path until Ctrl-C.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="With --serve: address to listen on (loopback unless you say otherwise).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="With --serve: port (0: any free port).",
)
@click.pass_obj
def publish(state: State, issues: tuple[str, ...], out: Path | None, serve: bool, host: str, port: int) -> None:
    """Write the web archive: a page per published issue, index, sources, feeds, sitemap.

    An issue is published once its send has started, or when named here (and
    from then on); drafts never are. Only files whose bytes changed are
    written; files an earlier publish wrote that no longer belong are removed.

    \b
    Examples:
        digest publish
        digest publish 2021-12-31 --out public/
        digest publish --serve --port 8080
    """
    from urllib.parse import urlsplit

    from ..publish import publish_site

    project = state.project()
    result = publish_site(project, out, issues)
    warn_all(result.warnings)
    for rel in result.changes.written:
        click.echo(f"wrote {_shown(result.out / rel)}")
    for rel in result.changes.removed:
        click.echo(f"removed {_shown(result.out / rel)}")
    click.echo(
        f"{len(result.issues)} issue{'s' if len(result.issues) != 1 else ''} published in "
        f"{_shown(result.out)}: {len(result.changes.written)} written, "
        f"{len(result.changes.removed)} removed, {result.changes.unchanged} unchanged"
    )
    if not result.issues:
        click.echo(
            "No issue is published yet: an issue is published once its send has started, "
            "or name it: digest publish ISSUE",
            err=True,
        )
    if not serve:
        return
    import signal

    from ..publish.serve import serve_site
    from ..settings import is_loopback

    def stop_on_term(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop_on_term)
    if not is_loopback(host):
        click.echo(
            f"Warning: listening on {host}: anyone who can reach this machine can read the site", err=True
        )
    base_path = urlsplit(project.newsletter.base_url or "/").path
    try:
        serve_site(
            result.out,
            base_path,
            host,
            port,
            lambda url: click.echo(f"Serving {_shown(result.out)} at {url} (Ctrl-C to stop)", err=False),
        )
    except KeyboardInterrupt:
        click.echo("\nStopped.")
    finally:
        signal.signal(signal.SIGTERM, previous)
