"""The ``medtransfer`` command line: thin commands that parse options, build a config and call one function.

Exit codes: 0 = done; 2 = bad usage or input (a misspelt flag, a config value out of range, an unreadable image:
:class:`~medtransfer.errors.UserError`, checked before anything is written); 1 = the work failed (a training
diverged, a trial of a study failed: :class:`~medtransfer.errors.WorkFailed`). Both print one ``error:`` line;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer

from medtransfer import __version__
from medtransfer.errors import EXIT_FAILED, EXIT_USAGE, UserError, WorkFailed
from medtransfer.logs import setup_logging

app = typer.Typer(
    name="medtransfer",
    help="Targeted transfer learning on small medical imaging datasets.\n\n"
    "Exit codes: 0 done; 2 bad usage or input (checked before anything is written); 1 the work failed "
    "(a training diverged, a trial failed).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medtransfer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More log output."),
) -> None:
    _state["debug"] = debug
    setup_logging(verbose)


def _register_commands() -> None:
    # Explicit imports (no folder scanning); each module adds its commands to `app`.
    # cycle: each command module imports `app` from this package, so they are imported once it is defined
    from medtransfer.cli import data, demo, explain, export, pretrain, sources, study, train  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``medtransfer`` script."""
    _register_commands()
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="medtransfer")
    except (UserError, WorkFailed) as e:
        if _state["debug"] or "--debug" in args:
            raise
        typer.secho("error: " + " ".join(str(e).split()), err=True, fg="red")
        sys.exit(EXIT_USAGE if isinstance(e, UserError) else EXIT_FAILED)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
