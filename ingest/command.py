"""``sqal ingest``: a typer-annotated function the CLI registers."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from ingest.batching import DEFAULT_BATCH_ROWS, DEFAULT_FLUSH_MS, check_batch_fits
from ingest.service import IngestConfig, IngestService, default_client_id
from sqal.errors import ConfigError
from sqal.metrics import DEFAULT_METRICS_HOST
from sqal.mqtt import INFLIGHT_WINDOW
from sqal.options import MetricsHost, MetricsPort
from sqal.settings import load_settings, parse_broker_url
from sqal.wire import DEAD_LETTERS, TsWindow, is_valid_id, shared

DEFAULT_METRICS_PORT = 9102
"""The analyzer's is 9101 (analyzer.command); one machine runs both with the defaults."""


def ingest_command(
    broker: Annotated[
        str | None,
        typer.Option("--broker", metavar="URL", help="MQTT broker URL [env SQAL_BROKER]."),
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", metavar="DSN", help="PostgreSQL DSN [env SQAL_DB].")
    ] = None,
    batch_rows: Annotated[
        int,
        typer.Option(
            "--batch-rows",
            help=f"Cut a batch at this many messages (at most {INFLIGHT_WINDOW}, the broker's "
            "inflight limit).",
        ),
    ] = DEFAULT_BATCH_ROWS,
    flush_ms: Annotated[
        int, typer.Option("--flush-ms", help="Cut a batch when its oldest message is this old.")
    ] = DEFAULT_FLUSH_MS,
    shared: Annotated[
        str | None,
        typer.Option(
            "--shared",
            metavar="GROUP",
            help=f"Share the subscription with other workers ({shared('...', 'GROUP')}).",
        ),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(
            "--client-id",
            help="MQTT client id; keep it stable so a restart finds its session "
            "[default: sqal-ingest[-GROUP]-HOST].",
        ),
    ] = None,
    dead_topics: Annotated[
        bool,
        typer.Option(
            "--dead-topics/--no-dead-topics",
            help=f"Also store other stages' dead letters ({DEAD_LETTERS}).",
        ),
    ] = True,
    metrics_port: MetricsPort = DEFAULT_METRICS_PORT,
    metrics_host: MetricsHost = DEFAULT_METRICS_HOST,
    ts_window_hours: Annotated[
        float,
        typer.Option(
            "--ts-window-hours",
            min=0.0,
            help="Dead-letter messages stamped further ahead than this, or further behind than "
            "this plus 7 days, from their arrival (ts_out_of_range).",
        ),
    ] = 24.0,
) -> None:
    """Store frames, weights, results and device status from MQTT in TimescaleDB, nothing lost or
    doubled."""
    settings = load_settings(broker=broker, db=db)
    parse_broker_url(settings.broker)  # one line for a bad URL, before any port is bound
    check_batch_fits(batch_rows, INFLIGHT_WINDOW)
    if flush_ms < 1:
        raise ConfigError(f"--flush-ms {flush_ms}: must be at least 1")
    if shared is not None and not is_valid_id(shared):
        raise ConfigError(f"--shared {shared!r}: a group name is 1-64 of A-Z a-z 0-9 _ -")
    cfg = IngestConfig(
        broker=settings.broker,
        dsn=settings.db.get_secret_value(),
        batch_rows=batch_rows,
        flush_s=flush_ms / 1000.0,
        client_id=client_id or default_client_id(shared),
        shared_group=shared,
        dead_topics=dead_topics,
        metrics_port=metrics_port or None,
        metrics_host=metrics_host,
        ts_window=TsWindow.hours(ts_window_hours),
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    IngestService(cfg).run(stop)
