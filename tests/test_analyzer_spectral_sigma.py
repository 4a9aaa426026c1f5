"""The spectral indices' σ (analyzer.spectral, docs/domain.md §4): the white step's count-noise
measurement, and the propagation checked against a Monte Carlo of noisy readings made here."""

from __future__ import annotations

import numpy as np
import pytest

from analyzer import build_params, score_spectral, stack_spectral
from analyzer.calibration import count_noise
from sqal.profiles import load_profile
from sqal.wire import SpectralFrame
from tests.test_analyzer_support import calibration, raw_for_reflectance, spectral_payload

K, COMMON = 0.5, 0.01


def _noisy(mean: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n readings of counts ``mean``: one shared drift per reading, shot noise var = K·raw."""
    drift = 1.0 + COMMON * rng.standard_normal((n, 1))
    level = mean[None, :] * drift
    return level + np.sqrt(K * level) * rng.standard_normal(level.shape)


def test_the_white_step_splits_count_noise_into_shot_and_shared_parts() -> None:
    rng = np.random.default_rng(3)
    mean = np.linspace(2000.0, 12000.0, 10)
    k, common = count_noise(_noisy(mean, 400, rng))
    assert k == pytest.approx(K, rel=0.1)
    assert common == pytest.approx(COMMON, rel=0.15)


def test_the_propagated_sigma_matches_the_scatter_of_repeated_readings() -> None:
    """One spectrum read 3,000 times with known noise: the analyzer's σ of each index (from a
    single reading) against the indices' spread over the readings."""
    profile = load_profile("foie_gras_lobe_400g")
    params = build_params(
        profile,
        calibration().model_copy(update={"count_noise_k": K, "common_noise_frac": COMMON}),
    )
    # F2/F7 = 0.6 puts the browning ratio inside its ramp (0.70 → 0.45), so the oxidation
    # index moves with the noise; F1-F8 set L*a*b* through the test's grey colour matrix.
    r = [0.20, 0.24, 0.15, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.50]
    mean = np.array([raw_for_reflectance(x, 12.5) for x in r], dtype=np.float64)
    rng = np.random.default_rng(11)
    reads = np.rint(_noisy(mean, 3000, rng))
    frames = [
        SpectralFrame.model_validate(spectral_payload([int(v) for v in row] + [2])) for row in reads
    ]
    n = len(frames)
    s = score_spectral(stack_spectral(frames), params, np.full(n, np.nan), np.full(n, np.nan))
    for value, sigma in (
        (s.oxidation_index, s.sigma_oxidation_index),
        (s.delta_e, s.sigma_delta_e),
        (s.delta_b, s.sigma_delta_b),
    ):
        assert 0.0 < float(np.std(value)) < 1.0
        assert float(np.mean(sigma)) == pytest.approx(float(np.std(value)), rel=0.15)


def test_without_a_noise_model_the_indices_count_as_exact() -> None:
    params = build_params(load_profile("foie_gras_lobe_400g"), calibration())
    raw = [raw_for_reflectance(0.3, 12.5)] * 10 + [2]
    frame = SpectralFrame.model_validate(spectral_payload(raw))
    s = score_spectral(stack_spectral([frame]), params, np.full(1, np.nan), np.full(1, np.nan))
    assert s.sigma_oxidation_index[0] == 0.0
    assert s.sigma_delta_e[0] == 0.0
