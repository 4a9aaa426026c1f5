"""``sqal ingest``: a typer-annotated function the CLI registers."""

from __future__ import annotations

import signal
import threading
from dataclasses import replace
from functools import partial
from types import FrameType
from typing import Annotated

import typer

from ingest.batching import DEFAULT_BATCH_ROWS, DEFAULT_FLUSH_MS, check_batch_fits
from ingest.service import IngestConfig, IngestService, default_client_id
from sqal.errors import ConfigError
from sqal.metrics import DEFAULT_METRICS_HOST
from sqal.mqtt import INFLIGHT_WINDOW
from sqal.options import MetricsHost, MetricsPort
from sqal.process import supervise, tune_gc
from sqal.settings import load_settings, parse_broker_url
from sqal.wire import DEAD_LETTERS, TsWindow, is_valid_id, shared

DEFAULT_METRICS_PORT = 9102
"""The analyzer's is 9101 (analyzer.command); one machine runs both with the defaults."""
WORKERS_GROUP = "ingest"
"""The shared subscription group of ``--workers`` when ``--shared`` is not given."""
MAX_WORKERS = 32
MAX_PORT = 65535


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
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=MAX_WORKERS,
            help="Run this many worker processes that split the messages through the shared "
            f"group --shared (default {WORKERS_GROUP!r}); client ids CLIENT_ID-1 … CLIENT_ID-N, "
            "metrics on --metrics-port, the next port, and so on. Not on a broker that binds "
            "client ids to users (one --shared process per user there).",
        ),
    ] = 1,
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
    if workers > 1:
        shared = shared or WORKERS_GROUP
        if metrics_port and metrics_port + workers - 1 > MAX_PORT:
            raise ConfigError(f"--metrics-port {metrics_port}: {workers} workers need the ports "
                              f"up to {metrics_port + workers - 1}")  # fmt: skip
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
    if workers == 1:
        serve(cfg)
        return
    supervise(
        [
            partial(serve, replace(
                cfg,
                client_id=cid,
                metrics_port=cfg.metrics_port + i if cfg.metrics_port else None,
            ))
            for i, cid in enumerate(worker_client_ids(cfg.client_id, workers))
        ],
        "ingest",
    )  # fmt: skip


def worker_client_ids(client_id: str, workers: int) -> list[str]:
    """The client ids of ``--workers N`` (``ID-1`` … ``ID-N``); ``[ID]`` for one process."""
    return [f"{client_id}-{i + 1}" for i in range(workers)] if workers > 1 else [client_id]


def serve(cfg: IngestConfig) -> None:
    """One worker, in this process, until SIGTERM or SIGINT."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tune_gc()
    IngestService(cfg).run(stop)
