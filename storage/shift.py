"""Read-side queries of the shift report's record sections (issue #19 item 5): which calibration
each device scored with, how long each device was offline, and the trays ``--csv`` exports.

Every query is bounded by the period (and a 7-day look-back for the state at its start), so its
cost follows the shift, not the table's history.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg

from storage.connection import storage_error


@dataclass(frozen=True, slots=True)
class CalibrationUse:
    """One calibration a device scored trays with in the period (``None``: uncalibrated)."""

    device_id: str
    calibration_id: str | None
    first: datetime
    last: datetime
    trays: int


_CALIBRATIONS = """
SELECT device_id, calibration_id, min(ts), max(ts), count(*)
FROM results
WHERE line_id = %(line)s AND ts >= %(since)s AND ts < %(until)s
GROUP BY 1, 2
ORDER BY 1, 3
"""


def calibrations_used(
    conn: psycopg.Connection, line: str, since: datetime, until: datetime
) -> list[CalibrationUse]:
    """Per device, each calibration id its results carry in the period, first and last use.

    A device with two rows changed calibration during the period (a calibration event).

    Raises:
        StorageError: the query failed.
    """
    args = {"line": line, "since": since, "until": until}
    try:
        rows = conn.execute(_CALIBRATIONS, args).fetchall()
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot read the calibrations used") from None
    return [CalibrationUse(d, c, a, b, int(n)) for d, c, a, b, n in rows]


_OFFLINE = """
WITH events AS (
    SELECT device_id, ts, state FROM device_status
    WHERE line_id = %(line)s AND ts >= %(since)s AND ts < %(until)s
    UNION ALL
    SELECT * FROM (
        SELECT DISTINCT ON (device_id) device_id, %(since)s::timestamptz, state
        FROM device_status
        WHERE line_id = %(line)s AND ts < %(since)s AND ts >= %(since)s - INTERVAL '7 days'
        ORDER BY device_id, ts DESC
    ) AS before
), spans AS (
    SELECT device_id, state, ts,
           lead(ts, 1, %(until)s::timestamptz) OVER (PARTITION BY device_id ORDER BY ts) AS next
    FROM events
)
SELECT device_id,
       coalesce(sum(extract(epoch FROM next - ts)) FILTER (WHERE state = 'offline'), 0)
FROM spans
GROUP BY 1
ORDER BY 1
"""


def offline_seconds(
    conn: psycopg.Connection, line: str, since: datetime, until: datetime
) -> dict[str, float]:
    """Per device with a status, the seconds of the period it spent offline: from each
    ``offline`` status to the next status or the period's end, starting in the state of the last
    status before the period (looked for over 7 days).

    Raises:
        StorageError: the query failed.
    """
    args = {"line": line, "since": since, "until": until}
    try:
        rows = conn.execute(_OFFLINE, args).fetchall()
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot read the devices' presence") from None
    return {d: float(s) for d, s in rows}


_DEAD_BY_DEVICE = """
SELECT device_id, count(*) FROM dead_letters
WHERE line_id = %(line)s AND received_at >= %(since)s AND received_at < %(until)s
  AND device_id IS NOT NULL
GROUP BY 1
"""


def dead_letters_by_device(
    conn: psycopg.Connection, line: str, since: datetime, until: datetime
) -> dict[str, int]:
    """Per device, the dead letters of the line that arrived in the period.

    Raises:
        StorageError: the query failed.
    """
    args = {"line": line, "since": since, "until": until}
    try:
        rows = conn.execute(_DEAD_BY_DEVICE, args).fetchall()
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot read the dead letters") from None
    return {d: int(n) for d, n in rows}


TRAY_COLUMNS = (
    "ts", "line_id", "device_id", "sample_id", "lot_id", "decision", "final_grade", "defects",
    "mass_g", "mass_source", "sigma_g", "tof_mass_g", "weight_mass_g", "tof_volume_mm3",
    "tof_max_height_mm", "p_reject", "calibration_id",
)  # fmt: skip
"""The columns of :func:`trays`, in order (``sqal report --csv``)."""

_TRAYS = """
SELECT ts, line_id, device_id, sample_id, lot_id, decision, final_grade,
       array_to_string(defects, ';'),
       coalesce(weight_mass_g, tof_mass_g),
       CASE WHEN weight_mass_g IS NOT NULL THEN 'checkweigher'
            WHEN tof_mass_g IS NOT NULL THEN 'estimate' END,
       CASE WHEN weight_mass_g IS NOT NULL THEN weight_sigma_g ELSE tof_sigma_mass_g END,
       tof_mass_g, weight_mass_g, tof_volume_mm3, tof_max_height_mm, p_reject, calibration_id
FROM results
WHERE line_id = %(line)s AND ts >= %(since)s AND ts < %(until)s AND mode = 'production'
  AND (%(lot)s::text IS NULL OR lot_id = %(lot)s)
ORDER BY ts
"""


def trays(
    conn: psycopg.Connection, line: str, since: datetime, until: datetime, lot: str | None = None
) -> Iterator[tuple[object, ...]]:
    """The production trays of a line's period (of one lot), oldest first, as rows of
    :data:`TRAY_COLUMNS`: the mass each pack is judged on (the checkweigher's where there is
    one) and where it came from. Read through a server-side cursor, so a lot of any size streams.

    Raises:
        StorageError: the query failed.
    """
    args = {"line": line, "since": since, "until": until, "lot": lot}
    try:
        with conn.transaction(), conn.cursor(name="sqal_report_trays") as cur:
            cur.itersize = 5000
            cur.execute(_TRAYS, args)
            yield from cur
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot read the trays") from None
