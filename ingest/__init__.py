"""Ingest: MQTT → batches → TimescaleDB, acknowledged only after commit (docs/reliability.md).

- :mod:`ingest.batching`: pure decisions (batch cuts, backoff, the inflight limit check).
- rows come from :mod:`storage.rows` and go to :class:`storage.writer.BatchWriter`, which
  dead-letters the rows the database refuses itself.
- :mod:`ingest.inbox`: the bounded hand-off from the subscriber (:mod:`sqal.subscriber`).
- :mod:`ingest.service`: the worker loop; :mod:`ingest.command`: ``sqal ingest``.
"""

from ingest.batching import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_FLUSH_MS,
    Backoff,
    batch_due,
    check_batch_fits,
    log_due,
)
from ingest.service import IngestConfig, IngestService

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "DEFAULT_FLUSH_MS",
    "Backoff",
    "IngestConfig",
    "IngestService",
    "batch_due",
    "check_batch_fits",
    "log_due",
]
