"""The panels and variables bounded in issue 18 give the answers the unbounded ones gave.

Before, the Fleet board's presence, online and device panels and the line/device variables read
the whole ``device_status`` history, and the Quality board looked a sample up by its id alone
(:data:`UNBOUNDED`, the SQL as it was). Now they probe each device's latest status through the
unique index (``LATERAL … LIMIT 1``), list devices from ``device_last_status`` and look samples
up in the time range. On the shift of :mod:`tests.views_data`, plus history days before it and
a line known only from that history, both give the same rows for several ranges and device
choices. ``bench/dashboards.py`` times both as the history grows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from embedded import Postgres
from storage.laststatus import LAST_STATUS_COLUMNS, track_last_status
from storage.queries import shift_facts
from tests import grafana_macros as gm
from tests.views_data import START, Shift, build_shift, fill
from views.boards import build_boards

UNBOUNDED: dict[str, str] = {
    "Devices online": "WITH s AS (SELECT DISTINCT ON (device_id) device_id, ts, state, firmware,"
    " temperature_c,\n"
    "    humidity_pct, uptime_s FROM device_status\n"
    "  WHERE line_id = '$line' AND device_id IN ($device) AND ts <= $__timeTo()\n"
    "  ORDER BY device_id, ts DESC)\n"
    "SELECT count(*) FILTER (WHERE state = 'online') AS online,\n"
    "  count(*) FILTER (WHERE state = 'offline') AS offline FROM s",
    "Devices": "WITH s AS (SELECT DISTINCT ON (device_id) device_id, ts, state, firmware,"
    " temperature_c,\n"
    "    humidity_pct, uptime_s FROM device_status\n"
    "  WHERE line_id = '$line' AND device_id IN ($device) AND ts <= $__timeTo()\n"
    "  ORDER BY device_id, ts DESC),\n"
    "r AS (SELECT device_id, max(ts) AS last_result, count(*) AS trays FROM results\n"
    "  WHERE line_id = '$line' AND device_id IN ($device) AND $__timeFilter(ts)"
    " GROUP BY device_id)\n"
    "SELECT device_id, coalesce(s.state, 'unknown') AS state, s.ts AS last_status,\n"
    "  s.firmware, s.temperature_c, s.humidity_pct, s.uptime_s, r.last_result,\n"
    "  coalesce(r.trays, 0) AS trays\n"
    "FROM s FULL JOIN r USING (device_id) ORDER BY device_id",
    "Presence": "SELECT * FROM (\n"
    '  SELECT DISTINCT ON (device_id) $__timeFrom()::timestamptz AS "time",\n'
    "    device_id AS metric, (state = 'online')::int AS online FROM device_status\n"
    "  WHERE line_id = '$line' AND device_id IN ($device) AND ts < $__timeFrom()\n"
    "  ORDER BY device_id, ts DESC) AS before\n"
    "UNION ALL\n"
    "SELECT ts, device_id, (state = 'online')::int FROM device_status WHERE line_id = '$line'"
    " AND device_id IN ($device) AND $__timeFilter(ts)\n"
    "ORDER BY 1",
    "$line": "SELECT line_id FROM results_1m GROUP BY 1\n"
    "UNION SELECT line_id FROM device_status GROUP BY 1 ORDER BY 1",
    "$device": "SELECT device_id FROM results_1m WHERE line_id = '$line' GROUP BY 1\n"
    "UNION SELECT device_id FROM device_status WHERE line_id = '$line' GROUP BY 1 ORDER BY 1",
    "Height map of the selected sample": "WITH f AS (SELECT layout, distance_mm, target_status"
    " FROM tof_frames\n"
    "  WHERE line_id = '$line' AND sample_id = '$sample' ORDER BY ts DESC LIMIT 1),\n"
    "z AS (SELECT (u.i - 1) / f.layout AS zone_row, (u.i - 1) % f.layout AS zone_col,\n"
    "  CASE WHEN u.s IN (5, 6, 9) THEN $d0_mm - u.d END AS h\n"
    "  FROM f, unnest(f.distance_mm, f.target_status) WITH ORDINALITY AS u(d, s, i))\n"
    "SELECT zone_col,\n"
    '  max(h) FILTER (WHERE zone_row = 0) AS "row 0",\n'
    '  max(h) FILTER (WHERE zone_row = 1) AS "row 1",\n'
    '  max(h) FILTER (WHERE zone_row = 2) AS "row 2",\n'
    '  max(h) FILTER (WHERE zone_row = 3) AS "row 3",\n'
    '  max(h) FILTER (WHERE zone_row = 4) AS "row 4",\n'
    '  max(h) FILTER (WHERE zone_row = 5) AS "row 5",\n'
    '  max(h) FILTER (WHERE zone_row = 6) AS "row 6",\n'
    '  max(h) FILTER (WHERE zone_row = 7) AS "row 7"\n'
    "FROM z GROUP BY zone_col ORDER BY zone_col",
    "Selected sample": 'SELECT ts AS "time", device_id, sample_id, final_grade,\n'
    "  round(final_score::numeric, 3) AS final_score,\n"
    "  array_to_string(defects, ', ') AS defects,\n"
    "  round(tof_mass_g::numeric, 1) AS mass_g,\n"
    "  round((tof_volume_mm3 / 1000)::numeric, 1) AS volume_cm3,\n"
    "  round(tof_avg_height_mm::numeric, 1) AS avg_height_mm,\n"
    "  round(tof_max_height_mm::numeric, 1) AS max_height_mm,\n"
    "  round(tof_tilt_deg::numeric, 1) AS tilt_deg, tof_valid_zones AS valid_zones\n"
    "FROM results WHERE line_id = '$line' AND sample_id = '$sample'",
}
"""The SQL of the bounded panels and variables before issue 18 (commit db06c02)."""


def bounded() -> dict[str, str]:
    """The same panels and variables as the boards build them now."""
    boards = {b.uid: b for b in build_boards()}
    fleet, quality = boards["sqal-fleet"], boards["sqal-quality"]
    out = {t: q.sql for t, q in fleet.panels if t in UNBOUNDED}
    out |= {t: q.sql for t, q in quality.panels if t in UNBOUNDED}
    out |= {f"${v.name}": v.sql for v in fleet.variables if v.sql is not None}
    return out


M = timedelta(minutes=1)
D = timedelta(days=1)
RANGES = {
    "shift": (START, START + 120 * M),
    "to dev-02's reboot": (START + 30 * M, START + 61 * M),
    "after the reboot": (START + 61 * M, START + 110 * M),
    "history only": (START - 5 * D, START - D),
    "before anything": (START - 30 * D, START - 20 * D),
}
DEVICE_CHOICES = {
    "all": ["dev-01", "dev-02", "dev-03", "dev-09"],
    "one": ["dev-02"],
    "silent": ["dev-09"],
}
HISTORY = [
    # (days before START, line, device, state): statuses older than the shift
    (3.0, "L1", "dev-01", "online"),
    (2.5, "L1", "dev-01", "offline"),
    (2.0, "L1", "dev-09", "online"),  # a device heard of only before the shift
    (4.0, "L1", "dev-02", "online"),
    (10.0, "L3", "dev-31", "online"),  # a line known only from its history
    (9.0, "L3", "dev-31", "offline"),
]


@pytest.fixture(scope="module")
def shift() -> Shift:
    return build_shift()


@pytest.fixture(scope="module")
def db(pg: Postgres, shift: Shift) -> Iterator[str]:
    name = f"views_bounded_{os.getpid()}"
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = pg.dsn(name)
        fill(dsn, shift)
        rows = [
            {"ts": START - timedelta(days=d), "line_id": line, "device_id": dev, "state": st}
            for d, line, dev, st in HISTORY
        ]
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO device_status (ts, line_id, device_id, v, state)"
                " VALUES (%(ts)s, %(line_id)s, %(device_id)s, 1, %(state)s)",
                rows,
            )
            track_last_status(cur, [tuple(r.get(c) for c in LAST_STATUS_COLUMNS) for r in rows])
        yield dsn
    finally:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(dsn: str, sql: str, start: datetime, end: datetime, values: dict[str, Any]) -> list[Any]:
    """``sql`` as Grafana sends it, run as ``sqal_reader``; its rows, sorted (ties may swap)."""
    text = gm.expand(sql, start=start, end=end, variables=values, interval_s=300)
    with psycopg.connect(dsn) as conn:
        conn.execute("SET ROLE sqal_reader")
        rows = conn.execute(text.encode()).fetchall()
    return sorted(rows, key=repr)


def test_the_reference_covers_every_bounded_query() -> None:
    assert set(bounded()) == set(UNBOUNDED)
    for name, sql in bounded().items():
        assert sql != UNBOUNDED[name], f"{name} is unchanged"


@pytest.mark.parametrize("window", RANGES)
@pytest.mark.parametrize("choice", DEVICE_CHOICES)
@pytest.mark.parametrize("line", ["L1", "L3"])
@pytest.mark.parametrize("name", ["Devices online", "Devices", "Presence", "$device"])
def test_fleet_panels_and_device_variable_answer_as_before(
    db: str, name: str, line: str, choice: str, window: str
) -> None:
    start, end = RANGES[window]
    values = {"line": line, "device": [*DEVICE_CHOICES[choice], "dev-31"]}
    want = run(db, UNBOUNDED[name], start, end, values)
    assert run(db, bounded()[name], start, end, values) == want


def test_the_fixture_exercises_history_and_every_state(db: str) -> None:
    """The comparisons above would pass on empty answers too: they are not empty."""
    start, end = RANGES["history only"]
    values = {"line": "L1", "device": DEVICE_CHOICES["all"]}
    devices = run(db, bounded()["Devices"], start, end, values)
    assert [(d[0], d[1]) for d in devices] == [
        ("dev-01", "offline"),
        ("dev-02", "online"),
        ("dev-09", "online"),
    ]
    start, end = RANGES["after the reboot"]
    presence = run(db, bounded()["Presence"], start, end, values)
    first = {p[1]: p[2] for p in presence if p[0] == start}
    assert first == {"dev-01": 1, "dev-02": 1, "dev-03": 1, "dev-09": 1}
    assert run(db, bounded()["$line"], *RANGES["before anything"], {}) == [
        ("L1",),
        ("L2",),
        ("L3",),
    ]


@pytest.mark.parametrize("window", ["shift", "history only"])
def test_line_variable_answers_as_before(db: str, window: str) -> None:
    start, end = RANGES[window]
    assert run(db, bounded()["$line"], start, end, {}) == run(
        db, UNBOUNDED["$line"], start, end, {}
    )


@pytest.mark.parametrize("name", ["Height map of the selected sample", "Selected sample"])
def test_the_selected_sample_is_found_in_the_range_as_before(
    db: str, shift: Shift, name: str
) -> None:
    start, end = RANGES["shift"]
    values = {
        "line": "L1",
        "device": DEVICE_CHOICES["all"],
        "sample": shift.sample_with_map,
        "d0_mm": "260",
    }
    want = run(db, UNBOUNDED[name], start, end, values)
    assert want
    assert run(db, bounded()[name], start, end, values) == want


@pytest.mark.parametrize(
    ("minutes", "want"),
    [
        (120, {"dev-01": "online", "dev-02": "online", "dev-03": "offline"}),
        (60.1, {"dev-01": "online", "dev-02": "offline", "dev-03": "online"}),
    ],
)
def test_the_shift_report_takes_each_device_s_last_status_before_the_end(
    db: str, minutes: float, want: dict[str, str]
) -> None:
    """The report's per-device presence probes the index per device, as the Fleet board does."""
    with psycopg.connect(db) as conn:
        facts = shift_facts(conn, "L1", START, START + minutes * M, timedelta(minutes=5))
    assert {d.device_id: d.state for d in facts.devices} == want
