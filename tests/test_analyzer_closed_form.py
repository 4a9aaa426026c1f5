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
from analyzer.calibration import range_scale
from analyzer.params import build_params
from analyzer.tof import TofScores, score_tof
from sqal.errors import CalibrationError
from sqal.profiles import load_profile
from sqal.wire import Calibration, TofFrame
from tests.test_analyzer_support import calibration, tof_payload

D0 = 260.0
K = 2.0 * math.tan(math.radians(22.5)) / 8
U = np.arange(8) - 3.5  # column offsets in pitches; rows likewise
PROFILE = load_profile("foie_gras_lobe_400g")
PARAMS = build_params(PROFILE)


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


def _frustum(h: float) -> float:
    """One zone's pyramid between a flat surface h above the base and the base (d0 260)."""
    return K * K * (D0**3 - (D0 - h) ** 3) / 3.0


def test_a_block_of_zones_at_a_second_height_adds_its_own_frustums() -> None:
    """A 2×3 block of ROI zones (rows 3-4, columns 3-5) at 42 mm, the other 18 ROI zones at
    20 mm: V = 6·k²(d0³ − (d0 − 42)³)/3 + 18·k²(d0³ − (d0 − 20)³)/3 = 396.2 cm³ (d0 260)."""
    dist = np.full((8, 8), D0 - 20.0)
    dist[3:5, 3:6] = D0 - 42.0
    s = _score(dist)
    expected = 6 * _frustum(42.0) + 18 * _frustum(20.0)
    assert expected == pytest.approx(396_160.0, rel=0.001)
    assert s.volume_mm3[0] == pytest.approx(expected, rel=0.005)
    # Whatever the quadric makes of the step, the top is the block's height, not above it.
    assert s.max_height_mm[0] == pytest.approx(42.0, abs=1.0)


RHO_FLOOR, RHO_PRODUCT = 0.45, 0.70


def _signal(rho: float, z: float) -> float:
    """The §1 return, S = 2000·(ρ/0.5)·(200/z)² kcps/SPAD."""
    return 2000.0 * (rho / 0.5) * (200.0 / z) ** 2


def _mixed_ring(share: float, rho_product: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Inner 2×4 ROI zones product at 30 mm; the 16 ROI zones around them ``share`` product at
    30 mm, the rest floor (status 9); every other zone sees the floor. A split zone returns
    S = f·S_p + (1 − f)·S_f and reads the return-weighted distance (S_p·z_p + S_f·d0)/(S_p + S_f)
    with each part's S weighted by its share (docs/domain.md §1, §7). Returns distances, signals
    and the true volume: 8 full frustums at 30 mm and 16 × ``share`` of one."""
    zp = D0 - 30.0
    sp, sf = share * _signal(rho_product, zp), (1 - share) * _signal(RHO_FLOOR, D0)
    dist = np.full((8, 8), D0)
    signal = np.full((8, 8), _signal(RHO_FLOOR, D0))
    ring = PARAMS.roi.reshape(8, 8).copy()
    ring[3:5, 2:6] = False
    dist[ring] = (sp * zp + sf * D0) / (sp + sf)
    signal[ring] = sp + sf
    dist[3:5, 2:6] = zp
    signal[3:5, 2:6] = _signal(rho_product, zp)
    return dist, signal, (8 + 16 * share) * _frustum(30.0)


def _score_mixed(dist: np.ndarray, signal: np.ndarray, cal: Calibration | None) -> TofScores:
    payload = tof_payload(dist, sigma_mm=0.5)
    status = np.full((8, 8), 5)
    status[np.abs(dist - np.rint(dist)) > 0.0] = 9  # the split zones (non-integral z̄)
    status[PARAMS.roi.reshape(8, 8) & (dist < D0) & (dist > D0 - 29.5)] = 9
    payload["target_status"] = status.tolist()
    payload["signal_per_spad"] = np.round(signal, 1).tolist()
    return score_tof(stack_tof([TofFrame.model_validate(payload)], 8), build_params(PROFILE, cal))


def _floor_calibration() -> Calibration:
    """An empty-tray step that saw the floor everywhere: d0 260, S₀ of ρ 0.45 at 260 mm."""
    return calibration().model_copy(
        update={
            "d0_map_mm": [[D0] * 8 for _ in range(8)],
            "signal0_map_kcps": [[round(_signal(RHO_FLOOR, D0), 1)] * 8 for _ in range(8)],
        }
    )


@pytest.mark.parametrize(
    ("share", "rho_product", "rel"),
    [(0.5, RHO_PRODUCT, 0.01), (0.25, RHO_PRODUCT, 0.01), (0.5, RHO_FLOOR, 0.03)],
)
def test_a_mixed_zone_ring_reads_its_true_two_target_volume(
    share: float, rho_product: float, rel: float
) -> None:
    """With the floor's return from the empty step, each split zone is read as its product
    share at the product's height: the frame's volume comes out within 1 %, distances in whole
    mm as on the wire. A product that reflects like the floor is told apart by its distance
    alone, so the rounding weighs more: z̄ = 243.2 → 243 moves t₁ by 1.3 % and the share by
    2.7 % (within 3 %)."""
    dist, signal, expected = _mixed_ring(share, rho_product)
    s = _score_mixed(dist, signal, _floor_calibration())
    assert s.volume_mm3[0] == pytest.approx(expected, rel=rel)


def test_without_the_floor_s_return_a_mixed_ring_reads_its_merged_height() -> None:
    """No ``signal0_map_kcps``: the zone's merged distance is taken at face value. Half product
    at 30 mm, same reflectance: z̄ = (z_p/z_p² + d0/d0²)/(1/z_p² + 1/d0²) = 243.2 mm, 16.8 mm
    of 'height' for 15 mm of area-mean product, and the frame reads ~10 % high."""
    dist, signal, expected = _mixed_ring(0.5, RHO_FLOOR)
    assert dist[2, 2] == pytest.approx(243.2, abs=0.05)
    s = _score_mixed(dist, signal, None)
    assert s.volume_mm3[0] / expected == pytest.approx(1.097, abs=0.01)


def _ranged(z: np.ndarray) -> np.ndarray:
    """A sensor whose range error is linear in distance: reads z + 0.02·(z − 200) mm."""
    return z + 0.02 * (z - 200.0)


def test_a_tile_of_known_height_measures_the_range_slope_and_heights_come_out_true() -> None:
    """Empty tray at 260 mm reads 261.2; a 30 mm tile (z 230) reads 230.6: 30.6 mm of height
    for 30, a slope of 1.02. With it a flat 30 mm fill reads 30 mm, without it 30.6."""
    rng = np.random.default_rng(4)
    profile = load_profile("foie_gras_lobe_400g")
    d0_map = np.full((8, 8), _ranged(np.array(D0)))
    frames = [
        TofFrame.model_validate(
            tof_payload(_ranged(np.full((8, 8), D0 - 30.0)) + rng.normal(0, 1.0, (8, 8)))
        )
        for _ in range(100)
    ]
    scale = range_scale(stack_tof(frames, 8), d0_map, 30.0, profile)
    assert scale == pytest.approx(1.02, abs=0.002)
    with pytest.raises(CalibrationError, match="times --tile-height-mm 24"):
        range_scale(stack_tof(frames, 8), d0_map, 24.0, profile)
    cal = calibration(d0_mm=float(d0_map[0, 0])).model_copy(
        update={"d0_map_mm": d0_map.tolist(), "range_scale": scale}
    )
    params = build_params(profile, cal)
    # Whole-mm readings dithered by 1 mm of noise, averaged over 50 frames.
    fills = stack_tof(
        [
            TofFrame.model_validate(
                tof_payload(_ranged(np.full((8, 8), D0 - 30.0)) + rng.normal(0, 1.0, (8, 8)))
            )
            for _ in range(50)
        ],
        8,
    )
    s = score_tof(fills, params)
    assert float(np.mean(s.avg_height_mm)) == pytest.approx(30.0, abs=0.1)
    raw = score_tof(fills, build_params(profile, cal.model_copy(update={"range_scale": None})))
    assert float(np.mean(raw.avg_height_mm)) == pytest.approx(30.6, abs=0.1)
