"""Spectral scoring: AS7341 counts → reflectance → L*a*b* and indices (docs/domain.md §3, §4, §5).

One vectorised pass over n readings of devices that share a profile, each with its own
device's calibration (analyzer.params.BatchParams). Channel arrays are (n, 10) in
wire order F1..F8, Clear, NIR (Flicker is stored, not scored). A reflectance that cannot be
trusted (saturated, below ``raw_min``, no dark/white reference) is NaN, and every index built
on it is null.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from analyzer.arrays import SpectralArrays, effective_gain
from analyzer.grading import (
    apply_defects,
    clamp,
    defect_matrix,
    grade_from_score,
    lin,
    severity,
    weighted_score,
    zero_nan,
)
from analyzer.params import BatchParams, ScoringParams
from sqal.wire import DefectCode

F64 = NDArray[np.float64]
B = NDArray[np.bool_]

T_STEP_MS = 2.78e-3
"""AS7341 integration step: t_int = (ATIME+1)(ASTEP+1)·2.78 µs (datasheet DS000718)."""
FULL_SCALE_MAX = 65535
D65_WHITE = np.array([95.047, 100.0, 108.883])
"""CIE 15:2004 D65/2° reference white (docs/domain.md §3)."""
USED = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9])
"""Channels the indices read: F1..F8 and NIR (Clear is not used)."""
CONF_RAW_COUNTS = 100.0
CONF_FLOOR, CONF_SATURATED, CONF_FLICKER = 0.3, 0.2, 0.7
"""c_spec = clip(min raw F1–F8/100, 0.3, 1), ×0.2 saturated, ×0.7 flicker (docs/domain.md §5)."""


@dataclass(frozen=True, eq=False)
class SpectralScores:
    """Spectral verdicts of n samples; arrays (n,), NaN where null; ``lab`` (n, 3).

    ``reflectance`` (n, 10) is kept for inspection; ``delta_e`` is ΔE*ab to lab_ref and
    ``delta_b`` is b* − b*_ref.
    """

    present: B
    reflectance: F64
    lab: F64
    delta_e: F64
    delta_b: F64
    met_fraction: F64
    browning: F64
    freshness_index: F64
    fat_quality_index: F64
    oxidation_index: F64
    color_uniformity: F64
    quality_score: F64
    grade: NDArray[np.int8]
    defects: NDArray[np.int8]
    confidence: F64
    sigma_oxidation_index: F64
    sigma_delta_e: F64
    sigma_delta_b: F64
    sigma_quality_score: F64


@dataclass(frozen=True, eq=False)
class _Indices:
    """§4 indices of n reflectance rows (arrays (n,), ``lab`` (n, 3), NaN where null)."""

    lab: F64
    delta_e: F64
    delta_b: F64
    met: F64
    brown: F64
    freshness: F64
    fat: F64
    oxidation: F64
    quality: F64


def _indices(r: F64, nir_low: B, uniformity: F64, p: BatchParams) -> _Indices:
    """L*a*b*, ΔE, Δb*, the met and browning ratios, freshness, fat quality, oxidation and the
    spectral quality score from reflectances (..., n, 10) (docs/domain.md §4, §5): the n samples
    of ``p``, under any leading axes (analyzer.spectral._sigmas perturbs them all at once)."""
    sp = p.profile.spectral
    rows = r.shape[:-1]
    f = r[..., :8]
    f_ok: B = np.asarray(~np.isnan(f).any(axis=-1))
    if p.has_color.any():
        # Σ_k M_jk·R_k per row, element-wise (not a matrix product, whose rounding would depend
        # on the call's other samples).
        m = p.color_matrix
        xyz = (zero_nan(f)[..., None, :] * m[:, :, :8]).sum(axis=-1) + m[:, :, 8]
        lab = np.where((f_ok & p.has_color)[..., None], lab_from_xyz(xyz), np.nan)
    else:
        lab = np.full((*rows, 3), np.nan)
    delta_e = np.linalg.norm(lab - p.lab_ref, axis=-1)
    delta_b = lab[..., 2] - p.lab_ref[:, 2]
    # One device: its anchors as numbers (the cheaper scalar path of lin); else per sample.
    anchors = p.anchors[0].tolist() if p.rows == 1 else p.anchors.T
    mi_fresh, mi_met, br_fresh, br_ox, nr_ref = anchors
    r525 = 0.75 * f[..., 3] + 0.25 * f[..., 4]
    r572 = 0.514 * f[..., 4] + 0.486 * f[..., 5]
    ks525 = kubelka_munk(r525)
    with np.errstate(invalid="ignore", divide="ignore"):
        mi = np.where(ks525 > 0, kubelka_munk(r572) / ks525, np.nan)
        br = np.where(f[..., 6] > 0, f[..., 1] / f[..., 6], np.nan)
        nr = np.where(f[..., 7] > 0, r[..., 9] / f[..., 7], np.nan)
    met = lin(mi, mi_fresh, mi_met)
    brown = lin(br, br_fresh, br_ox)
    yellow = lin(delta_b, sp.db.ok, sp.db.bad)
    heme = np.ones(rows) if sp.w_heme == 0 else 1.0 - sp.w_heme * met
    freshness = heme * (1.0 - lin(delta_e, sp.de.ok, sp.de.bad))
    if sp.w_m == 0:
        oxidation = clamp(brown, 0.0, 1.0)
    else:
        oxidation = clamp(sp.w_m * met + (1.0 - sp.w_m) * brown, 0.0, 1.0)
    # NIR ratio: a drift detector against the reference. No NIR light (channel below raw_min)
    # leaves 1 − y; a saturated NIR makes the index null (its input is invalid).
    nir_term = 1.0 - lin(np.abs(nr - nr_ref), *sp.nr_tol)
    fat = np.where(nir_low, 1.0, nir_term) * (1.0 - yellow)
    w = sp.weights
    quality, _ = weighted_score(
        [freshness, fat, 1.0 - oxidation, np.broadcast_to(uniformity, rows)],
        [w.freshness, w.fat_quality, w.oxidation, w.color_uniformity],
    )
    return _Indices(lab, delta_e, delta_b, met, brown, freshness, fat, oxidation, quality)


NOISE_CHANNELS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9])
"""The channels the indices read (F1..F8, NIR), each perturbed on its own for the σ's."""
READ_NOISE_COUNTS = 1.0
"""A floor under a channel's shot noise: the ADC's own count scatter [D]."""


def _sigmas(
    arrays: SpectralArrays,
    r: F64,
    nir_low: B,
    uniformity: F64,
    p: BatchParams,
    ix: _Indices,
) -> tuple[F64, F64, F64, F64]:
    """σ of (oxidation index, ΔE, Δb*, quality score) by first-order propagation of the count
    noise the white step measured: each channel's own shot noise, var = k·raw, moves its
    reflectance by r·σ/(raw − dark), one channel at a time; the shared part (LED drift) moves
    them all by the same fraction. Each σ² is the sum over these directions of the squared
    change (docs/domain.md §4 "Uncertainty"). Zeros without a noise model.
    """
    n = r.shape[0]
    # A sample whose device has no noise model or no dark reference gets 0.
    modelled = ~np.isnan(p.count_noise_k) & p.reflectance_ready
    if n == 0 or not modelled.any():
        zero = np.zeros(n)
        return zero, zero, zero, zero
    raw = arrays.raw[:, :10]
    steps = (arrays.atime + 1.0) * (arrays.astep + 1.0)
    scale = (effective_gain(arrays.gain) * steps * T_STEP_MS)[:, None]
    dark_raw = p.dark_bc * scale
    sigma_raw = np.sqrt(p.count_noise_k[:, None] * np.maximum(raw, 0.0) + READ_NOISE_COUNTS**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(raw - dark_raw > 0, sigma_raw / (raw - dark_raw), 0.0)
    dirs = len(NOISE_CHANNELS) + 1
    bumped = np.repeat(r[None], dirs, axis=0)
    for d, c in enumerate(NOISE_CHANNELS):
        bumped[d, :, c] = r[:, c] * (1.0 + rel[:, c])
    bumped[-1] = r * (1.0 + p.common_noise_frac[:, None])
    moved = _indices(bumped, nir_low, uniformity, p)  # (dirs, n) each

    def spread(base: F64, shifted: F64) -> F64:
        delta = shifted - base[None]
        return np.asarray(np.where(modelled, np.sqrt(np.nansum(delta * delta, axis=0)), 0.0))

    return (
        spread(ix.oxidation, moved.oxidation),
        spread(ix.delta_e, moved.delta_e),
        spread(ix.delta_b, moved.delta_b),
        spread(ix.quality, moved.quality),
    )


def lab_from_xyz(xyz: F64) -> F64:
    """CIE 15:2004 L*a*b* of (..., 3) XYZ against D65 (docs/domain.md §3)."""
    t = xyz / D65_WHITE
    eps = (6.0 / 29.0) ** 3
    f = np.where(t > eps, np.cbrt(t), t / (3.0 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    lab = np.empty_like(xyz)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def kubelka_munk(r: F64) -> F64:
    """K/S = (1 − R)²/(2R), R clipped to [0.01, 1] (docs/domain.md §4)."""
    c = clamp(r, 0.01, 1.0)
    return np.asarray((1.0 - c) ** 2 / (2.0 * c))


def reflectance(
    arrays: SpectralArrays, params: ScoringParams | BatchParams, z_s_mm: F64
) -> tuple[F64, B, B]:
    """White/dark reflectance with the distance factor (docs/domain.md §3).

    Args:
        z_s_mm: (n,) median ToF distance in the spot, NaN where unknown (then z_cal is used).

    Returns:
        (R (n, 10) NaN where untrusted, saturated (n, 10), low (n, 10)).
    """
    p = BatchParams.of(params)
    sp = p.profile.spectral
    raw = arrays.raw[:, :10]
    steps = (arrays.atime + 1.0) * (arrays.astep + 1.0)
    t_ms = steps * T_STEP_MS
    full_scale = np.minimum(FULL_SCALE_MAX, steps)
    basic = raw / (effective_gain(arrays.gain) * t_ms)[:, None]
    saturated = np.asarray(
        arrays.saturated[:, :10] | (raw >= sp.saturation_frac * full_scale[:, None])
    )
    low = raw < sp.raw_min
    n = arrays.n
    if not p.reflectance_ready.any():  # NaN references: no sample's R can be computed
        return np.full((n, 10), np.nan), saturated, low
    span = p.white_bc - p.dark_bc
    factor = np.ones(n)
    z_cal = p.z_cal_mm
    if sp.distance_correction and not np.isnan(z_cal).all():
        # Undo the LED's 1/z² illuminance: z_s from the ToF spot, else the tile distance.
        z_s = np.where(np.isfinite(z_s_mm), z_s_mm, z_cal)
        factor = np.where(np.isnan(z_cal), 1.0, (z_s / z_cal) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = p.rho_white * (basic - p.dark_bc) / span * factor[:, None]
    trusted = arrays.present[:, None] & ~saturated & ~low & (span > 0)
    return np.asarray(np.where(trusted, r, np.nan)), saturated, low


def score_spectral(
    arrays: SpectralArrays,
    params: ScoringParams | BatchParams,
    z_s_mm: F64,
    reflectance_cv: F64,
) -> SpectralScores:
    """Score n spectral readings (docs/domain.md §4, §5).

    Args:
        arrays: n readings (absent ones flagged in ``present``).
        params: the device's scoring parameters, or each sample's (:class:`BatchParams`).
        z_s_mm: (n,) ToF distance of the spot, NaN without a ToF frame.
        reflectance_cv: (n,) CV of the ToF reflectance map over P, NaN when unknown; colour
            uniformity comes from it (docs/domain.md §4).
    """
    p = BatchParams.of(params)
    sp = p.profile.spectral
    n = arrays.n
    present = arrays.present
    r, saturated, low = reflectance(arrays, p, z_s_mm)
    uniformity = np.where(present, 1.0 - lin(reflectance_cv, *sp.cv_tol), np.nan)
    nir_low = low[:, 9] & ~saturated[:, 9]
    ix = _indices(r, nir_low, uniformity, p)
    lab, delta_e, delta_b = ix.lab, ix.delta_e, ix.delta_b
    met, brown = ix.met, ix.brown
    freshness, fat, oxidation = ix.freshness, ix.fat, ix.oxidation
    sig = _sigmas(arrays, r, nir_low, uniformity, p, ix)
    sat_used: B = np.asarray(saturated[:, USED].any(axis=1))
    with np.errstate(invalid="ignore"):
        defects = defect_matrix(
            n,
            {
                DefectCode.OXIDATION: severity(
                    oxidation >= sp.oxidation.minor, oxidation >= sp.oxidation.critical
                ),
                DefectCode.DISCOLORATION: severity(
                    (delta_e >= sp.de.minor) | (uniformity < sp.u_minor),
                    delta_e >= sp.de.critical,
                ),
                DefectCode.FAT_YELLOWING: severity(
                    delta_b >= sp.db.minor, delta_b >= sp.db.critical
                ),
                DefectCode.SPECTRAL_SATURATED: severity(sat_used, np.zeros(n, dtype=bool)),
                # Issue 10: a result from an uncalibrated device says so, beside the lower
                # confidence (its spectral indices are null).
                DefectCode.UNCALIBRATED: severity(
                    np.broadcast_to(~p.reflectance_ready, (n,)), np.zeros(n, dtype=bool)
                ),
            },
        )
    defects = np.where(present[:, None], defects, 0).astype(np.int8)
    w = sp.weights
    quality = np.where(present, ix.quality, np.nan)
    grading = p.profile.grading
    grade = apply_defects(grade_from_score(quality, grading), defects, grading)
    # Confidence scales with the share of the spectral weight the reading itself could judge
    # (colour uniformity comes from the ToF map, so it does not count): an uncalibrated node or
    # a saturated reading says little, however bright it is. [D] extension of docs/domain.md §5.
    _, coverage = weighted_score(
        [freshness, fat, 1.0 - oxidation], [w.freshness, w.fat_quality, w.oxidation]
    )
    if w.freshness + w.fat_quality + w.oxidation == 0:
        coverage = np.ones(n)
    raw_f = arrays.raw[:, :8].min(axis=1)
    conf = clamp(raw_f / CONF_RAW_COUNTS, CONF_FLOOR, 1.0)
    conf = conf * np.where(sat_used, CONF_SATURATED, 1.0)
    conf = conf * np.where(arrays.flicker, CONF_FLICKER, 1.0)
    conf = np.where(present & ~np.isnan(quality), conf * coverage, 0.0)
    return SpectralScores(
        present=present,
        reflectance=r,
        lab=lab,
        delta_e=delta_e,
        delta_b=delta_b,
        met_fraction=met,
        browning=brown,
        freshness_index=clamp(freshness, 0.0, 1.0),
        fat_quality_index=clamp(fat, 0.0, 1.0),
        oxidation_index=oxidation,
        color_uniformity=uniformity,
        quality_score=quality,
        sigma_oxidation_index=sig[0],
        sigma_delta_e=sig[1],
        sigma_delta_b=sig[2],
        sigma_quality_score=sig[3],
        grade=grade,
        defects=defects,
        confidence=conf,
    )
