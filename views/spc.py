"""Statistical process control of a line's mass and reject rate (issue #19 item 4): pure numpy.

The charts a quality manager reads beside the packers' rules:

- **X̄ and s charts** of mass per subgroup (k consecutive trays, or the trays of a time slot),
  with centre lines and control limits from a *baseline* period: X̄̄ ± A₃·s̄ and B₃·s̄ … B₄·s̄,
  per subgroup size (ASTM E2587; Montgomery, *Introduction to Statistical Quality Control*,
  §6.3). Limits come from the baseline only, so a drifting shift does not widen its own limits.
- **Western Electric rules** on the X̄ chart (zones of 1, 2, 3 σ of the subgroup mean):
  1 one point beyond 3σ; 2 two of three consecutive beyond 2σ on one side; 3 four of five
  beyond 1σ on one side; 4 eight in a row on one side of the centre line.
- **Capability** against the lower limit T1 = Qn − TNE and the upper giveaway limit:
  Cp = (USL − LSL)/6σ̂, Cpk = min(USL − μ, μ − LSL)/3σ̂ with σ̂ = s̄/c₄ (within subgroups), and
  Pp/Ppk with the overall standard deviation.
- **p chart** of the reject rate: p̄ ± 3·√(p̄(1 − p̄)/nᵢ) per subgroup of nᵢ trays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

RULES = (1, 2, 3, 4)
"""The Western Electric rules :func:`western_electric` flags, in that order."""


def c4(n: int | NDArray[np.int64]) -> F64:
    """The bias of the sample standard deviation: E[s] = c₄(n)·σ for n normal values (n ≥ 2)."""
    m = np.asarray(n, dtype=np.float64)
    lg = np.vectorize(math.lgamma)
    return np.asarray(np.sqrt(2.0 / (m - 1.0)) * np.exp(lg(m / 2.0) - lg((m - 1.0) / 2.0)))


@dataclass(frozen=True, slots=True)
class Subgroups:
    """Per subgroup: its size, mean and sample standard deviation (ddof 1); (g,) each."""

    n: NDArray[np.int64]
    mean: F64
    sd: F64

    @classmethod
    def of(cls, groups: list[F64]) -> Subgroups:
        """Subgroups from lists of values; groups with fewer than 2 values are dropped."""
        kept = [np.asarray(g, dtype=np.float64) for g in groups if len(g) >= 2]
        return cls(
            np.array([len(g) for g in kept], dtype=np.int64),
            np.array([g.mean() for g in kept]),
            np.array([g.std(ddof=1) for g in kept]),
        )

    @classmethod
    def consecutive(cls, values: F64, size: int) -> Subgroups:
        """Consecutive subgroups of ``size`` values in arrival order (a short tail is dropped)."""
        v = np.asarray(values, dtype=np.float64)
        whole = (v.size // size) * size
        return cls.of(list(v[:whole].reshape(-1, size))) if whole else cls.of([])


@dataclass(frozen=True, slots=True)
class XbarS:
    """X̄ and s chart limits per subgroup (arrays of the subgroups' length) and the baseline's
    centre lines: ``grand_mean`` (X̄̄), ``s_bar`` (s̄) and ``sigma`` (σ̂ = s̄/c₄ of the baseline)."""

    grand_mean: float
    s_bar: float
    sigma: float
    x_lcl: F64
    x_ucl: F64
    s_lcl: F64
    s_ucl: F64


def xbar_s_limits(baseline: Subgroups, chart: Subgroups) -> XbarS:
    """Control limits for ``chart``'s subgroups from the ``baseline`` period.

    σ̂ = mean over the baseline of sᵢ/c₄(nᵢ) (unbiased for unequal sizes); for a chart subgroup
    of n: X̄̄ ± 3σ̂/√n, and the s chart c₄(n)σ̂ ± 3σ̂·√(1 − c₄(n)²), its lower limit floored at 0
    (for equal sizes these are the tabulated A₃, B₃, B₄).

    Raises:
        ValueError: the baseline has no subgroup of at least 2 values.
    """
    if baseline.n.size == 0:
        raise ValueError("the baseline has no subgroup of 2 or more trays")
    sigma = float(np.mean(baseline.sd / c4(baseline.n)))
    weights = baseline.n.astype(np.float64)
    grand = float(np.sum(baseline.mean * weights) / weights.sum())
    s_bar = float(np.mean(baseline.sd))
    n = chart.n.astype(np.float64)
    c = c4(chart.n)
    half = 3.0 * sigma / np.sqrt(n)
    spread = 3.0 * sigma * np.sqrt(1.0 - c * c)
    return XbarS(
        grand_mean=grand,
        s_bar=s_bar,
        sigma=sigma,
        x_lcl=grand - half,
        x_ucl=grand + half,
        s_lcl=np.maximum(c * sigma - spread, 0.0),
        s_ucl=c * sigma + spread,
    )


def western_electric(means: F64, centre: float, sigma_mean: F64) -> NDArray[np.bool_]:
    """(g, 4) flags: subgroup i breaks rule 1-4 (module doc) at i, counting the points before it.

    ``sigma_mean``: each subgroup mean's σ (σ̂/√nᵢ), so unequal sizes get their own zones.
    A rule flags the point that completes the pattern (a run of eight flags its eighth point).
    """
    z = (np.asarray(means, dtype=np.float64) - centre) / np.asarray(sigma_mean, dtype=np.float64)
    g = z.size
    out = np.zeros((g, 4), dtype=bool)
    out[:, 0] = np.abs(z) > 3.0
    for i in range(g):
        for sign in (1.0, -1.0):
            s = sign * z
            last3, last5, last8 = s[max(0, i - 2) : i + 1], s[max(0, i - 4) : i + 1], s[: i + 1]
            if s[i] > 2.0 and int((last3 > 2.0).sum()) >= 2:
                out[i, 1] = True
            if s[i] > 1.0 and int((last5 > 1.0).sum()) >= 4:
                out[i, 2] = True
            if i >= 7 and bool((last8[-8:] > 0.0).all()):
                out[i, 3] = True
    return out


@dataclass(frozen=True, slots=True)
class Capability:
    """Cp/Cpk (within-subgroup σ̂) and Pp/Ppk (overall σ) of a mass against [lsl, usl]."""

    mean: float
    sigma_within: float
    sigma_overall: float
    lsl: float
    usl: float
    cp: float
    cpk: float
    pp: float
    ppk: float


def capability(values: F64, sigma_within: float, lsl: float, usl: float) -> Capability:
    """Capability of ``values`` against the limits: LSL the packers' T1, USL the giveaway limit.

    Raises:
        ValueError: fewer than 2 values, a σ that is not positive, or usl ≤ lsl.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise ValueError("capability needs at least 2 trays")
    if not sigma_within > 0 or usl <= lsl:
        raise ValueError("capability needs σ > 0 and USL above LSL")
    mu, overall = float(v.mean()), float(v.std(ddof=1))

    def pair(sigma: float) -> tuple[float, float]:
        if sigma <= 0:
            return math.inf, math.inf
        return (usl - lsl) / (6 * sigma), min(usl - mu, mu - lsl) / (3 * sigma)

    cp, cpk = pair(sigma_within)
    pp, ppk = pair(overall)
    return Capability(mu, sigma_within, overall, lsl, usl, cp, cpk, pp, ppk)


@dataclass(frozen=True, slots=True)
class PChart:
    """Reject rate per subgroup with the baseline's p̄ and per-subgroup 3σ limits."""

    p: F64
    p_bar: float
    lcl: F64
    ucl: F64
    out: NDArray[np.bool_]


def p_chart(rejects: NDArray[np.int64], sizes: NDArray[np.int64], p_bar: float) -> PChart:
    """p chart of ``rejects``/``sizes`` against a baseline rate ``p_bar`` (0 < p̄ < 1 gives limits;
    p̄ = 0 makes any reject a point out of control)."""
    r = np.asarray(rejects, dtype=np.float64)
    n = np.asarray(sizes, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, r / n, np.nan)
        half = 3.0 * np.sqrt(p_bar * (1.0 - p_bar) / n)
    lcl = np.maximum(p_bar - half, 0.0)
    ucl = np.minimum(p_bar + half, 1.0)
    return PChart(p, p_bar, lcl, ucl, (p > ucl) | (p < lcl))
