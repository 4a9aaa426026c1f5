"""Posteriors under the two-part prior of docs/domain.md §5 (good product + any faulty value).

Pure numpy and scipy, shared by the ToF scorer (the fill sub-score on the posterior mass) and
analyzer.decision (defect probabilities).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

F64 = NDArray[np.float64]

SIGMA_MIN = 1e-9
"""A σ of 0 (or unknown) makes the probability a step at the threshold."""


def _parts(
    x: F64, sigma: F64, mu: float | F64, s: float | F64, pi: float, lo: float, hi: float
) -> tuple[F64, F64, F64, F64, F64, F64]:
    """(x with NaN → μ, σ, weight of the good part, its posterior mean and sd, mass of the
    measurement inside [lo, hi] and its lower tail)."""
    sig = np.maximum(np.where(np.isnan(sigma), 0.0, sigma), SIGMA_MIN)
    tot = np.sqrt(s * s + sig * sig)
    xv = np.where(np.isnan(x), mu, x)
    dens_g = (1.0 - pi) * np.exp(-0.5 * ((xv - mu) / tot) ** 2) / tot
    z_lo, z_hi = ndtr((lo - xv) / sig), ndtr((hi - xv) / sig)
    mass_u = np.maximum(z_hi - z_lo, 1e-300)
    dens_u = pi * mass_u / (hi - lo) * np.sqrt(2.0 * np.pi)
    w_g = dens_g / (dens_g + dens_u)
    post_mu = (xv * s * s + mu * sig * sig) / (tot * tot)
    return xv, sig, w_g, post_mu, s * sig / tot, z_lo


def p_below_mixture(
    x: F64,
    sigma: F64,
    t: float,
    mu: float | F64,
    s: float | F64,
    pi: float,
    lo: float,
    hi: float,
) -> F64:
    """P(true value < t | estimate x, σ) under a two-part prior: (1 − π)·N(μ, s), the good
    product, + π·U(lo, hi), a value anywhere a faulty tray may have (NaN x → 0).

    The posterior keeps the two parts, weighted by how well each explains x: the Gaussian
    part's posterior is N((x·s² + μ·σ²)/(s² + σ²), s·σ/√(s² + σ²)); the uniform part's is
    N(x, σ) cut to [lo, hi].
    """
    xv, sig, w_g, post_mu, post_sd, z_lo = _parts(x, sigma, mu, s, pi, lo, hi)
    mass_u = np.maximum(ndtr((hi - xv) / sig) - z_lo, 1e-300)
    below_g = ndtr((t - post_mu) / post_sd)
    below_u = (ndtr((np.clip(t, lo, hi) - xv) / sig) - z_lo) / mass_u
    out = w_g * below_g + (1.0 - w_g) * below_u
    return np.asarray(np.where(np.isnan(x), 0.0, out))


def posterior_mean_sd(
    x: F64, sigma: F64, mu: float, s: float, pi: float, lo: float, hi: float
) -> tuple[F64, F64]:
    """Mean and sd of the true value given estimate x and σ, under the same prior (NaN x stays
    NaN): the good part's shrunk N and the faulty part's N(x, σ) (its cut to [lo, hi]
    ignored), mixed by their weights."""
    xv, sig, w_g, post_mu, post_sd, _ = _parts(x, sigma, mu, s, pi, lo, hi)
    mean = w_g * post_mu + (1.0 - w_g) * xv
    second = w_g * (post_sd**2 + post_mu**2) + (1.0 - w_g) * (sig**2 + xv**2)
    sd = np.sqrt(np.maximum(second - mean**2, 0.0))
    nan = np.isnan(x)
    return np.asarray(np.where(nan, np.nan, mean)), np.asarray(np.where(nan, np.nan, sd))
