"""``python -m analyzer --broker URL …``: the service without the ``sqal`` CLI (tests, bench)."""

import typer

from analyzer.command import analyzer_command
from sqal.logs import setup_logging

if __name__ == "__main__":
    setup_logging()
    typer.run(analyzer_command)
