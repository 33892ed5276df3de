"""Commands for the readers: the subscriber store, unsubscribing, and the readers' web app (serve)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import click

from ..errors import ContentError, DigestError, DigestErrors
from . import State, _shown, cli, report

STATUSES = ("unconfirmed", "active", "unsubscribed", "bounced", "complained")


def _store(state: State):
    from .. import db

    project = state.project()
    try:
        return db.connect(project.state_dir / db.DB_NAME)
    except Exception as e:  # sqlite3.Error, OSError
        raise DigestError(
            f"cannot open the project's database: {e}",
            path=project.state_dir / db.DB_NAME,
            hint="check the project's .digest/ folder is writable",
        ) from e


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@cli.group()
def subscribers() -> None:
    """Keep the subscriber store: import, add, remove (erase), list and export readers.

    \b
    Examples:
        digest subscribers import subscribers.csv
        digest subscribers ls --status active
    """


@subscribers.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Import the valid rows and report the bad ones (default: import nothing).",
)
@click.pass_obj
def import_(state: State, file: Path, skip_invalid: bool) -> None:
    """Add every row of a CSV list (an 'email' column, the rest merge fields) as active.

    Nobody who unsubscribed, bounced, complained or was erased is added again;
    known subscribers keep their status and get the file's fields.

    \b
    Example:
        digest subscribers import subscribers.csv
    """
    from .. import subscribers as store

    # The rows are checked before the store is opened: a refused file leaves nothing behind.
    bad = store.csv_problems(file)
    problems = [
        ContentError(
            p.message, path=file, line=p.line, hint="fix the row, or pass --skip-invalid to import the others"
        )
        for p in bad
    ]
    if problems and not skip_invalid:
        raise problems[0] if len(problems) == 1 else DigestErrors(problems)
    conn = _store(state)
    result = store.import_csv(conn, file, skip_invalid=skip_invalid, problems=bad)
    for p in result.problems:
        click.echo(f"Warning: {_shown(file)}:{p.line}: {p.message} (skipped)", err=True)
    for line, first in result.duplicates:
        click.echo(f"Warning: {_shown(file)}:{line}: the address of line {first} again (skipped)", err=True)
    click.echo(
        f"{result.added} added, {result.updated} updated, {result.suppressed} not added "
        f"(unsubscribed, bounced, complained or erased), {len(result.problems)} invalid"
        + (f", {len(result.duplicates)} duplicate(s)" if result.duplicates else "")
    )


@subscribers.command()
@click.argument("address")
@click.option(
    "--field",
    "fields",
    metavar="KEY=VALUE",
    multiple=True,
    help="A merge field (repeatable), e.g. --field name='Anna Schmidt'.",
)
@click.pass_obj
def add(state: State, address: str, fields: tuple[str, ...]) -> None:
    """Add ADDRESS as an active subscriber (never re-activates one who unsubscribed).

    \b
    Example:
        digest subscribers add anna@example.com --field name="Anna Schmidt" --field city=Berlin
    """
    from .. import subscribers as store
    from ..send.recipients import check_addresses

    values = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DigestError(
                f"--field {item!r} is not KEY=VALUE", hint="write it as --field name='Anna Schmidt'"
            )
        if key.strip().lower() == "email":
            raise DigestError(
                "--field email=... cannot change the address: 'email' is the address itself",
                hint="give the address as the ADDRESS argument, and other fields with --field",
            )
        values[key.strip().lower()] = value
    (checked,) = check_addresses([address], "address")
    outcome = store.add(_store(state), checked, values, "active", "cli: subscribers add")
    if outcome == "suppressed":
        raise DigestError(
            f"{checked} unsubscribed (or was erased, bounced or complained)",
            hint="they can subscribe again through the subscribe page, which asks them to confirm",
        )
    click.echo(
        {
            "added": f"added {checked}",
            "updated": f"{checked} is known; fields updated",
            "known": f"{checked} is already in the store",
        }[outcome]
    )


@subscribers.command()
@click.argument("addresses", nargs=-1, required=True)
@click.pass_obj
def rm(state: State, addresses: tuple[str, ...]) -> None:
    """Erase ADDRESSES: delete each address and its fields; only a hash stays, suppressed.

    The hash keeps a later import or list from mailing them again.

    \b
    Example:
        digest subscribers rm anna@example.com
    """
    from .. import subscribers as store
    from ..send import recover_send_logs

    # A killed send's log first: its deliveries are kept (with the address hashed), not
    # taken for pending ones and deleted. (A send that is running keeps the servers'
    # replies in its log until it ends; they are redacted when folded in.)
    recover_send_logs(state.project())
    conn = _store(state)
    for address in addresses:
        found = store.erase(conn, address, "cli: subscribers rm")
        click.echo(f"erased {address}" if found else f"{address} was not in the store; suppressed anyway")


@subscribers.command("ls")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only this status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one array).")
@click.pass_obj
def ls_(state: State, status: str | None, as_json: bool) -> None:
    """List subscribers: address, status, last change, fields.

    \b
    Examples:
        digest subscribers ls --status active
        digest subscribers ls --json
    """
    import json

    from .. import subscribers as store
    from ..bounces.events import last_reason

    conn = _store(state)
    rows = store.subscribers(conn, status)
    if as_json:
        click.echo("[", nl=False)
        for i, s in enumerate(rows):
            click.echo(
                ("," if i else "")
                + "\n  "
                + json.dumps(
                    {
                        "email": s.email,
                        "status": s.status,
                        "fields": dict(s.fields),
                        "source": s.source,
                        "created": _iso(s.created_at),
                        "updated": _iso(s.updated_at),
                        "reason": last_reason(conn, s.email, s.status),
                    },
                    ensure_ascii=False,
                ),
                nl=False,
            )
        click.echo("\n]")
        return
    for s in rows:
        fields = " ".join(f"{_shown_text(k)}={_shown_text(v)}" for k, v in s.fields.items())
        line = f"{_shown_text(s.email)}\t{s.status}\t{_iso(s.updated_at)}\t{fields}"
        reason = last_reason(conn, s.email, s.status)  # why it bounced or complained
        click.echo(f"{line}\t{_shown_text(reason)}" if reason else line.rstrip())


@subscribers.command()
@click.argument("address")
@click.pass_obj
def history(state: State, address: str) -> None:
    """Show the consent record of ADDRESS: every change of status, its source and time.

    Works after an erasure too (the record is kept by the address's hash).

    \b
    Example:
        digest subscribers history anna@example.com
    """
    from .. import subscribers as store

    rows = store.events(_store(state), address)
    if not rows:
        raise DigestError(f"no record of {address}", hint="check the spelling of the address")
    for status, source, reason, at in rows:
        click.echo(f"{_iso(at)}\t{status}\t{source}" + (f"\t{reason}" if reason else ""))


@subscribers.command()
@click.argument("file", default="-")
@click.pass_obj
def export(state: State, file: str) -> None:
    """Write the store as CSV (email, status, dates, source, fields) to FILE or - (stdout).

    \b
    Examples:
        digest subscribers export subscribers-backup.csv
        digest subscribers export - | head
    """
    import csv
    import io

    from .. import subscribers as store
    from ..atomic import write_atomically
    from ..send.recipients import guard_cell

    conn = _store(state)
    names: dict[str, None] = {}
    for s in store.subscribers(conn):
        names.update(dict.fromkeys(s.fields))
    columns = ["email", "status", "created", "updated", "source", *names]
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow([guard_cell(c) for c in columns])
    for s in store.subscribers(conn):
        row = [s.email, s.status, _iso(s.created_at), _iso(s.updated_at), s.source]
        writer.writerow([guard_cell(v) for v in [*row, *(s.fields.get(n, "") for n in names)]])
    if file == "-":
        click.echo(out.getvalue(), nl=False)
    else:
        write_atomically({Path(file): out.getvalue().encode("utf-8")})
        click.echo(f"wrote {file}", err=True)


@cli.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (loopback unless told otherwise).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--threads", type=click.IntRange(1, 64), default=8, show_default=True, help="Requests handled at once."
)
@click.option(
    "--proxies",
    type=click.IntRange(0, 5),
    default=0,
    show_default=True,
    help="Reverse proxies in front to trust for X-Forwarded-For/-Proto/-Host.",
)
@click.option(
    "--confirm-days",
    type=click.IntRange(1, 90),
    default=7,
    show_default=True,
    help="Days a confirmation link stays valid.",
)
@click.pass_obj
@click.option(
    "--site",
    "site_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The published archive to serve under base_url's path "
    "(default: the project's site/ folder, if there is one).",
)
def serve(
    state: State, host: str, port: int, threads: int, proxies: int, confirm_days: int, site_dir: Path | None
) -> None:
    """Serve the readers' pages: unsubscribe (with RFC 8058 one-click), subscribe, confirm.

    Runs on waitress; put a TLS reverse proxy in front (see the README).

    \b
    Examples:
        digest serve
        digest serve --port 8081 --proxies 1
    """
    import waitress

    from ..publish.archive import SITE_FOLDER
    from ..settings import is_loopback
    from ..web import Options, create_app
    from ..web.app import MAX_BODY

    project = state.project()
    if site_dir is None:  # served once 'digest publish' writes it, with no restart
        site_dir = project.root / SITE_FOLDER
    elif not site_dir.is_dir():
        raise DigestError(
            f"no published site in {site_dir}",
            path=site_dir,
            hint="run 'digest publish' first, or leave out --site",
        )
    app = create_app(project, options=Options(confirm_days=confirm_days, static_dir=site_dir), proxies=proxies)
    try:
        server = waitress.create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            max_request_body_size=4 * MAX_BODY,
            ident="digest",
            clear_untrusted_proxy_headers=proxies == 0,
        )
    except OSError as e:
        raise DigestError(
            f"cannot listen on {host}:{port}: {e.strerror or e}",
            hint="choose another --port (0 takes any free one)",
        ) from e
    if not project.settings().smtp_host:
        report(
            DigestError(
                "no SMTP server is configured: subscribe requests cannot be confirmed",
                hint="set DIGEST_SMTP_HOST (and the other DIGEST_SMTP_* settings)",
            ),
            "Warning",
        )
    if not is_loopback(host):
        report(DigestError(f"listening on {host}: reachable from other machines"), "Warning")
    click.echo(
        f"Serving the readers' pages of {project.newsletter.name}"
        + f" and the archive in {_shown(site_dir)}"
        + ("" if site_dir.is_dir() else " (once 'digest publish' writes it)")
        + " on "
        f"http://{host}:{server.effective_port}/ (Ctrl-C stops)"
    )
    import sys

    sys.stdout.flush()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


@cli.command()
@click.argument("addresses", nargs=-1, required=True)
@click.pass_obj
def unsubscribe(state: State, addresses: tuple[str, ...]) -> None:
    """Add ADDRESSES to the suppression list: no later send goes to them.

    \b
    Example:
        digest unsubscribe reader@example.org
    """
    from ..send import open_journal
    from ..send.recipients import check_addresses

    checked = check_addresses(list(addresses), "address")
    added = open_journal(state.project()).suppress(checked)
    click.echo(
        f"unsubscribed {added} address{'es' if added != 1 else ''}"
        + (f" ({len(checked) - added} already were)" if added < len(checked) else "")
    )


def _shown_text(text: str) -> str:
    """*text* safe for a terminal and one tab-separated line: a control character (an
    escape sequence a web form let in, a tab, a line break) or a bidi control is written
    as its escape (``\\x1b``), never run."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS
        else char
        for char in text
    )


_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
