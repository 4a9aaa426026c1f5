"""``sqal analyzer`` and ``sqal calibrate``: typer-annotated functions the CLI registers."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from sqal.errors import ConfigError
from sqal.metrics import MetricsServer
from sqal.settings import load_settings, parse_broker_url
from sqal.wire import ID_PATTERN, is_valid_id

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "foie_gras_lobe_400g"
DEFAULT_METRICS_PORT = 9101


def analyzer_command(
    broker: Annotated[
        str | None, typer.Option("--broker", help="MQTT broker URL [env SQAL_BROKER].")
    ] = None,
    profile: Annotated[
        str,
        typer.Option(
            "--profile", help="Profile of devices that published no config (profiles/NAME.yaml)."
        ),
    ] = DEFAULT_PROFILE,
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port", min=0, max=65535, help="Port of /metrics and /healthz (0: none)."
        ),
    ] = DEFAULT_METRICS_PORT,
    join_timeout: Annotated[
        float,
        typer.Option("--join-timeout", min=0.0, help="Seconds a frame waits for its other half."),
    ] = 2.0,
    client_id: Annotated[
        str,
        typer.Option(
            "--client-id",
            help="MQTT client id; the persistent session (queued frames) is found by it.",
        ),
    ] = "sqal-analyzer",
    lines: Annotated[
        str | None,
        typer.Option(
            "--lines",
            metavar="L1,L2",
            help="Only these lines (comma-separated). Split analyzers by line so both frames of "
            "a sample meet in one; give each its own --client-id.",
        ),
    ] = None,
    ts_window_hours: Annotated[
        float,
        typer.Option(
            "--ts-window-hours",
            min=0.0,
            help="Dead-letter frames stamped further ahead than this, or further behind than "
            "this plus 7 days, from their arrival (ts_out_of_range).",
        ),
    ] = 24.0,
) -> None:
    """Score ToF + spectral frames from the broker and publish results (QoS 1)."""
    from analyzer.service import AnalyzerConfig, AnalyzerService
    from sqal.profiles import load_profile
    from sqal.wire import TsWindow

    settings = load_settings(broker=broker)
    parse_broker_url(settings.broker)
    load_profile(profile)  # fail fast, one line, on an unknown --profile
    line_ids = tuple(x.strip() for x in lines.split(",")) if lines is not None else ()
    bad = [x for x in line_ids if not is_valid_id(x) or x == "_dead"]
    if lines is not None and (bad or not line_ids):
        raise ConfigError(f"--lines {lines!r}: expected line ids like L1,L2 ({ID_PATTERN})")
    cfg = AnalyzerConfig(
        broker=settings.broker,
        profile=profile,
        client_id=client_id,
        join_timeout_s=join_timeout,
        metrics_port=metrics_port or None,
        lines=line_ids,
        ts_window=TsWindow.hours(ts_window_hours),
    )
    service = AnalyzerService(cfg)
    server = MetricsServer(service.registry, metrics_port).start() if metrics_port else None

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        service.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    try:
        service.run()
    finally:
        if server is not None:
            server.stop()


def calibrate_command(
    target: Annotated[str, typer.Argument(help="LINE/DEVICE")],
    step: Annotated[str | None, typer.Option("--step", help="empty, dark or white.")] = None,
    colour_chart: Annotated[
        Path | None,
        typer.Option(
            "--colour-chart", help="Fit the colour matrix from a chart file (patch bc + XYZ)."
        ),
    ] = None,
    frames: Annotated[
        int,
        typer.Option("--frames", min=20, help="Frames to capture (100 for a good d0 map)."),
    ] = 20,
    rho_white: Annotated[
        str,
        typer.Option("--rho-white", help="White tile reflectance: one value or ten (F1..NIR)."),
    ] = "0.97",
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the frames.")
    ] = 120.0,
    yes: Annotated[bool, typer.Option("--yes", help="Do not wait for Enter.")] = False,
    broker: Annotated[
        str | None, typer.Option("--broker", help="MQTT broker URL [env SQAL_BROKER].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Capture a calibration fixture, compute its reference and publish the device's new config."""
    from analyzer.calibrate import ask, calibrate, calibrate_colour, parse_rho_white
    from sqal.devices import Target

    settings = load_settings(broker=broker)
    dev = Target.parse(target)
    if (step is None) == (colour_chart is None):
        raise ConfigError("give exactly one of --step and --colour-chart")
    if colour_chart is not None:
        _, result = calibrate_colour(settings.broker, dev, colour_chart)
        typer.echo(json.dumps(result) if as_json else (
            f"calibration {result['calibration_id']} published for {target}: colour matrix "
            f"from {result['patches']} patches, held-out mean ΔE*ab {result['held_out_de']:.2f} "
            f"(fitted {result['fitted_de']:.2f})"))  # fmt: skip
        return
    if step not in ("empty", "dark", "white"):
        raise ConfigError(f"--step {step!r}: must be empty, dark or white")
    rho = parse_rho_white(rho_white)

    def progress(c: Any) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\rcapturing: {len(c.tof)} ToF, {len(c.spectral)} spectral\x1b[K")

    def confirm(prompt: str) -> None:
        if yes:
            sys.stderr.write(f"{prompt}\n")
        else:
            ask(prompt)

    _, summary = calibrate(settings.broker, dev, step, frames, rho, timeout,  # type: ignore[arg-type]
                           confirm, progress)  # fmt: skip
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if as_json:
        typer.echo(json.dumps(summary))
        return
    lines = [f"calibration {summary['calibration_id']} published for {target} ({step})"]
    if step == "empty":
        d0, share, drift = summary["d0_mm"], summary["valid_share"], summary["drift"]
        lines.append(f"d0 {d0:.1f} mm, ROI readings valid {share:.0%}, spread {drift:.2f}x noise")
    else:
        lines.append(f"basic counts {summary['basic_counts']}")
        peak, cv = summary["peak_fs"], summary["max_cv"]
        lines.append(f"peak {peak:.0%} of full scale, max CV {cv:.1%}")
        if "z_cal_mm" in summary:
            lines.append(f"z_cal {summary['z_cal_mm']:.1f} mm")
    typer.echo("\n".join(lines))
