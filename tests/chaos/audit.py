"""What the database holds for one fleet run: complete samples, gaps, duplicates.

A sample is *complete* when it has a result row and both raw frames. The checks read the
tables, never the services' own counters: the stored rows are the promise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tests.chaos.fleet import FleetRun
from tests.chaos.stack import Stack

_COMPLETE = """
SELECT count(*) FROM (SELECT DISTINCT device_id, sample_id FROM results
                      WHERE ts >= %s AND ts < %s) r
WHERE EXISTS (SELECT 1 FROM tof_frames t WHERE t.device_id = r.device_id
              AND t.sample_id = r.sample_id AND t.ts >= %s AND t.ts < %s)
  AND EXISTS (SELECT 1 FROM spectral_frames s WHERE s.device_id = r.device_id
              AND s.sample_id = r.sample_id AND s.ts >= %s AND s.ts < %s)
"""

_ROWS = """
SELECT count(*), count(DISTINCT (device_id, sample_id)) FROM {table} WHERE ts >= %s AND ts < %s
"""

_SEQS = """
SELECT device_id, count(DISTINCT seq) FILTER (WHERE seq >= 0 AND seq < %s)
FROM {table} WHERE ts >= %s AND ts < %s GROUP BY device_id
"""

_STORED = """
SELECT count(DISTINCT (device_id, sample_id)) FROM results WHERE ts >= %s AND ts < %s
"""

_PARTIAL = """
SELECT count(*) FROM results
WHERE ts >= %s AND ts < %s AND NOT (tof_present AND spectral_present)
"""


@dataclass(frozen=True)
class Audit:
    """The verdict on one run.

    Attributes:
        samples: samples the fleet sent.
        complete: samples with a result row and both raw frames.
        duplicated: rows beyond one per sample, over results, tof_frames and spectral_frames.
        seq_gaps: per-device ``seq`` values missing from tof_frames or spectral_frames.
        partial: results with a sensor section missing (a half that came after the join timeout).
    """

    samples: int
    complete: int
    duplicated: int
    seq_gaps: int
    partial: int

    @property
    def lost(self) -> int:
        return self.samples - self.complete


def stored_results(stack: Stack, window: tuple[datetime, datetime]) -> int:
    """Distinct samples with a result row in the window."""
    return stack.scalar(_STORED, *window)


def audit(stack: Stack, run: FleetRun) -> Audit:
    lo, hi = run.window
    complete = stack.scalar(_COMPLETE, lo, hi, lo, hi, lo, hi)
    duplicated = 0
    for table in ("results", "tof_frames", "spectral_frames"):
        rows, distinct = stack.query(_ROWS.format(table=table), lo, hi)[0]
        duplicated += int(rows) - int(distinct)
    gaps = 0
    for table in ("tof_frames", "spectral_frames"):
        seen: dict[str, int] = dict(stack.query(_SEQS.format(table=table), run.per_device, lo, hi))
        gaps += sum(run.per_device - int(seen.get(d, 0)) for d in _device_ids())
    partial = stack.scalar(_PARTIAL, lo, hi)
    return Audit(run.samples, complete, duplicated, gaps, partial)


def _device_ids() -> list[str]:
    from tests.chaos.fleet import DEVICES_PER_LINE, LINES

    lines = range(1, LINES + 1)
    return [f"line{li}-node{di:02d}" for li in lines for di in range(1, DEVICES_PER_LINE + 1)]
