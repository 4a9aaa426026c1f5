"""``sqal report`` renders a PDF whose pages carry the titles and the numbers in the database."""

from __future__ import annotations

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
from views.boards import ProfileTarget
from views.command import report_command
from views.report import DECISIONS, bucket_for, parse_instant

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


@needs_poppler
def test_report_pages_show_titles_and_the_numbers_in_the_database(
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
    result = cli(
        "--db",
        fresh_db,
        "--line",
        "L1",
        "--since",
        START.isoformat(),
        "--until",
        END.isoformat(),
        "--out",
        str(out),
        "--html",
    )
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert f"{n} trays" in result.output  # type: ignore[attr-defined]

    text = pdf_text(out)
    for title in (
        "SQAL shift report · line L1",
        "Grade mix",
        "Reject rate over time",
        "Defect Pareto",
        "Volume distribution vs target · foie_gras_lobe_400g",
        "Per device",
        "Dead letters",
        "Decisions and HOLD reasons · line L1",
        "HOLD reasons (the defect code of largest probability)",
    ):
        assert title in text, title
    # decisions: rates of the trays with one; results without one counted apart, not dropped
    decided = n - decisions[None]
    assert decisions[None] > 0
    assert (
        "Decisions: "
        + ", ".join(f"{d} {decisions[d]} ({100 * decisions[d] / decided:.1f} %)" for d in DECISIONS)
        + f"; no decision {decisions[None]}"
    ) in text
    assert f"no decision: {decisions[None]} trays scored by analyzers before 2026-12" in text
    reasons = {
        m[1]: (int(m[2]), m[3])
        for m in re.finditer(r"^\s*(.+?)\s+(\d+)\s+(\d+\.\d %)\s*$", text, re.MULTILINE)
    }
    want = build_shift().hold_reasons("L1")
    holds = decisions["HOLD"]
    assert reasons == {r: (c, f"{100 * c / holds:.1f} %") for r, c in want.items()}
    assert f"Trays: {n}" in text
    # the calibration run (tests/views_data.py) counts apart, and nowhere else
    assert "Calibration runs: 12 trays on 1 device, not counted" in text
    assert f"Rejects: {rejects} ({100 * rejects / n:.1f} %)" in text
    target = ProfileTarget.load("foie_gras_lobe_400g")  # the lines come from the profile
    assert f"Qn − TNE {target.volume_cm3(target.qn_g - target.tne_g):.0f} cm³" in text
    assert underfill is not None
    assert str(underfill[0]) in text
    for device, count in per_device.items():
        row = next(line for line in text.splitlines() if line.strip().startswith(device))
        assert row.split()[1] == str(count), row
    dead = {
        line.split()[1]: line.split()[2]
        for line in text.splitlines()
        if line.split()[:1] in (["ingest"], ["analyzer"])
    }
    assert dead == {"bad_json": "5", "schema": "3", "bad_topic": "2"}

    pages = subprocess.run(
        ["pdftoppm", "-r", "20", "-png", str(out), str(tmp_path / "p")], check=True
    )
    assert pages.returncode == 0
    images = sorted(tmp_path.glob("p-*.png"))
    assert len(images) == 5  # summary, rejects+defects, decisions, one profile's volumes, devices
    for image in images:
        assert np.asarray(imread(image))[..., :3].min() < 0.5, f"{image.name} is blank"
    html = (tmp_path / "shift.html").read_text(encoding="utf-8")
    assert html.count("data:image/svg+xml;base64,") == 5


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
