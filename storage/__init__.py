"""TimescaleDB storage for SQAL: migrations, the batch writer ingest uses, status and retention.

Public face; the modules behind it:

- :mod:`storage.migrate`: numbered SQL files under ``storage/migrations/``, recorded in
  ``schema_version``, each applied in its own transaction.
- :mod:`storage.edition`: which TimescaleDB edition runs, and the Community-only extras.
- :mod:`storage.tables`: the columns ingest copies into each table.
- :mod:`storage.writer`: staging COPY + ``INSERT … ON CONFLICT DO NOTHING`` + exact roll-ups.
- :mod:`storage.status`, :mod:`storage.retention`: ``sqal db status`` and ``sqal db retention``.
"""

from storage.connection import connect, storage_error
from storage.edition import Edition, detect_edition
from storage.migrate import Migration, applied_versions, load_migrations, migrate
from storage.retention import RETENTION_TABLES, drop_older_than, parse_age
from storage.status import DbStatus, TableStatus, db_status
from storage.tables import TABLES, Table
from storage.writer import BatchWriter, DeadRow, PendingRow, Refusal, WriteReport

__all__ = [
    "RETENTION_TABLES",
    "TABLES",
    "BatchWriter",
    "DbStatus",
    "DeadRow",
    "Edition",
    "Migration",
    "PendingRow",
    "Refusal",
    "Table",
    "TableStatus",
    "WriteReport",
    "applied_versions",
    "connect",
    "db_status",
    "detect_edition",
    "drop_older_than",
    "load_migrations",
    "migrate",
    "parse_age",
    "storage_error",
]
