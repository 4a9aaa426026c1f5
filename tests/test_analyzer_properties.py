"""Property tests of the scoring core (STYLE.md, "Property tests")."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer import ScoringParams, build_params, score_batch
from analyzer.arrays import SpectralArrays, TofArrays
from analyzer.fusion import SampleScores
from analyzer.params import BatchParams
from sqal.profiles import load_profile
from sqal.wire import IndexPrior, ProductPrior, SpectralAnchors, WeighedMassModel
from tests.test_analyzer_support import calibration

PROFILES = ("foie_gras_lobe_400g", "pate_terrine_300g")
PARAMS: dict[tuple[str, bool], ScoringParams] = {
    (name, cal): build_params(
        load_profile(name),
        calibration(d0_mm=load_profile(name).tof.mount_distance_mm) if cal else None,
    )
    for name in PROFILES
    for cal in (True, False)
}


def random_batch(seed: int, n: int, d0: float) -> tuple[TofArrays, SpectralArrays]:
    """n random but plausible samples: domes with noise, odd statuses, missing halves."""
    rng = np.random.default_rng(seed)
    shape = (n, 8, 8)
    height = rng.uniform(-5, 70, (n, 1, 1)) * rng.uniform(0.3, 1.0, shape)
    status = rng.choice([5, 5, 5, 5, 6, 9, 255, 4, 12], size=shape)
    tof = TofArrays(
        distance_mm=np.rint(d0 - height + rng.normal(0, 2, shape)),
        target_status=status,
        signal_per_spad=rng.uniform(0, 3000, shape),
        range_sigma_mm=rng.uniform(0, 12, shape),
        reflectance_pct=np.round(rng.uniform(0, 80, shape) * 2) / 2,
        present=rng.random(n) < 0.9,
    )
    raw = rng.integers(0, 7000, (n, 11)).astype(np.float64)
    spec = SpectralArrays(
        raw=raw,
        gain=rng.choice([4.0, 16.0, 64.0], size=n),
        atime=np.full(n, 29.0),
        astep=np.full(n, 199.0),
        saturated=rng.random((n, 11)) < 0.02,
        flicker=rng.random(n) < 0.1,
        present=rng.random(n) < 0.9,
    )
    return tof, spec


def rows(scores: SampleScores) -> list[np.ndarray]:
    t, s, f = scores.tof, scores.spectral, scores.fusion
    return [
        t.volume_mm3, t.mass_g, t.avg_height_mm, t.max_height_mm, t.height_variation_mm,
        t.surface_uniformity, t.tilt_deg, t.fill_ratio, t.valid_zones, t.quality_score, t.grade,
        t.defects, t.confidence, s.lab, s.freshness_index, s.fat_quality_index,
        s.oxidation_index, s.color_uniformity, s.quality_score, s.grade, s.defects,
        s.confidence, f.final_score, f.final_grade, f.confidence, f.defects,
    ]  # fmt: skip


def take(tof: TofArrays, spec: SpectralArrays, idx: np.ndarray) -> tuple[TofArrays, SpectralArrays]:
    t = TofArrays(*(getattr(tof, k)[idx] for k in TofArrays.__dataclass_fields__))
    s = SpectralArrays(*(getattr(spec, k)[idx] for k in SpectralArrays.__dataclass_fields__))
    return t, s


common = given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 12),
    profile=st.sampled_from(PROFILES),
    cal=st.booleans(),
)


@settings(max_examples=40, deadline=None)
@common
def test_scores_stay_in_unit_interval_and_finite_or_null(
    seed: int, n: int, profile: str, cal: bool
) -> None:
    p = PARAMS[(profile, cal)]
    scores = score_batch(*random_batch(seed, n, p.d0_mm), p)
    for arr in (
        scores.tof.quality_score, scores.tof.surface_uniformity, scores.spectral.quality_score,
        scores.spectral.freshness_index, scores.spectral.fat_quality_index,
        scores.spectral.oxidation_index, scores.spectral.color_uniformity,
        scores.fusion.final_score, scores.fusion.confidence, scores.tof.confidence,
        scores.spectral.confidence,
    ):  # fmt: skip
        ok = arr[~np.isnan(arr)]
        assert ((ok >= 0) & (ok <= 1)).all()
    for arr in rows(scores):
        assert not np.isinf(np.asarray(arr, dtype=np.float64)).any()


@settings(max_examples=40, deadline=None)
@common
def test_a_frame_scores_the_same_alone_or_in_a_batch(
    seed: int, n: int, profile: str, cal: bool
) -> None:
    p = PARAMS[(profile, cal)]
    tof, spec = random_batch(seed, n, p.d0_mm)
    batch = rows(score_batch(tof, spec, p))
    for i in range(n):
        alone = rows(score_batch(*take(tof, spec, np.array([i])), p))
        for b, a in zip(batch, alone, strict=True):
            np.testing.assert_allclose(b[i : i + 1], a, rtol=1e-12, atol=1e-9)


@settings(max_examples=40, deadline=None)
@common
def test_permuting_a_batch_permutes_its_results(seed: int, n: int, profile: str, cal: bool) -> None:
    p = PARAMS[(profile, cal)]
    tof, spec = random_batch(seed, n, p.d0_mm)
    perm = np.random.default_rng(seed).permutation(n)
    base = rows(score_batch(tof, spec, p))
    permuted = rows(score_batch(*take(tof, spec, perm), p))
    for b, q in zip(base, permuted, strict=True):
        np.testing.assert_allclose(b[perm], q, rtol=1e-12, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    profile=st.sampled_from(PROFILES),
    cal=st.booleans(),
    zone=st.integers(0, 63),
    how=st.sampled_from(["status", "sigma", "signal", "distance"]),
)
def test_invalidating_a_zone_never_raises_valid_zones_or_confidence(
    seed: int, profile: str, cal: bool, zone: int, how: str
) -> None:
    p = PARAMS[(profile, cal)]
    tof, spec = random_batch(seed, 1, p.d0_mm)
    before = score_batch(tof, spec, p)
    r, c = divmod(zone, 8)
    if how == "status":
        tof.target_status[0, r, c] = 255
    elif how == "sigma":
        tof.range_sigma_mm[0, r, c] = p.profile.tof.max_sigma_mm + 5
    elif how == "signal":
        tof.signal_per_spad[0, r, c] = 0.0
    else:
        tof.distance_mm[0, r, c] = 5.0
    after = score_batch(tof, spec, p)
    assert after.tof.valid_zones[0] <= before.tof.valid_zones[0]
    assert after.tof.confidence[0] <= before.tof.confidence[0] + 1e-12
    assert after.fusion.confidence[0] <= before.fusion.confidence[0] + 1e-12


def _fleet(name: str) -> list[ScoringParams]:
    """Devices of one profile with every kind of calibration the core reads per sample: maps,
    range slope, fitted mass models, noise models, priors, colour, anchors, none at all."""
    profile = load_profile(name)
    d0 = profile.tof.mount_distance_mm
    rng = np.random.default_rng(3)
    base = calibration(d0_mm=d0)
    d0_map = (d0 + rng.normal(0, 1.0, (8, 8))).round(1).tolist()
    signal0 = rng.uniform(200, 900, (8, 8)).round(1).tolist()
    prior = ProductPrior(
        n=40,
        oxidation_index=IndexPrior(mean=0.18, sd=0.04),
        delta_e=IndexPrior(mean=3.0, sd=1.0),
        tilt_deg=IndexPrior(mean=2.0, sd=1.0),
        max_height_mm=IndexPrior(mean=profile.tof.max_height.target_mm, sd=2.0),
    )
    anchors = SpectralAnchors(MI_fresh=0.9, MI_met=1.6, BR_fresh=0.8, BR_ox=1.5, NR_ref=1.1)
    fitted = WeighedMassModel(a_g=12.0, b_g_per_cm3=0.95, c_g_per_cm2=1.5, sigma_g=4.0, n=40)
    updates: list[dict[str, object]] = [
        {},
        {"d0_map_mm": d0_map, "signal0_map_kcps": signal0, "range_scale": 1.03},
        {"mass_model": fitted},
        {"count_noise_k": 0.6, "common_noise_frac": 0.01, "product_prior": prior},
        {"anchors": anchors, "lab_ref": (62.0, 14.0, 18.0), "z_cal_mm": d0 - 40.0},
        {"dark_bc": None, "white_bc": None, "rho_white": None, "color_matrix": None},
        {"signal0_map_kcps": signal0, "count_noise_k": 1.5, "product_prior": prior},
    ]
    devices = [build_params(profile, base.model_copy(update=u)) for u in updates]
    devices.append(build_params(profile, None))
    assert len({d.batch_key for d in devices}) == 1  # one ROI: one call
    return devices


FLEETS = {name: _fleet(name) for name in PROFILES}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 24), profile=st.sampled_from(PROFILES))
def test_a_sample_scores_the_same_alone_or_among_other_devices(
    seed: int, n: int, profile: str
) -> None:
    # The analyzer scores a round's devices of one profile in one call (BatchParams): each
    # sample must come out bit for bit as its own device's call would score it.
    fleet = FLEETS[profile]
    tof, spec = random_batch(seed, n, fleet[0].d0_mm)
    owner = np.random.default_rng(seed).integers(0, len(fleet), n)
    mixed = rows(score_batch(tof, spec, BatchParams.per_sample([fleet[i] for i in owner])))
    for d, p in enumerate(fleet):
        mine = np.flatnonzero(owner == d)
        if mine.size == 0:
            continue
        alone = rows(score_batch(*take(tof, spec, mine), p))
        for m, a in zip(mixed, alone, strict=True):
            np.testing.assert_array_equal(m[mine], a)


def test_devices_of_other_profiles_are_not_scored_in_one_call() -> None:
    with pytest.raises(ValueError, match="profile and the ROI"):
        BatchParams.per_sample([FLEETS[PROFILES[0]][0], FLEETS[PROFILES[1]][0]])
