"""Ingest's counters for ``/metrics`` (STYLE.md, "Logging and counters")."""

from __future__ import annotations

from collections.abc import Callable

from sqal.metrics import Registry

BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 10, 50, 100, 200, 500, 1000)


class IngestMetrics:
    """Everything ``/metrics`` shows for ingest."""

    def __init__(
        self,
        queue_depth: Callable[[], float],
        connected: Callable[[], float],
        write_age: Callable[[], float],
        waited: Callable[[], float],
    ) -> None:
        r = self.registry = Registry("ingest")
        self.received = r.counter("received_total", "Messages received, by topic kind.", "kind")
        self.rows_written = r.counter(
            "rows_written_total", "Rows inserted (duplicates excluded), by table.", "table"
        )
        self.duplicates = r.counter(
            "duplicates_total", "Redelivered rows that inserted nothing, by table.", "table"
        )
        self.batches = r.counter("batches_total", "Batches committed.")
        self.batch_latency = r.histogram(
            "batch_latency_seconds", "From batch cut to commit, retries included."
        )
        self.batch_size = r.histogram(
            "batch_size_messages", "Messages per committed batch.", BATCH_SIZE_BUCKETS
        )
        self.dead_letters = r.counter(
            "dead_letters_total", "Messages dead-lettered by ingest, by reason.", "reason"
        )
        self.db_retries = r.counter("db_retries_total", "Failed batch writes, retried.")
        self.acked = r.counter("acked_total", "Messages acknowledged after commit.")
        self.backpressure = r.gauge(
            "backpressure_seconds",
            "Time the broker connection waited for room in the inbox (the broker was held back).",
            waited,
        )
        self.seq_gaps = r.counter(
            "seq_gaps_total",
            "ToF seq numbers a device skipped (lost samples), confirmed past the reorder window.",
        )
        self.broker_dropped = r.gauge(
            "broker_dropped",
            "The broker's $SYS/broker/publish/messages/dropped (since it started).",
        )
        self.broker_stored = r.gauge(
            "broker_stored_messages",
            "The broker's $SYS/broker/store/messages/count: messages it holds, retained ones and "
            "those queued for clients that are away or behind (a growing backlog).",
        )
        self.device_online = r.gauge(
            "device_online",
            "1 while a device's last status said online, 0 once it (or its last will) said "
            "offline; by line and device.",
            label=("line", "device"),
        )
        self.broker_stats = r.counter(
            "broker_stats_total", "Broker $SYS counter readings stored.", "counter"
        )
        r.gauge("queue_depth", "Messages received and not yet in a batch.", queue_depth)
        r.gauge("broker_connected", "1 while connected to the broker.", connected)
        r.gauge(
            "write_in_progress_seconds",
            "How long the batch write in progress has been running (0 when none is).",
            write_age,
        )
        self.db_ok = r.gauge("db_ok", "1 when the last database write succeeded.")
        self.db_ok.set(1.0)
