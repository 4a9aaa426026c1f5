"""Physics of the device simulator (issue 3 "Checked by"): pure numpy, no broker."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from device_sim import as7341
from device_sim.calibration import calibrate
from device_sim.device import SimDevice
from device_sim.geometry import zone_k
from device_sim.model import product_model
from device_sim.render import Shot, device_optics, render_batch
from device_sim.surface import ProductShapes, dome_volume_mm3, render_products
from device_sim.trays import DEFECTS, draw_tray
from sqal.wire import SpectralSettings, TofSettings, decode_spectral, decode_tof

FOIE = "foie_gras_lobe_400g"


def _shots(
    name: str,
    n: int,
    *,
    layout: int = 8,
    uptime_s: float = 3600.0,
    first: bool = False,
    gain: float | None = None,
    seed: int = 1,
) -> list[Shot]:
    model = product_model(name)
    dev = device_optics(np.random.default_rng(seed))
    spectral = model.profile.spectral.settings
    if gain is not None:
        spectral = spectral.model_copy(update={"gain": gain})
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        out.append(
            Shot(
                draw_tray(model, rng, {}, model.profile.scenarios.stress),
                rng,
                dev,
                TofSettings(layout=layout),
                spectral,
                uptime_s,
                first,
            )
        )
    return out


def test_flat_empty_tray_reads_d0_within_3_sigma_in_every_tray_zone():
    model = product_model(FOIE)
    samples = render_batch(model, _shots(FOIE, 20), fixture="empty", truth=False)
    roi = model.rois[8]
    for s in samples:
        d = np.ravel(s.tof["distance_mm"])[roi]
        sigma = np.ravel(s.tof["range_sigma_mm"])[roi]
        assert set(np.ravel(s.tof["target_status"])[roi]) <= {5, 12, 13}
        # σ is the reported 1σ range noise; the fixed zone offset N(0, 1 mm), the 0.005·(z − 200)
        # range bias and 1 mm rounding add to it (docs/domain.md §1).
        tol = 3 * np.sqrt((sigma * 1.2) ** 2 + 1.0) + 0.3 + 0.5
        assert np.all(np.abs(d - model.d0_mm) <= tol)


def test_analytic_dome_volume_matches_closed_form_within_half_percent():
    model = product_model(FOIE)
    a, b, h, gamma = 78.0, 52.0, 43.6, 0.35
    closed = dome_volume_mm3(a, b, h, gamma)
    one, zero = np.ones(1), np.zeros(1)
    lobes = np.zeros((1, 3))
    shapes = ProductShapes(
        volume_mm3=one * closed,
        lobe_x0=lobes.copy(),
        lobe_y0=lobes.copy(),
        lobe_a=np.array([[a, 0, 0]]),
        lobe_b=np.array([[b, 0, 0]]),
        lobe_phi_rad=lobes.copy(),
        lobe_gamma=np.array([[gamma, 0, 0]]),
        groove_mm=zero,
        groove_w_mm=one * 8,
        field_bank=np.zeros(1, dtype=np.int64),
        field_ox=np.zeros(1, dtype=np.int64),
        field_oy=np.zeros(1, dtype=np.int64),
        field_std_mm=zero,
        dent_mm=zero,
        dent_s_mm=one,
        dent_x=zero,
        dent_y=zero,
    )
    grid = render_products(model.scene, "free_form", shapes)
    # The renderer solves the dome height for the target volume: it must come out at H, and
    # the grid integral at the closed form, if the 1 mm grid resolves the dome.
    assert grid.max() == pytest.approx(h, rel=0.005)
    assert float(grid.sum(dtype=np.float64)) == pytest.approx(closed, rel=0.005)


def test_a_gain_step_too_high_saturates_the_white_tile():
    model = product_model(FOIE)
    ok = render_batch(model, _shots(FOIE, 3), fixture="white", truth=False)
    high = render_batch(model, _shots(FOIE, 3, gain=32), fixture="white", truth=False)
    settings = model.profile.spectral.settings  # the profile's line settings (ASTEP 599)
    fs = as7341.full_scale(settings.atime, settings.astep)
    for s in ok:
        assert s.spectral["saturated"] == []
        assert (
            0.6 * fs < max(s.spectral["channels"][c] for c in as7341.CHANNEL_NAMES[:8]) < 0.8 * fs
        )
    for s in high:
        assert s.spectral["saturated"], s.spectral
        assert all(s.spectral["channels"][c] == fs for c in s.spectral["saturated"])


def test_dark_target_gives_status_255():
    model = product_model(FOIE)
    for s in render_batch(model, _shots(FOIE, 3), fixture="dark", truth=False):
        assert set(np.ravel(s.tof["target_status"])) == {255}


def test_4x4_zones_are_twice_as_wide_as_8x8():
    model = product_model(FOIE)
    w8 = np.ptp(model.fans[8].tan_x[0]) * 8 / 7
    w4 = np.ptp(model.fans[4].tan_x[0]) * 8 / 7
    assert w4 / w8 == pytest.approx(2.0)
    assert zone_k(4) * 260 == pytest.approx(2 * 26.92, abs=0.05)
    s4 = render_batch(model, _shots(FOIE, 1, layout=4))[0]
    assert np.shape(s4.tof["distance_mm"]) == (4, 4)


def test_first_frame_after_boot_is_all_status_6():
    model = product_model(FOIE)
    s = render_batch(model, _shots(FOIE, 1, first=True, uptime_s=0.5))[0]
    assert set(np.ravel(s.tof["target_status"])) <= {6, 255}
    assert 6 in np.ravel(s.tof["target_status"])


def test_centred_symmetric_dome_has_no_tilt_and_level_truth():
    model = product_model(FOIE)
    shots = _shots(FOIE, 1)
    d = shots[0].draw
    lobe = (0.0, 0.0, 78.0, 52.0, 0.0, 0.35)
    from dataclasses import replace

    flat = replace(d, lobes=(lobe,), groove_mm=0.0, field_std_mm=0.0)
    s = render_batch(model, [replace(shots[0], draw=flat)])[0]
    assert s.truth is not None
    assert s.truth["tilt_deg"] < 0.5
    assert s.truth["volume_mm3"] == pytest.approx(d.volume_mm3, rel=1e-3)


def test_a_tray_renders_the_same_alone_or_in_a_batch():
    model = product_model(FOIE)
    rates = dict.fromkeys(DEFECTS, 0.3)

    def shots() -> list[Shot]:
        dev = device_optics(np.random.default_rng(9))
        out = []
        for i in range(6):
            rng = np.random.default_rng([4, i])
            out.append(
                Shot(
                    draw_tray(model, rng, rates, model.profile.scenarios.stress),
                    rng,
                    dev,
                    TofSettings(),
                    SpectralSettings(),
                    100.0,
                    False,
                )
            )
        return out

    batch = render_batch(model, shots())
    alone = [render_batch(model, [s])[0] for s in shots()]
    assert batch == alone


def test_same_seed_gives_byte_identical_frames_that_decode():
    start = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)

    def run(seed: int) -> list[bytes]:
        dev = SimDevice(
            "line1",
            "line1-node01",
            0,
            seed,
            FOIE,
            2.0,
            start,
            realistic_faults=True,
            rates=dict.fromkeys(DEFECTS, 0.05),
        )
        msgs, truth = dev.produce(12)
        assert len(truth) == 12
        return [m.payload for m in msgs]

    first, again, other = run(5), run(5), run(6)
    assert first == again
    assert first != other
    tofs = [decode_tof(p) for p in first if b'"layout"' in p and p.endswith(b"}")]
    specs = [decode_spectral(p) for p in first if b'"channels"' in p and p.endswith(b"}")]
    assert tofs
    assert specs
    assert {t.sample_id for t in tofs} & {s.sample_id for s in specs}


def test_truth_grades_injected_defects():
    dev = SimDevice(
        "line1",
        "line1-node01",
        0,
        11,
        FOIE,
        2.0,
        datetime(2026, 1, 1, tzinfo=UTC),
        rates={"underfill": 1.0},
    )
    _, truth = dev.produce(8)
    for line in truth:
        assert [i["defect"] for i in line["injected"]] == ["underfill"]
        u = line["injected"][0]["params"]["u"]
        # natural mass ~ N(1.02 Qn, 3 %) times (1 − u); 3σ bound.
        assert line["mass_g"] < 400 * 1.02 * 1.09 * (1 - u)
        assert line["volume_mm3"] * 0.9 / 1000 < line["mass_g"] < line["volume_mm3"] * 1.1 / 1000
    assert any("underfill" in line["defects"] for line in truth)
    assert all(line["grade"] in {"A", "B", "C", "REJECT"} for line in truth)


def test_calibration_recovers_d0_and_fits_colour():
    model = product_model(FOIE)
    optics = device_optics(np.random.default_rng(2))
    cal = calibrate(
        model,
        optics,
        TofSettings(),
        model.profile.spectral.settings,
        np.random.default_rng(3),
        "cal-x-1",
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert cal.d0_mm == pytest.approx(model.d0_mm, abs=2.0)
    # The per-zone map carries each zone's fixed offset (docs/domain.md §1): over the tray's ROI,
    # map − offset is flat to well under the N(0, 1 mm) offsets it removes.
    assert cal.d0_map_mm is not None
    roi = model.rois[8]
    residual = np.ravel(cal.d0_map_mm)[roi] - optics.zone_offset_mm[8][roi]
    assert residual.std() < 0.45
    assert abs(residual.mean() - model.d0_mm) < 1.0
    # The floor's return per zone: the tray base (ρ 0.45) at d0 returns 2000·(0.45/0.5)·(200/d0)²
    # over the ROI, to the 2 % signal noise averaged over 100 frames.
    assert cal.signal0_map_kcps is not None
    floor = 2000.0 * (0.45 / 0.5) * (200.0 / model.d0_mm) ** 2
    assert np.ravel(cal.signal0_map_kcps)[roi] == pytest.approx(floor, rel=0.02)
    assert cal.color_delta_e is not None
    assert cal.color_delta_e < 3.0
    assert cal.white_bc is not None
    assert cal.dark_bc is not None
    assert all(w > 20 * d for w, d in zip(cal.white_bc, cal.dark_bc, strict=True))
    assert cal.lab_ref is not None
    assert np.linalg.norm(np.subtract(cal.lab_ref, model.anchors.lab_ref)) < 3.0


def test_trays_follow_the_calibration_so_no_warm_up_bias_reaches_them():
    # d0 is captured on a warmed-up node (CAL_UPTIME_S); a tray 5 s after boot would carry the
    # §1 warm-up bias 3 mm·e^(−t/300 s) that d0 does not (−5 % volume on short runs).
    from device_sim.calibration import CAL_UPTIME_S

    dev = SimDevice("line1", "line1-node01", 0, 7, FOIE, 2.0, datetime(2026, 1, 1, tzinfo=UTC))
    first = dev.uptime_s(dev.capture_time_s(0))
    assert first >= CAL_UPTIME_S
    assert 3.0 * np.exp(-first / 300.0) < 0.01
