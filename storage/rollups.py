"""Per-minute roll-ups of results, computed from the rows a batch really inserted (pure part).

The writer's fast path knows exactly which ``results`` rows are new (it probed their keys and
the COPY of them committed, or nothing did), so it can add their counts to ``results_1m`` and
``defects_1m`` itself, in the same transaction: exact under redelivery (docs/architecture.md,
"Database"). The minute bucket equals TimescaleDB's ``time_bucket('1 minute', ts)``: the UTC
minute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from psycopg import sql

from storage.tables import RESULTS

_COL = {name: i for i, name in enumerate(RESULTS.column_names)}


@dataclass(slots=True)
class MinuteCounts:
    """One ``results_1m`` increment."""

    n_total: int = 0
    n_a: int = 0
    n_b: int = 0
    n_c: int = 0
    n_reject: int = 0
    score_sum: float = 0.0
    score_count: int = 0


Key = tuple[datetime, str, str]


def minute(ts: datetime) -> datetime:
    """The UTC minute ``ts`` falls in (``time_bucket('1 minute', ts)``)."""
    return ts.astimezone(UTC).replace(second=0, microsecond=0)


def rollup(
    rows: Sequence[tuple[object, ...]],
) -> tuple[dict[Key, MinuteCounts], dict[tuple[datetime, str, str, str], int]]:
    """Counts per (minute, line, device) and defect counts per (minute, line, device, defect).

    Args:
        rows: ``results`` rows in :data:`storage.tables.RESULTS` column order.
    """
    per_minute: dict[Key, MinuteCounts] = {}
    per_defect: dict[tuple[datetime, str, str, str], int] = {}
    i_ts, i_line, i_dev = _COL["ts"], _COL["line_id"], _COL["device_id"]
    i_grade, i_score, i_def = _COL["final_grade"], _COL["final_score"], _COL["defects"]
    for r in rows:
        ts = r[i_ts]
        assert isinstance(ts, datetime)
        key = (minute(ts), str(r[i_line]), str(r[i_dev]))
        c = per_minute.setdefault(key, MinuteCounts())
        c.n_total += 1
        grade = r[i_grade]
        if grade == "A":
            c.n_a += 1
        elif grade == "B":
            c.n_b += 1
        elif grade == "C":
            c.n_c += 1
        elif grade == "REJECT":
            c.n_reject += 1
        score = r[i_score]
        if isinstance(score, int | float):
            c.score_sum += float(score)
            c.score_count += 1
        defects = r[i_def]
        for d in defects if isinstance(defects, list) else []:
            dk = (*key, str(d))
            per_defect[dk] = per_defect.get(dk, 0) + 1
    return per_minute, per_defect


MERGE_MINUTES = sql.SQL(
    """ON CONFLICT (line_id, device_id, bucket) DO UPDATE SET
    n_total = r.n_total + excluded.n_total, n_a = r.n_a + excluded.n_a,
    n_b = r.n_b + excluded.n_b, n_c = r.n_c + excluded.n_c,
    n_reject = r.n_reject + excluded.n_reject,
    score_sum = r.score_sum + excluded.score_sum,
    score_count = r.score_count + excluded.score_count"""
)
"""How counts for a minute already in ``results_1m AS r`` add up; shared with the set-based
roll-up in :mod:`storage.writer`."""

MERGE_DEFECTS = sql.SQL(
    "ON CONFLICT (line_id, device_id, defect, bucket) DO UPDATE SET n = d.n + excluded.n"
)
"""The same for ``defects_1m AS d``."""

UPSERT_MINUTES = sql.SQL(
    """
INSERT INTO results_1m AS r
    (bucket, line_id, device_id, n_total, n_a, n_b, n_c, n_reject, score_sum, score_count)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::bigint[], %s::bigint[],
                     %s::bigint[], %s::bigint[], %s::bigint[], %s::float8[], %s::bigint[])
ORDER BY 2, 3, 1  -- one lock order for concurrent workers: no deadlocks
{merge}
"""
).format(merge=MERGE_MINUTES)

UPSERT_DEFECTS = sql.SQL(
    """
INSERT INTO defects_1m AS d (bucket, line_id, device_id, defect, n)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::bigint[])
ORDER BY 2, 3, 4, 1
{merge}
"""
).format(merge=MERGE_DEFECTS)


def minute_params(per_minute: dict[Key, MinuteCounts]) -> tuple[list[object], ...]:
    """Column arrays for :data:`UPSERT_MINUTES`."""
    keys = list(per_minute)
    cs = [per_minute[k] for k in keys]
    return (
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [c.n_total for c in cs],
        [c.n_a for c in cs],
        [c.n_b for c in cs],
        [c.n_c for c in cs],
        [c.n_reject for c in cs],
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
