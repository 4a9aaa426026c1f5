"""``python -m device_sim ...`` runs ``sqal sim`` on its own (the same flags)."""

import typer

from device_sim.command import sim_command
from sqal.errors import SqalError


def main() -> None:
    app = typer.Typer(pretty_exceptions_enable=False, rich_markup_mode=None, add_completion=False)
    app.command()(sim_command)
    try:
        app()
    except SqalError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None


main()
