"""Decisions from probabilities (analyzer.decision, docs/domain.md §5 revised 2026-12).

The posteriors are checked where the truth is known exactly: synthetic populations drawn here
(not by the simulator), measured with a known Gaussian error, and binned by the probability the
analyzer gave. A calibrated P means that among trays given P ≈ 0.3, about 30 % are defective.
The rules are checked on closed-form frames: a flat product whose height is set against the
seal limit, scored through the whole core.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from analyzer import SampleMeta, build_params, score_batch, stack_spectral, stack_tof, to_results
from analyzer.arrays import WeightArrays
from analyzer.decision import p_above, p_beyond, p_mass_below
from analyzer.grading import CODE_INDEX
from analyzer.posterior import posterior_mean_sd
from analyzer.prior import fit_prior
from sqal.errors import CalibrationError
from sqal.profiles import FusionWeights, load_profile
from sqal.wire import DefectCode, IndexPrior, ProductPrior, TofFrame
from tests.test_analyzer_support import TS, tof_payload

PARAMS = build_params(load_profile("foie_gras_lobe_400g"))
D0 = 260.0


def _calibration_gaps(p: np.ndarray, truth: np.ndarray, bins: int = 10) -> list[float]:
    """|observed frequency − mean P| per probability bin holding at least 500 trays."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    gaps = []
    for b in range(bins):
        m = idx == b
        if m.sum() >= 500:
            gaps.append(abs(float(truth[m].mean()) - float(p[m].mean())))
    return gaps


def test_a_flat_prior_probability_is_calibrated_on_a_broad_population() -> None:
    rng = np.random.default_rng(1)
    n = 400_000
    true = rng.uniform(30.0, 60.0, n)  # broad against σ: the flat prior holds
    sigma = rng.uniform(0.5, 3.0, n)
    est = true + sigma * rng.standard_normal(n)
    near = np.abs(est - 48.0) < 8.0
    p = p_above(est[near], sigma[near], 48.0)
    gaps = _calibration_gaps(p, true[near] > 48.0)
    assert len(gaps) >= 8
    assert max(gaps) < 0.02


def _declared_population(rng: np.random.Generator, n: int) -> np.ndarray:
    """n true masses from the profile's declared fill prior: the filler's N(μ·Qn, s·Qn), and
    with weight π any mass in mass_range_g."""
    prior = PARAMS.profile.decision.prior
    qn = PARAMS.profile.product.nominal_mass_g
    lo, hi = PARAMS.profile.product.mass_range_g
    odd = rng.random(n) < prior.defect_rate
    return np.where(
        odd, rng.uniform(lo, hi, n), rng.normal(prior.fill_mean * qn, prior.fill_sd * qn, n)
    )


def test_the_fill_posterior_is_calibrated_on_the_line_s_own_population() -> None:
    """Masses drawn from the declared prior itself: (1 − π) N(μ·Qn, s·Qn) + π U(mass range)."""
    qn = PARAMS.profile.product.nominal_mass_g
    rng = np.random.default_rng(2)
    n = 1_000_000
    true = _declared_population(rng, n)
    sigma = np.full(n, 10.0)
    est = true + sigma * rng.standard_normal(n)
    t1 = qn - PARAMS.tne_g
    p = p_mass_below(est, sigma, t1, PARAMS)
    assert p.min() >= 0.0
    assert p.max() <= 1.0
    # Overall, the expected number of short trays equals the true count (within noise).
    assert p.sum() == pytest.approx(float((true < t1).sum()), rel=0.03)
    gaps = _calibration_gaps(p, true < t1)
    assert gaps
    assert max(gaps) < 0.03


def test_a_reading_far_below_the_setting_is_believed() -> None:
    """A 300 g reading with σ 10 g: the filler's N(404, 6) cannot explain it, the range can."""
    p = p_mass_below(np.array([300.0, 404.0]), np.array([10.0, 10.0]), 376.0, PARAMS)
    assert p[0] > 0.99
    assert p[1] < 0.001


def _flat(height_mm: float, sigma_mm: float = 1.0) -> TofFrame:
    """Every zone at the given height above the floor, as a flat product would read."""
    return TofFrame.model_validate(tof_payload(np.full((8, 8), D0 - height_mm), sigma_mm=sigma_mm))


@pytest.mark.parametrize(
    ("height_mm", "decision"),
    [(56.0, "REJECT"), (47.0, "HOLD"), (44.0, "PASS")],
)
def test_seal_contact_decides_from_the_peak_and_its_sigma(height_mm: float, decision: str) -> None:
    """Seal limit 48 mm. A flat top has no relief (R ≈ 0), so the peak's σ is its zone's
    shrunk noise with the 1 mm quantisation floor: 56 mm is certain contact, 47 mm is 1σ
    under the limit (P ≈ 0.16: HOLD), 44 mm is 4σ under (P ≈ 3e-5: PASS)."""
    scores = score_batch(stack_tof([_flat(height_mm)], 8), stack_spectral([None]), PARAMS)
    t, f = scores.tof, scores.fusion
    assert t.max_height_mm[0] == pytest.approx(height_mm, abs=0.05)
    assert t.sigma_max_height_mm[0] == pytest.approx(1.0, abs=0.15)
    want = {"REJECT": (0.99, 1.0), "HOLD": (0.05, 0.4), "PASS": (0.0, 0.001)}[decision]
    p_contact = f.p_reject[0]  # seal contact is the only critical candidate here
    assert want[0] <= p_contact <= want[1]
    # The spectral frame is missing: what was seen decides a REJECT, anything else is held.
    expect = "REJECT" if decision == "REJECT" else "HOLD"
    assert ("PASS", "HOLD", "REJECT")[int(f.decision[0])] == expect


def _weights(mass_g: float | None, expected: bool = True) -> WeightArrays:
    return WeightArrays(
        expected=np.array([expected]),
        present=np.array([mass_g is not None]),
        mass_g=np.array([np.nan if mass_g is None else mass_g]),
        sigma_g=np.array([0.5]),
    )


def test_a_checkweigher_s_mass_decides_fill_where_the_volume_cannot() -> None:
    """The same flat 30 mm frame reads m̂ = 450 g (σ_m 13.5 g). Weighed at 365 g, below
    Qn − 2·TNE = 376 g, the tray is a certain critical underfill; weighed at 401 g, no fill
    defect at all. The ToF section keeps its own estimate; the result echoes the weight."""
    frame = stack_tof([_flat(30.0)], 8)
    spec = stack_spectral([None])
    short = score_batch(frame, spec, PARAMS, _weights(365.0))
    assert short.tof.mass_g[0] == pytest.approx(450.3, abs=0.5)
    assert short.tof.fill_mass_g[0] == pytest.approx(365.0)
    assert short.fusion.p_reject[0] > 0.999
    assert short.fusion.decision[0] == 2  # REJECT
    good = score_batch(frame, spec, PARAMS, _weights(401.0))
    u = CODE_INDEX[DefectCode.UNDERFILL]
    assert good.fusion.p_defect[0, u] < 1e-6
    (res,) = to_results(good, [SampleMeta("dev1", "dev1-abc123-00000001", TS)], "x", None, [0])
    assert res.weight is not None
    assert res.weight.mass_g == pytest.approx(401.0)
    assert res.tof is not None
    assert res.tof.fill_ratio == pytest.approx(401.0 / 400.0)


def test_a_weight_the_line_owes_and_did_not_send_holds_the_tray() -> None:
    """A ToF-only profile (spectral fusion weight 0), so the weight is the only missing part:
    a flat 27 mm fill (m̂ 410 g) passes when weighed at 404 g and is held when the weight the
    line's config announces never came."""
    profile = load_profile("foie_gras_lobe_400g")
    tof_only = build_params(
        profile.model_copy(update={"fusion": FusionWeights(tof=1.0, spectral=0.0)})
    )
    frame, spec = stack_tof([_flat(27.0)], 8), stack_spectral([None])
    weighed = score_batch(frame, spec, tof_only, _weights(404.0))
    assert weighed.fusion.decision[0] == 0  # PASS
    missing = score_batch(frame, spec, tof_only, _weights(None))
    w = CODE_INDEX[DefectCode.MISSING_WEIGHT]
    assert missing.fusion.defects[0, w] == 1
    assert missing.fusion.decision[0] == 1  # HOLD


def test_a_reference_batch_gives_the_population_with_the_noise_taken_out() -> None:
    """Good trays' oxidation index ~ N(0.10, 0.05), each read with σ 0.07: the batch's
    estimates spread 0.086, the prior keeps 0.05."""
    rng = np.random.default_rng(5)
    n = 4000
    true = rng.normal(0.10, 0.05, n)
    sigma = np.full(n, 0.07)
    est = true + sigma * rng.standard_normal(n)
    prior = fit_prior({"oxidation_index": (est, sigma)})
    assert prior.n == n
    assert prior.oxidation_index is not None
    assert prior.oxidation_index.mean == pytest.approx(0.10, abs=0.005)
    assert prior.oxidation_index.sd == pytest.approx(0.05, rel=0.1)
    with pytest.raises(CalibrationError, match="need at least 30"):
        fit_prior({"oxidation_index": (est[:29], sigma[:29])})


def test_with_the_line_s_prior_a_noisy_reading_near_a_limit_is_weighed_against_it() -> None:
    """Oxidation limit 0.35. A reading of 0.38 ± 0.07 is 67 % likely beyond it under a flat
    prior; under good product N(0.10, 0.05) with the profile's 3 % anywhere in [0, 1] it is
    38 % likely: less likely than not, a good tray read high (and still a HOLD at p_hold
    0.02). A reading of 0.80 is beyond whatever the prior."""
    ip = IndexPrior(mean=0.10, sd=0.05)
    with_prior = replace(PARAMS, product_prior=ProductPrior(n=100, oxidation_index=ip))
    x, sigma = np.array([0.38, 0.80]), np.array([0.07, 0.07])
    flat = p_beyond(x, sigma, 0.35, "oxidation_index", PARAMS)
    informed = p_beyond(x, sigma, 0.35, "oxidation_index", with_prior)
    assert flat[0] == pytest.approx(0.666, abs=0.01)
    assert informed[0] == pytest.approx(0.38, abs=0.01)
    assert informed[1] > 0.99


def test_the_posterior_fill_is_unbiased_given_the_reading() -> None:
    """Among trays read at about the same m̂, the posterior mean is their true mean (the
    fill sub-score reads it): drawn from the line's declared population, read with σ 10 g."""
    prior = PARAMS.profile.decision.prior
    qn = PARAMS.profile.product.nominal_mass_g
    lo, hi = PARAMS.profile.product.mass_range_g
    rng = np.random.default_rng(9)
    n = 400_000
    true = _declared_population(rng, n)
    est = true + 10.0 * rng.standard_normal(n)
    mean, sd = posterior_mean_sd(
        est, np.full(n, 10.0), prior.fill_mean * qn, prior.fill_sd * qn, prior.defect_rate, lo, hi
    )
    for a, b in ((380, 390), (395, 405), (410, 420), (430, 440)):
        m = (est >= a) & (est < b)
        assert float(np.mean(true[m] - mean[m])) == pytest.approx(0.0, abs=0.6)
        assert float(np.std(true[m] - mean[m])) == pytest.approx(float(np.mean(sd[m])), rel=0.1)


def test_a_short_reading_on_too_few_zones_holds_unless_a_checkweigher_confirms_it() -> None:
    """A lobe-like block (the inner 2×4 ROI zones at 44 mm, the rest at 16 mm) reads
    m̂ ≈ 366 g, below Qn − 2·TNE = 376 g, but 6 of the 24 ROI zones returned nothing
    (v = 0.75 < 0.8): lost zones read as missing product, so the ToF mass can only hold the
    tray. A checkweigher's 366 g rejects it."""
    profile = load_profile("foie_gras_lobe_400g")
    tof_only = build_params(
        profile.model_copy(update={"fusion": FusionWeights(tof=1.0, spectral=0.0)})
    )
    dist = np.full((8, 8), D0 - 16.0)
    dist[3:5, 2:6] = D0 - 44.0
    payload = tof_payload(dist, sigma_mm=1.0)
    status = np.full((8, 8), 5)
    status[2, 1:7] = 255  # the ROI's top row
    payload["target_status"] = status.tolist()
    frame = stack_tof([TofFrame.model_validate(payload)], 8)
    spec = stack_spectral([None])
    seen = score_batch(frame, spec, tof_only)
    assert seen.tof.valid_share[0] == pytest.approx(0.75)
    assert seen.tof.mass_g[0] == pytest.approx(366.0, abs=1.0)
    assert seen.fusion.decision[0] == 1  # HOLD
    weighed = score_batch(frame, spec, tof_only, _weights(366.0))
    assert weighed.fusion.decision[0] == 2  # REJECT
