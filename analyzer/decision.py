"""Decisions from probabilities (docs/domain.md §5, revised 2026-12), vectorised over a batch.

Each defect decided on an estimate x̂ with standard error σ and a threshold t gets
P(x beyond t | x̂, σ, prior). The fill's prior is the line's declared population (the profile's
``decision.prior``): a mixture of the filler's setting N(μ, s) and, with weight π, any fill in
``mass_range_g``; the other variables take a flat prior (their estimate's σ is small against the
distance from normal product to their limits). Defects combine as independent. The grade's
probabilities follow from them and from the score band's, the published grade is the likeliest,
``confidence`` its probability, and ``decision`` compares P(REJECT) with the profile's
``p_reject`` and ``p_hold``.

The spectral indices' σ come from the count noise the white step measured (analyzer.spectral);
a device calibrated before that has none, and its spectral defects count as certain, as do
zones_invalid, saturation, missing parts and the calibration state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from analyzer.grading import (
    CODE_INDEX,
    CODES,
    CRITICAL,
    GRADES,
    MINOR,
    REJECT,
    band_score,
    lower_better,
    zero_nan,
)
from analyzer.params import PRIOR_NAMES, BatchParams, ScoringParams
from analyzer.posterior import SIGMA_MIN, p_below_mixture
from analyzer.spectral import SpectralScores
from analyzer.tof import TofScores
from sqal.wire import DefectCode

F64 = NDArray[np.float64]
B = NDArray[np.bool_]

PASS, HOLD, REJECT_DECISION = 0, 1, 2
DECISIONS = ("PASS", "HOLD", "REJECT")

PROBABILISTIC = (
    DefectCode.UNDERFILL,
    DefectCode.OVERFILL,
    DefectCode.TILTED,
    DefectCode.SURFACE_IRREGULAR,
    DefectCode.OXIDATION,
    DefectCode.FAT_YELLOWING,
    DefectCode.DISCOLORATION,
)
"""The defects decided on an estimate and its σ; every other code is read as certain."""


@dataclass(frozen=True, eq=False)
class Decisions:
    """What the probabilities say about n samples.

    ``p_minor`` and ``p_critical`` (n, D): per defect code, P(at least minor) and P(critical).
    ``p_grade`` (n, 4): P(A), P(B), P(C), P(REJECT). ``grade`` int8, the likeliest;
    ``confidence`` its probability; ``decision`` int8 (0 PASS, 1 HOLD, 2 REJECT).
    """

    p_minor: F64
    p_critical: F64
    p_grade: F64
    grade: NDArray[np.int8]
    confidence: F64
    decision: NDArray[np.int8]


def p_above(x: F64, sigma: F64, t: float) -> F64:
    """P(true value > t) for an estimate x with Gaussian error σ under a flat prior; NaN x → 0."""
    s = np.maximum(zero_nan(sigma), SIGMA_MIN)
    return np.asarray(np.where(np.isnan(x), 0.0, ndtr((x - t) / s)))


def p_mass_below(m: F64, sigma: F64, t: float, p: ScoringParams | BatchParams) -> F64:
    """P(true mass < t | m̂, σ_m) under the line's fill prior: the filler's setting
    N(μ·Qn, s·Qn), and with weight π any mass in ``mass_range_g``."""
    prior = p.profile.decision.prior
    qn = p.profile.product.nominal_mass_g
    lo, hi = p.profile.product.mass_range_g
    return p_below_mixture(
        m, sigma, t, prior.fill_mean * qn, prior.fill_sd * qn, prior.defect_rate, lo, hi
    )


def prior_range(name: str, p: ScoringParams | BatchParams) -> tuple[float, float]:
    """Where a faulty tray's value may lie, for the broad part of a variable's prior [D]."""
    if name == "max_height_mm":
        return 0.0, p.profile.tray.depth_mm + 20.0
    return PRIOR_RANGES[name]


PRIOR_RANGES: dict[str, tuple[float, float]] = {
    "oxidation_index": (0.0, 1.0),
    "delta_b": (-10.0, 30.0),
    "delta_e": (0.0, 40.0),
    "tilt_deg": (0.0, 45.0),
    "roughness_mm": (0.0, 20.0),
}
"""The ranges of the variables a reference batch gives a prior for (max height: the tray's)."""


def p_beyond(x: F64, sigma: F64, t: float, name: str, params: ScoringParams | BatchParams) -> F64:
    """P(true value > t): under the line's product prior when its reference batch gave one for
    ``name`` (analyzer.prior), else under a flat prior; per sample, by its device's."""
    p = BatchParams.of(params)
    j = PRIOR_NAMES.index(name)
    mean, sd = p.prior_mean[:, j], p.prior_sd[:, j]
    informed = ~np.isnan(mean)
    if not informed.any():
        return p_above(x, sigma, t)
    lo, hi = prior_range(name, p)
    pi = p.profile.decision.prior.defect_rate
    below = p_below_mixture(x, sigma, t, mean, sd, pi, lo, hi)  # NaN where uninformed
    out = np.where(np.isnan(x), 0.0, 1.0 - below)
    return np.asarray(out if informed.all() else np.where(informed, out, p_above(x, sigma, t)))


def _sub_sigma(f: Callable[[F64], F64], x: F64, sigma: F64) -> F64:
    """σ of a sub-score s(x) by a central difference over ±σ (0 where x or σ is unknown)."""
    s = zero_nan(sigma)
    xs = zero_nan(x)
    d = np.abs(f(xs + s) - f(xs - s)) / 2.0
    return np.asarray(np.where(np.isnan(x), 0.0, d))


def _score_sigma(t: TofScores, s: SpectralScores, p: BatchParams, tof_share: F64) -> F64:
    """σ of the fused score: the ToF sub-scores' σ and the spectral score's, by their shares."""
    tof = p.profile.tof
    w = tof.weights
    qn = p.profile.product.nominal_mass_g
    r0 = tof.surface_r0_mm
    parts = [
        (
            w.fill,
            t.fill_posterior_g / qn,
            t.sigma_fill_posterior_g / qn,
            lambda v: band_score(v, 1.0, *tof.fill_tol),
        ),
        (
            w.height,
            t.max_height_mm,
            t.sigma_max_height_mm,
            lambda v: band_score(v, tof.max_height.target_mm, *tof.max_height.tol_mm),
        ),
        (
            w.tilt,
            t.tilt_deg,
            t.sigma_tilt_deg,
            lambda v: lower_better(v, tof.tilt_deg.good, tof.tilt_deg.bad),
        ),
        (w.uniformity, t.roughness_mm, t.sigma_roughness_mm, lambda v: np.exp(-v / r0)),
    ]
    var = np.zeros(t.present.shape[0])
    den = np.zeros_like(var)
    for weight, x, sigma, f in parts:
        known = ~np.isnan(x)
        var += np.where(known, (weight * _sub_sigma(f, x, sigma)) ** 2, 0.0)
        den += np.where(known, weight, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma_t = np.where(den > 0, np.sqrt(var) / den, 0.0)
    sigma_s = zero_nan(s.sigma_quality_score)
    return np.asarray(np.hypot(sigma_t * tof_share, sigma_s * (1.0 - tof_share)))


def tof_probabilities(t: TofScores, p: BatchParams) -> tuple[F64, F64, F64]:
    """(P(at least minor), P(critical)), each (n, D), of the ToF defects decided on estimates,
    and (n,) the probability of a critical underfill read on too few zones to reject on (it
    can only hold the tray).

    Codes not in :data:`PROBABILISTIC` are left at 0 here (the caller reads them as certain).
    """
    n = t.present.shape[0]
    tof, tray, product = p.profile.tof, p.profile.tray, p.profile.product
    qn, tne = product.nominal_mass_g, p.tne_g
    p_minor = np.zeros((n, len(CODES)))
    p_crit = np.zeros((n, len(CODES)))
    m, sm = t.fill_mass_g, t.sigma_fill_mass_g
    u = CODE_INDEX[DefectCode.UNDERFILL]
    p_minor[:, u] = p_mass_below(m, sm, qn - tne, p)
    # A ToF mass read on too few zones may be short for the lost ones (a hole without valid
    # neighbours counts h = 0): its critical underfill holds the tray instead of rejecting it.
    # A checkweigher's mass does not depend on the zones.
    enough = (t.valid_share >= tof.valid_share.minor) | t.weighed
    short = p_mass_below(m, sm, qn - 2 * tne, p)
    p_crit[:, u] = np.where(enough, short, 0.0)
    held_short = np.where(enough | ~t.present, 0.0, short)
    o = CODE_INDEX[DefectCode.OVERFILL]
    giveaway = 1.0 - p_mass_below(m, sm, qn * (1 + tof.overfill_minor), p)
    giveaway = np.where(np.isnan(m), 0.0, giveaway)
    p_crit[:, o] = p_beyond(
        t.max_height_mm, t.sigma_max_height_mm, tray.seal_limit_mm, "max_height_mm", p
    )
    p_minor[:, o] = 1.0 - (1.0 - giveaway) * (1.0 - p_crit[:, o])
    ti = CODE_INDEX[DefectCode.TILTED]
    p_minor[:, ti] = p_beyond(t.tilt_deg, t.sigma_tilt_deg, tof.tilt_deg.minor, "tilt_deg", p)
    p_crit[:, ti] = p_beyond(t.tilt_deg, t.sigma_tilt_deg, tof.tilt_deg.critical, "tilt_deg", p)
    si = CODE_INDEX[DefectCode.SURFACE_IRREGULAR]
    rough, sr = t.roughness_mm, t.sigma_roughness_mm
    p_minor[:, si] = p_beyond(rough, sr, tof.roughness_mm.minor, "roughness_mm", p)
    rc = tof.roughness_mm.critical
    if rc is not None:
        p_crit[:, si] = p_beyond(rough, sr, rc, "roughness_mm", p)
    absent = ~t.present[:, None]
    return np.where(absent, 0.0, p_minor), np.where(absent, 0.0, p_crit), held_short


def spectral_probabilities(s: SpectralScores, p: BatchParams) -> tuple[F64, F64]:
    """(P(at least minor), P(critical)), each (n, D), of oxidation, fat yellowing and
    discoloration from the indices and their σ; the other codes are left at 0."""
    sp = p.profile.spectral
    n = s.present.shape[0]
    p_minor = np.zeros((n, len(CODES)))
    p_crit = np.zeros((n, len(CODES)))
    ox = CODE_INDEX[DefectCode.OXIDATION]
    ox_i, ox_s = s.oxidation_index, s.sigma_oxidation_index
    p_minor[:, ox] = p_beyond(ox_i, ox_s, sp.oxidation.minor, "oxidation_index", p)
    p_crit[:, ox] = p_beyond(ox_i, ox_s, sp.oxidation.critical, "oxidation_index", p)
    fy = CODE_INDEX[DefectCode.FAT_YELLOWING]
    p_minor[:, fy] = p_beyond(s.delta_b, s.sigma_delta_b, sp.db.minor, "delta_b", p)
    p_crit[:, fy] = p_beyond(s.delta_b, s.sigma_delta_b, sp.db.critical, "delta_b", p)
    dc = CODE_INDEX[DefectCode.DISCOLORATION]
    patchy = (s.color_uniformity < sp.u_minor).astype(np.float64)  # from the ToF map: certain
    off = p_beyond(s.delta_e, s.sigma_delta_e, sp.de.minor, "delta_e", p)
    p_minor[:, dc] = 1.0 - (1.0 - off) * (1.0 - patchy)
    p_crit[:, dc] = p_beyond(s.delta_e, s.sigma_delta_e, sp.de.critical, "delta_e", p)
    absent = ~s.present[:, None]
    return np.where(absent, 0.0, p_minor), np.where(absent, 0.0, p_crit)


def decide(
    t: TofScores,
    s: SpectralScores,
    defects: NDArray[np.int8],
    final_score: F64,
    tof_share: F64,
    blind: B,
    low_quality: B,
    p: BatchParams,
) -> Decisions:
    """Probabilities, grade, confidence and decision of n samples.

    Args:
        t, s: the sensors' scores.
        defects: (n, D) severities of the fused result (the certain codes are read from it).
        final_score: (n,) fused score, NaN when no sensor scored.
        tof_share: (n,) the ToF's share of the fused score's weight, W_t·c_t/Σ W_s·c_s.
        blind: (n,) a sensor with weight gave nothing (missing frame or no index): grade at
            most ``missing_sensor_cap``, decision HOLD.
        low_quality: (n,) data quality below ``min_confidence``: grade REJECT, decision HOLD
            (a manual check, not a bin).
    """
    grading = p.profile.grading
    n = defects.shape[0]
    p_minor, p_crit, held_short = tof_probabilities(t, p)
    s_minor, s_crit = spectral_probabilities(s, p)
    p_minor, p_crit = p_minor + s_minor, p_crit + s_crit  # disjoint columns
    certain = np.ones(len(CODES), dtype=bool)
    certain[[CODE_INDEX[c] for c in PROBABILISTIC]] = False
    p_minor[:, certain] = (defects[:, certain] >= MINOR).astype(np.float64)
    p_crit[:, certain] = (defects[:, certain] >= CRITICAL).astype(np.float64)
    # low_confidence is the fusion's own: it rejects the grade, but the decision is a HOLD.
    lc = CODE_INDEX[DefectCode.LOW_CONFIDENCE]
    p_crit[:, lc] = np.where(low_quality, 1.0, 0.0)
    p_minor[:, lc] = p_crit[:, lc]
    # missing_* are minor by rule; a blind sensor caps the grade like a minor defect.
    pc = 1.0 - np.prod(1.0 - p_crit, axis=1)
    pm = np.maximum(1.0 - np.prod(1.0 - p_minor, axis=1), pc)
    pm = np.where(blind, 1.0, pm)
    # Score bands: P(Q ≥ edge) with σ_Q from the ToF sub-scores.
    sigma_q = np.maximum(_score_sigma(t, s, p, tof_share), SIGMA_MIN)
    q = np.where(np.isnan(final_score), -np.inf, final_score)
    above = [ndtr((q - edge) / sigma_q) for edge in (grading.A, grading.B, grading.C)]
    band = np.stack(
        [above[0], above[1] - above[0], above[2] - above[1], 1.0 - above[2]], axis=1
    )  # A, B, C, REJECT by score alone
    ok = 1.0 - pc
    with np.errstate(invalid="ignore", divide="ignore"):
        minor_given_ok = np.where(ok > 0, np.clip((pm - pc) / ok, 0.0, 1.0), 0.0)
    cap = GRADES.index(grading.minor_defect_cap)
    p_grade = np.zeros((n, 4))
    for g in range(4):
        # without a minor defect: the band as it is; with one: bands better than the cap fall
        # to the cap.
        p_grade[:, g] = ok * (1.0 - minor_given_ok) * band[:, g]
        if g == cap:
            p_grade[:, g] += ok * minor_given_ok * band[:, : cap + 1].sum(axis=1)
        elif g > cap:
            p_grade[:, g] += ok * minor_given_ok * band[:, g]
    p_grade[:, REJECT] += pc
    grade = p_grade.argmax(axis=1).astype(np.int8)
    confidence = np.take_along_axis(p_grade, grade[:, None].astype(np.intp), axis=1)[:, 0]
    p_rej = p_grade[:, REJECT]
    dec = p.profile.decision
    decision = np.where(
        p_rej >= dec.p_reject, REJECT_DECISION, np.where(p_rej >= dec.p_hold, HOLD, PASS)
    )
    # Nothing vouches for a blind or low-quality tray: it goes to the re-check lane, unless a
    # reject is already likelier than not on what was seen.
    seen = np.ones(len(CODES), dtype=bool)
    seen[lc] = False
    pc_seen = 1.0 - np.prod(1.0 - p_crit[:, seen], axis=1)
    p_rej_seen = pc_seen + (1.0 - pc_seen) * band[:, REJECT]
    unsure = (blind | low_quality) & (p_rej_seen < dec.p_reject)
    unsure |= (held_short >= dec.p_hold) & (p_rej_seen < dec.p_reject)
    decision = np.where(unsure, HOLD, decision).astype(np.int8)
    return Decisions(
        p_minor=p_minor,
        p_critical=p_crit,
        p_grade=p_grade,
        grade=grade,
        confidence=np.clip(confidence, 0.0, 1.0),
        decision=decision,
    )
