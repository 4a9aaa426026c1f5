"""The analyzer on frames no simulator made: closed-form solids whose heights, tilt and volume
are computed here by hand from the VL53L8CH geometry (docs/domain.md §1, §2).

Geometry: 8×8 zones over a 45° square field of view, so a zone's pyramid is k·z wide at
distance z with k = 2·tan(22.5°)/8 = 0.103553; zone (row r, column c) looks along
(u, v) = (c − 3.5, r − 3.5) pitches. With no calibration d0 is the profile's mount distance,
260 mm, and the foie gras ROI is the 6×4 zones whose base footprint lies inside the tray.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyzer.arrays import stack_tof
from analyzer.params import build_params
from analyzer.tof import TofScores, score_tof
from sqal.profiles import load_profile
from sqal.wire import TofFrame
from tests.test_analyzer_support import tof_payload

D0 = 260.0
K = 2.0 * math.tan(math.radians(22.5)) / 8
U = np.arange(8) - 3.5  # column offsets in pitches; rows likewise
PARAMS = build_params(load_profile("foie_gras_lobe_400g"))


def _score(distance_mm: np.ndarray, sigma_mm: float = 0.5) -> TofScores:
    frame = TofFrame.model_validate(tof_payload(distance_mm, sigma_mm=sigma_mm))
    return score_tof(stack_tof([frame], 8), PARAMS)


def test_the_roi_is_the_profile_s_6_by_4_zones() -> None:
    assert int(PARAMS.roi.sum()) == 24
    rows, cols = np.nonzero(PARAMS.roi.reshape(8, 8))
    assert (set(rows.tolist()), set(cols.tolist())) == ({2, 3, 4, 5}, {1, 2, 3, 4, 5, 6})


def test_a_flat_fill_reads_its_height_and_no_tilt() -> None:
    """Every zone 30 mm above the tray floor: distance 230 mm everywhere."""
    s = _score(np.full((8, 8), D0 - 30.0))
    assert s.avg_height_mm[0] == pytest.approx(30.0, abs=0.05)
    assert s.max_height_mm[0] == pytest.approx(30.0, abs=0.5)
    assert s.tilt_deg[0] == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("angle_deg", [5.0, 12.0])
def test_a_tilted_plane_reads_its_tilt(angle_deg: float) -> None:
    """h = 30 + tan(θ)·x, x the lateral position of the zone's ray where it meets the surface:
    along column offset u at distance z, x = u·k·z, so z = d0 − 30 − tan(θ)·u·k·z, i.e.
    z = (d0 − 30) / (1 + tan(θ)·u·k). Whole-mm distances add at most ±0.5 mm per zone."""
    slope = math.tan(math.radians(angle_deg))
    z = (D0 - 30.0) / (1.0 + slope * U * K)
    s = _score(np.tile(np.rint(z), (8, 1)))
    assert s.tilt_deg[0] == pytest.approx(angle_deg, abs=0.3)


def test_a_flat_fill_s_volume_is_the_sum_of_its_zone_frustums() -> None:
    """Each ROI zone's pyramid between the surface (z = d0 − h) and the base: k²(d0³ − z³)/3."""
    h = 30.0
    expected = 24 * K * K * (D0**3 - (D0 - h) ** 3) / 3.0
    s = _score(np.full((8, 8), D0 - h))
    assert s.volume_mm3[0] == pytest.approx(expected, rel=0.005)
