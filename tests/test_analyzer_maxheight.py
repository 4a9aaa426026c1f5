"""max_height_mm is taken over denoised zone heights, not the noisy order statistic."""

from __future__ import annotations

import numpy as np

from analyzer import build_params, score_batch, stack_spectral, stack_tof
from sqal.profiles import load_profile
from tests.frames import tof_frame


def test_max_height_of_a_noisy_flat_fill_is_not_the_noisy_maximum():
    profile = load_profile("pate_terrine_300g")
    params = build_params(profile)
    rng = np.random.default_rng(5)
    frames = []
    for i in range(40):
        d = np.rint(200 - 24 + 1.8 * rng.standard_normal((8, 8))).astype(int)
        frames.append(
            tof_frame(
                seq=i,
                distance_mm=d.tolist(),
                range_sigma_mm=[[1.8] * 8] * 8,
                reflectance_pct=[[60.0] * 8] * 8,
            )
        )
    tof = stack_tof(frames, 8)
    scores = score_batch(tof, stack_spectral([None] * len(frames)), params)
    raw_max = (200 - tof.distance_mm.reshape(40, 64)[:, params.roi.ravel()]).max(axis=1)
    # The true surface is flat at 24 mm: the raw max of 24 noisy zones overshoots by ~2σ.
    assert raw_max.mean() > 26.5
    # Denoised (quadric + Wiener-shrunk residual): at most half the raw overshoot remains.
    overshoot = float(np.mean(scores.tof.max_height_mm)) - 24.0
    assert 0.0 <= overshoot < 0.5 * (raw_max.mean() - 24.0)
