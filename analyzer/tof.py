"""ToF scoring: height map → product metrics, defects, sub-scores (docs/domain.md §1, §2, §5).

One vectorised pass over n frames of devices that share a profile and an ROI, each sample with
its own device's calibration (analyzer.params.BatchParams). Zones are flattened row-major
(zone i = r·N + c, as on the wire), so every per-zone array is (n, N²).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from analyzer.arrays import TofArrays, WeightArrays
from analyzer.fitting import masked_median, weighted_lstsq
from analyzer.grading import (
    apply_defects,
    band_score,
    clamp,
    defect_matrix,
    grade_from_score,
    lin,
    lower_better,
    severity,
    weighted_score,
    zero_nan,
)
from analyzer.massmodel import model_sigma_g, predict_mass
from analyzer.params import MIN_NEIGHBOURS_FILL, SIGMA_FLOOR_MM, BatchParams, ScoringParams
from analyzer.posterior import posterior_mean_sd
from sqal.wire import DefectCode

F64 = NDArray[np.float64]
B = NDArray[np.bool_]

MIXED_STATUS = 9
"""Large pulse, merged targets: valid at half weight, never a max height (docs/domain.md §1)."""
QUADRIC_MIN_ZONES = 12
"""Below this many product zones the surface fit is a plane (docs/domain.md §2)."""
INTERIOR_MIN_ZONES = 4
CV_MIN_ZONES = 6
"""color_uniformity is null below this many product zones at status 5/6 (docs/domain.md §4)."""
CONF_V = (0.5, 0.9)
"""c_tof = lin(v; 0.5, 0.9) (docs/domain.md §5)."""
CONF_SIGMA_FACTOR = 0.8
CHECKWEIGHER_SIGMA_G = 1.0
"""A weight whose σ neither it nor the device's config states: a checkweigher's scale interval
on a food line is 0.1-1 g, so 1 g is the cautious reading [D]."""
UNMIX_MAX_SHARE = 1.25
"""A split zone's product share is kept up to this: above 1 is the noise of a zone that is all
product, and cutting it at 1 would bias the sum over zones low (ranging noise alone scatters
the share of a 90 % zone by ±0.1)."""
PEAK_SIGMA_FLOOR_MM = 1.0
"""The ULD's distances are whole mm: a peak is never known better than this (docs/domain.md §1)."""


@dataclass(frozen=True, eq=False)
class TofScores:
    """ToF verdicts of n samples; every array is (n,), NaN where the value is null.

    Heights in mm, volume in mm³, mass in g, tilt in degrees. ``defects`` is the (n, D) int8
    severity matrix of analyzer.grading; ``grade`` int8 (0 = A … 3 = REJECT); ``confidence``
    is c_tof (0 where the frame is absent). ``reflectance_cv`` and ``spot_distance_mm`` feed the
    spectral side (colour uniformity, distance factor). The ``sigma_*`` arrays are each
    estimate's standard error from its own error model (analyzer.decision turns them into
    probabilities). ``fill_mass_g`` and its σ are the mass fill is decided on: the
    checkweigher's where ``weighed``, else m̂; ``fill_ratio`` is fill_mass_g / Qn;
    ``fill_posterior_g`` and its σ the true mass likely under the line's fill prior (the fill
    sub-score reads it).
    """

    present: B
    valid_zones: NDArray[np.int64]
    valid_share: F64
    volume_mm3: F64
    sigma_volume_mm3: F64
    mass_g: F64
    sigma_mass_g: F64
    fill_mass_g: F64
    sigma_fill_mass_g: F64
    fill_posterior_g: F64
    sigma_fill_posterior_g: F64
    weighed: B
    fill_ratio: F64
    avg_height_mm: F64
    max_height_mm: F64
    sigma_max_height_mm: F64
    height_variation_mm: F64
    roughness_mm: F64
    sigma_roughness_mm: F64
    surface_uniformity: F64
    tilt_deg: F64
    sigma_tilt_deg: F64
    tilt_direction_deg: F64
    reflectance_cv: F64
    spot_distance_mm: F64
    quality_score: F64
    grade: NDArray[np.int8]
    defects: NDArray[np.int8]
    confidence: F64


def _masked_mean(x: F64, m: B) -> F64:
    cnt = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(m, x, 0.0).sum(axis=1) / cnt
    return np.asarray(np.where(cnt > 0, out, np.nan))


def _volume(
    p: BatchParams, h: F64, sig: F64, vr: B, roi: B, surface: F64, share: F64, h_p: F64
) -> tuple[F64, F64]:
    """(V, σ_V) in mm³ by the profile's volume_method (docs/domain.md §2).

    ``surface``: the fitted surface (n, N²) of :func:`_fits`, NaN where there is none; an invalid
    ROI zone takes it, bounded by 0 and its valid neighbours' median (see below). ``share``,
    ``h_p``: :func:`_unmixed`; a split ROI zone holds ``share`` of a frustum at ``h_p`` instead
    of a whole one at its merged height.
    """
    tof, k, d0 = p.profile.tof, p.k, p.d0_mm[:, None]
    n = h.shape[0]
    max_sigma = tof.max_sigma_mm
    if tof.volume_method == "mean_height_x_area":
        area = p.profile.tray.area_mm2
        cnt = vr.sum(axis=1)
        mean_h = _masked_mean(h, vr)
        with np.errstate(invalid="ignore", divide="ignore"):
            sv = area * np.sqrt(np.where(vr, sig**2, 0.0).sum(axis=1)) / cnt
        return mean_h * area, np.asarray(np.where(cnt > 0, sv, np.nan))
    # integrate: an invalid ROI zone takes the median h of ≥ 3 valid ROI 8-neighbours, else 0.
    pad_h = np.concatenate([h, np.zeros((n, 1))], axis=1)
    pad_ok = np.concatenate([vr, np.zeros((n, 1), dtype=bool)], axis=1)
    h_used = np.where(vr, h, 0.0)
    rows, cols = np.nonzero(roi & ~vr)  # only the holes need their neighbours' median
    if rows.size:
        nb = p.shared.neighbours8[cols]
        nb_h, nb_ok = pad_h[rows[:, None], nb], pad_ok[rows[:, None], nb]
        med = masked_median(nb_h, nb_ok)
        # The neighbours' median over-reads a hole at the product's edge (its valid neighbours
        # are the higher inner zones, +5 % of volume per hole on a lobe); the fitted surface
        # follows the product's curvature down to the edge. Bounded by [0, median]: a fit is
        # not trusted to invent product above what surrounds the hole.
        fit = surface[rows, cols]
        fill = np.where(np.isfinite(fit), np.minimum(np.maximum(fit, 0.0), med), med)
        h_used[rows, cols] = np.where(nb_ok.sum(axis=1) >= MIN_NEIGHBOURS_FILL, fill, 0.0)
    z = d0 - h_used
    # Frustum of the zone's pyramid between the surface and the base: k²(d0³ − z³)/3.
    v_zone = k * k * (d0**3 - z**3) / 3.0
    split = np.isfinite(share)
    z_p = d0 - np.where(split, h_p, 0.0)
    v_zone = np.where(split, share * k * k * (d0**3 - z_p**3) / 3.0, v_zone)
    volume = np.where(roi, v_zone, 0.0).sum(axis=1)
    # σ_V² = Σ (k² z² σ)²; a filled zone has no σ of its own: take max_sigma (conservative).
    s_used = np.where(vr, sig, max_sigma)
    var = np.where(roi, (k * k * z * z * s_used) ** 2, 0.0).sum(axis=1)
    return volume, np.sqrt(var)


def _unmixed(p: BatchParams, dist: F64, signal: F64, valid: B, pure: B, edge: B) -> tuple[F64, F64]:
    """Split each ``edge`` zone's return into product and floor (docs/domain.md §2 "mixed zones").

    A zone whose footprint holds product over a share F of the floor it saw empty returns
    S = S₀ + F·(K_p/z_p² − K_f/d_f²) and reads the return-weighted distance
    D·S = D₀·S₀ + F·(K_p/z_p − K_f/d_f) (docs/domain.md §1, §7: merged targets). S₀, D₀: the
    zone's empty-tray signal and distance; K_f = S₀·D₀² of the floor (median over ROI zones),
    K_p = S·D² of the product (median over the frame's ``pure`` zones), d_f the floor's
    distance. Eliminating z_p leaves F² K_f(K_p − K_f)/d_f² + F(K_p·s₁ − 2K_f·t₁/d_f) − t₁² = 0
    with s₁ = S − S₀, t₁ = D·S − D₀·S₀: one positive root. Then z_p = (t₁ + F·K_f/d_f) /
    (s₁ + F·K_f/d_f²).

    Returns (F, h_p) (n, N²): the product's share of the zone (:data:`UNMIX_MAX_SHARE`) and its
    height above the floor (range slope applied), NaN where the zone is not split (not an edge
    zone, no pure zone to take K_p from, no real root).
    """
    n, m = dist.shape
    if np.isnan(p.floor_k).all():  # no device of the call has a signal map (or a floor in it)
        nan = np.full((n, m), np.nan)
        return nan, nan
    s0 = p.signal0_zone  # NaN rows: such a sample's zones are not split
    d0z = p.d0_zone_mm
    roi = p.roi.ravel()
    k_f = p.floor_k[:, None]
    k_p = masked_median(signal * dist * dist, pure)[:, None]  # NaN without a pure zone
    d_f = np.where(roi, d0z, p.d0_mm[:, None])
    a, b = k_f / d_f**2, k_f / d_f
    s1 = signal - s0
    t1 = dist * signal - d0z * s0
    quad_a = k_p * a - b * b  # 0 when product and floor reflect alike: then F = t₁²/quad_b
    quad_b = k_p * s1 - 2.0 * b * t1
    with np.errstate(invalid="ignore", divide="ignore"):
        # The positive root in the form that stays exact as quad_a → 0.
        disc = quad_b * quad_b + 4.0 * quad_a * t1 * t1
        root = 2.0 * t1 * t1 / (quad_b + np.sqrt(np.maximum(disc, 0.0)))
        share = np.clip(root, 0.0, UNMIX_MAX_SHARE)
        den = s1 + root * a
        z_p = (t1 + root * b) / den
    depth = p.profile.tray.depth_mm + 20.0
    ok = edge & valid & (s0 > 0) & (k_p > 0) & (disc >= 0) & np.isfinite(root) & (den > 0)
    h_p = clamp((d_f - z_p) / p.range_scale[:, None], 0.0, depth)
    return (
        np.asarray(np.where(ok, share, np.nan)),
        np.asarray(np.where(ok & np.isfinite(h_p), h_p, np.nan)),
    )


@dataclass(frozen=True, eq=False)
class _Fit:
    """The surface fits of n frames (docs/domain.md §2); (n,) unless said, NaN where none.

    ``denoised`` (n, N²): the quadric fit plus each zone's residual shrunk by R²/(R² + σ²) (the
    noise-corrected R of the uniformity: a Wiener estimate of the true residual), NaN outside
    the ROI; it feeds ``max_height_mm``. ``denoised_var`` (n, N²): its noise variance,
    R²σ²/(R² + σ²). ``surface`` (n, N²): the quadric alone, NaN where it was not fitted.
    ``sigma_tilt`` and ``sigma_roughness``: the standard errors of tilt (degrees, from the
    plane fit's covariance with weights 1/σ²) and of R (the spread of a mean of squares).
    """

    tilt: F64
    direction: F64
    sigma_tilt: F64
    roughness: F64
    sigma_roughness: F64
    denoised: F64
    denoised_var: F64
    surface: F64


def _plane_sigma_deg(design: F64, weight: F64, a: F64, b: F64, scale: F64) -> F64:
    """Standard error of the tilt angle from the weighted plane fit's covariance (AᵀWA)⁻¹."""
    d = design[:, :, :3]
    normal = np.einsum("nmi,nm,nmj->nij", d, weight, d)
    ok = np.abs(np.linalg.det(normal)) > 1e-12
    cov = np.linalg.inv(np.where(ok[:, None, None], normal, np.eye(3)[None]))
    va, vb, cab = cov[:, 1, 1] / scale**2, cov[:, 2, 2] / scale**2, cov[:, 1, 2] / scale**2
    g2 = a * a + b * b
    with np.errstate(invalid="ignore", divide="ignore"):
        vg = np.where(g2 > 0, (a * a * va + b * b * vb + 2 * a * b * cab) / g2, 0.5 * (va + vb))
    return np.asarray(np.where(ok, np.degrees(np.sqrt(clamp(vg, 0.0)) / (1.0 + g2)), np.nan))


def _fits(
    p: BatchParams, h: F64, z: F64, sig: F64, status: NDArray[np.int64], vr: B, prod: B
) -> _Fit:
    """Tilt, roughness, denoised heights and the fitted surface of docs/domain.md §2, batched.

    Both fits use only ROI zones (valid ROI zones for tilt, P ⊂ ROI for the surface), so the
    design matrix is cut to the ROI's columns first.
    """
    n = h.shape[0]
    pad = np.concatenate([prod, np.zeros((n, 1), dtype=bool)], axis=1)
    interior_all = prod & pad[:, p.shared.neighbours4].all(axis=2)
    cols = p.roi.ravel()
    h, z, sig, status = h[:, cols], z[:, cols], sig[:, cols], status[:, cols]
    vr, prod, interior = vr[:, cols], prod[:, cols], interior_all[:, cols]
    scale = p.k * p.d0_mm  # fit in zone-pitch units at the base: well conditioned
    xs = (p.shared.u.ravel()[cols] * p.k * z) / scale[:, None]
    ys = (p.shared.v.ravel()[cols] * p.k * z) / scale[:, None]
    design = np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=2)
    w = 1.0 / sig**2
    # Tilt: weighted plane over valid ROI zones, ×0.5 at status 9.
    w_tilt = np.where(vr, w * np.where(status == MIXED_STATUS, 0.5, 1.0), 0.0)
    plane = np.zeros((n, 6), dtype=bool)
    plane[:, :3] = True
    # Surface: 1/σ²-weighted quadric over P (plane below 12 zones); residuals on interior zones.
    n_prod = prod.sum(axis=1)
    active = np.ones((n, 6), dtype=bool)
    active[:, 3:] = (n_prod >= QUADRIC_MIN_ZONES)[:, None]
    # Both fits in one batch of 2n systems: half the fixed cost of the solver calls.
    beta = weighted_lstsq(
        np.concatenate([design, design]),
        np.concatenate([h, h]),
        np.concatenate([w_tilt, np.where(prod, w, 0.0)]),
        np.concatenate([plane, active]),
    )
    beta_t, beta_q = beta[:n], beta[n:]
    a_mm, b_mm = beta_t[:, 1] / scale, beta_t[:, 2] / scale
    tilt = np.degrees(np.arctan(np.hypot(a_mm, b_mm)))
    direction = np.degrees(np.arctan2(b_mm, a_mm))
    fitted = ((design * active[:, None, :]) @ zero_nan(beta_q)[..., None])[..., 0]
    n_int = interior.sum(axis=1)
    e2 = _masked_mean((h - fitted) ** 2, interior)
    s2 = _masked_mean(sig**2, interior)
    rough = np.sqrt(clamp(e2 - s2, 0.0))
    ok = (n_int >= INTERIOR_MIN_ZONES) & ~np.isnan(beta_q[:, 0])
    r2 = np.where(ok, rough**2, np.inf)[:, None]  # no R: no shrinkage (raw heights)
    with np.errstate(invalid="ignore"):
        keep = np.where(np.isinf(r2), 1.0, r2 / (r2 + sig**2))
    m = p.layout * p.layout
    denoised, denoised_var = np.full((n, m), np.nan), np.full((n, m), np.nan)
    denoised[:, cols] = fitted + (h - fitted) * keep
    denoised_var[:, cols] = keep * sig**2
    surface = np.full((n, m), np.nan)
    surface[:, cols] = np.where((n_prod >= QUADRIC_MIN_ZONES)[:, None], fitted, np.nan)
    # σ of R: mean(e²) over n_I interior zones has variance ≈ 2(R² + σ̄²)²/n_I; through the
    # square root, σ_R ≈ σ(R²)/(2R), with R floored at the noise σ̄ where the surface is smooth.
    with np.errstate(invalid="ignore", divide="ignore"):
        sig_r2 = np.sqrt(2.0 / np.maximum(n_int, 1)) * (rough**2 + s2)
        sigma_rough = sig_r2 / (2.0 * np.maximum(rough, np.sqrt(s2)))
    return _Fit(
        tilt=tilt,
        direction=direction,
        sigma_tilt=_plane_sigma_deg(design, w_tilt, a_mm, b_mm, scale),
        roughness=np.asarray(np.where(ok, rough, np.nan)),
        sigma_roughness=np.asarray(np.where(ok, sigma_rough, np.nan)),
        denoised=denoised,
        denoised_var=denoised_var,
        surface=surface,
    )


def score_tof(
    arrays: TofArrays, params: ScoringParams | BatchParams, weights: WeightArrays | None = None
) -> TofScores:
    """Score n ToF frames (docs/domain.md §2, §5).

    Args:
        arrays: n frames (absent ones flagged in ``present``).
        params: the device's scoring parameters, or each sample's (:class:`BatchParams`).
        weights: the line's checkweigher readings, if it has one: where a weight came, fill is
            decided on its mass and σ instead of m̂ (docs/domain.md §5, revised 2026-12).
    """
    p = BatchParams.of(params)
    tof, tray, product = p.profile.tof, p.profile.tray, p.profile.product
    n, m = arrays.n, p.layout * p.layout
    dist = arrays.distance_mm.reshape(n, m)
    status = arrays.target_status.reshape(n, m)
    sigma = arrays.range_sigma_mm.reshape(n, m)
    signal = arrays.signal_per_spad.reshape(n, m)
    refl = arrays.reflectance_pct.reshape(n, m)
    present = arrays.present
    d0_zone = p.d0_zone_mm
    finite = np.isfinite(dist) & np.isfinite(sigma) & np.isfinite(signal)
    valid = (
        present[:, None]
        & finite
        & (status[:, :, None] == p.shared.valid_status).any(axis=2)  # np.isin, ~20x faster here
        & (sigma <= tof.max_sigma_mm)
        & (signal >= tof.min_signal_kcps)
        & (dist >= 10)
        & (dist <= d0_zone + 30)
    )
    roi = p.roi.ravel()[None, :]
    # h_i = (d0_i − distance_i)/s with the per-zone empty-tray distance (removes each zone's
    # fixed offset, docs/domain.md §1) and the range slope s of the white step (1 without it),
    # clipped; small negatives kept (dropping them biases volume up). z_i = d0 − h_i puts the
    # surface on the common base plane for the frustum and the fits.
    raw_h = (d0_zone - np.where(finite, dist, d0_zone)) / p.range_scale[:, None]
    h = clamp(raw_h, -10.0, tray.depth_mm + 20.0)
    z = p.d0_mm[:, None] - h
    sig = np.maximum(np.where(finite, sigma, tof.max_sigma_mm), SIGMA_FLOOR_MM)
    vr = valid & roi
    valid_zones = vr.sum(axis=1).astype(np.int64)
    share = valid_zones / max(int(roi.sum()), 1)
    prod = vr & (h >= tof.product_min_height_mm)
    usable = present & (valid_zones > 0)

    fit = _fits(p, h, z, sig, status, vr, prod)
    tilt, direction, rough = fit.tilt, fit.direction, fit.roughness
    # Mixed zones: the ROI's zones not inside the product (4-neighbours all product), where the
    # product's rim meets the floor. Zones outside the ROI are not split: where they hold no
    # product, noise alone gives a positive share (F ≥ 0 by construction), +0.3 % a zone.
    pad = np.concatenate([prod, np.zeros((n, 1), dtype=bool)], axis=1)
    pure = prod & pad[:, p.shared.neighbours4].all(axis=2) & (status != MIXED_STATUS)
    edge = roi & ~pure
    if tof.volume_method == "integrate":
        cover, h_p = _unmixed(p, np.where(finite, dist, np.nan), signal, valid, pure, edge)
    else:  # the mean height over the tray's area has no per-zone frustums to split
        cover = h_p = np.full((n, m), np.nan)
    volume, sigma_v = _volume(p, h, sig, vr, roi, fit.surface, cover, h_p)
    volume = np.where(usable, volume, np.nan)
    mass, dm_dv = predict_mass(p.mass_a, p.mass_b, p.mass_c, volume)
    sigma_model = model_sigma_g(p.mass_sigma_g, p.mass_sigma_frac, mass)
    sigma_m = np.sqrt((dm_dv * sigma_v) ** 2 + sigma_model**2)
    weighed = np.zeros(n, dtype=bool)
    fill_mass, sigma_fill = mass, sigma_m
    if weights is not None:
        weighed = weights.present & np.isfinite(weights.mass_g)
        w_sigma = np.where(np.isfinite(weights.sigma_g), weights.sigma_g, CHECKWEIGHER_SIGMA_G)
        fill_mass = np.where(weighed, weights.mass_g, mass)
        sigma_fill = np.where(weighed, w_sigma, sigma_m)
    fill = fill_mass / product.nominal_mass_g
    # The fill sub-score weighs the tray's likely true fill, not the raw estimate: with a σ_m
    # larger than the filler's own spread, the raw m̂ of a good tray often reads outside the
    # band (docs/domain.md §5, the line's fill prior).
    prior = p.profile.decision.prior
    qn = product.nominal_mass_g
    lo_g, hi_g = product.mass_range_g
    fill_mass_post, fill_sd_post = posterior_mean_sd(
        fill_mass, sigma_fill, prior.fill_mean * qn, prior.fill_sd * qn, prior.defect_rate,
        lo_g, hi_g,
    )  # fmt: skip
    avg_h = _masked_mean(h, prod)
    var_h = _masked_mean((h - zero_nan(avg_h)[:, None]) ** 2, prod)
    # max_height: the max of noisy zones overshoots the surface by ~2σ (an order statistic of
    # ~24 zones: +1.2 mm on the foie gras dome, +2.4 mm on flat pâté), which put good lobes past
    # the seal limit (critical overfill). The max is taken over the denoised heights instead
    # (quadric fit + Wiener-shrunk residual, see _fits) [D, docs/domain.md §2 max over P at 5/6].
    peak = prod & (status != MIXED_STATUS) & np.isfinite(fit.denoised)
    top = np.where(peak, fit.denoised, -np.inf).argmax(axis=1)[:, None]
    has_peak = peak.any(axis=1)
    max_h = np.where(has_peak, np.take_along_axis(fit.denoised, top, axis=1)[:, 0], np.nan)
    # σ of the product's peak seen through zones: the denoised zone's noise and 1 mm of range
    # quantisation [D]. (`sqal eval` measures the spread of estimate − true peak: 1.3-1.4 mm on
    # both simulated products, against 1.1-1.4 mm from this model.)
    top_var = np.take_along_axis(fit.denoised_var, top, axis=1)[:, 0]
    sigma_peak = np.sqrt(top_var + PEAK_SIGMA_FLOOR_MM**2)
    sigma_peak = np.where(has_peak, sigma_peak, np.nan)
    uniformity = np.exp(-rough / tof.surface_r0_mm)

    clean = prod & (status != MIXED_STATUS) & np.isfinite(refl)
    mean_r = _masked_mean(refl, clean)
    std_r = np.sqrt(_masked_mean((refl - zero_nan(mean_r)[:, None]) ** 2, clean))
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = std_r / mean_r
    cv = np.where((clean.sum(axis=1) >= CV_MIN_ZONES) & (mean_r > 0), cv, np.nan)
    in_spot = p.shared.spot.ravel()
    spot_z = masked_median(dist[:, in_spot], valid[:, in_spot])

    tne = p.tne_g
    with np.errstate(invalid="ignore"):
        rc = tof.roughness_mm.critical
        defects = defect_matrix(
            n,
            {
                # Critical underfill needs a mass measured on ≥ valid_share.minor of the ROI:
                # holes without 3 valid neighbours count as h = 0 (§2), so a lost cluster reads
                # as a short tray (−9 % volume) and rejected good trays; such a tray is already
                # held as zones_invalid [D].
                DefectCode.UNDERFILL: severity(
                    fill_mass < qn - tne,
                    (fill_mass + tof.underfill_z * sigma_fill < qn - 2 * tne)
                    & ((share >= tof.valid_share.minor) | weighed),
                ),
                DefectCode.OVERFILL: severity(
                    fill > 1 + tof.overfill_minor, max_h > tray.seal_limit_mm
                ),
                DefectCode.SURFACE_IRREGULAR: severity(
                    rough > tof.roughness_mm.minor,
                    rough > rc if rc is not None else np.zeros(n, dtype=bool),
                ),
                DefectCode.TILTED: severity(
                    tilt > tof.tilt_deg.minor, tilt > tof.tilt_deg.critical
                ),
                DefectCode.ZONES_INVALID: severity(
                    share < tof.valid_share.minor, share < tof.valid_share.critical
                ),
            },
        )
    defects = np.where(present[:, None], defects, 0).astype(np.int8)
    lo, hi = tof.fill_tol
    tol_a, tol_b = tof.max_height.tol_mm
    w = tof.weights
    quality, _ = weighted_score(
        [
            band_score(fill_mass_post / qn, 1.0, lo, hi),
            band_score(max_h, tof.max_height.target_mm, tol_a, tol_b),
            lower_better(tilt, tof.tilt_deg.good, tof.tilt_deg.bad),
            uniformity,
        ],
        [w.fill, w.height, w.tilt, w.uniformity],
    )
    quality = np.where(present, quality, np.nan)
    grade = apply_defects(grade_from_score(quality, p.profile.grading), defects, p.profile.grading)
    # Median σ over the ROI with invalid zones counted as σ = ∞: invalidating a zone can then
    # only raise it, so confidence never rises when a zone is lost (STYLE.md property tests).
    in_roi = p.roi.ravel()
    med_sigma = masked_median(
        np.where(vr[:, in_roi], sigma[:, in_roi], np.inf), np.ones((n, int(in_roi.sum())), bool)
    )
    conf = lin(share, *CONF_V) * np.where(med_sigma > tof.max_sigma_mm / 2, CONF_SIGMA_FACTOR, 1.0)
    conf = np.where(present & ~np.isnan(quality), conf, 0.0)
    nan_unless = np.where(usable, 1.0, np.nan)
    return TofScores(
        present=present,
        valid_zones=valid_zones,
        valid_share=share,
        volume_mm3=volume,
        sigma_volume_mm3=sigma_v * nan_unless,
        mass_g=mass,
        sigma_mass_g=sigma_m,
        fill_mass_g=fill_mass,
        sigma_fill_mass_g=sigma_fill,
        fill_posterior_g=fill_mass_post,
        sigma_fill_posterior_g=fill_sd_post,
        weighed=weighed,
        fill_ratio=fill,
        avg_height_mm=avg_h,
        max_height_mm=max_h,
        sigma_max_height_mm=sigma_peak,
        height_variation_mm=np.sqrt(var_h),
        roughness_mm=rough,
        sigma_roughness_mm=fit.sigma_roughness * nan_unless,
        surface_uniformity=uniformity,
        tilt_deg=tilt * nan_unless,
        sigma_tilt_deg=fit.sigma_tilt * nan_unless,
        tilt_direction_deg=direction * nan_unless,
        reflectance_cv=cv,
        spot_distance_mm=spot_z,
        quality_score=quality,
        grade=grade,
        defects=defects,
        confidence=conf,
    )
