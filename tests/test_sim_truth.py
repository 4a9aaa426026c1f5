"""The batched truth fits are the plain per-tray definitions, computed faster."""

from __future__ import annotations

import math

import numpy as np
import pytest

from device_sim.model import product_model
from device_sim.truth import tof_truth, tof_truth_batch


@pytest.mark.parametrize("profile", ["foie_gras_lobe_400g", "pate_terrine_300g"])
def test_batch_equals_one_tray_at_a_time(profile: str) -> None:
    model = product_model(profile)
    rng = np.random.default_rng(3)
    n, layout = 40, 8
    zones = layout * layout
    height = rng.uniform(-2, 45, (n, zones))
    height[::7] = 0.0  # empty trays: no product zones at all
    rho = rng.uniform(0.2, 0.7, (n, zones))
    invalid = rng.random((n, zones)) < 0.1
    invalid[5] = True  # every zone invalid
    batch = tof_truth_batch(model, layout, height, rho, invalid)
    for i in range(n):
        one = tof_truth(model, layout, height[i], rho[i], invalid[i])
        for field, want in vars(one).items():
            got = getattr(batch[i], field)
            if want is None or got is None:
                assert got is want, (i, field)
            else:
                assert math.isclose(got, want, rel_tol=1e-7, abs_tol=1e-7), (i, field, got, want)
