"""``python -m ingest``: the ingest worker without the rest of the CLI (tests, containers)."""

from __future__ import annotations

import sys

import typer

from ingest.command import ingest_command
from sqal.errors import SqalError
from sqal.logs import setup_logging


def main() -> None:
    setup_logging("text", "INFO")
    app = typer.Typer(pretty_exceptions_enable=False, rich_markup_mode=None, add_completion=False)
    app.command()(ingest_command)
    try:
        app(prog_name="python -m ingest")
    except SqalError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
