"""The command line: parse, call the library, print. The only package that imports click."""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import click

from .. import __version__
from ..errors import DigestError, DigestErrors, internal_error


@dataclass
class State:
    project_dir: Path | None
    verbose: bool

    def project(self):
        from ..config import load_project

        return load_project(self.project_dir)


def _format(error: DigestError, kind: str = "Error") -> str:
    text = f"{kind}: {error.format(Path.cwd())}"
    if error.hint:
        text += f"\n  hint: {error.hint}"
    return text


def report(error: DigestError, kind: str = "Error") -> None:
    """Print an error (or each of several) to stderr, with its hint."""
    errors = error.errors if isinstance(error, DigestErrors) else [error]
    for e in errors:
        click.echo(_format(e, kind), err=True)
    if len(errors) > 1 and kind == "Error":
        click.echo(f"{len(errors)} problems found; nothing was written.", err=True)


def warn_all(warnings) -> None:
    for w in warnings:
        report(w, "Warning")


class DigestGroup(click.Group):
    """Turn every error into its message and exit code 1, with no traceback.

    A DigestError is the user's input; anything else is reported as an internal
    error (its traceback only with --verbose).
    """

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:  # an unknown option or a bad value of the group's own
            _usage_error(e)
            sys.exit(1)

    def resolve_command(self, ctx: click.Context, args):
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta["digest.command"] = command.name if command is not None else name  # for a usage hint
        return name, command, rest

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DigestError as e:
            if _verbose(ctx):
                traceback.print_exc()
            report(e)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # The reader of our output went away (`digest subscribers ls | head`): not an error.
            # Point stdout at /dev/null so that the interpreter's final flush stays quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except click.UsageError as e:  # a command's unknown option, missing argument, bad value
            if e.ctx is None and ctx.meta.get("digest.command"):  # an option missing its value
                e.ctx = click.Context(ctx.command.get_command(ctx, ctx.meta["digest.command"]), ctx)
                e.ctx.info_name = ctx.meta["digest.command"]
            _usage_error(e)
            ctx.exit(1)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - the one place that catches everything
            if _verbose(ctx):
                traceback.print_exc()
            report(internal_error(e))
            ctx.exit(1)


_HELP_ASKED = getattr(click.exceptions, "NoArgsIsHelpError", ())  # a group run bare (click 8.2+)


def _usage_error(error: click.UsageError) -> None:
    """A usage error in digest's form ('Error: <what>' and a hint; exit code 1, not click's 2)."""
    if isinstance(error, _HELP_ASKED):  # 'digest' alone: the help, as click prints it
        click.echo(error.format_message(), err=True)
        return
    where = error.ctx.command_path if error.ctx is not None else "digest"
    message = _NOT_A_NUMBER.sub(_plain_number, error.format_message())
    click.echo(f"Error: {message}\n  hint: see '{where} --help'", err=True)


# click names the type in its message: "'abc' is not a valid float range", and for a day that
# does not exist (2024-02-30) "does not match the format '%Y-%m-%d'", which it does.
_NOT_A_NUMBER = re.compile(r"is not a valid (float|integer) range\.|does not match the format '%Y-%m-%d'\.")


def _plain_number(match: re.Match[str]) -> str:
    if match[1] is None:
        return "is not a day of the calendar written YYYY-MM-DD."
    return "is not a number." if match[1] == "float" else "is not a whole number."


def _verbose(ctx: click.Context) -> bool:
    obj = ctx.find_object(State)
    return bool(obj and obj.verbose)


@click.group(cls=DigestGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--project",
    "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The newsletter project folder (default: found by walking up from here).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log more, and show tracebacks of errors.")
@click.version_option(__version__, prog_name="digest")
@click.pass_context
def cli(ctx: click.Context, project_dir: Path | None, verbose: bool) -> None:
    """Build a newsletter digest from Markdown story files, export it and send it.

    \b
    Example:
        digest export 2021-12-31 --out build/
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s: %(name)s: %(message)s",
    )
    ctx.obj = State(project_dir, verbose)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main() -> None:
    """Run the command line."""
    cli(prog_name="digest")


# The commands register themselves on `cli`.
from . import bounces, build, compose, publish, readers, send, status  # noqa: E402, F401
