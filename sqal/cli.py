"""The ``sqal`` command line: one entry point that runs every part of SQAL.

Errors are one line on stderr: ``Error: …`` with exit 1 for runtime failures, 2 for usage.
A traceback from ``sqal`` is a bug.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sqal import __version__
from sqal.errors import SqalError
from sqal.settings import DEFAULT_MQTT_PORT, DEFAULT_PG_PORT, load_settings


def _app(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        no_args_is_help=True,
        add_completion=False,
    )


app = _app("SQAL: sensor-based quality control for food production lines.")
services_app = _app("The embedded Mosquitto and PostgreSQL+TimescaleDB under --data-dir.")
contract_app = _app("The MQTT wire contract.")
app.add_typer(services_app, name="services")
app.add_typer(contract_app, name="contract")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder of the embedded services' data [env SQAL_DATA_DIR]."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _emit(obj: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(obj, default=str) if as_json else text)


@app.command()
def version(as_json: JsonFlag = False) -> None:
    """Print SQAL's version and the versions of the servers it runs."""
    from sqal.local import mosquitto_version, postgres_versions
    from sqal.wire import SCHEMA_VERSION

    info: dict[str, str] = {"sqal": __version__, "contract": f"v{SCHEMA_VERSION}"}
    try:
        info["mosquitto"] = mosquitto_version()
    except SqalError:
        info["mosquitto"] = "not installed"
    try:
        info["postgresql"], info["timescaledb"] = postgres_versions()
    except SqalError:
        info["postgresql"] = info["timescaledb"] = "not installed"
    _emit(info, as_json, "\n".join(f"{k:<12}{v}" for k, v in info.items()))


@services_app.command("up")
def services_up(
    data_dir: DataDir = None,
    mqtt_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Loopback port of the broker.")
    ] = DEFAULT_MQTT_PORT,
    pg_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Loopback port of PostgreSQL.")
    ] = DEFAULT_PG_PORT,
    as_json: JsonFlag = False,
) -> None:
    """Start the broker and the database (initialised on first use); print their URLs."""
    from sqal.local import stack

    settings = load_settings(data_dir=data_dir)
    running = stack.up(settings.data_dir, mqtt_port, pg_port)
    urls = {r.name: {"url": r.url, "pid": r.pid} for r in running}
    text = "\n".join(f"{r.name:<10} pid {r.pid:<8} {r.url}" for r in running)
    _emit(urls, as_json, text)


@services_app.command("status")
def services_status(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Show what runs under the data directory. Exit 1 if anything recorded is down."""
    from sqal.local import stack

    settings = load_settings(data_dir=data_dir)
    rows = stack.status(settings.data_dir)
    obj = {r.name: {"url": r.url, "pid": r.pid, "running": ok} for r, ok in rows}
    lines = [
        f"{r.name:<10} pid {r.pid:<8} {'running' if ok else 'DOWN':<8} {r.url}" for r, ok in rows
    ]
    _emit(obj, as_json, "\n".join(lines) or f"nothing runs under {settings.data_dir}")
    if any(not ok for _, ok in rows):
        raise typer.Exit(1)


@services_app.command("down")
def services_down(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Stop the broker and the database by PID; their data stays."""
    from sqal.local import stack

    settings = load_settings(data_dir=data_dir)
    stopped = stack.down(settings.data_dir)
    _emit(
        {"stopped": [r.name for r in stopped]},
        as_json,
        "\n".join(f"stopped {r.name} (pid {r.pid})" for r in stopped) or "nothing was running",
    )


@contract_app.command("export")
def contract_export(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the schemas into.")] = Path(
        "docs/contract"
    ),
) -> None:
    """Write a JSON Schema per payload (tof, spectral, status, config, result, dead letter)."""
    from sqal.wire.schema import export_schemas

    for path in export_schemas(out):
        typer.echo(str(path))


def _register() -> None:
    """Wire the parts' commands in; each lives beside the code it runs."""
    from capture.command import capture_info_command, record_command, replay_command

    capture_app = _app("Capture files of recorded MQTT traffic.")
    app.add_typer(capture_app, name="capture")
    app.command("record")(record_command)
    capture_app.command("info")(capture_info_command)
    app.command("replay")(replay_command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors exit 2 (typer), :class:`SqalError` one line and 1.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv``.
    """
    try:
        app(args=argv, prog_name="sqal")
    except SqalError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        sys.exit(130)
