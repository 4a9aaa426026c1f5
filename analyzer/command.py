"""``sqal analyzer``: the typer-annotated function the CLI registers.

``sqal calibrate`` lives in :mod:`app.calibrate`: its weighed step reads the database too.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from sqal import __version__
from sqal.errors import ConfigError
from sqal.metrics import DEFAULT_METRICS_HOST, MetricsServer
from sqal.options import MetricsHost, MetricsPort
from sqal.process import tune_gc
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
    metrics_port: MetricsPort = DEFAULT_METRICS_PORT,
    metrics_host: MetricsHost = DEFAULT_METRICS_HOST,
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
    server = MetricsServer(service.registry, metrics_port, metrics_host) if metrics_port else None
    log.info(
        "analyzer %s starting: broker %s, client id %s, profile %s, lines %s, metrics %s",
        __version__,
        service.sub.broker,
        client_id,
        profile,
        ",".join(line_ids) or "all",
        server.url if server is not None else "off",
        extra={"client_id": client_id, "version": __version__},
    )
    if server is not None:
        server.start()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        service.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    tune_gc()
    try:
        service.run()
    finally:
        if server is not None:
            server.stop()
