"""Fleet board query times as the ``device_status`` history grows (issue 18 item 5).

    python -m bench.dashboards [SIZES] [REPEATS]     # e.g. 10000,100000,1000000 5

A cluster of its own under /tmp; the history grows backwards from now, one size after the
other: 20 devices on two lines, a status every 30 s each (1 M rows = 17.4 days, three 7-day
chunks), with a 0.8 % share of ``offline`` rows, ``results_1m`` with one row per device and
minute over the same span, and ``device_last_status`` as ingest keeps it. Every Fleet panel and
the line/device variables run as Grafana sends them for the board's default range (the last
8 h, all devices of line L1), as ``sqal_reader``; the panels issue 18 bounded also run as they
were before (``tests/test_views_bounded.UNBOUNDED``). Median of REPEATS runs after one warm-up,
spread = (max − min) / median. The figures go in the note; no test asserts a time.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from bench.common import header
from embedded import free_port, start_postgres
from storage.migrate import migrate
from tests import grafana_macros as gm
from tests.test_views_bounded import UNBOUNDED
from views.boards import build_boards

SERVER = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
DEVICES = 20
STATUS_EVERY_S = 30  # device_sim.fleet.STATUS_EVERY_S
RANGE = timedelta(hours=8)  # the board's default time range
L1_DEVICES = [f"dev-{d:02d}" for d in range(DEVICES // 2)]

_GROW_STATUS = """
INSERT INTO device_status (ts, line_id, device_id, v, state, firmware, temperature_c,
                           humidity_pct, uptime_s)
SELECT %(now)s - make_interval(secs => (g / {n}) * {every} + (g %% {n}) * 1.5),
       CASE WHEN g %% {n} < {n} / 2 THEN 'L1' ELSE 'L2' END,
       'dev-' || lpad((g %% {n})::text, 2, '0'), 1,
       CASE WHEN (g / {n}) %% 120 = 7 THEN 'offline' ELSE 'online' END,
       '1.4.2', 31.5, 40, 3600
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS g
"""
_GROW_MINUTES = """
INSERT INTO results_1m (bucket, line_id, device_id, n_total, n_a, score_sum, score_count)
SELECT date_trunc('minute', %(now)s) - make_interval(mins => (g / {n})::int),
       CASE WHEN g %% {n} < {n} / 2 THEN 'L1' ELSE 'L2' END,
       'dev-' || lpad((g %% {n})::text, 2, '0'), 4, 4, 3.6, 4
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS g
"""
_LAST_STATUS = """
INSERT INTO device_last_status
SELECT DISTINCT ON (line_id, device_id)
    line_id, device_id, ts, state, firmware, temperature_c, humidity_pct, uptime_s, received_at
FROM device_status ORDER BY line_id, device_id, ts DESC
ON CONFLICT DO NOTHING
"""


def grow(conn: psycopg.Connection, now: datetime, have: int, want: int) -> None:
    """Status rows ``have`` … ``want`` − 1 back in time, and the roll-up minutes they span."""
    n = sql.Literal(DEVICES)
    conn.execute(
        sql.SQL(_GROW_STATUS).format(n=n, every=sql.Literal(STATUS_EVERY_S)),
        {"now": now, "lo": have, "hi": want},
    )
    per_minute = 60 // STATUS_EVERY_S  # status rows per device and minute
    conn.execute(
        sql.SQL(_GROW_MINUTES).format(n=n),
        {"now": now, "lo": have // per_minute, "hi": want // per_minute},
    )
    conn.execute(_LAST_STATUS)
    conn.execute("ANALYZE device_status")
    conn.execute("ANALYZE results_1m")


def queries() -> list[tuple[str, str, str | None]]:
    """(name, SQL now, SQL before issue 18 or None) of every Fleet panel and variable."""
    fleet = next(b for b in build_boards() if b.uid == "sqal-fleet")
    out = [(f"${v.name}", v.sql, UNBOUNDED.get(f"${v.name}")) for v in fleet.variables if v.sql]
    out += [(title, q.sql, UNBOUNDED.get(title)) for title, q in fleet.panels]
    return out


def timed_ms(conn: psycopg.Connection, text: str, repeats: int) -> tuple[float, float, int]:
    """Median ms, spread, and the number of rows of ``repeats`` runs after a warm-up."""
    rows = len(conn.execute(text.encode()).fetchall())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        conn.execute(text.encode()).fetchall()
        times.append((time.perf_counter() - start) * 1000)
    med = statistics.median(times)
    return med, (max(times) - min(times)) / med, rows


def main() -> None:
    sizes = [
        int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "10000,100000,1000000").split(",")
    ]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(header("dashboards"))
    folder = Path(tempfile.mkdtemp(prefix="sqal-bench-dash-"))
    folder.chmod(0o755)
    pg = start_postgres(folder / "pg", free_port(), extra_settings=SERVER)
    now = datetime.now(UTC).replace(microsecond=0)
    values: dict[str, str | list[str]] = {"line": "L1", "device": L1_DEVICES}
    try:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_dash")
        dsn = pg.dsn("bench_dash")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.prepare_threshold = None  # Grafana sends each query as text, planned each time
            migrate(conn)
            have = 0
            for size in sizes:
                grow(conn, now, have, size)
                have = size
                span_h = size / DEVICES * STATUS_EVERY_S / 3600
                chunks = conn.execute(
                    "SELECT num_chunks FROM timescaledb_information.hypertables"
                    " WHERE hypertable_name = 'device_status'"
                ).fetchone()
                print(
                    f"history {size:>9} status rows ({span_h:.0f} h, "
                    f"{chunks[0] if chunks else '?'} chunks), {size // 2} results_1m rows"
                )
                conn.execute("SET ROLE sqal_reader")
                for name, now_sql, before_sql in queries():
                    text = gm.expand(
                        now_sql, start=now - RANGE, end=now, variables=values, interval_s=60
                    )
                    ms, spread, n = timed_ms(conn, text, repeats)
                    line = (
                        f"  {name:<44} n={size:<8} {ms:8.2f} ms  spread {spread:4.0%}  {n:5} rows"
                    )
                    if before_sql is not None:
                        old = gm.expand(
                            before_sql, start=now - RANGE, end=now, variables=values, interval_s=60
                        )
                        old_ms, _, old_n = timed_ms(conn, old, repeats)
                        line += f"   before {old_ms:8.2f} ms ({old_n} rows)"
                    print(line, flush=True)
                conn.execute("RESET ROLE")
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
