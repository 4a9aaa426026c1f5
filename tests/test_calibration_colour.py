"""The colour-matrix fit (docs/domain.md §3) and `sqal calibrate --colour-chart`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from analyzer.calibration import chart_reflectance, fit_colour_matrix
from app.cli import main
from embedded import Mosquitto
from sqal.devices import Target, fetch_configs, publish_config
from sqal.errors import CalibrationError
from sqal.wire import Calibration, DeviceConfig

DARK = np.linspace(0.5, 1.5, 10)
WHITE = np.linspace(60.0, 90.0, 10)
RHO = np.full(10, 0.97)


def true_matrix() -> np.ndarray:
    rng = np.random.default_rng(11)
    m = np.abs(rng.normal(10.0, 4.0, (3, 9)))
    m[:, 8] = rng.normal(0.0, 1.0, 3)
    return np.asarray(m * (100.0 / m[1].sum()))  # a perfect white (R ≡ 1) has Y = 100


def chart(n: int, noise_xyz: float = 0.0, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(bc, xyz) of n patches: reflectances → counts through the dark/white references."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.05, 0.9, (n, 8))
    xyz = np.hstack([r, np.ones((n, 1))]) @ true_matrix().T
    xyz = xyz * (1 + noise_xyz * rng.standard_normal(xyz.shape))
    bc = np.empty((n, 10))
    bc[:, :8] = DARK[:8] + r / RHO[:8] * (WHITE[:8] - DARK[:8])
    bc[:, 8:] = WHITE[8:] / 2
    return bc, xyz


def test_fit_recovers_a_linear_camera() -> None:
    bc, xyz = chart(30)
    r = chart_reflectance(bc, DARK, WHITE, RHO)
    fit = fit_colour_matrix(r, xyz, np.random.default_rng(0))
    assert fit.held_out_de < 0.2
    assert np.allclose(fit.matrix, true_matrix(), rtol=0.02, atol=0.2)
    assert float(fit.matrix[1].sum()) == pytest.approx(100.0)


def test_too_few_patches_are_refused() -> None:
    bc, xyz = chart(10)
    with pytest.raises(CalibrationError, match="10 patches, need at least 24"):
        fit_colour_matrix(chart_reflectance(bc, DARK, WHITE, RHO), xyz, np.random.default_rng(0))


def test_a_chart_that_does_not_fit_is_refused() -> None:
    bc, xyz = chart(30, noise_xyz=0.3)
    with pytest.raises(CalibrationError, match="held-out mean ΔE"):
        fit_colour_matrix(chart_reflectance(bc, DARK, WHITE, RHO), xyz, np.random.default_rng(0))


def test_cli_publishes_the_matrix(
    private_broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = Target("L1", "cc-1")
    path = tmp_path / "chart.json"
    bc, xyz = chart(30)
    patches = [
        {"name": f"p{i}", "xyz": x.tolist(), "bc": b.tolist()}
        for i, (b, x) in enumerate(zip(bc, xyz, strict=True))
    ]
    path.write_text(json.dumps({"patches": patches}))
    argv = ["calibrate", "L1/cc-1", "--colour-chart", str(path), "--broker", private_broker.url]

    now = datetime(2026, 11, 27, tzinfo=UTC)
    bare = DeviceConfig(device_id="cc-1", profile="pate_terrine_300g")
    asyncio.run(publish_config(private_broker.url, target, bare))
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 1
    assert "calibrate --step dark and --step white first" in capsys.readouterr().err

    cal = Calibration(id="cal-0", ts=now, dark_bc=DARK.tolist(), white_bc=WHITE.tolist(),
                      rho_white=RHO.tolist(), z_cal_mm=180.0)  # fmt: skip
    asyncio.run(publish_config(private_broker.url, target,
                               DeviceConfig(device_id="cc-1", profile="pate_terrine_300g",
                                            calibration=cal)))  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0, capsys.readouterr().err
    held = asyncio.run(fetch_configs(private_broker.url, target.topic))[target.topic]
    assert isinstance(held, DeviceConfig)
    assert held.calibration is not None
    assert held.calibration.color_matrix is not None
    assert held.calibration.color_delta_e is not None
    assert held.calibration.color_delta_e < 0.2
    assert held.calibration.white_bc == WHITE.tolist()  # the other references are kept
    assert held.calibration.id != "cal-0"
