"""The simulator's scenarios (docs/domain.md §7 "Scenarios", issue #16): a production filler that
keeps the packers' rules, and the first simulator's population kept as `stress`."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from device_sim.model import product_model
from device_sim.trays import DEFECTS, draw_tray
from sqal.errors import ConfigError
from sqal.profiles import load_profile, tne_g

PROFILES = ("foie_gras_lobe_400g", "pate_terrine_300g")
N = 20_000


def _masses(profile: str, scenario: str, rates: dict[str, float]) -> np.ndarray:
    model = product_model(profile)
    pop = model.profile.scenarios.get(scenario)
    rng = np.random.default_rng(20261205)
    return np.array([draw_tray(model, rng, rates, pop).mass_target_g for _ in range(N)])


@pytest.mark.parametrize("profile", PROFILES)
def test_the_production_filler_keeps_the_packers_rules(profile: str) -> None:
    """Directive 76/211/EEC Annex II, WELMEC 6.4: mean ≥ Qn, ≤ 2.5 % below T1, none below T2."""
    prof = load_profile(profile)
    qn = prof.product.nominal_mass_g
    t1, t2 = qn - tne_g(qn), qn - 2 * tne_g(qn)
    untouched = _masses(profile, "production", {})
    assert untouched.mean() >= qn
    assert np.mean(untouched < t1) <= 0.005  # as a plant sets its filler: far inside the rule
    assert np.sum(untouched < t2) == 0
    rate = prof.scenarios.production.defect_rate
    line = _masses(profile, "production", dict.fromkeys(DEFECTS, rate))
    assert line.mean() >= qn  # injected underfills included, the lot still passes
    assert np.mean(line < t1) <= 0.025


def test_stress_draws_the_first_simulator_s_population() -> None:
    """N(1.02·Qn, 3 %) from the same random stream as before the scenarios existed."""
    model = product_model("foie_gras_lobe_400g")
    pop = model.profile.scenarios.get("stress")
    assert (pop.fill_mean, pop.fill_sd, pop.defect_rate) == (1.02, 0.03, 0.03)
    rng = np.random.default_rng(7)
    twin = copy.deepcopy(rng)
    draw = draw_tray(model, rng, {}, pop)
    for _ in DEFECTS:  # the injection draws come first
        twin.random()
    expected = 400.0 * 1.02 * (1.0 + 0.03 * twin.standard_normal())
    assert draw.mass_target_g == pytest.approx(expected)


def test_an_unknown_scenario_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="--scenario 'weekend'"):
        load_profile("foie_gras_lobe_400g").scenarios.get("weekend")


def _untouched_truth(profile: str, scenario: str, per_device: int) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    from device_sim.device import SimDevice

    out: list[dict[str, Any]] = []
    for index in range(2):
        dev = SimDevice("L1", f"d{index}", index, 31, profile, 2.0, datetime.now(UTC),
                        rates={}, scenario=scenario)  # fmt: skip
        out += dev.produce(per_device)[1]
    return out


@pytest.mark.parametrize("profile", PROFILES)
def test_untouched_production_trays_clear_the_lid_and_are_grade_a(profile: str) -> None:
    """#16: good product is grade A (≥ 97 %) and touches the film (its true peak above the seal
    limit) on ≤ 0.1 % of trays."""
    seal = load_profile(profile).tray.seal_limit_mm
    truth = _untouched_truth(profile, "production", 2000)
    touching = sum(1 for t in truth if t["peak_height_mm"] > seal)
    assert touching <= 0.001 * len(truth)
    assert sum(1 for t in truth if t["grade"] == "A") >= 0.97 * len(truth)


def test_the_truth_decides_seal_contact_on_the_true_peak() -> None:
    """A lobe whose zone means stay below the seal limit while its peak rises above it touches
    the film: critical overfill, REJECT."""
    from device_sim.truth import TofTruth, grade

    model = product_model("foie_gras_lobe_400g")
    seal = model.profile.tray.seal_limit_mm
    tof = TofTruth(40.0, seal - 2.0, 20.0, 1.0, 0.9, 2.0, 1.0, 0.05)
    spec = {"oxidation_index": 0.1, "delta_e": 1.0, "delta_b": 0.5,
            "freshness_index": 0.9, "fat_quality_index": 0.9}  # fmt: skip
    below, _, _ = grade(model, 404.0, tof, spec, False, seal - 0.5)
    above, letter, _ = grade(model, 404.0, tof, spec, False, seal + 0.5)
    assert "overfill" not in below
    assert ("overfill" in above, letter) == (True, "REJECT")


def test_the_truth_records_each_deciding_variable_s_distance_to_its_threshold() -> None:
    from device_sim.truth import TofTruth, grade, margins

    model = product_model("foie_gras_lobe_400g")
    p = model.profile  # Qn 400 g, TNE 12 g: T1 388, T2 376; giveaway at 1.12·Qn = 448 g
    tof = TofTruth(40.0, 44.0, 20.0, 4.5, 0.9, 21.0, 0.83, 0.05)
    spec = {"oxidation_index": 0.2, "delta_e": 5.0, "delta_b": 1.0,
            "freshness_index": 0.9, "fat_quality_index": 0.9}  # fmt: skip
    final = grade(model, 390.0, tof, spec, False, 46.5)[2]
    m = margins(model, 390.0, tof, spec, 46.5, final)
    assert m["mass_g"] == pytest.approx(2.0)
    assert m["peak_height_mm"] == pytest.approx(p.tray.seal_limit_mm - 46.5)
    assert m["roughness_mm"] == pytest.approx(abs(4.5 - p.tof.roughness_mm.minor))
    assert m["tilt_deg"] == pytest.approx(1.0)  # minor 20°, critical 30°
    assert m["valid_share"] == pytest.approx(0.03)  # minor 0.8
    assert m["delta_e"] == pytest.approx(1.0)  # minor 6
    assert 0.0 <= m["final_score"] <= 0.5


def test_a_noiseless_render_of_one_tray_is_the_same_whatever_its_noise_draws() -> None:
    """``bench.accuracy --ceiling``: every sensor noise source off, so a tray rendered with two
    different noise generators gives identical frames (and with noise, different ones)."""
    from device_sim.render import Shot, device_optics, render_batch
    from sqal.wire import TofSettings

    model = product_model("foie_gras_lobe_400g")
    draw = draw_tray(model, np.random.default_rng(3), {}, model.profile.scenarios.production)
    optics = device_optics(np.random.default_rng(4))
    settings = model.profile.spectral.settings

    def render(noise_seed: int, noise: bool) -> tuple[object, object]:
        shot = Shot(draw, np.random.default_rng(noise_seed), optics, TofSettings(layout=8),
                    settings, 3600.0, False)  # fmt: skip
        sample = render_batch(model, [shot], truth=False, noise=noise)[0]
        return sample.tof, sample.spectral

    assert render(10, noise=False) == render(11, noise=False)
    assert render(10, noise=True) != render(11, noise=True)
