"""Golden frames (tests/data/analyzer_golden.json) scored against hand-derived values."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analyzer import SampleMeta, build_params, score_batch, stack_spectral, stack_tof, to_results
from sqal.profiles import load_profile
from sqal.wire import Calibration, Result, SpectralFrame, TofFrame
from tests.test_analyzer_support import TS, calibration

DATA = json.loads((Path(__file__).parent / "data" / "analyzer_golden.json").read_text())
CASES = {c["name"]: c for c in DATA["cases"]}


def score_case(case: dict[str, Any]) -> Result:
    profile = load_profile(case["profile"])
    cal = calibration(**case["calibration"]) if case["calibration"] else None
    params = build_params(profile, cal)
    tof = TofFrame.model_validate(case["tof"]) if case["tof"] else None
    spec = SpectralFrame.model_validate(case["spectral"]) if case["spectral"] else None
    scores = score_batch(stack_tof([tof], profile.tof.layout), stack_spectral([spec]), params)
    meta = [SampleMeta("dev1", "dev1-abc123-00000000", TS)]
    return to_results(scores, meta, profile.name, params.calibration_id, [0.0])[0]


def check(section: str, got: Any, want: Any, tol: float) -> None:
    if want is None:
        assert got is None, section
    elif section.endswith(".defects"):
        assert [str(g) for g in got] == want, section
    elif section.endswith(".lab"):
        assert got is not None, section
        for g, w in zip((got.L, got.a, got.b), want, strict=True):
            assert g == pytest.approx(w, rel=1e-9, abs=tol), section
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=tol), section


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_frame_matches_hand_derivation(name: str) -> None:
    case = CASES[name]
    result = score_case(case)
    tol = case.get("tolerance", {})
    for section, fields in case["expect"].items():
        part = getattr(result, section)
        assert part is not None, f"{name}: section {section} missing"
        for key, want in fields.items():
            check(f"{name}.{section}.{key}", getattr(part, key), want, tol.get(key, 1e-9))


def test_frustum_differs_from_flat_prisms_as_domain_says() -> None:
    # docs/domain.md §2: at h = 40, d0 = 220 the flat prisms h·a(d0) and h·a(z) err +21 % / −19 %.
    d0, z = 220.0, 180.0
    frustum = (d0**3 - z**3) / 3
    assert 40 * d0**2 / frustum - 1 == pytest.approx(0.21, abs=0.01)
    assert 40 * z**2 / frustum - 1 == pytest.approx(-0.19, abs=0.01)


def test_flat_plane_volume_is_24_frusta() -> None:
    result = score_case(CASES["flat_plane_integrate"])
    k = (math.sqrt(2) - 1) / 4
    # The geometric estimate, no scale: each ROI zone's frustum k²(d0³ − z³)/3.
    assert result.tof is not None
    assert result.tof.volume_mm3 == pytest.approx(24 * k * k * (260**3 - 230**3) / 3, rel=1e-12)
    # Only the ToF speaks: data quality = W_tof·c_tof / (W_tof + W_spec) = 0.5. The fill band
    # weighs the likely true fill: 450 g read with σ_m 13.5 g, against the filler's N(404, 6)
    # and 3 % of fills anywhere in 180-500 g, is likely a fill of about 1.05, just past the
    # band's 0.04: fill scores 0.97; height 30 mm is outside its band (0), tilt and uniformity
    # 1: score 0.45·0.97 + 0.2 + 0.2 = 0.837. The spectral frame is missing: the grade is
    # capped at B and the tray goes to the re-check lane.
    assert result.fusion.data_quality == pytest.approx(0.5)
    assert result.fusion.final_score == pytest.approx(0.837, abs=0.002)
    assert result.fusion.final_grade == "B"
    assert result.fusion.decision == "HOLD"


def test_per_zone_d0_map_removes_fixed_zone_offsets() -> None:
    # docs/domain.md §1: each zone carries a fixed range offset; the calibration's d0_map_mm holds
    # the same offsets (empty-tray readings), so h_i = d0_i − distance_i is the true height again.
    case = CASES["flat_plane_integrate"]
    profile = load_profile(case["profile"])
    offsets = np.random.default_rng(7).integers(-2, 3, (8, 8))
    tof = TofFrame.model_validate(case["tof"])
    shifted = tof.model_copy(
        update={"distance_mm": (np.asarray(tof.distance_mm) + offsets).tolist()}
    )
    cal = calibration(d0_mm=260.0).model_copy(
        update={"d0_map_mm": (260.0 + offsets).astype(float).tolist()}
    )
    spec = stack_spectral([None])

    def tof_result(frame: TofFrame, c: Calibration | None) -> Any:
        params = build_params(profile, c)
        return score_batch(stack_tof([frame], 8), spec, params).tof

    clean = tof_result(tof, calibration(d0_mm=260.0))
    mapped = tof_result(shifted, cal)
    scalar = tof_result(shifted, calibration(d0_mm=260.0))
    for name in ("volume_mm3", "avg_height_mm", "height_variation_mm", "tilt_deg"):
        assert getattr(mapped, name)[0] == pytest.approx(getattr(clean, name)[0], abs=1e-9), name
    assert scalar.height_variation_mm[0] > 0.5  # without the map the offsets read as relief
