"""What every ``sqal`` command line shares: how a Typer app is made, the global logging options,
and how errors end the process (one ``Error:`` line; exit 1, or 2 for usage from typer)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sqal.errors import SqalError
from sqal.settings import load_settings


def new_app(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        no_args_is_help=True,
        add_completion=False,
    )


ROOT_HELP = "SQAL: sensor-based quality control for food production lines."


def setup_logs(
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            metavar="text|json",
            help="Logs on stderr as text (a terminal) or JSON lines (a log collector) "
            "[env SQAL_LOG_FORMAT; default text].",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            help="DEBUG, INFO, WARNING or ERROR [env SQAL_LOG_LEVEL; default INFO].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """SQAL: sensor-based quality control for food production lines."""
    from sqal.logs import setup_logging

    settings = load_settings(log_format=log_format, log_level=log_level)
    setup_logging(settings.log_format, settings.log_level)


def root_app() -> typer.Typer:
    """The ``sqal`` app without its commands: the root's help and logging options."""
    app = new_app(ROOT_HELP)
    app.callback()(setup_logs)
    return app


GLOBAL_OPTIONS = ("--log-format", "--log-level")
"""The root's options that take a value (they come before the command's name)."""


def run(app: typer.Typer, argv: list[str] | None) -> None:
    """Run ``app`` as ``sqal``: a :class:`SqalError` is one line and exit 1."""
    try:
        app(args=argv, prog_name="sqal")
    except SqalError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        sys.exit(130)
