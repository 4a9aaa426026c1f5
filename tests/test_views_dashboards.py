"""Every panel's SQL runs on a filled TimescaleDB as Grafana would send it, and returns its columns.

There is no Grafana server here: tests/grafana_macros.py expands the macros and variables the
way Grafana's PostgreSQL data source does, and the queries run as the read-only ``sqal_reader``
role the provisioned data source uses.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from embedded import Postgres
from tests import grafana_macros as gm
from tests.views_data import END, START, Shift, build_shift, fill
from views.boards import build_boards
from views.boards.common import ANY_LOT
from views.dashboards import DATASOURCE_UID, Board, PanelQuery
from views.packers import packers_rules

ROOT = Path(__file__).resolve().parent.parent
BOARDS = build_boards()
PANELS = [(b, title, q) for b in BOARDS for title, q in b.panels]
DEVICES = ["dev-01", "dev-02", "dev-03"]
VALUES: dict[str, str | list[str]] = {
    "line": "L1",
    "device": DEVICES,
    "profile": "foie_gras_lobe_400g",
    "d0_mm": "260",
    "lot": ANY_LOT,
}
CENT = Decimal("0.01")


@pytest.fixture(scope="module")
def shift() -> Shift:
    return build_shift()


@pytest.fixture(scope="module")
def db(pg: Postgres, shift: Shift) -> Iterator[str]:
    """One filled database for the module (filling takes a second; every test only reads)."""
    name = f"views_dash_{os.getpid()}"
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        fill(pg.dsn(name), shift)
        yield pg.dsn(name)
    finally:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(dsn: str, sql: str, values: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Expand ``sql`` for the shift's range and run it as ``sqal_reader``; columns and rows."""
    text = gm.expand(sql, start=START, end=END, variables=values, interval_s=300)
    with psycopg.connect(dsn) as conn:
        conn.execute("SET ROLE sqal_reader")
        cur = conn.execute(text.encode())
        cols = [d.name for d in cur.description or []]
        return cols, cur.fetchall()


def panel(uid: str, title: str) -> PanelQuery:
    return next(q for b, t, q in PANELS if b.uid == uid and t == title)


def as_dicts(cols: list[str], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(cols, r, strict=True)) for r in rows]


@pytest.mark.parametrize(
    ("board", "title", "query"), PANELS, ids=[f"{b.uid}:{t}" for b, t, _ in PANELS]
)
def test_every_panel_query_returns_rows_with_its_columns(
    db: str, shift: Shift, board: Board, title: str, query: PanelQuery
) -> None:
    cols, rows = run(db, query.sql, {**VALUES, "sample": shift.sample_with_map})
    assert rows, f"{title}: no rows"
    missing = set(query.columns) - set(cols)
    assert not missing, f"{title}: query lacks {sorted(missing)} (has {cols})"
    if query.fmt == "time_series":
        assert cols[0] == "time"
        times = [r[0] for r in rows]
        assert times == sorted(times), f"{title}: a time series must be sorted by time"
        assert all(START <= t <= END for t in times)


def test_variable_queries_offer_the_lines_devices_profiles_and_samples(
    db: str, shift: Shift
) -> None:
    by_board = {b.uid: {v.name: v for v in b.variables} for b in BOARDS}
    quality = by_board["sqal-quality"]
    values = {**VALUES, "sample": shift.sample_with_map}

    def options(name: str) -> list[str]:
        sql = quality[name].sql
        assert sql is not None
        return [str(r[0]) for r in run(db, sql, values)[1]]

    assert options("line") == ["L1", "L2"]
    assert options("device") == DEVICES
    assert options("lot") == [ANY_LOT, "L1-B", "L1-A"]
    assert options("profile") == ["foie_gras_lobe_400g"]
    samples = options("sample")
    assert shift.sample_with_map in samples
    assert len(samples) == 200
    assert options("d0_mm") == ["260.0"]


def test_line_overview_numbers_match_the_rows_written(db: str, shift: Shift) -> None:
    l1 = shift.results_of("L1")
    grades = Counter(r["final_grade"] for r in l1)
    _, rows = run(db, panel("sqal-line-overview", "Trays").sql, VALUES)
    assert rows == [(len(l1),)]
    cols, rows = run(db, panel("sqal-line-overview", "Grade mix").sql, VALUES)
    assert as_dicts(cols, rows) == [{g: grades[g] for g in ("A", "B", "C", "REJECT")}]
    _, rows = run(db, panel("sqal-line-overview", "Reject rate").sql, VALUES)
    assert rows[0][0] == pytest.approx(grades["REJECT"] / len(l1))
    cols, rows = run(db, panel("sqal-line-overview", "Latest results").sql, VALUES)
    latest = max(l1, key=lambda r: r["ts"])
    assert as_dicts(cols, rows)[0]["sample_id"] == latest["sample_id"]
    assert len(rows) == 50


def test_line_overview_counts_decisions_and_keeps_results_without_one_apart(
    db: str, shift: Shift
) -> None:
    l1 = shift.results_of("L1")
    decisions = Counter(r["decision"] for r in l1)
    assert decisions[None] > 0
    assert decisions["HOLD"] > 0
    cols, rows = run(db, panel("sqal-line-overview", "Decisions").sql, VALUES)
    assert as_dicts(cols, rows) == [
        {
            "PASS": decisions["PASS"],
            "HOLD": decisions["HOLD"],
            "REJECT": decisions["REJECT"],
            "no decision": decisions[None],
        }
    ]
    decided = len(l1) - decisions[None]
    cols, rows = run(db, panel("sqal-line-overview", "Decision rates").sql, VALUES)
    rates = as_dicts(cols, rows)[0]
    for d in ("PASS", "HOLD", "REJECT"):
        assert rates[d] == pytest.approx(decisions[d] / decided)

    # per 5-minute bucket ($__interval of the run), over the trays with a decision only
    per_bucket: dict[int, Counter[str]] = {}
    for r in l1:
        if r["decision"] is not None:
            per_bucket.setdefault(int(r["ts"].timestamp()) // 300, Counter())[r["decision"]] += 1
    cols, rows = run(db, panel("sqal-line-overview", "HOLD and REJECT rates").sql, VALUES)
    series = as_dicts(cols, rows)
    assert len(series) == len(per_bucket)
    for point in series:
        c = per_bucket[int(point["time"].timestamp()) // 300]
        assert point["HOLD"] == pytest.approx(c["HOLD"] / c.total())
        assert point["REJECT"] == pytest.approx(c["REJECT"] / c.total())

    cols, rows = run(db, panel("sqal-line-overview", "Latest results").sql, VALUES)
    latest = max(l1, key=lambda r: r["ts"])
    first = as_dicts(cols, rows)[0]
    assert first["decision"] == latest["decision"]
    assert float(first["p_reject"]) == pytest.approx(latest["p_reject"], abs=1e-3)


def test_quality_hold_reasons_count_each_held_trays_top_defect_codes(db: str, shift: Shift) -> None:
    want = shift.hold_reasons("L1")
    # the fixture holds trays for a defect, for a score alone, and one with two codes tied at 1.0
    assert want["(score only)"] > 0
    assert want["zones_invalid"] == 1
    cols, rows = run(db, panel("sqal-quality", "HOLD reasons").sql, VALUES)
    got = as_dicts(cols, rows)
    assert Counter({g["reason"]: g["trays"] for g in got}) == want
    assert [g["trays"] for g in got] == sorted((g["trays"] for g in got), reverse=True)

    holds = sorted(
        (r for r in shift.results_of("L1") if r["decision"] == "HOLD"),
        key=lambda r: r["ts"],
        reverse=True,
    )
    cols, rows = run(db, panel("sqal-quality", "HOLD trays to re-check").sql, VALUES)
    table = as_dicts(cols, rows)
    assert [t["sample_id"] for t in table] == [r["sample_id"] for r in holds[:50]]
    assert {t["decision"] for t in table} == {"HOLD"}
    for t, r in zip(table, holds, strict=False):
        assert float(t["p_reject"]) == pytest.approx(r["p_reject"], abs=1e-3)
        codes = sorted(r["p_defects"].items(), key=lambda kv: (-kv[1], kv[0]))
        # jsonb keeps the decimal text (0.975) and numeric rounds half up
        text = ", ".join(f"{k} {Decimal(str(v)).quantize(CENT, ROUND_HALF_UP)}" for k, v in codes)
        assert t["p_defects"] == (text or None)


def test_fleet_shows_presence_seq_gaps_duplicates_and_dead_letters(db: str, shift: Shift) -> None:
    cols, rows = run(db, panel("sqal-fleet", "Devices online").sql, VALUES)
    assert as_dicts(cols, rows) == [{"online": 2, "offline": 1}]
    cols, rows = run(db, panel("sqal-fleet", "Devices").sql, VALUES)
    states = {d["device_id"]: d["state"] for d in as_dicts(cols, rows)}
    assert states == {"dev-01": "online", "dev-02": "online", "dev-03": "offline"}

    cols, rows = run(db, panel("sqal-fleet", "Seq integrity per device").sql, VALUES)
    table = {(d["device_id"], d["sensor"]): d for d in as_dicts(cols, rows)}
    assert (table["dev-01", "tof"]["missing"], table["dev-01", "tof"]["duplicates"]) == (2, 1)
    assert table["dev-02", "tof"]["boots"] == 2
    assert table["dev-02", "tof"]["missing"] == 0
    spectral_seqs = sorted(s["seq"] for s in shift.spectral if s["device_id"] == "dev-01")
    expected_missing = spectral_seqs[-1] - spectral_seqs[0] + 1 - len(spectral_seqs)
    assert table["dev-01", "spectral"]["missing"] == expected_missing

    cols, rows = run(db, panel("sqal-fleet", "ToF seq gaps and duplicates").sql, VALUES)
    per_device = Counter[str]()
    dups = Counter[str]()
    for d in as_dicts(cols, rows):
        per_device[d["metric"]] += d["missing"]
        dups[d["metric"]] += d["duplicates"]
    assert per_device == Counter({"dev-01": 2})
    assert dups == Counter({"dev-01": 1})

    cols, rows = run(db, panel("sqal-fleet", "Dead letters by reason").sql, VALUES)
    reasons = Counter[str]()
    for d in as_dicts(cols, rows):
        reasons[d["metric"]] += d["messages"]
    assert reasons == Counter({"bad_json": 5, "schema": 3, "bad_topic": 2})


def test_quality_mass_bands_and_height_map_match_the_rows(db: str, shift: Shift) -> None:
    l1 = shift.results_of("L1")
    qn, tne = 400.0, 12.0
    cols, rows = run(db, panel("sqal-quality", "Mass distribution vs Qn and TNE").sql, VALUES)
    bins = as_dicts(cols, rows)
    assert sum(b["below_2tne"] for b in bins) == sum(r["tof_mass_g"] < qn - 2 * tne for r in l1)
    assert sum(b["below_tne"] for b in bins) == sum(
        qn - 2 * tne <= r["tof_mass_g"] < qn - tne for r in l1
    )
    assert sum(b["below_tne"] + b["below_2tne"] + b["within_tne"] for b in bins) == len(l1)
    # bins are TNE/2 wide and anchored at Qn: Qn − TNE is a bin edge
    assert "388.0" in {b["bin_g"] for b in bins}

    frame = next(f for f in shift.tof if f["sample_id"] == shift.sample_with_map)
    cols, rows = run(
        db, panel("sqal-quality", "Height map of the selected sample").sql,
        {**VALUES, "sample": shift.sample_with_map},
    )  # fmt: skip
    grid = as_dicts(cols, rows)
    assert [g["zone_col"] for g in grid] == list(range(8))
    for r in range(8):
        for c in range(8):
            i = r * 8 + c
            want = 260 - frame["distance_mm"][i] if frame["target_status"][i] in (5, 6, 9) else None
            assert grid[c][f"row {r}"] == want


def test_calibration_trays_count_apart_and_nowhere_else(db: str, shift: Shift) -> None:
    calibration = shift.not_product("L1")
    assert len(calibration) == 12
    for uid in ("sqal-line-overview", "sqal-quality"):
        title = "Not counted: calibration and maintenance trays"
        cols, rows = run(db, panel(uid, title).sql, VALUES)
        assert as_dicts(cols, rows) == [{"calibration": 12, "maintenance": 0}]
    # The calibration run's REJECTs are in no production figure: not in the grades (roll-ups,
    # written as the writer writes them), not in the decisions, the defects, the HOLDs.
    l1 = shift.results_of("L1")
    _, rows = run(db, panel("sqal-line-overview", "Trays").sql, VALUES)
    assert rows == [(len(l1),)]
    cols, rows = run(db, panel("sqal-line-overview", "Decisions").sql, VALUES)
    assert as_dicts(cols, rows)[0]["REJECT"] == sum(r["decision"] == "REJECT" for r in l1)
    cols, rows = run(db, panel("sqal-quality", "Defect Pareto").sql, VALUES)
    underfill = next(d["trays"] for d in as_dicts(cols, rows) if d["defect"] == "underfill")
    assert underfill == sum("underfill" in r["defects"] for r in l1)


def test_quality_selects_by_lot_as_well_as_by_time(db: str, shift: Shift) -> None:
    lot_a = [r for r in shift.results_of("L1") if r["lot_id"] == "L1-A"]
    values = {**VALUES, "lot": "L1-A"}
    _, rows = run(db, panel("sqal-quality", "Volume distribution").sql, values)
    assert len(rows) == len(lot_a)
    _, rows = run(db, panel("sqal-quality", "Volume distribution").sql, VALUES)
    assert len(rows) == len(shift.results_of("L1"))
    # the packers' rules per lot: the database's figures are the pure core's on the same packs
    cols, rows = run(db, panel("sqal-quality", "Packers' rules per lot (76/211/EEC)").sql, VALUES)
    table = {d["lot"]: d for d in as_dicts(cols, rows)}
    assert set(table) == {"L1-A", "L1-B"}
    for lot, row in table.items():
        trays = [r for r in shift.results_of("L1") if r["lot_id"] == lot]
        mass = np.array([r["tof_mass_g"] for r in trays])
        want = packers_rules(mass, np.array([r["tof_sigma_mass_g"] for r in trays]), 400, 12)
        assert row["packs"] == want.n
        assert float(row["mean_g"]) == pytest.approx(want.mean_g, abs=1e-3)
        assert float(row["ci_low_g"]) == pytest.approx(want.ci_low_g, abs=1e-3)
        assert row["below_t1"] == want.below_t1
        assert row["below_t2"] == want.below_t2
        assert row["expected_below_t1_share"] == pytest.approx(want.expected_below_t1_share)
        assert float(row["expected_below_t2"]) == pytest.approx(want.expected_below_t2, abs=1e-4)
        assert row["verdict"] == want.verdict.value
        assert row["rule"] == want.rule_text


def test_committed_dashboards_are_what_the_builder_makes() -> None:
    for board in BOARDS:
        path = ROOT / "grafana" / "dashboards" / f"{board.uid}.json"
        assert path.exists(), f"{path} is missing: run sqal grafana build --out grafana/dashboards"
        assert path.read_text(encoding="utf-8") == board.to_json(), (
            f"{path.name} is stale: run sqal grafana build --out grafana/dashboards"
        )


def test_dashboards_parse_into_the_sdk_model_and_point_at_the_provisioned_source() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/sqal.yaml").read_text(encoding="utf-8")
    )
    assert provisioned["datasources"][0]["uid"] == DATASOURCE_UID
    for board in BOARDS:
        doc = board.to_dict()
        model = Dashboard.from_json(doc)
        assert json.loads(json.dumps(model, cls=JSONEncoder)) == doc
        cells: set[tuple[int, int]] = set()
        for p in doc["panels"]:
            assert p["datasource"]["uid"] == DATASOURCE_UID
            assert [t["datasource"]["uid"] for t in p["targets"]] == [DATASOURCE_UID]
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24
            mine = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not cells & mine, f"{p['title']} overlaps another panel"
            cells |= mine


def test_macro_helper_expands_like_grafana_and_rejects_unknown_macros() -> None:
    sql = (
        "SELECT $__timeGroupAlias(ts, $__interval) FROM t WHERE $__timeFilter(ts)"
        " AND d IN ($device) AND l = '$line' AND b < $__timeTo() AND ms = $__interval_ms"
    )
    out = gm.expand(sql, start=START, end=END, variables={"device": ["a", "o'b"], "line": "L1"})
    assert out == (
        "SELECT time_bucket('60.000s',ts) AS \"time\" FROM t WHERE ts BETWEEN "
        "'2026-03-02T06:00:00Z' AND '2026-03-02T08:00:00Z' AND d IN ('a','o''b') AND l = 'L1'"
        " AND b < '2026-03-02T08:00:00Z' AND ms = 60000"
    )
    with pytest.raises(gm.MacroError, match="unknown macro"):
        gm.expand("SELECT $__timeGroupz(ts, 1m)", start=START, end=END)
    with pytest.raises(gm.MacroError, match="no value"):
        gm.expand("SELECT '$nope'", start=START, end=END)


def test_grafana_build_writes_the_files_and_check_finds_stale_ones(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from views.command import grafana_build_command

    app = typer.Typer()
    app.command()(grafana_build_command)
    runner = CliRunner()
    result = runner.invoke(app, ["--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for board in BOARDS:
        assert (tmp_path / f"{board.uid}.json").read_text(encoding="utf-8") == board.to_json()
    assert runner.invoke(app, ["--out", str(tmp_path), "--check"]).exit_code == 0
    (tmp_path / "sqal-fleet.json").write_text("{}", encoding="utf-8")
    stale = runner.invoke(app, ["--out", str(tmp_path), "--check", "--json"])
    assert stale.exit_code == 1
    assert json.loads(stale.output) == {"stale": [str(tmp_path / "sqal-fleet.json")]}
