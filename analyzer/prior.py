"""The line's product prior from a reference batch of good trays (docs/domain.md §5).

A plant runs a batch it knows is good (checked by hand, or the first trays of a fresh lot) past
the node and tells SQAL which samples they were (``sqal calibrate --reference``). For every
variable a defect is decided on, the batch's estimates x̂_i, each with its own σ_i, give the
good product's population: mean(x̂), and a true spread with the noise taken out,
s² = var(x̂) − mean(σ²) (floored: a population narrower than the noise shows as s² ≤ 0). The
verdict uses it as the prior of that variable (analyzer.decision), beside the share of trays
the line expects outside it.

Pure: arrays in, a wire block out. No simulator figure is used: the batch is the line's own.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from analyzer.fusion import SampleScores
from sqal.errors import CalibrationError
from sqal.wire import IndexPrior, ProductPrior

F64 = NDArray[np.float64]

MIN_REFERENCE = 30
"""Trays of a reference batch at least (the same floor as the weighed step)."""
SD_FLOOR_FRAC = 0.1
"""A population narrower than its estimates' noise gets this fraction of the noise as its
spread: the batch cannot tell how much narrower it is."""
SD_MIN = 1e-6
"""The smallest spread a prior gets (IndexPrior needs sd > 0): a variable every tray of the
batch read the same, with no noise, still has a population the decision can weigh."""


def _one(values: F64, sigmas: F64) -> IndexPrior | None:
    ok = np.isfinite(values) & np.isfinite(sigmas)
    if ok.sum() < MIN_REFERENCE:
        return None
    x, s = values[ok], sigmas[ok]
    noise2 = float(np.mean(s * s))
    spread2 = float(np.var(x, ddof=1)) - noise2
    floor = SD_FLOOR_FRAC * np.sqrt(noise2)
    sd = max(float(np.sqrt(max(spread2, 0.0))), floor, SD_MIN)
    # Five significant digits, not decimals: rounding to decimals took an sd under 5e-6 (a
    # variable read the same on every tray, with σ ≈ 0) to 0, which IndexPrior refuses.
    return IndexPrior(mean=round(float(np.mean(x)), 5), sd=float(f"{sd:.5g}"))


def prior_columns(scores: SampleScores) -> dict[str, tuple[F64, F64]]:
    """Per prior variable, the (estimates, σ) of the trays where both sensors scored."""
    t, s = scores.tof, scores.spectral
    both = t.present & s.present
    cols = {
        "oxidation_index": (s.oxidation_index, s.sigma_oxidation_index),
        "delta_b": (s.delta_b, s.sigma_delta_b),
        "delta_e": (s.delta_e, s.sigma_delta_e),
        "tilt_deg": (t.tilt_deg, t.sigma_tilt_deg),
        "roughness_mm": (t.roughness_mm, t.sigma_roughness_mm),
        "max_height_mm": (t.max_height_mm, t.sigma_max_height_mm),
    }
    return {k: (x[both], sig[both]) for k, (x, sig) in cols.items()}


def fit_prior(columns: dict[str, tuple[F64, F64]]) -> ProductPrior:
    """The product prior from a reference batch's (estimates, σ) per variable.

    Raises:
        CalibrationError: fewer than :data:`MIN_REFERENCE` trays.
    """
    n = max((len(x) for x, _ in columns.values()), default=0)
    if n < MIN_REFERENCE:
        raise CalibrationError(
            f"reference: {n} trays with both sensors scored, need at least {MIN_REFERENCE}"
        )
    return ProductPrior(n=n, **{k: _one(x, sig) for k, (x, sig) in columns.items()})


def fit_reference(scores: SampleScores) -> ProductPrior:
    """The product prior of a reference batch of good trays, scored as the line scores them.

    Raises:
        CalibrationError: fewer than :data:`MIN_REFERENCE` trays with both sensors' values.
    """
    return fit_prior(prior_columns(scores))
