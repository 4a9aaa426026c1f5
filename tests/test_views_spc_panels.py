"""The Quality board's SPC panels run on the real database and agree with :mod:`views.spc`.

The panels' subgroups are 5-minute slots and their baseline the dashboard's range, so the pure
core is given the same slots of the same stored masses (``real`` columns: float32) and must give
the same centre lines, limits, capability and rule flags, within rounding.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from embedded import Postgres
from tests import grafana_macros as gm
from tests.views_data import END, START, Shift, build_shift, fill
from views.boards.common import ANY_LOT
from views.boards.spc import C4_EXACT_MAX, SLOT
from views.spc import RULES, Subgroups, c4, capability, p_chart, western_electric, xbar_s_limits

from .test_views_dashboards import VALUES, as_dicts, panel

SLOT_S = 300
QN, TNE, OVERFILL = 400.0, 12.0, 0.12
XBAR = "X̄ chart: mean mass per slot"
S = "s chart: mass sd per slot"
CAPABILITY = "Capability vs T1 and the giveaway limit"
SUBGROUPS = "SPC subgroups and rule breaks"
P = "p chart: reject rate per slot"


@pytest.fixture(scope="module")
def shift() -> Shift:
    return build_shift()


@pytest.fixture(scope="module")
def db(pg: Postgres, shift: Shift) -> Iterator[str]:
    name = f"views_spc_{os.getpid()}"
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        fill(pg.dsn(name), shift)
        yield pg.dsn(name)
    finally:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(
    conn: psycopg.Connection,
    title: str,
    values: dict[str, Any],
    start: datetime = START,
    end: datetime = END,
) -> list[dict[str, Any]]:
    """A Quality panel's rows, its SQL expanded as Grafana would, run as ``sqal_reader``."""
    text = gm.expand(panel("sqal-quality", title).sql, start=start, end=end, variables=values)
    conn.execute("SET ROLE sqal_reader")
    try:
        cur = conn.execute(text.encode())
        return as_dicts([d.name for d in cur.description or []], cur.fetchall())
    finally:
        conn.execute("RESET ROLE")


def slots(trays: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Trays per 5-minute slot (time_bucket's, aligned on the epoch for 300 s), in time order."""
    out: dict[int, list[dict[str, Any]]] = {}
    for r in sorted(trays, key=lambda r: r["ts"]):
        out.setdefault(int(r["ts"].timestamp()) // SLOT_S, []).append(r)
    return out


def stored(r: dict[str, Any]) -> float:
    """A tray's mass as the panels read it: the weight (float8), else m̂ (a ``real``)."""
    if r.get("weight_mass_g") is not None:
        return float(r["weight_mass_g"])
    return float(np.float32(r["tof_mass_g"]))


def test_slot_and_c4_table_are_what_the_docs_say() -> None:
    assert gm.parse_interval_s(SLOT) == SLOT_S
    # above the table, the series is within 1.1e-7 of c4 (module doc of views.boards.spc)
    n = np.arange(C4_EXACT_MAX + 1, 2000)
    series = 1 - 0.25 / n - 0.21875 / n**2 - 0.1484375 / n**3
    assert np.max(np.abs(series / c4(n) - 1)) < 1.1e-7
    assert np.max(np.abs((1 - series**2) / (1 - c4(n) ** 2) - 1)) < 1.1e-5
    assert "(2, 0.79788456), " in panel("sqal-quality", XBAR).sql
    assert "(25, 0.98964038))" in panel("sqal-quality", XBAR).sql


@pytest.mark.parametrize("lot", [ANY_LOT, "L1-A"])
def test_xbar_and_s_charts_match_the_pure_core_on_the_same_slots(
    db: str, shift: Shift, lot: str
) -> None:
    trays = [r for r in shift.results_of("L1") if lot == ANY_LOT or r["lot_id"] == lot]
    groups = [np.array([stored(r) for r in g]) for g in slots(trays).values() if len(g) >= 2]
    sub = Subgroups.of(groups)
    lim = xbar_s_limits(sub, sub)
    flags = western_electric(sub.mean, lim.grand_mean, lim.sigma / np.sqrt(sub.n))
    with psycopg.connect(db) as conn:
        xbar = query(conn, XBAR, {**VALUES, "lot": lot})
        s = query(conn, S, {**VALUES, "lot": lot})
        table = query(conn, SUBGROUPS, {**VALUES, "lot": lot})
    assert len(xbar) == len(s) == len(table) == sub.n.size
    assert len(xbar) == (12 if lot == "L1-A" else 24)  # L1-A runs the first hour
    got = np.array([[x["mean_g"], x["centre_g"], x["lcl_g"], x["ucl_g"]] for x in xbar], float)
    want = np.column_stack([sub.mean, np.full(sub.n.size, lim.grand_mean), lim.x_lcl, lim.x_ucl])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert [x["flagged_g"] is not None for x in xbar] == flags.any(axis=1).tolist()
    got = np.array([[x["sd_g"], x["lcl_g"], x["ucl_g"]] for x in s], float)
    np.testing.assert_allclose(got, np.column_stack([sub.sd, lim.s_lcl, lim.s_ucl]), rtol=1e-6)
    # the centre of an s chart subgroup of n is c4(n)·σ̂ (s̄ when every slot has the same size)
    np.testing.assert_allclose([x["centre_g"] for x in s], c4(sub.n) * lim.sigma, rtol=1e-6)
    assert [t["trays"] for t in reversed(table)] == sub.n.tolist()


def test_capability_stat_is_the_pure_cores_against_t1_and_the_giveaway_limit(
    db: str, shift: Shift
) -> None:
    for lot in (ANY_LOT, "L1-B"):
        trays = [r for r in shift.results_of("L1") if lot == ANY_LOT or r["lot_id"] == lot]
        groups = [np.array([stored(r) for r in g]) for g in slots(trays).values() if len(g) >= 2]
        sub = Subgroups.of(groups)
        sigma = xbar_s_limits(sub, sub).sigma
        want = capability(
            np.array([stored(r) for r in trays]), sigma, QN - TNE, QN * (1 + OVERFILL)
        )
        with psycopg.connect(db) as conn:
            [got] = query(conn, CAPABILITY, {**VALUES, "lot": lot})
        assert got["lsl_g"] == pytest.approx(388.0)
        assert got["usl_g"] == pytest.approx(448.0)
        for k in ("cp", "cpk", "pp", "ppk"):
            assert float(got[k]) == pytest.approx(getattr(want, k), rel=1e-6), k


def test_p_chart_matches_the_pure_core_per_slot(db: str, shift: Shift) -> None:
    per = slots(shift.results_of("L1"))
    n = np.array([len(g) for g in per.values()])
    r = np.array([sum(t["final_grade"] == "REJECT" for t in g) for g in per.values()])
    assert r.sum() > 0
    want = p_chart(r, n, float(r.sum() / n.sum()))
    with psycopg.connect(db) as conn:
        got = query(conn, P, VALUES)
    assert [int(g["time"].timestamp()) // SLOT_S for g in got] == list(per)
    np.testing.assert_allclose([g["reject_rate"] for g in got], want.p)
    np.testing.assert_allclose([g["centre"] for g in got], want.p_bar)
    np.testing.assert_allclose([g["lcl"] for g in got], want.lcl)
    np.testing.assert_allclose([g["ucl"] for g in got], want.ucl)
    assert [g["flagged"] is not None for g in got] == want.out.tolist()


# A known series on a line of its own: 5 trays a slot spread −2 … +2 g around the slot's mean;
# the mean steps 6 g up at slot 10 (rule 1), and from slot 14 sits 2 g above for ten slots
# (rules 3 and 4; the first ten slots, below the range's mean, make a run of eight too). Rows
# are written in a transaction that is rolled back.
KNOWN_START = START
KNOWN_MEANS = [400.3, 399.7] * 5 + [406.0, 399.0, 400.0, 399.5] + [402.0] * 10


def _known_rows() -> list[dict[str, Any]]:
    rows = []
    for i, mean in enumerate(KNOWN_MEANS):
        for j, d in enumerate((-2.0, -1.0, 0.0, 1.0, 2.0)):
            rows.append(
                {"ts": KNOWN_START + timedelta(seconds=SLOT_S * i + 30 * j + 1), "mass": mean + d,
                 "weighed": i == 3 and j == 0, "mode": "production"}
            )  # fmt: skip
    # a lone tray in a slot of its own (no spread: not a subgroup) and a calibration tray
    end = KNOWN_START + timedelta(seconds=SLOT_S * len(KNOWN_MEANS) + 1)
    rows.append({"ts": end, "mass": 420.0, "weighed": False, "mode": "production"})
    rows.append({"ts": KNOWN_START + timedelta(seconds=62), "mass": 5.0, "weighed": False,
                 "mode": "calibration"})  # fmt: skip
    return rows


def _write_known(conn: psycopg.Connection) -> None:
    for k, r in enumerate(_known_rows()):
        # the weighed tray's estimate is far off: the panels must read the checkweigher's mass
        tof = r["mass"] - 30.0 if r["weighed"] else r["mass"]
        conn.execute(
            "INSERT INTO results (ts, line_id, device_id, sample_id, v, profile, final_grade,"
            " confidence, defects, tof_present, spectral_present, analyzer_version,"
            " processing_ms, tof_mass_g, weight_mass_g, mode)"
            " VALUES (%s, 'SPC', 'spc-01', %s, 1, 'foie_gras_lobe_400g', 'A', 0.9, '{}', true,"
            " false, 'test', 1.0, %s, %s, %s)",
            (r["ts"], f"spc-01-000000-{k:08d}", tof, r["mass"] if r["weighed"] else None,
             r["mode"]),
        )  # fmt: skip


def test_western_electric_flags_in_sql_are_the_pure_cores_on_a_known_series(db: str) -> None:
    rows = [r for r in _known_rows() if r["mode"] == "production"]
    groups = [
        np.array([float(np.float32(t["mass"])) if not t["weighed"] else t["mass"] for t in g])
        for g in slots(rows).values()
    ]
    sub = Subgroups.of(groups)
    assert sub.n.size == len(KNOWN_MEANS)
    lim = xbar_s_limits(sub, sub)
    flags = western_electric(sub.mean, lim.grand_mean, lim.sigma / np.sqrt(sub.n))
    # the series breaks each rule where it was built to
    assert [[r for r in RULES if flags[i, r - 1]] for i in (7, 10, 13, 17, 21)] == [
        [4],
        [1],
        [2, 3],
        [3],
        [3, 4],
    ]
    values = {**VALUES, "line": "SPC", "device": ["spc-01"], "lot": ANY_LOT}
    end = KNOWN_START + timedelta(hours=3)
    with psycopg.connect(db) as conn:
        try:
            _write_known(conn)
            xbar = query(conn, XBAR, values, end=end)
            table = query(conn, SUBGROUPS, values, end=end)
        finally:
            conn.rollback()
    np.testing.assert_allclose([x["mean_g"] for x in xbar], sub.mean, rtol=1e-9)
    np.testing.assert_allclose([x["ucl_g"] for x in xbar], lim.x_ucl, rtol=1e-6)
    assert [x["flagged_g"] is not None for x in xbar] == flags.any(axis=1).tolist()
    words = {1: "1: beyond 3σ", 2: "2: two of three", 3: "3: four of five", 4: "4: eight on"}
    for t, f in zip(reversed(table), flags, strict=True):
        assert [r for r in RULES if words[r] in t["rules"]] == [r for r in RULES if f[r - 1]]
