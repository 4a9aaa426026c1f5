"""The packers' rules (Directive 76/211/EEC Annex II) against hand-computed lots (issue #19 item 3).

Four lots of ``foie_gras_lobe_400g`` on line ``PK`` (Qn 400 g, TNE 12 g: T1 388 g, T2 376 g),
seeded in a real database, judged three ways that must agree with the hand figures: the pure
:func:`views.packers.packers_rules`, ``sqal lot rules --json`` (storage's query + the pure
core) and the Quality dashboard's panel (SQL computed in the database, as Grafana sends it).

Hand figures (s: sample sd, h = t(0.975, n − 1)·s/√n, Φ the normal distribution function):

- ``LOT-OK``: 10 × 402 g and 10 × 408 g, m̂ with σ 6 g. Mean 405, s = √(20·3²/19) = 3.07794,
  h = 2.09302·3.07794/√20 = 1.44052. Below T1 expected 10·Φ(−14/6) + 10·Φ(−20/6) =
  0.098153 + 0.004291 = 0.102444 (0.51 %). Complies. Five calibration trays of ~5 g stamped
  with the lot must not count (they would fail it).
- ``LOT-T1``: 97 × 404 g and 3 × 385 g from the checkweigher (σ 0.5 g; m̂ 420 g, ignored).
  Mean 403.43, s = √((97·0.57² + 3·18.43²)/99) = 3.25749. 3 % below T1 > 2.5 %: fails, rule
  ``t1_share``.
- ``LOT-T2``: 39 × 406 g and 1 × 370 g, σ 4 g. Mean 405.1, s = √((39·0.9² + 35.1²)/39) =
  5.69210, h = 2.02269·5.69210/√40 = 1.82040. One pack below T2 (and 1 below T1, not more
  than 2.5 % of 40): fails, rule ``below_t2``. Expected below T2 Φ(1.5) = 0.933193.
- ``LOT-RISK``: 10 × 398 g and 10 × 404 g, σ 5 g. Mean 401, h = 1.44052: the interval
  [399.5595, 402.4405] reaches below Qn: at risk, rule ``mean_unproven``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from embedded import Postgres
from storage.migrate import migrate
from tests import grafana_macros as gm
from tests.fix_pg import new_database
from views.boards import build_boards
from views.packers import Verdict, packers_rules

T0 = datetime(2026, 5, 4, 6, 0, tzinfo=UTC)
LINE = "PK"
PROFILE = "foie_gras_lobe_400g"


def packs(*groups: tuple[int, float]) -> list[float]:
    return [m for n, m in groups for _ in range(n)]


LOTS: dict[str, dict[str, Any]] = {
    "LOT-OK": {"mass": packs((10, 402), (10, 408)), "sigma": 6.0, "weighed": False},
    "LOT-T1": {"mass": packs((97, 404), (3, 385)), "sigma": 0.5, "weighed": True},
    "LOT-T2": {"mass": packs((39, 406), (1, 370)), "sigma": 4.0, "weighed": False},
    "LOT-RISK": {"mass": packs((10, 398), (10, 404)), "sigma": 5.0, "weighed": False},
}
HAND: dict[str, dict[str, Any]] = {
    "LOT-OK": {"n": 20, "mean_g": 405.0, "sd_g": 3.07794, "ci_low_g": 403.5595,
               "ci_high_g": 406.4405, "below_t1": 0, "expected_below_t1": 0.102444,
               "below_t2": 0, "giveaway_g": 5.0, "giveaway_pct": 1.25,
               "verdict": "complies", "rule": None},
    "LOT-T1": {"n": 100, "mean_g": 403.43, "sd_g": 3.25749, "below_t1": 3,
               "expected_below_t1": 3.0, "below_t2": 0, "giveaway_g": 3.43,
               "giveaway_pct": 0.8575, "verdict": "fails", "rule": "t1_share"},
    "LOT-T2": {"n": 40, "mean_g": 405.1, "sd_g": 5.69210, "ci_low_g": 403.2796,
               "ci_high_g": 406.9204, "below_t1": 1, "below_t2": 1,
               "expected_below_t2": 0.933193, "giveaway_g": 5.1, "verdict": "fails",
               "rule": "below_t2"},
    "LOT-RISK": {"n": 20, "mean_g": 401.0, "ci_low_g": 399.5595, "ci_high_g": 402.4405,
                 "expected_below_t1": 0.234373, "verdict": "at risk", "rule": "mean_unproven"},
}  # fmt: skip
CALIBRATION_TRAYS = 5


def check(name: str, got: dict[str, Any], abs_tol: float = 2e-4) -> None:
    for key, want in HAND[name].items():
        if isinstance(want, float):
            assert got[key] == pytest.approx(want, abs=abs_tol), (name, key)
        else:
            assert got[key] == want, (name, key)


def _rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    lots, results = [], []
    t = T0
    for name, spec in LOTS.items():
        start = t
        for k, m in enumerate(spec["mass"]):
            row = {"ts": t, "device_id": "pk-01", "sample_id": f"{name}-{k:04d}",
                   "lot_id": name, "mode": "production", "final_grade": "A",
                   "tof_mass_g": 420.0 if spec["weighed"] else m,
                   "tof_sigma_mass_g": 16.8 if spec["weighed"] else spec["sigma"]}  # fmt: skip
            if spec["weighed"]:
                row |= {"weight_mass_g": m, "weight_sigma_g": spec["sigma"]}
            results.append(row)
            t += timedelta(seconds=10)
        if name == "LOT-OK":
            for k in range(CALIBRATION_TRAYS):
                results.append({"ts": t, "device_id": "pk-02", "sample_id": f"cal-{k}",
                                "lot_id": name, "mode": "calibration", "final_grade": "REJECT",
                                "tof_mass_g": 5.0, "tof_sigma_mass_g": 2.0})  # fmt: skip
                t += timedelta(seconds=10)
        lots.append({"line_id": LINE, "lot_id": name, "product": PROFILE, "qn_g": 400.0,
                     "tne_g": 12.0, "started": start, "ended": t})  # fmt: skip
        t += timedelta(minutes=5)
    return lots, results


@pytest.fixture(scope="module")
def db(pg: Postgres) -> Iterator[str]:
    with new_database(pg) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
        lots, results = _rows()
        fixed = {"line_id": LINE, "v": 1, "profile": PROFILE, "confidence": 0.9, "defects": [],
                 "tof_present": True, "spectral_present": False, "analyzer_version": "t",
                 "processing_ms": 1.0}  # fmt: skip
        cols = sorted({k for r in results for k in r} | set(fixed))
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            with cur.copy(f"COPY results ({', '.join(cols)}) FROM STDIN") as cp:
                for r in results:
                    cp.write_row([r.get(c, fixed.get(c)) for c in cols])
            lot_cols = list(lots[0])
            with cur.copy(f"COPY lots ({', '.join(lot_cols)}) FROM STDIN") as cp:
                for x in lots:
                    cp.write_row([x[c] for c in lot_cols])
        yield dsn


@pytest.mark.parametrize("name", list(LOTS))
def test_the_pure_rules_give_the_hand_figures(name: str) -> None:
    spec = LOTS[name]
    mass = np.array(spec["mass"], dtype=np.float64)
    r = packers_rules(mass, np.full(mass.size, spec["sigma"]), 400.0, 12.0)
    check(name, r.as_dict())


def test_a_pack_without_sigma_counts_as_measured_and_one_pack_is_at_risk() -> None:
    r = packers_rules(np.array([380.0, 410.0]), np.array([np.nan, 0.0]), 400.0, 12.0)
    assert (r.below_t1, r.expected_below_t1) == (1, 1.0)  # 380 < 388 for sure, 410 not
    one = packers_rules(np.array([405.0]), np.array([2.0]), 400.0, 12.0)
    assert (one.verdict, one.rule) == (Verdict.AT_RISK, "few_packs")
    assert one.as_dict()["ci_low_g"] is None


@pytest.mark.parametrize("name", list(LOTS))
def test_sqal_lot_rules_reads_the_lot_and_gives_the_hand_figures(db: str, name: str) -> None:
    from app.cli import app

    done = CliRunner().invoke(app, ["lot", "rules", "--lot", name, "--db", db, "--json"])
    assert done.exit_code == (1 if HAND[name]["verdict"] == "fails" else 0), done.output
    doc = json.loads(done.stdout)
    assert doc["line"] == LINE
    [group] = doc["groups"]
    assert group["lot"] == name
    check(name, group)
    assert group["weighed"] == (group["n"] if LOTS[name]["weighed"] else 0)
    # The calibration trays stamped with LOT-OK are reported apart, never judged.
    calibration = doc["not_counted"].get("calibration", {"trays": 0})["trays"]
    assert calibration == (CALIBRATION_TRAYS if name == "LOT-OK" else 0)


def test_a_shift_is_judged_per_lot_and_the_text_names_the_deciding_rule(db: str) -> None:
    from app.cli import app

    args = ["lot", "rules", "--line", LINE, "--since", T0.isoformat(), "--until",
            (T0 + timedelta(hours=2)).isoformat(), "--db", db]  # fmt: skip
    done = CliRunner().invoke(app, [*args, "--json"])
    assert done.exit_code == 1
    assert [g["lot"] for g in json.loads(done.stdout)["groups"]] == list(LOTS)
    text = CliRunner().invoke(app, args).stdout
    assert "lot LOT-T1: FAILS — more than 2.5 % of packs below T1 = Qn − TNE" in text
    assert "lot LOT-OK: COMPLIES — every rule met" in text
    assert "calibration: 5 trays on 1 devices, not counted" in text


def test_the_quality_dashboard_computes_the_same_rules_in_the_database(db: str) -> None:
    board = next(b for b in build_boards() if b.uid == "sqal-quality")
    query = next(q for t, q in board.panels if t.startswith("Packers' rules"))
    values = {"line": LINE, "device": ["pk-01", "pk-02"], "lot": "(any)"}
    end = T0 + timedelta(hours=2)
    text = gm.expand(query.sql, start=T0, end=end, variables=values)
    with psycopg.connect(db) as conn:
        conn.execute("SET ROLE sqal_reader")
        cur = conn.execute(text.encode())
        cols = [d.name for d in cur.description or []]
        rows = {r[0]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}
    assert set(rows) == set(LOTS)
    texts = {"t1_share": "more than 2.5 % of packs below T1 = Qn − TNE",
             "below_t2": "a pack below T2 = Qn − 2·TNE",
             "mean_unproven": "the mean may be below Qn (95 % lower bound < Qn)",
             None: "every rule met"}  # fmt: skip
    for name, row in rows.items():
        got = {k: (float(v) if hasattr(v, "as_tuple") else v) for k, v in row.items()}
        got |= {
            "n": got["packs"],
            "expected_below_t1": got["expected_below_t1_share"] * got["packs"],
        }
        got["rule"] = next(code for code, t in texts.items() if t == got["rule"])
        check(name, got, abs_tol=1e-3)  # the panel rounds grams to 3 decimals
    # One lot chosen in $lot: only its row.
    one = gm.expand(query.sql, start=T0, end=end, variables={**values, "lot": "LOT-T2"})
    with psycopg.connect(db) as conn:
        assert [r[0] for r in conn.execute(one.encode())] == ["LOT-T2"]


def test_the_report_of_a_lot_carries_its_rules_and_counts_calibration_apart(
    db: str, tmp_path: Path
) -> None:
    from app.cli import app

    out = tmp_path / "ok.pdf"
    done = CliRunner().invoke(
        app, ["report", "--lot", "LOT-OK", "--db", db, "--out", str(out), "--json"]
    )
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["trays"] == 20
    assert doc["not_counted"] == {"calibration": {"trays": CALIBRATION_TRAYS, "devices": 1}}
    [rules] = doc["packers_rules"]
    check("LOT-OK", rules)
    text = CliRunner().invoke(app, ["report", "--lot", "LOT-OK", "--db", db, "--out", str(out)])
    assert "calibration runs: 5 trays on 1 device, not counted" in text.stdout
    assert out.stat().st_size > 0
