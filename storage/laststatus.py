"""Each device's latest status (``device_last_status``, migration 0010), kept by the writer.

The Fleet board's line and device variables read this table, one row per device, instead of
the whole ``device_status`` history. The writer hands :func:`track_last_status` the status rows
a batch really inserted, in the same transaction, on both of its write paths
(:mod:`storage.writer`), as it hands new results to the roll-ups. A row is replaced only by a
status of larger ``ts``: a late or redelivered status never rolls a device's state back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from storage.tables import STATUS

LAST_STATUS_COLUMNS = (
    "line_id",
    "device_id",
    "ts",
    "state",
    "firmware",
    "temperature_c",
    "humidity_pct",
    "uptime_s",
)
"""The ``device_status`` columns kept, in the order :func:`latest_per_device` takes them."""

UPSERT_LAST_STATUS = """
INSERT INTO device_last_status AS l
    (line_id, device_id, ts, state, firmware, temperature_c, humidity_pct, uptime_s, received_at)
SELECT *, now() FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::text[],
                            %s::real[], %s::real[], %s::float8[])
ORDER BY 1, 2  -- one lock order for concurrent workers: no deadlocks
ON CONFLICT (line_id, device_id) DO UPDATE SET
    ts = excluded.ts, state = excluded.state, firmware = excluded.firmware,
    temperature_c = excluded.temperature_c, humidity_pct = excluded.humidity_pct,
    uptime_s = excluded.uptime_s, received_at = excluded.received_at
WHERE excluded.ts > l.ts
"""
"""Upserts one row per device; ``received_at`` is the transaction's, as in ``device_status``."""


def last_status_values(rows: Iterable[Sequence[object]]) -> list[tuple[object, ...]]:
    """``device_status`` rows in :data:`~storage.tables.STATUS` order → their kept columns."""
    at = [STATUS.index(c) for c in LAST_STATUS_COLUMNS]
    return [tuple(r[i] for i in at) for r in rows]


def latest_per_device(rows: Iterable[Sequence[object]]) -> list[tuple[object, ...]]:
    """The row of largest ``ts`` per (line, device), sorted by line and device.

    Args:
        rows: ``device_status`` rows' :data:`LAST_STATUS_COLUMNS`.
    """
    latest: dict[tuple[object, object], tuple[object, ...]] = {}
    for r in rows:
        key = (r[0], r[1])
        seen = latest.get(key)
        ts = r[2]
        if seen is None or (
            isinstance(ts, datetime) and isinstance(seen[2], datetime) and ts > seen[2]
        ):
            latest[key] = tuple(r)
    return [latest[k] for k in sorted(latest, key=lambda k: (str(k[0]), str(k[1])))]


def track_last_status(cur: psycopg.Cursor[Any], rows: Iterable[Sequence[object]]) -> None:
    """Bring ``device_last_status`` up to newly inserted ``device_status`` rows.

    Run it in the transaction that inserted the rows.

    Args:
        rows: the inserted rows' :data:`LAST_STATUS_COLUMNS`.
    """
    latest = latest_per_device(rows)
    if latest:
        cur.execute(UPSERT_LAST_STATUS, [list(col) for col in zip(*latest, strict=True)])
