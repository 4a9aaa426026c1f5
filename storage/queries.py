"""Read-side queries the CLI uses (``sqal eval --db``, ``sqal demo``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from storage.connection import connect, storage_error

_RESULTS = """
SELECT device_id, sample_id, final_grade, defects, tof_present, tof_volume_mm3
FROM results
WHERE received_at >= %s
ORDER BY ts
"""


def results_for_eval(dsn: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """Stored results as the parts of a result payload that ``sqal eval`` reads.

    Args:
        since: only results stored at or after this time (one run among earlier ones).

    Raises:
        StorageError: the database is unreachable or has no ``results`` table.
    """
    start = since or datetime(1970, 1, 1, tzinfo=UTC)
    with connect(dsn, "sqal-eval") as conn:
        try:
            rows = conn.execute(_RESULTS, (start,)).fetchall()
        except psycopg.Error as exc:
            raise storage_error(exc, "cannot read results") from None
    return [
        {
            "device_id": device_id,
            "sample_id": sample_id,
            "fusion": {"final_grade": grade, "defects": list(defects or [])},
            "tof": {"volume_mm3": volume} if tof_present else None,
        }
        for device_id, sample_id, grade, defects, tof_present, volume in rows
    ]


def count_rows(dsn: str, table: str) -> int:
    """Exact row count of one of SQAL's tables (``results``, ``tof_frames``, ...).

    Raises:
        StorageError: unreachable, or no such table.
    """
    from psycopg import sql

    with connect(dsn, "sqal-count") as conn:
        try:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
        except psycopg.Error as exc:
            raise storage_error(exc, f"cannot count {table}") from None
    return int(row[0]) if row else 0
