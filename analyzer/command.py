"""``sqal analyzer`` and ``sqal eval``: typer-annotated functions the CLI registers."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from sqal.metrics import MetricsServer
from sqal.settings import load_settings, parse_broker_url

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
) -> None:
    """Score ToF + spectral frames from the broker and publish results (QoS 1)."""
    from analyzer.service import AnalyzerConfig, AnalyzerService
    from sqal.profiles import load_profile

    settings = load_settings(broker=broker)
    parse_broker_url(settings.broker)
    load_profile(profile)  # fail fast, one line, on an unknown --profile
    cfg = AnalyzerConfig(
        broker=settings.broker,
        profile=profile,
        client_id=client_id,
        join_timeout_s=join_timeout,
        metrics_port=metrics_port or None,
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
