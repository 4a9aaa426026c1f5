"""``sqal report`` renders a PDF whose pages carry the titles and the numbers in the database."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
import typer
from matplotlib.image import imread
from typer.testing import CliRunner

from sqal.errors import ConfigError
from storage.migrate import migrate
from tests.test_cli import assert_one_error_line, run_main
from tests.views_data import END, START, build_shift, fill
from views.command import report_command
from views.report import DECISIONS, bucket_for, defect_name, parse_instant

needs_poppler = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
    reason="poppler-utils (pdftotext, pdftoppm) is not installed; scripts/setup.sh adds it",
)


def cli(*args: str) -> object:
    app = typer.Typer()
    app.command()(report_command)
    return CliRunner().invoke(app, list(args))


def pdf_text(path: Path) -> str:
    out = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True)
    return out.stdout.decode()


def _report(db: str, out: Path, *extra: str) -> object:
    return cli("--db", db, "--line", "L1", "--since", START.isoformat(), "--until",
               END.isoformat(), "--out", str(out), *extra)  # fmt: skip


@needs_poppler
def test_the_report_shows_its_sections_and_the_numbers_in_the_database(
    fresh_db: str, tmp_path: Path
) -> None:
    fill(fresh_db, build_shift())
    with psycopg.connect(fresh_db) as conn:
        n, rejects = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE final_grade = 'REJECT') FROM results"
            " WHERE line_id = 'L1' AND mode = 'production'"
        ).fetchone() or (0, 0)
        per_device: dict[str, int] = dict(
            conn.execute(
                "SELECT device_id, count(*) FROM results WHERE line_id = 'L1'"
                " AND mode = 'production' GROUP BY 1"
            ).fetchall()
        )
        underfill = conn.execute(
            "SELECT count(*) FROM results WHERE line_id = 'L1' AND 'underfill' = ANY(defects)"
            " AND mode = 'production'"
        ).fetchone()
        decisions: dict[str | None, int] = dict(
            conn.execute(
                "SELECT decision, count(*) FROM results WHERE line_id = 'L1'"
                " AND mode = 'production' GROUP BY 1"
            ).fetchall()
        )
    out = tmp_path / "shift.pdf"
    result = _report(fresh_db, out, "--html", "--tz", "Europe/Paris")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert f"{n} trays" in result.output  # type: ignore[attr-defined]

    text = pdf_text(out)
    for title in (
        "SQAL shift report · line L1",
        "Verdict under the packers' rules",
        "Summary",
        "Calibrations in force",
        "Decisions and grades",
        "Why trays were held",
        "Reasons for rejects and defects (Pareto)",
        "Reject rate over time (per 5 min, Europe/Paris)",
        "Devices",
        "Dead letters (messages no stage could use)",
        "Review",
        "Quality manager",
    ):
        assert title in text, title
    # The packers' rules of each lot first, as `--json` gives them; then each lot's masses
    # against Qn/T1/T2 and its control charts.
    doc = json.loads(_report(fresh_db, tmp_path / "j.pdf", "--json").stdout)  # type: ignore[attr-defined]
    flat = " ".join(text.split())
    assert [g["lot"] for g in doc["packers_rules"]] == ["L1-A", "L1-B"]
    for g in doc["packers_rules"]:
        mean = f"{g['mean_g']:.1f} g [{g['ci_low_g']:.1f}, {g['ci_high_g']:.1f}]"
        assert f"{g['lot']} 400 g {g['n']} {mean}" in flat, g["lot"]
        assert f"{g['verdict']} {g['rule_text']}" in flat
        for title in (
            f"Mass distribution · lot {g['lot']}",
            f"Mean mass per subgroup (X̄) · lot {g['lot']}",
            f"Spread per subgroup (s) · lot {g['lot']}",
        ):
            assert title in flat, title
    assert "Statistical process control" in text
    assert "Reject rate per slot (p chart)" in text
    # The period in the plant's zone (CET, UTC+1 in March) and in UTC.
    assert "Period 2026-03-02 07:00 – 2026-03-02 09:00 (Europe/Paris)" in text
    assert "2026-03-02 06:00 – 2026-03-02 08:00 UTC" in text
    assert re.search(rf"Trays\s+{n}\b", text)
    assert re.search(rf"Rejects\s+{rejects} \({100 * rejects / n:.1f} %\)", text)
    decided = n - decisions[None]
    assert decisions[None] > 0
    want = ", ".join(
        f"{d} {decisions[d]} ({100 * decisions[d] / decided:.1f} %)" for d in DECISIONS
    )
    assert want in " ".join(text.split())
    # HOLD reasons in plain words, with their share of the HOLDs.
    holds = decisions["HOLD"]
    for reason, count in build_shift().hold_reasons("L1").items():
        row = rf"{re.escape(defect_name(reason))}\s+{count}\s+{100 * count / holds:.1f} %"
        assert re.search(row, text), reason
    # the calibration run (tests/views_data.py) counts apart, and nowhere else
    assert "Calibration runs: 12 trays on 1 device, not counted" in text
    assert underfill is not None
    assert re.search(rf"Underfill \(mass below the limit\)\s+{underfill[0]}\s", text)
    # Per device: trays, dead letters and offline time (build_shift: dev-02 23 s, dev-03 from
    # 100 min to the end), every column header whole.
    raw = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, check=True)
    cells = " ".join(raw.stdout.decode().split())  # reading order: wrapped headers rejoin
    for head in ("missing height frames", "dead letters", "below T1 (expected)", "giveaway"):
        assert head in cells, head
    rows = {
        line.split()[0]: line
        for line in text.splitlines()
        if line.strip()[:4] == "dev-" and line.split()[1].isdigit()
    }
    assert {d: rows[d].split()[1] for d in per_device} == {d: str(c) for d, c in per_device.items()}
    assert " ".join(rows["dev-02"].split()[-3:]) == "23 s online"
    assert " ".join(rows["dev-03"].split()[-5:]) == "20 min 00 s offline"
    assert rows["dev-01"].split()[-3:] == ["8", "0", "online"]  # its eight dead letters
    # Calibrations in force: the fixture's one id on each device.
    assert len(re.findall(r"^\s*dev-0\d\s+cal-x\s", text, re.MULTILINE)) == 3
    dead = {
        line.split()[1]: line.split()[2]
        for line in text.splitlines()
        if line.split()[:1] in (["ingest"], ["analyzer"])
    }
    assert dead == {"bad_json": "5", "schema": "3", "bad_topic": "2"}

    (tmp_path / "png").mkdir()
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(out), str(tmp_path / "png" / "p")],
                   check=True)  # fmt: skip
    pages = sorted((tmp_path / "png").glob("p-*.png"))  # for a human look, and not blank
    assert len(pages) >= 2
    for image in pages:
        assert np.asarray(imread(image))[..., :3].min() < 0.5, f"{image.name} is blank"
    html = (tmp_path / "shift.html").read_text(encoding="utf-8")
    assert html.count("<svg") >= 3  # decisions, Pareto, reject rate: charts inline
    assert "Verdict under the packers' rules" in html


@needs_poppler
def test_a_period_without_trays_still_renders(fresh_db: str, tmp_path: Path) -> None:
    fill(fresh_db, build_shift())
    out = tmp_path / "empty.pdf"
    result = cli(
        "--db",
        fresh_db,
        "--line",
        "L1",
        "--since",
        "1h",
        "--until",
        (START - timedelta(days=1)).isoformat(),
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "No trays in this period." in pdf_text(out)


def test_an_unknown_time_zone_is_a_config_error(tmp_path: Path) -> None:
    result = cli("--line", "L1", "--tz", "Mars/Olympus", "--out", str(tmp_path / "x.pdf"))
    assert isinstance(result.exception, ConfigError)  # type: ignore[attr-defined]
    assert "--tz 'Mars/Olympus'" in str(result.exception)  # type: ignore[attr-defined]


def test_since_and_until_take_ages_or_zoned_times() -> None:
    now = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
    assert parse_instant("8h", now, "--since") == now - timedelta(hours=8)
    assert parse_instant("2026-03-02T06:00:00+01:00", now, "--since") == datetime(
        2026, 3, 2, 5, 0, tzinfo=UTC
    )
    with pytest.raises(ConfigError, match="--since '2026-03-02T06:00'"):
        parse_instant("2026-03-02T06:00", now, "--since")
    with pytest.raises(ConfigError, match="--until 'yesterday'"):
        parse_instant("yesterday", now, "--until")
    assert bucket_for(timedelta(hours=8)) == timedelta(minutes=20)
    assert bucket_for(timedelta(minutes=30)) == timedelta(minutes=5)


def test_bad_line_and_reversed_period_are_config_errors(tmp_path: Path) -> None:
    result = cli("--line", "L 1", "--out", str(tmp_path / "x.pdf"))
    assert isinstance(result.exception, ConfigError)  # type: ignore[attr-defined]
    assert "--line" in str(result.exception)  # type: ignore[attr-defined]


def test_an_unknown_line_is_one_error_line_and_no_pdf(
    fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "l9.pdf"
    argv = ["report", "--line", "L9", "--db", fresh_db, "--out", str(out)]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrate(conn)
    code, _, err = run_main(argv, capsys)
    assert assert_one_error_line(code, err) == (
        "Error: --line L9: the database has no result, frame or status of that line; "
        "it holds no results yet"
    )
    fill(fresh_db, build_shift())
    code, _, err = run_main(argv, capsys)
    assert assert_one_error_line(code, err).endswith("; lines with results: L1, L2")
    assert not out.exists()
    # A line known by its devices' status alone is no error: its report says it had no trays.
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("UPDATE device_status SET line_id = 'L9' WHERE device_id = 'dev-21'")
        conn.execute("DELETE FROM results WHERE line_id = 'L2'")
    code, text, err = run_main([*argv[:-2], "--out", str(tmp_path / "l9-known.pdf")], capsys)
    assert code == 0, err
    assert text.startswith("line L9: 0 trays")


def test_csv_exports_the_trays_the_report_counts(fresh_db: str, tmp_path: Path) -> None:
    """Production trays only (the calibration run stays out), oldest first, the mass judged on
    with its source and σ; times in UTC."""
    fill(fresh_db, build_shift())
    out = tmp_path / "shift.pdf"
    result = _report(fresh_db, out, "--csv", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert str(out.with_suffix(".csv")) in json.loads(result.stdout)["written"]  # type: ignore[attr-defined]
    with out.with_suffix(".csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    with psycopg.connect(fresh_db) as conn:
        want = conn.execute(
            "SELECT sample_id, coalesce(weight_mass_g, tof_mass_g) FROM results"
            " WHERE line_id = 'L1' AND mode = 'production' AND ts >= %s AND ts < %s ORDER BY ts",
            (START, END),
        ).fetchall()
    assert [r["sample_id"] for r in rows] == [s for s, _ in want]
    assert all(r["lot_id"] in ("L1-A", "L1-B") for r in rows)
    with_mass = [(r, m) for r, (_, m) in zip(rows, want, strict=True) if m is not None]
    assert with_mass
    for r, m in with_mass:
        assert float(r["mass_g"]) == pytest.approx(m, rel=1e-6)
        assert r["mass_source"] in ("estimate", "checkweigher")
    assert datetime.fromisoformat(rows[0]["ts"]).utcoffset() == timedelta(0)


def test_a_lot_without_production_trays_is_one_error_line(
    fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(fresh_db, build_shift())
    out = tmp_path / "lot.pdf"
    argv = ["report", "--lot", "L1-A", "--db", fresh_db, "--out", str(out),
            "--since", (START - timedelta(days=2)).isoformat(),
            "--until", (START - timedelta(days=1)).isoformat()]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert assert_one_error_line(code, err).startswith(
        "Error: --lot L1-A: no production tray of line L1 between"
    )
    assert not out.exists()
