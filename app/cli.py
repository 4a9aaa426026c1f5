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

from app.base import new_app, root_app, run
from sqal import __version__
from sqal.errors import ConfigError, SqalError
from sqal.settings import DEFAULT_MQTT_PORT, DEFAULT_PG_PORT, load_settings, parse_aware_time

app = root_app()
services_app = new_app("The embedded Mosquitto and PostgreSQL+TimescaleDB under --data-dir.")
contract_app = new_app("The MQTT wire contract.")
app.add_typer(services_app, name="services")
app.add_typer(contract_app, name="contract")
config_app = new_app("Device configuration: the retained config topic of each device.")
app.add_typer(config_app, name="config")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder of the embedded services' data [env SQAL_DATA_DIR]."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
Broker = Annotated[
    str | None, typer.Option("--broker", help="Broker URL [env SQAL_BROKER].", show_default=False)
]


def _emit(obj: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(obj, default=str) if as_json else text)


@app.command()
def version(as_json: JsonFlag = False) -> None:
    """Print SQAL's version and the versions of the servers it runs."""
    from embedded import mosquitto_version, postgres_versions
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
    from embedded import stack

    settings = load_settings(data_dir=data_dir)
    running = stack.up(settings.data_dir, mqtt_port, pg_port)
    urls = {r.name: {"url": r.url, "pid": r.pid} for r in running}
    text = "\n".join(f"{r.name:<10} pid {r.pid:<8} {r.url}" for r in running)
    _emit(urls, as_json, text)


@services_app.command("status")
def services_status(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Show what runs under the data directory. Exit 1 if anything recorded is down."""
    from embedded import stack

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
    from embedded import stack

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

    try:
        paths = export_schemas(out)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    for path in paths:
        typer.echo(str(path))


@config_app.command("set")
def config_set(
    target: Annotated[str, typer.Argument(help="LINE/DEVICE")],
    profile: Annotated[str, typer.Option("--profile", help="Product profile name (profiles/).")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Sensor setting SECTION.KEY=VALUE, e.g. spectral.gain=32."),
    ] = None,
    checkweigher: Annotated[
        float | None,
        typer.Option(
            "--checkweigher",
            metavar="SIGMA_G",
            help="The line weighs each tray: the checkweigher's standard uncertainty in g (its "
            "weights then decide fill, and a tray waits for its weight); 0: no checkweigher. "
            "[kept]",
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            metavar="production|calibration|maintenance",
            help="What the device's trays are for: only production trays count in roll-ups, "
            "dashboards, reports and the packers' rules. [kept; production for a new device]",
            show_default=False,
        ),
    ] = None,
    broker: Broker = None,
    as_json: JsonFlag = False,
) -> None:
    """Validate and publish a device's config (retained, QoS 1); keeps a still-valid calibration."""
    import asyncio

    from sqal import devices
    from sqal.wire import DeviceConfig, Mode

    modes = [m.value for m in Mode]
    if mode is not None and mode not in modes:
        raise typer.BadParameter(f"must be one of {', '.join(modes)}", param_hint="--mode")

    settings = load_settings(broker=broker)
    dev = devices.Target.parse(target)
    devices.apply_sets({}, set_ or [])  # malformed assignments fail before the broker is asked
    held = asyncio.run(devices.fetch_configs(settings.broker, dev.topic)).get(dev.topic)
    current = held if isinstance(held, DeviceConfig) else None
    config, note = devices.build_config(
        dev, profile, set_ or [], current, devices.utc_now(), checkweigher,
        Mode(mode) if mode is not None else None,
    )  # fmt: skip
    asyncio.run(devices.publish_config(settings.broker, dev, config))
    if note:
        sys.stderr.write(f"Warning: {note}\n")
    doc = config.model_dump(mode="json", exclude_none=True)
    _emit(
        doc,
        as_json,
        f"published {dev.topic}: profile {config.profile}, mode {config.mode}, "
        f"tof {config.tof.model_dump()}, spectral {config.spectral.model_dump()}",
    )


@config_app.command("show")
def config_show(
    target: Annotated[
        str | None, typer.Argument(help="LINE/DEVICE; all devices if omitted.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every device's config.")] = False,
    broker: Broker = None,
    as_json: JsonFlag = False,
) -> None:
    """Show the configs the broker holds (retained), with their calibration ids."""
    import asyncio

    from sqal import devices

    settings = load_settings(broker=broker)
    if target is not None and all_:
        raise typer.BadParameter("give LINE/DEVICE or --all, not both")
    dev = devices.Target.parse(target) if target else None
    found = asyncio.run(devices.fetch_configs(settings.broker, devices.config_filter(dev)))
    if dev is not None and dev.topic not in found:
        raise SqalError(f"no config is retained for {target} on {settings.broker}")
    doc = {
        topic: (c.model_dump(mode="json", exclude_none=True) if not isinstance(c, str)
                else {"error": c})
        for topic, c in sorted(found.items())
    }  # fmt: skip
    lines = []
    for topic, c in sorted(found.items()):
        if isinstance(c, str):
            lines.append(f"{topic:<40} INVALID {c}")
            continue
        cal = c.calibration.id if c.calibration else "uncalibrated"
        lines.append(
            f"{topic:<40} {c.profile:<22} tof {c.tof.layout}x{c.tof.layout} "
            f"{c.tof.ranging_hz:g} Hz {c.tof.integration_ms:g} ms | gain {c.spectral.gain:g} "
            f"atime {c.spectral.atime} astep {c.spectral.astep} led {c.spectral.led_ma} mA | {cal}"
            f" | {c.mode}"
        )
    _emit(doc, as_json, "\n".join(lines) or "no device config is retained")


@config_app.command("delete")
def config_delete(
    target: Annotated[str, typer.Argument(help="LINE/DEVICE")],
    broker: Broker = None,
    as_json: JsonFlag = False,
) -> None:
    """Clear a device's retained config (QoS 1, the broker's acknowledgement checked).

    The analyzer then scores the device with its default profile; the device keeps the settings
    it runs with. A device without a retained config is left as it is.
    """
    import asyncio

    from sqal import devices

    settings = load_settings(broker=broker)
    dev = devices.Target.parse(target)
    held = asyncio.run(devices.fetch_configs(settings.broker, dev.topic)).get(dev.topic)
    if held is None:
        _emit(
            {"topic": dev.topic, "deleted": False}, as_json, f"no config is retained on {dev.topic}"
        )
        return
    asyncio.run(devices.delete_config(settings.broker, dev))
    was = f"invalid: {held}" if isinstance(held, str) else f"profile {held.profile}"
    _emit({"topic": dev.topic, "deleted": True}, as_json, f"deleted {dev.topic} (was {was})")


@app.command("demo")
def demo(
    duration: Annotated[
        float, typer.Option("--duration", min=1, help="Seconds the fleet runs.")
    ] = 30.0,
    lines: Annotated[int, typer.Option("--lines", min=1, max=20, help="Production lines.")] = 2,
    devices: Annotated[int, typer.Option("--devices", min=1, max=50, help="Nodes per line.")] = 3,
    rate: Annotated[
        float, typer.Option("--rate", min=1, max=600, help="Trays per minute per node.")
    ] = 60.0,
    profile: Annotated[
        str, typer.Option("--profile", help="Product profile of the fleet.")
    ] = "foie_gras_lobe_400g",
    seed: Annotated[
        int | None, typer.Option("--seed", min=0, help="Simulator seed [new each run].")
    ] = None,
    faults: Annotated[
        str, typer.Option("--faults", help="Transport faults: none or realistic.")
    ] = "realistic",
    scenario: Annotated[
        str,
        typer.Option("--scenario", help="Simulated population: production (default) or stress."),
    ] = "production",
    data_dir: DataDir = None,
    mqtt_port: Annotated[
        int | None,
        typer.Option("--mqtt-port", min=1, max=65535, help="Broker port [1883, or a free one]."),
    ] = None,
    pg_port: Annotated[
        int | None,
        typer.Option("--pg-port", min=1, max=65535, help="PostgreSQL port [5432, or a free one]."),
    ] = None,
) -> None:
    """Run the whole pipeline here: broker, database, analyzer, ingest and a simulated fleet."""
    from rich.console import Console

    from app.demo import DemoOptions, run_demo
    from sqal.profiles import load_profile

    settings = load_settings(data_dir=data_dir)
    load_profile(profile).scenarios.get(scenario)  # one line for an unknown one
    if faults not in ("none", "realistic"):
        raise typer.BadParameter("must be none or realistic", param_hint="--faults")
    opts = DemoOptions(
        data_dir=settings.data_dir, duration_s=duration, lines=lines, devices=devices,
        rate_per_min=rate, profile=profile, seed=seed, faults=faults, scenario=scenario,
        mqtt_port=mqtt_port, pg_port=pg_port,
    )  # fmt: skip
    run_demo(opts, Console())


@app.command("eval")
def eval_(
    truth: Annotated[
        Path | None,
        typer.Option("--truth", help="Ground truth JSONL written by sqal sim --truth."),
    ] = None,
    results: Annotated[
        Path | None, typer.Option("--results", help="Results JSONL, one Result JSON per line.")
    ] = None,
    capture: Annotated[
        list[Path] | None,
        typer.Option("--capture", help="Capture file(s) recorded from the result topic."),
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="Read the stored results from this DSN.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="With --db: only results stored since this ISO time."),
    ] = None,
    rechecks: Annotated[
        bool,
        typer.Option(
            "--rechecks",
            help="Instead of simulator truth, the operators' re-check answers stored by the "
            "station (--db): the decision against the answer, a confusion table.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Score the analyzer against simulator truth: volume error, grades, defects, coverage.

    Rates come with Wilson 95 % intervals; A/B/C misgrades are shown apart from REJECT errors,
    and a reliability table with its ECE shows how well fusion confidence predicts a right grade.
    With --rechecks the truth is the plant's own: what operators found re-checking trays.
    """
    from analyzer.evaluation import evaluate, format_report, read_jsonl, read_truth

    if rechecks:
        _eval_rechecks(truth, results, capture, db, since, as_json)
        return
    if truth is None:
        raise ConfigError("give --truth FILE (simulator truth), or --rechecks with --db")

    given = (("--results", results), ("--capture", capture), ("--db", db))
    sources = [name for name, v in given if v]
    if len(sources) != 1:
        raise ConfigError("give exactly one source of results: --results, --capture or --db")
    truth_docs = read_truth(truth)  # first: a bad truth file fails before the database is asked
    if results is not None:
        docs = read_jsonl(results, "--results")
    elif db is not None:
        from storage.queries import results_for_eval

        docs = results_for_eval(db, parse_aware_time(since, "--since") if since else None)
    else:
        docs = _results_from_capture(capture or [])
    report = evaluate(docs, truth_docs)
    typer.echo(json.dumps(report.as_dict()) if as_json else format_report(report))


def _eval_rechecks(
    truth: Path | None,
    results: Path | None,
    capture: list[Path] | None,
    db: str | None,
    since: str | None,
    as_json: bool,
) -> None:
    """``sqal eval --rechecks --db DSN``: the verdicts against the stored re-check answers."""
    from storage.queries import recheck_rows_since
    from views.rechecks import evaluate_rechecks, format_recheck_report

    if truth is not None or results is not None or capture:
        raise ConfigError("--rechecks reads answers and results from --db only")
    if db is None:
        raise ConfigError("--rechecks needs --db DSN (where the station stores the answers)")
    settings = load_settings(db=db)
    start = parse_aware_time(since, "--since") if since else None
    report = evaluate_rechecks(recheck_rows_since(settings.db.get_secret_value(), start))
    typer.echo(json.dumps(report.as_dict()) if as_json else format_recheck_report(report))


def _results_from_capture(paths: list[Path]) -> list[dict[str, Any]]:
    """Result payloads recorded on ``sqal/v1/+/+/result`` (other topics are passed over)."""
    from capture.fileformat import read_records
    from sqal.wire import Kind, kind_of

    docs = []
    for _, rec in read_records(paths):
        if kind_of(rec.topic) is Kind.RESULT:
            try:
                doc = json.loads(rec.payload)
            except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
                continue
            if isinstance(doc, dict):
                docs.append(doc)
    return docs


def _register() -> None:
    """Wire the parts' commands in; each lives beside the code it runs."""
    from analyzer.command import analyzer_command
    from app.calibrate import calibrate_command
    from app.dead import dead_list_command, dead_redrive_command, dead_show_command
    from app.lot import (
        lot_end_command,
        lot_list_command,
        lot_rules_command,
        lot_show_command,
        lot_start_command,
    )
    from broker.admin import mosquitto_add_device_command, mosquitto_add_service_command
    from broker.certs import mosquitto_certs_command
    from broker.init import mosquitto_init_command
    from capture.command import capture_info_command, record_command, replay_command
    from device_sim.command import sim_command
    from ingest.command import ingest_command
    from station.command import station_command, token_add_command, user_add_command
    from storage.command import db_migrate_command, db_retention_command, db_status_command
    from views.command import (
        grafana_build_command,
        grafana_push_command,
        report_command,
        report_schedule_command,
    )

    app.command("sim")(sim_command)
    app.command("analyzer")(analyzer_command)
    app.command("calibrate")(calibrate_command)
    app.command("ingest")(ingest_command)
    db_app = new_app("The TimescaleDB schema: migrations, status, retention.")
    app.add_typer(db_app, name="db")
    db_app.command("migrate")(db_migrate_command)
    db_app.command("status")(db_status_command)
    db_app.command("retention")(db_retention_command)

    capture_app = new_app("Capture files of recorded MQTT traffic.")
    app.add_typer(capture_app, name="capture")
    app.command("record")(record_command)
    capture_app.command("info")(capture_info_command)
    app.command("replay")(replay_command)
    grafana_app = new_app("Grafana dashboards as code.")
    app.add_typer(grafana_app, name="grafana")
    grafana_app.command("build")(grafana_build_command)
    grafana_app.command("push")(grafana_push_command)
    app.command("report")(report_command)
    app.command("report-schedule")(report_schedule_command)
    dead_app = new_app("Dead letters: messages no stage could use, listed, shown and sent again.")
    app.add_typer(dead_app, name="dead")
    dead_app.command("list")(dead_list_command)
    dead_app.command("show")(dead_show_command)
    dead_app.command("redrive")(dead_redrive_command)
    lot_app = new_app(
        "Lots: a line's current lot (retained on MQTT) and the packers' rules per lot."
    )
    app.add_typer(lot_app, name="lot")
    lot_app.command("start")(lot_start_command)
    lot_app.command("end")(lot_end_command)
    lot_app.command("show")(lot_show_command)
    lot_app.command("list")(lot_list_command)
    lot_app.command("rules")(lot_rules_command)
    mosquitto_app = new_app("The production broker: device and service credentials, ACL, TLS.")
    app.add_typer(mosquitto_app, name="mosquitto")
    mosquitto_app.command("add-device")(mosquitto_add_device_command)
    mosquitto_app.command("add-service")(mosquitto_add_service_command)
    mosquitto_app.command("certs")(mosquitto_certs_command)
    mosquitto_app.command("init")(mosquitto_init_command)
    station_app = typer.Typer(
        help="The station: live line views, the HOLD queue and the read API (a web app).",
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        add_completion=False,
        invoke_without_command=True,
    )
    app.add_typer(station_app, name="station")
    station_app.callback()(station_command)
    station_user_app = new_app("Station users: who may sign in, with which role.")
    station_app.add_typer(station_user_app, name="user")
    station_user_app.command("add")(user_add_command)
    station_token_app = new_app("Read-API tokens of the station.")
    station_app.add_typer(station_token_app, name="token")
    station_token_app.command("add")(token_add_command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors exit 2 (typer), :class:`SqalError` one line and 1.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv``.
    """
    run(app, argv)
