"""``sqal calibrate --weights`` end to end: results stored in a real TimescaleDB, a CSV of scale
weights, the device's config on a real broker, and the analyzer's params built from what was
published (issue #17, the mass part of deliverable 1)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from analyzer.massmodel import MassModel
from analyzer.params import build_params
from app.cli import main
from embedded import Mosquitto
from sqal.devices import Target, fetch_configs, publish_config
from sqal.profiles import load_profile
from sqal.wire import (
    AnalyzerInfo,
    Calibration,
    DeviceConfig,
    Fusion,
    Grade,
    Kind,
    Result,
    TofResult,
    device_topic,
    parse_topic,
)
from storage.rows import pending_row
from storage.writer import BatchWriter
from tests.test_ingest_frames import migrated

PROFILE = "pate_terrine_300g"
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)
TRUE_A, TRUE_B, NOISE_G = 15.0, 0.95, 2.0
"""The line's truth: m = 15 g + 0.95 g/cm³·V̂ (V̂ the analyzer's volume), scale noise 2 g."""


def sample(device: str, i: int) -> str:
    return f"{device}-0c0ffe-{i:08d}"


def result(device: str, i: int, volume_mm3: float | None) -> Result:
    """A stored result whose only figure that matters here is the published volume."""
    tof = None
    if volume_mm3 is not None:
        tof = TofResult(
            volume_mm3=volume_mm3, mass_g=1.011 * volume_mm3 / 1000.0, avg_height_mm=23.0,
            max_height_mm=25.0, height_variation_mm=1.0, surface_uniformity=0.9, tilt_deg=0.5,
            fill_ratio=1.0, valid_zones=24, quality_score=0.9, grade=Grade.A, defects=[],
        )  # fmt: skip
    return Result(
        device_id=device,
        sample_id=sample(device, i),
        ts=T0 + timedelta(seconds=i),
        profile=PROFILE,
        calibration_id=None,
        tof=tof,
        spectral=None,
        fusion=Fusion(final_score=0.9, final_grade=Grade.A, confidence=0.5, defects=[]),
        analyzer=AnalyzerInfo(version="test", processing_ms=1.0),
    )


def store(dsn: str, line: str, results: list[Result]) -> None:
    rows = []
    for i, r in enumerate(results):
        topic = parse_topic(device_topic(line, r.device_id, Kind.RESULT))
        row = pending_row(topic, r, T0, b"", i)
        assert row is not None
        rows.append(row)
    w = BatchWriter(dsn)
    try:
        assert w.write(rows, []).inserted == {"results": len(rows)}
    finally:
        w.close()


def held(broker: Mosquitto, target: Target) -> DeviceConfig:
    cfg = asyncio.run(fetch_configs(broker.url, target.topic))[target.topic]
    assert isinstance(cfg, DeviceConfig)
    return cfg


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_weighed_trays_give_the_device_its_mass_model(
    broker: Mosquitto, fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = migrated(fresh_db)
    target = Target("weighed1", "w1-node01")
    profile = load_profile(PROFILE)
    rng = np.random.default_rng(17)
    # 40 trays across the fill range (pâté: 280-330 g), each V̂ in cm³.
    v_cm3 = rng.uniform(282.0, 328.0, 40)
    masses = TRUE_A + TRUE_B * v_cm3 + rng.normal(0.0, NOISE_G, 40)
    assert 280 < masses.min() < masses.max() < 330
    results = [result(target.device, i, v * 1000.0) for i, v in enumerate(v_cm3)]
    results.append(result(target.device, 40, None))  # weighed, but its ToF frame never came
    results.append(result("w1-node02", 41, 300_000.0))  # another device's tray
    store(dsn, target.line, results)

    # The device holds a config with an empty-tray reference: the weighed step keeps it.
    before = Calibration(id="cal-w1-node01-1", ts=T0, d0_mm=200.4)
    config = DeviceConfig(device_id=target.device, profile=PROFILE, calibration=before)
    asyncio.run(publish_config(broker.url, target, config))

    weights = tmp_path / "weights.csv"
    lines = ["sample_id,mass_g,device_id"]
    lines += [f"{sample(target.device, i)},{m:.1f},{target.device}" for i, m in enumerate(masses)]
    lines += [
        f"{sample(target.device, 40)},300.0,{target.device}",  # no volume
        f"{sample(target.device, 99)},301.0,{target.device}",  # never scored
        f"{sample('w1-node02', 41)},305.0,w1-node02",  # another device's row
    ]
    weights.write_text("\n".join(lines) + "\n")
    argv = ["calibrate", f"{target.line}/{target.device}", "--weights", str(weights),
            "--db", dsn, "--broker", broker.url]  # fmt: skip

    code, out, err = run_cli([*argv, "--dry-run"], capsys)
    assert code == 0, err
    assert "42 trays weighed in weights.csv, 40 matched" in out
    assert "(1 row of other devices passed over)" in out
    assert f"1 not found: {sample(target.device, 99)}" in out
    assert f"1 without a volume: {sample(target.device, 40)}" in out
    assert "dry run: nothing published" in out
    assert held(broker, target).calibration == before

    code, out, err = run_cli([*argv, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["form"] == "line"
    assert {c["form"] for c in report["candidates"]} == {"origin", "line", "line+v23"}
    cal = held(broker, target).calibration
    assert cal is not None
    assert cal.id == report["calibration_id"] != before.id
    assert cal.d0_mm == 200.4  # kept
    mm = cal.mass_model
    assert mm is not None
    assert mm.n == 40
    assert mm.a_g == pytest.approx(TRUE_A, abs=25.0)
    assert mm.b_g_per_cm3 == pytest.approx(TRUE_B, abs=0.08)
    assert mm.sigma_g == pytest.approx(NOISE_G, rel=0.35)

    # The analyzer scores this device with the fitted model from now on.
    params = build_params(profile, cal)
    assert params.mass_model == MassModel.from_calibration(mm)
    assert params.calibration_id == cal.id
    v = np.array([285.0, 305.0, 325.0])
    got = params.mass_model.predict(v * 1000.0)[0]
    np.testing.assert_allclose(got, TRUE_A + TRUE_B * v, atol=2.0)


def test_too_few_matched_trays_are_refused_and_nothing_is_published(
    broker: Mosquitto, fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = migrated(fresh_db)
    target = Target("weighed2", "w2-node01")
    store(dsn, target.line, [result(target.device, i, 300_000.0 + 500 * i) for i in range(20)])
    asyncio.run(publish_config(broker.url, target, DeviceConfig(device_id=target.device,
                                                                profile=PROFILE)))  # fmt: skip
    weights = tmp_path / "weights.csv"
    rows = [f"{sample(target.device, i)},{300 + i * 0.5}" for i in range(35)]
    weights.write_text("sample_id,mass_g\n" + "\n".join(rows) + "\n")
    argv = ["calibrate", f"{target.line}/{target.device}", "--weights", str(weights),
            "--db", dsn, "--broker", broker.url]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(
        "Error: weighed: 20 of 35 weighed trays have a published volume of weighed2/w2-node01"
    )
    assert "need at least 30 (15 not found" in err
    assert held(broker, target).calibration is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sample,mass\na,1\n", "needs a header with sample_id and mass_g"),
        ("sample_id,mass_g\na,heavy\n", "line 2: mass_g 'heavy' is not a number"),
        ("sample_id,mass_g\na,nan\n", "line 2: mass_g 'nan' is not a finite number"),
        ("sample_id,mass_g\na,300\na,301\n", "line 3: sample a is weighed twice"),
        ("sample_id,mass_g,device_id\na,300,other\n", "no tray of L9/d9"),
    ],
)
def test_a_bad_weights_file_is_one_error_line(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "w.csv"
    weights.write_text(text)
    code, _, err = run_cli(["calibrate", "L9/d9", "--weights", str(weights)], capsys)
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("Error: --weights")
    assert message in err


def test_weights_go_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        ["calibrate", "L9/d9", "--step", "dark", "--weights", str(tmp_path / "w.csv")], capsys
    )
    assert code == 1
    assert err == (
        "Error: give exactly one of --step, --colour-chart, --weights (and/or --rechecks) and "
        "--reference\n"
    )
    code, _, err = run_cli(["calibrate", "L9/d9", "--step", "dark", "--dry-run"], capsys)
    assert code == 1
    assert err == "Error: --db and --dry-run go with --weights, --rechecks or --reference\n"
