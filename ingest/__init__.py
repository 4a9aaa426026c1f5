"""Ingest: MQTT → batches → TimescaleDB, acknowledged only after commit (docs/reliability.md).

- :mod:`ingest.batching`: pure decisions (batch cuts, backoff, the inflight limit check).
- :mod:`ingest.rows`: payload models → table rows (pure).
- :mod:`ingest.inbox`, :mod:`ingest.link`: the bounded hand-off and the MQTT connection.
- :mod:`ingest.service`: the worker loop; :mod:`ingest.command`: ``sqal ingest``.
"""

from ingest.batching import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_FLUSH_MS,
    RECEIVE_MAXIMUM,
    Backoff,
    batch_due,
    check_batch_fits,
    log_due,
)
from ingest.service import IngestConfig, IngestService

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "DEFAULT_FLUSH_MS",
    "RECEIVE_MAXIMUM",
    "Backoff",
    "IngestConfig",
    "IngestService",
    "batch_due",
    "check_batch_fits",
    "log_due",
]
