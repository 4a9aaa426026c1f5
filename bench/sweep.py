"""One pipeline step: offer a load, wait for it to land in TimescaleDB, and account for it.

A step publishes ``n = rate × seconds`` samples (two frames each) on an absolute schedule, then
waits until every sample has its result row and both frame rows (or the drain times out), and
reports, per step:

- loss: offered samples without a result row, and frames without their row (must both be 0);
- latency from the wall time a sample's last frame was handed to the publisher's client to
  (a) its result at a subscriber (the line gate's view) and (b) ``results.received_at`` in the
  database. All processes run on this machine and read the same clock (``time.time()`` and
  PostgreSQL's ``now()``), so the differences need no offset. ``received_at`` is the ingest
  transaction's start (the column's ``DEFAULT now()``), i.e. up to one COPY before commit;
- CPU seconds per completed sample of each process (``/proc``), peak RSS of each service;
- broker queue depth: frames published minus frames the consumers have received (their
  ``/metrics``), sampled every 0.5 s, for the analyzers and for ingest.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench.load import Load, uid_of
from bench.services import Service, cpu_s, memory_mb, tree_cpu_s

SAMPLE_EVERY_S = 0.5
STALL_S = 5.0
"""A drain with no new row for this long is over: what is missing then is lost or stuck."""


@dataclass
class Rig:
    """Everything one sweep runs against."""

    broker_url: str
    broker_pid: int
    dsn: str
    pg_pid: int | None
    load: Load
    log_dir: Path
    analyzers: list[Service] = field(default_factory=list)
    ingests: list[Service] = field(default_factory=list)
    uid_next: int = 1

    @property
    def services(self) -> list[Service]:
        return [*self.analyzers, *self.ingests]

    def cpu(self) -> dict[str, float]:
        out = {s.name: s.cpu_s() for s in self.services}
        out["mosquitto"] = cpu_s(self.broker_pid)
        if self.pg_pid is not None:
            out["postgres"] = tree_cpu_s(self.pg_pid)
        for name, pids in self.load.pids.items():
            out[name] = sum(cpu_s(p) for p in pids)
        return out

    def batch_sums(self) -> dict[str, float]:
        """Cumulative (sum, count) of the analyzers' and ingest workers' batch-size histograms."""
        out = dict.fromkeys(("a_sum", "a_n", "i_sum", "i_n"), 0.0)
        for s in self.analyzers:
            m = s.metrics()
            out["a_sum"] += m.get("sqal_analyzer_batch_size_sum", 0.0)
            out["a_n"] += m.get("sqal_analyzer_batch_size_count", 0.0)
        for s in self.ingests:
            m = s.metrics()
            out["i_sum"] += m.get("sqal_ingest_batch_size_messages_sum", 0.0)
            out["i_n"] += m.get("sqal_ingest_batch_size_messages_count", 0.0)
        return out

    def received(self) -> tuple[float, float, float, float]:
        """(analyzer frames in, analyzer results out, ingest frames in, ingest results in)."""
        a_in = a_out = i_in = i_res = 0.0
        for s in self.analyzers:
            m = s.metrics()
            a_in += m.get("sqal_analyzer_received_total:tof", 0.0)
            a_in += m.get("sqal_analyzer_received_total:spectral", 0.0)
            a_out += m.get("sqal_analyzer_published_total", 0.0)
        for s in self.ingests:
            m = s.metrics()
            i_in += m.get("sqal_ingest_received_total:tof", 0.0)
            i_in += m.get("sqal_ingest_received_total:spectral", 0.0)
            i_res += m.get("sqal_ingest_received_total:result", 0.0)
        return a_in, a_out, i_in, i_res


class _Sampler(threading.Thread):
    """RSS of each service and the consumers' queue gaps, every 0.5 s during a step."""

    def __init__(self, rig: Rig) -> None:
        super().__init__(daemon=True)
        self.rig = rig
        self.stop_ev = threading.Event()
        self.rss: dict[str, float] = {s.name: 0.0 for s in rig.services}
        self.gaps: dict[str, list[float]] = {"analyzer": [], "ingest": [], "results": []}
        self.pub0 = rig.load.published()
        self.rec0 = rig.received()

    def run(self) -> None:
        while not self.stop_ev.wait(SAMPLE_EVERY_S):
            for s in self.rig.services:
                self.rss[s.name] = max(self.rss[s.name], memory_mb(s.pid))
            pub = self.rig.load.published() - self.pub0
            a_in, a_out, i_in, i_res = (x - x0 for x, x0 in zip(self.rig.received(), self.rec0,
                                                               strict=True))  # fmt: skip
            self.gaps["analyzer"].append(max(0.0, pub - a_in))
            self.gaps["ingest"].append(max(0.0, pub - i_in))
            self.gaps["results"].append(max(0.0, a_out - i_res))


def _pct(x: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(x, q)), 2) if len(x) else None


def _counts(conn: psycopg.Connection[Any], since: float, lo: int, hi: int) -> tuple[int, ...]:
    """Rows of samples [lo, hi) (the id's last 8 digits) in results, tof and spectral frames."""
    where = (
        "WHERE received_at >= to_timestamp(%(t)s) AND right(sample_id, 8) >= %(lo)s"
        " AND right(sample_id, 8) < %(hi)s"
    )
    row = conn.execute(
        f"SELECT (SELECT count(*) FROM results {where}),"  # noqa: S608 (constant text)
        f" (SELECT count(*) FROM tof_frames {where}),"
        f" (SELECT count(*) FROM spectral_frames {where})",
        {"t": since, "lo": f"{lo:08d}", "hi": f"{hi:08d}"},
    ).fetchone()
    assert row is not None
    return tuple(int(x) for x in row)


def _drain(conn: psycopg.Connection[Any], since: float, lo: int, hi: int, max_s: float) -> float:
    """Wait until samples [lo, hi) have a result and both frame rows; seconds waited."""
    start = time.monotonic()
    last: tuple[int, ...] = (-1, -1, -1)
    last_change = start
    while time.monotonic() - start < max_s:
        got = _counts(conn, since, lo, hi)
        if min(got) >= hi - lo:
            break
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            break
        time.sleep(0.2)
    return time.monotonic() - start


def _uids(conn: psycopg.Connection[Any], table: str, since: float,
          lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(uids, received_at epochs) of ``table`` rows for samples [lo, hi) written since ``since``."""
    query = {
        "results": "SELECT sample_id, extract(epoch FROM received_at) FROM results "
        "WHERE received_at >= to_timestamp(%s)",
        "tof_frames": "SELECT sample_id, extract(epoch FROM received_at) FROM tof_frames "
        "WHERE received_at >= to_timestamp(%s)",
        "spectral_frames": "SELECT sample_id, extract(epoch FROM received_at) "
        "FROM spectral_frames WHERE received_at >= to_timestamp(%s)",
    }[table]
    rows = conn.execute(query, (since,)).fetchall()
    uids = np.fromiter((uid_of(r[0]) for r in rows), np.int64, len(rows))
    at = np.fromiter((float(r[1]) for r in rows), np.float64, len(rows))
    keep = (uids >= lo) & (uids < hi)
    return uids[keep], at[keep]


def run_step(
    rig: Rig, rate: float, seconds: float, *, lag_bound_s: float = 2.0, drain_max_s: float = 30.0,
    label: str = "single",
) -> dict[str, Any]:  # fmt: skip
    """Offer ``rate`` samples/s for ``seconds``; everything the step table and JSON show."""
    n = max(1, round(rate * seconds))
    lo = rig.uid_next
    rig.uid_next += n
    sampler = _Sampler(rig)
    load_before = os.getloadavg()[0]
    batch0 = rig.batch_sums()
    cpu0 = rig.cpu()
    since = time.time() - 1.0
    sampler.start()
    pub = rig.load.run_step(rate, n, lo)
    with psycopg.connect(rig.dsn, autocommit=True) as conn:
        drain_s = _drain(conn, since, lo, lo + n, drain_max_s)
        sampler.stop_ev.set()
        sampler.join()
        cpu1 = rig.cpu()
        batch1 = rig.batch_sums()
        res_u, res_at = _uids(conn, "results", since, lo, lo + n)
        tof_u, _ = _uids(conn, "tof_frames", since, lo, lo + n)
        spec_u, _ = _uids(conn, "spectral_frames", since, lo, lo + n)
        dead = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE received_at >= to_timestamp(%s)", (since,)
        ).fetchone()
    tap_u, tap_at = rig.load.collect(lo, lo + n)
    t_pub = pub["t_pub"]  # indexed by uid - lo (uids are lo .. lo+n-1, sorted)
    done = np.unique(res_u)
    db_first = np.full(n, np.inf)
    np.minimum.at(db_first, res_u - lo, res_at)
    lat_db = (db_first[done - lo] - t_pub[done - lo]) * 1000.0
    lat_sub = (tap_at - t_pub[tap_u - lo]) * 1000.0
    span_s = float(db_first[done - lo].max() - pub["t0"]) if len(done) else float("nan")
    cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    per_sample = {k: round(1000.0 * v / max(1, len(done)), 3) for k, v in cpu.items()}
    sched_s = float(t_pub.max() - t_pub.min()) if n > 1 else 0.0
    third = max(1, len(lat_db) // 3)  # lat_db follows ``done``: sorted uids, publish order
    early = float(np.median(lat_db[:third])) if len(lat_db) else 0.0
    late = float(np.median(lat_db[-third:])) if len(lat_db) else 0.0
    db = {k: batch1[k] - batch0[k] for k in batch0}
    out: dict[str, Any] = {
        "label": label,
        "mean_batch": {
            "analyzer_samples": round(db["a_sum"] / db["a_n"], 1) if db["a_n"] else None,
            "ingest_messages": round(db["i_sum"] / db["i_n"], 1) if db["i_n"] else None,
        },
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "offered_per_s": rate,
        "seconds": seconds,
        "samples": n,
        "offered_achieved_per_s": round((n - 1) / sched_s, 1) if sched_s > 0 else None,
        "publish_late_p99_ms": _pct(pub["late_ms"], 99),
        "completed": len(done),
        "completed_per_s": round(len(done) / span_s, 1) if len(done) else 0.0,
        "lost": n - len(done),
        "duplicate_result_rows": len(res_u) - len(done),
        "missing_tof_rows": n - len(np.unique(tof_u)),
        "missing_spectral_rows": n - len(np.unique(spec_u)),
        "dead_letters": int(dead[0]) if dead else 0,
        "results_at_subscriber": len(tap_u),
        "latency_sub_ms": {
            "p50": _pct(lat_sub, 50),
            "p99": _pct(lat_sub, 99),
            "max": _pct(lat_sub, 100),
        },
        "latency_db_ms": {
            "p50": _pct(lat_db, 50),
            "p99": _pct(lat_db, 99),
            "max": _pct(lat_db, 100),
        },
        "drain_s": round(drain_s, 2),
        "latency_db_first_third_ms": round(early, 1),
        "latency_db_last_third_ms": round(late, 1),
        "cpu_ms_per_sample": per_sample,
        "cpu_cores": {k: round(v / max(span_s, 1e-9), 2) for k, v in cpu.items()},
        "rss_mb_max": {k: round(v, 1) for k, v in sampler.rss.items()},
        "queue_max": {k: max(v, default=0.0) for k, v in sampler.gaps.items()},
        "queue_mean": {
            k: round(float(np.mean(v)), 1) if v else 0.0 for k, v in sampler.gaps.items()
        },
    }
    p99 = out["latency_db_ms"]["p99"]
    out["zero_loss"] = (
        out["lost"] == 0
        and out["missing_tof_rows"] == 0
        and out["missing_spectral_rows"] == 0
        and out["dead_letters"] == 0
    )
    # Bounded lag: the DB p99 stays under the bound and the latency does not climb through the
    # step (a backlog that grows would, however short the step).
    growing = late > 2.0 * early + 250.0
    out["bounded_lag"] = p99 is not None and p99 <= 1000.0 * lag_bound_s and not growing
    out["sustainable"] = out["zero_loss"] and out["bounded_lag"]
    return out
