"""Per-minute roll-ups of results, computed from the rows a batch really inserted.

The writer knows exactly which ``results`` rows are new: on its fast path it probed their keys
and the COPY of them commits or nothing does; row by row, ``INSERT … ON CONFLICT DO NOTHING
RETURNING`` names them. Either way it hands those rows to :func:`add_rollups`, which adds their
counts to ``results_1m`` and ``defects_1m`` in the same transaction: exact under redelivery
(docs/architecture.md, "Database"). The minute bucket equals TimescaleDB's ``time_bucket('1 minute',
ts)``: the UTC minute.

The roll-ups count production only (issue #19): a tray scored while its device was in
``calibration`` or ``maintenance`` mode is stored in ``results`` but never rolled up, so an
empty-tray calibration cannot move a line's reject rate. Dashboards and reports count those
trays apart, from ``results`` (``mode <> 'production'``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from sqal.wire import Grade, Mode
from storage.tables import RESULTS

ROLLUP_COLUMNS = ("ts", "line_id", "device_id", "final_grade", "final_score", "defects", "mode")
"""The ``results`` columns a roll-up reads, in the order :func:`rollup` takes them."""

GRADE_COLUMNS: dict[Grade, str] = {
    Grade.A: "n_a",
    Grade.B: "n_b",
    Grade.C: "n_c",
    Grade.REJECT: "n_reject",
}
"""The ``results_1m`` column counting each grade (``storage/migrations``)."""


_GRADE_OF = {g.value: g for g in GRADE_COLUMNS}


def _zero_grades() -> dict[Grade, int]:
    return dict.fromkeys(GRADE_COLUMNS, 0)


@dataclass(slots=True)
class MinuteCounts:
    """One ``results_1m`` increment."""

    n_total: int = 0
    grades: dict[Grade, int] = field(default_factory=_zero_grades)
    score_sum: float = 0.0
    score_count: int = 0


Key = tuple[datetime, str, str]


def minute(ts: datetime) -> datetime:
    """The UTC minute ``ts`` falls in (``time_bucket('1 minute', ts)``)."""
    return ts.astimezone(UTC).replace(second=0, microsecond=0)


def rollup_values(rows: Iterable[Sequence[object]]) -> list[tuple[object, ...]]:
    """``results`` rows in :data:`storage.tables.RESULTS` column order → :data:`ROLLUP_COLUMNS`."""
    at = [RESULTS.index(c) for c in ROLLUP_COLUMNS]
    return [tuple(r[i] for i in at) for r in rows]


def rollup(
    rows: Iterable[Sequence[object]],
) -> tuple[dict[Key, MinuteCounts], dict[tuple[datetime, str, str, str], int]]:
    """Counts per (minute, line, device) and defect counts per (minute, line, device, defect),
    of production trays only.

    Args:
        rows: the inserted ``results`` rows' :data:`ROLLUP_COLUMNS`.
    """
    per_minute: dict[Key, MinuteCounts] = {}
    per_defect: dict[tuple[datetime, str, str, str], int] = {}
    for ts, line, device, grade, score, defects, mode in rows:
        if mode != Mode.PRODUCTION.value:
            continue  # calibration and maintenance trays are no product (module docstring)
        assert isinstance(ts, datetime)
        key = (minute(ts), str(line), str(device))
        c = per_minute.setdefault(key, MinuteCounts())
        c.n_total += 1
        g = _GRADE_OF.get(str(grade))
        if g is not None:
            c.grades[g] += 1
        if isinstance(score, int | float):
            c.score_sum += float(score)
            c.score_count += 1
        for d in defects if isinstance(defects, list) else []:
            dk = (*key, str(d))
            per_defect[dk] = per_defect.get(dk, 0) + 1
    return per_minute, per_defect


UPSERT_MINUTES = sql.SQL(
    """
INSERT INTO results_1m AS r
    (bucket, line_id, device_id, n_total, {grades}, score_sum, score_count)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::bigint[], {grade_arrays},
                     %s::float8[], %s::bigint[])
ORDER BY 2, 3, 1  -- one lock order for concurrent workers: no deadlocks
ON CONFLICT (line_id, device_id, bucket) DO UPDATE SET
    n_total = r.n_total + excluded.n_total, {merge_grades},
    score_sum = r.score_sum + excluded.score_sum,
    score_count = r.score_count + excluded.score_count
"""
).format(
    grades=sql.SQL(", ").join(sql.Identifier(c) for c in GRADE_COLUMNS.values()),
    grade_arrays=sql.SQL(", ").join(sql.SQL("%s::bigint[]") for _ in GRADE_COLUMNS),
    merge_grades=sql.SQL(", ").join(
        sql.SQL("{c} = r.{c} + excluded.{c}").format(c=sql.Identifier(c))
        for c in GRADE_COLUMNS.values()
    ),
)
"""Adds counts to ``results_1m``, a minute already there summed with the new counts."""

UPSERT_DEFECTS = sql.SQL(
    """
INSERT INTO defects_1m AS d (bucket, line_id, device_id, defect, n)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::bigint[])
ORDER BY 2, 3, 4, 1
ON CONFLICT (line_id, device_id, defect, bucket) DO UPDATE SET n = d.n + excluded.n
"""
)
"""The same for ``defects_1m``."""


def minute_params(per_minute: dict[Key, MinuteCounts]) -> tuple[list[Any], ...]:
    """Column arrays for :data:`UPSERT_MINUTES`."""
    keys = list(per_minute)
    cs = [per_minute[k] for k in keys]
    return (
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [c.n_total for c in cs],
        *([c.grades[g] for c in cs] for g in GRADE_COLUMNS),
        [c.score_sum for c in cs],
        [c.score_count for c in cs],
    )


def defect_params(
    per_defect: dict[tuple[datetime, str, str, str], int],
) -> tuple[list[object], ...]:
    """Column arrays for :data:`UPSERT_DEFECTS`."""
    keys = list(per_defect)
    return (
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
        [per_defect[k] for k in keys],
    )


def add_rollups(cur: psycopg.Cursor[Any], rows: Iterable[Sequence[object]]) -> None:
    """Add newly inserted ``results`` rows to ``results_1m`` and ``defects_1m``.

    The one roll-up path of both write paths (:mod:`storage.writer`); run it in the transaction
    that inserted the rows.

    Args:
        rows: the inserted rows' :data:`ROLLUP_COLUMNS`.
    """
    per_minute, per_defect = rollup(rows)
    if per_minute:
        cur.execute(UPSERT_MINUTES, minute_params(per_minute))
    if per_defect:
        cur.execute(UPSERT_DEFECTS, defect_params(per_defect))
