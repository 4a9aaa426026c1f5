"""Shift report generation time for a large lot (issue #19: a lot of 100,000 trays in < 10 s).

    python -m bench.report [TRAYS] [REPEATS]     # default 100000 3

A cluster of its own under /tmp; one line, two devices, one lot of TRAYS production trays at
30 trays/min each (100,000 trays ≈ 28 h), masses around 1.01·Qn with 1.5 % spread and a few
REJECTs and HOLDs, written with COPY as ingest would. Then ``sqal report --lot`` runs in
process REPEATS times (after one warm-up) with ``--csv``, and the median time of each stage is
printed: the database reads (shift facts, packers' rules, record), the context (charts,
SPC), the PDF layout, the CSV. The figures go in the note; no test asserts a time.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from bench.common import header
from embedded import free_port, start_postgres
from storage.migrate import migrate
from views.command import plant_zone
from views.report import (
    load_record,
    load_shift,
    mass_groups,
    report_context,
    write_report,
    write_trays_csv,
)

SERVER = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
LINE, LOT, QN, TNE = "L1", "LOT-BENCH", 400.0, 12.0
PROFILE = "foie_gras_lobe_400g"


def fill(conn: psycopg.Connection, trays: int, start: datetime) -> datetime:
    """Write ``trays`` results of one lot; returns the end of the lot."""
    rng = np.random.default_rng(1)
    mass = rng.normal(1.01 * QN, 0.015 * QN, trays)
    step = timedelta(seconds=1)  # two devices at 30 trays/min each
    u = rng.random(trays)
    decision = np.where(u < 0.003, "REJECT", np.where(u < 0.02, "HOLD", "PASS"))
    grade = np.where(decision == "REJECT", "REJECT", np.where(u < 0.1, "B", "A"))
    end = start + step * trays
    conn.execute(
        "INSERT INTO lots (line_id, lot_id, product, qn_g, tne_g, started, ended)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (LINE, LOT, PROFILE, QN, TNE, start, end),
    )
    cols = ("ts", "line_id", "device_id", "sample_id", "v", "profile", "calibration_id",
            "final_score", "final_grade", "confidence", "defects", "tof_present",
            "tof_mass_g", "tof_sigma_mass_g", "spectral_present", "analyzer_version",
            "processing_ms", "decision", "mode", "lot_id")  # fmt: skip
    with conn.cursor().copy(f"COPY results ({', '.join(cols)}) FROM STDIN") as cp:
        for i in range(trays):
            dev = f"dev-{i % 2 + 1:02d}"
            defects = ["underfill"] if decision[i] == "REJECT" else []
            cp.write_row((start + step * i, LINE, dev, f"{dev}-bench-{i:08d}", 1, PROFILE,
                          "cal-bench", 0.9, str(grade[i]), 0.99, defects, True,
                          float(mass[i]), 9.8, True, "0.1.0", 2.0, str(decision[i]),
                          "production", LOT))  # fmt: skip
    return end


def main() -> None:
    trays = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(header("report"))
    folder = Path(tempfile.mkdtemp(prefix="sqal-bench-report-"))
    folder.chmod(0o755)
    pg = start_postgres(folder / "pg", free_port(), extra_settings=SERVER)
    try:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_report")
        dsn = pg.dsn("bench_report")
        start = datetime(2026, 3, 2, 6, tzinfo=UTC)
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
            t0 = time.perf_counter()
            end = fill(conn, trays, start)
            conn.execute("ANALYZE results")
            print(f"filled {trays} trays of lot {LOT} in {time.perf_counter() - t0:.1f} s")
        zone = plant_zone("Europe/Paris")
        stages: dict[str, list[float]] = {}
        for run in range(repeats + 1):
            times: dict[str, float] = {}
            with psycopg.connect(dsn) as conn:
                t = time.perf_counter()
                data = load_shift(conn, LINE, start, end, LOT)
                record = load_record(conn, LINE, start, end)
                times["read"] = time.perf_counter() - t
                t = time.perf_counter()
                context = report_context(data, record, mass_groups(data), zone)
                times["context"] = time.perf_counter() - t
                t = time.perf_counter()
                write_report(context, folder / "lot.pdf", as_html=False)
                times["pdf"] = time.perf_counter() - t
                t = time.perf_counter()
                write_trays_csv(conn, folder / "lot.csv", LINE, start, end, LOT)
                times["csv"] = time.perf_counter() - t
            times["total"] = sum(times.values())
            if run:  # the first run warms caches and imports
                for k, v in times.items():
                    stages.setdefault(k, []).append(v)
        size = (folder / "lot.pdf").stat().st_size
        print(f"report of a lot of {trays} trays, median of {repeats} (PDF {size / 1e3:.0f} kB):")
        for stage, spent in stages.items():
            print(
                f"  {stage:<8} {statistics.median(spent):7.2f} s   "
                f"[{min(spent):.2f}, {max(spent):.2f}]"
            )
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
