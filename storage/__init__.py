"""TimescaleDB storage for SQAL: migrations, the row layout, the batch writer, the read queries.

Public face; the modules behind it:

- :mod:`storage.migrate`: numbered SQL files under ``storage/migrations/``, recorded in
  ``schema_version``, each applied in its own transaction.
- :mod:`storage.edition`: which TimescaleDB edition runs, and the Community-only extras.
- :mod:`storage.tables`: the columns written into each table, in COPY order, found by name.
- :mod:`storage.rows`: payload models → rows (:func:`pending_row`), :class:`PendingRow` (a row
  with the topic and payload it came from) and :class:`DeadRow`.
- :mod:`storage.writer`: key probe + binary COPY (:func:`copy_rows`), or staging +
  ``INSERT … ON CONFLICT DO NOTHING`` row by row; refused rows become dead letters in the same
  transaction; :mod:`storage.rollups` keeps the per-minute roll-ups exact on both paths.
- :mod:`storage.laststatus`: each device's newest status (``device_last_status``), upserted by
  the writer with the status rows it inserts.
- :mod:`storage.queries`: what the CLI and :mod:`views` read (plain data, the SQL kept here).
- :mod:`storage.status`, :mod:`storage.retention`: ``sqal db status`` and ``sqal db retention``.
"""

from storage.connection import connect, storage_error
from storage.edition import Edition, detect_edition
from storage.migrate import Migration, applied_versions, load_migrations, migrate
from storage.queries import ShiftDevice, ShiftFacts, count_rows, results_for_eval, shift_facts
from storage.retention import RETENTION_TABLES, drop_older_than, parse_age
from storage.rows import DeadRow, PendingRow, pending_row, to_row
from storage.status import DbStatus, TableStatus, db_status
from storage.tables import KEY, TABLES, Table
from storage.writer import BatchWriter, BrokerStat, Refusal, WriteReport, copy_rows

__all__ = [
    "KEY",
    "RETENTION_TABLES",
    "TABLES",
    "BatchWriter",
    "BrokerStat",
    "DbStatus",
    "DeadRow",
    "Edition",
    "Migration",
    "PendingRow",
    "Refusal",
    "ShiftDevice",
    "ShiftFacts",
    "Table",
    "TableStatus",
    "WriteReport",
    "applied_versions",
    "connect",
    "copy_rows",
    "count_rows",
    "db_status",
    "detect_edition",
    "drop_older_than",
    "load_migrations",
    "migrate",
    "parse_age",
    "pending_row",
    "results_for_eval",
    "shift_facts",
    "storage_error",
    "to_row",
]
