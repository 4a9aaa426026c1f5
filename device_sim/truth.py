"""Ground truth: the §2/§4 metrics on the noise-free field, §5 defects and grade.

Written independently of ``analyzer/`` (the simulator must be able to prove the analyzer
wrong). Definitions, in the terms of docs/domain.md:

- ``volume_mm3``: exact 1 mm grid integral of the rendered product above the tray base;
  ``mass_g`` = true density × that volume; ``fill_ratio`` = mass/Qn.
- Heights, roughness, uniformity, tilt: §2's definitions applied to the noise-free zone heights
  (the plain mean of the 64 sub-ray heights of a zone), every zone valid except an injected
  invalid cluster, equal weights (σ → 0, so R has no noise term).
- Spectral: §4's indices on the channel-weighted reflectance of the true spot spectrum (what a
  perfect white/dark calibration reads), anchors and ``lab_ref`` from the simulator's reference
  spectra; ``lab`` is the exact CIE L*a*b* of the spot spectrum.
- Grade: §5 with confidence 1 (the truth is noise-free); critical → REJECT, minor → at most B.
  Seal contact (critical overfill) is decided on the product's true peak, the maximum of the
  1 mm height grid: the film touches the product's highest point, not a zone's mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from device_sim.geometry import zone_k, zone_offsets
from device_sim.model import ProductModel, lin, ratio_indices
from sqal.profiles import tne_g

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class TofTruth:
    """Noise-free ToF metrics of one tray (docs/domain.md §2)."""

    avg_height_mm: float
    max_height_mm: float
    height_variation_mm: float
    roughness_mm: float
    surface_uniformity: float | None
    tilt_deg: float
    valid_share: float
    color_cv: float | None


def _fit(x: F64, y: F64, h: F64, quadric: bool) -> F64:
    cols = [np.ones_like(x), x, y] + ([x * x, x * y, y * y] if quadric else [])
    a = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(a, h, rcond=None)
    return np.asarray(h - a @ coef)


def tof_truth(
    model: ProductModel, layout: int, height_mm: F64, rho940: F64, invalid: NDArray[np.bool_]
) -> TofTruth:
    """§2 metrics of one tray from (Z,) noise-free zone heights and reflectances."""
    tof = model.profile.tof
    roi = model.rois[layout]
    valid = roi & ~invalid
    p = valid & (height_mm >= tof.product_min_height_mm)
    k, d0 = zone_k(layout), model.d0_mm
    u, v = zone_offsets(layout)
    z = d0 - height_mm
    x, y = u * k * z, v * k * z
    hp = height_mm[p]
    avg = float(hp.mean()) if hp.size else 0.0
    mx = float(hp.max()) if hp.size else 0.0
    std = float(hp.std()) if hp.size else 0.0
    rough, uniform = 0.0, None
    if p.sum() >= 3:
        e = np.zeros_like(height_mm)
        e[p] = _fit(x[p], y[p], hp, bool(p.sum() >= 12))
        grid = p.reshape(layout, layout)
        pad = np.pad(grid, 1)
        interior = (grid & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]).ravel()
        if interior.sum() >= 4:
            rough = float(np.sqrt(np.mean(e[interior] ** 2)))
            uniform = math.exp(-rough / tof.surface_r0_mm)
    tilt = 0.0
    if valid.sum() >= 3:
        a = np.stack([x[valid], y[valid], np.ones(int(valid.sum()))], axis=1)
        coef, *_ = np.linalg.lstsq(a, height_mm[valid], rcond=None)
        tilt = math.degrees(math.atan(math.hypot(coef[0], coef[1])))
    cv = None
    if p.sum() >= 6:
        r = rho940[p]
        cv = float(r.std() / r.mean())
    share = float(valid.sum() / max(int(roi.sum()), 1))
    return TofTruth(avg, mx, std, rough, uniform, tilt, share, cv)


def tof_truth_batch(
    model: ProductModel, layout: int, height_mm: F64, rho940: F64, invalid: NDArray[np.bool_]
) -> list[TofTruth]:
    """:func:`tof_truth` of n trays at once from (n, Z) arrays (same definitions, batched).

    The quadric and plane fits are masked normal equations solved with a batched pseudo-inverse:
    the least-squares residual is the projection onto the columns' span, unique even where the
    used zones are degenerate (collinear), so it equals ``lstsq`` on the selected zones up to
    float rounding. x, y enter the quadric in decimetres to keep ``AᵀA`` well conditioned.
    """
    tof = model.profile.tof
    n = height_mm.shape[0]
    roi = model.rois[layout]
    valid = roi[None] & ~invalid
    p = valid & (height_mm >= tof.product_min_height_mm)
    k, d0 = zone_k(layout), model.d0_mm
    u, v = zone_offsets(layout)
    z = d0 - height_mm
    x, y = u * k * z, v * k * z
    cnt = p.sum(axis=1)
    pf = p.astype(np.float64)
    hsum = (height_mm * pf).sum(axis=1)
    avg = np.where(cnt > 0, hsum / np.maximum(cnt, 1), 0.0)
    mx = np.where(cnt > 0, np.where(p, height_mm, -np.inf).max(axis=1), 0.0)
    dev = (height_mm - avg[:, None]) * pf
    std = np.sqrt((dev * dev).sum(axis=1) / np.maximum(cnt, 1))

    xs, ys = x / 100.0, y / 100.0
    ones = np.ones_like(xs)
    a = np.stack([ones, xs, ys, xs * xs, xs * ys, ys * ys], axis=2)  # (n, Z, 6)
    a[cnt < 12, :, 3:] = 0.0  # a plane where fewer than 12 zones carry product
    aw = a * pf[:, :, None]
    coef = np.linalg.pinv(aw.transpose(0, 2, 1) @ a, rcond=1e-12, hermitian=True) @ (
        aw.transpose(0, 2, 1) @ height_mm[:, :, None]
    )
    e = np.where(p, height_mm - (a @ coef)[:, :, 0], 0.0)
    grid = np.pad(p.reshape(n, layout, layout), ((0, 0), (1, 1), (1, 1)))
    c = grid[:, 1:-1, 1:-1]
    interior = c & grid[:, :-2, 1:-1] & grid[:, 2:, 1:-1] & grid[:, 1:-1, :-2] & grid[:, 1:-1, 2:]
    interior = interior.reshape(n, -1)
    n_int = interior.sum(axis=1)
    rough_all = np.sqrt((e * e * interior).sum(axis=1) / np.maximum(n_int, 1))
    has_rough = (cnt >= 3) & (n_int >= 4)

    vf = valid.astype(np.float64)
    b = np.stack([x, y, np.ones_like(x)], axis=2)
    bw = b * vf[:, :, None]
    plane = np.linalg.pinv(bw.transpose(0, 2, 1) @ b, rcond=1e-12, hermitian=True) @ (
        bw.transpose(0, 2, 1) @ height_mm[:, :, None]
    )
    nv = valid.sum(axis=1)
    tilt = np.where(nv >= 3, np.degrees(np.arctan(np.hypot(plane[:, 0, 0], plane[:, 1, 0]))), 0.0)

    rmean = (rho940 * pf).sum(axis=1) / np.maximum(cnt, 1)
    rdev = (rho940 - rmean[:, None]) * pf
    cv = np.sqrt((rdev * rdev).sum(axis=1) / np.maximum(cnt, 1)) / np.where(rmean > 0, rmean, 1.0)
    share = nv / max(int(roi.sum()), 1)
    out = []
    for i in range(n):
        rough = float(rough_all[i]) if has_rough[i] else 0.0
        out.append(
            TofTruth(
                float(avg[i]),
                float(mx[i]),
                float(std[i]),
                rough,
                math.exp(-rough / tof.surface_r0_mm) if has_rough[i] else None,
                float(tilt[i]),
                float(share[i]),
                float(cv[i]) if cnt[i] >= 6 else None,
            )
        )
    return out


def spectral_truth(model: ProductModel, ch: F64, lab: F64) -> list[dict[str, Any]]:
    """§4 indices of n spots from (n, 10) channel reflectances and (n, 3) exact Lab."""
    sp, a = model.profile.spectral, model.anchors
    mi, br, nr = ratio_indices(ch)
    m = lin(mi, a.mi_fresh, a.mi_met)
    beta = lin(br, a.br_fresh, a.br_ox)
    ref = np.asarray(a.lab_ref)
    delta_b = lab[:, 2] - ref[2]
    delta_e = np.linalg.norm(lab - ref, axis=1)
    y = lin(delta_b, sp.db.ok, sp.db.bad)
    fresh = (1.0 - sp.w_heme * m) * (1.0 - lin(delta_e, sp.de.ok, sp.de.bad))
    ox = np.clip(sp.w_m * m + (1.0 - sp.w_m) * beta, 0.0, 1.0)
    fat = (1.0 - lin(np.abs(nr - a.nr_ref), *sp.nr_tol)) * (1.0 - y)
    return [
        {
            "met_fraction": float(m[i]),
            "browning": float(beta[i]),
            "delta_b": float(delta_b[i]),
            "lab": [float(v) for v in lab[i]],
            "oxidation_index": float(ox[i]),
            "freshness_index": float(fresh[i]),
            "fat_quality_index": float(fat[i]),
            "delta_e": float(delta_e[i]),
        }
        for i in range(ch.shape[0])
    ]


_ORDER = ("A", "B", "C", "REJECT")


def _smooth(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return 3 * u * u - 2 * u * u * u


def _band(x: float, t: float, a: float, b: float) -> float:
    return 1.0 - _smooth((abs(x - t) - a) / (b - a))


def _lower_better(x: float, good: float, bad: float) -> float:
    return _smooth((bad - x) / (bad - good))


def _weighted(parts: list[tuple[float, float | None]]) -> float | None:
    used = [(w, s) for w, s in parts if s is not None]
    total = sum(w for w, _ in used)
    return sum(w * s for w, s in used) / total if used and total > 0 else None


def margins(
    model: ProductModel,
    mass_g: float,
    tof: TofTruth,
    spec: dict[str, Any],
    peak_mm: float,
    final_score: float,
) -> dict[str, float]:
    """Each deciding variable's distance to its nearest threshold, in the variable's unit.

    The §5 rules of :func:`grade`, seen from the other side: a tray whose value sits within
    the estimate's spread of a threshold cannot be decided reliably by any sensor, so an
    evaluation stratifies on these. ``final_score`` is the distance to the nearest A/B/C band
    edge (``final_score`` as :func:`grade` returns it).
    """
    p = model.profile
    qn, tne = p.product.nominal_mass_g, tne_g(p.product.nominal_mass_g)
    t, sp, g = p.tof, p.spectral, p.grading

    def near(value: float, *limits: float | None) -> float:
        return min(abs(value - x) for x in limits if x is not None)

    out = {
        "mass_g": near(mass_g, qn - tne, qn - 2 * tne, qn * (1 + t.overfill_minor)),
        "peak_height_mm": near(peak_mm, p.tray.seal_limit_mm),
        "roughness_mm": near(tof.roughness_mm, t.roughness_mm.minor, t.roughness_mm.critical),
        "tilt_deg": near(tof.tilt_deg, t.tilt_deg.minor, t.tilt_deg.critical),
        "valid_share": near(tof.valid_share, t.valid_share.minor, t.valid_share.critical),
        "oxidation_index": near(spec["oxidation_index"], sp.oxidation.minor, sp.oxidation.critical),
        "delta_e": near(spec["delta_e"], sp.de.minor, sp.de.critical),
        "delta_b": near(spec["delta_b"], sp.db.minor, sp.db.critical),
    }
    out["final_score"] = near(final_score, g.A, g.B, g.C)
    return out


def grade(
    model: ProductModel,
    mass_g: float,
    tof: TofTruth,
    spec: dict[str, Any],
    saturated: bool,
    peak_mm: float,
) -> tuple[list[str], str, float]:
    """True defect codes (sorted), grade, and the final score before defect caps: docs/domain.md
    §2, §4 tables and §5.

    ``peak_mm``: the product's true peak height (grid maximum), for seal contact.
    """
    p = model.profile
    qn, tne = p.product.nominal_mass_g, tne_g(p.product.nominal_mass_g)
    fill = mass_g / qn
    t, sp = p.tof, p.spectral
    minor: set[str] = set()
    critical: set[str] = set()

    def flag(code: str, is_minor: bool, is_critical: bool) -> None:
        if is_critical:
            critical.add(code)
        elif is_minor:
            minor.add(code)

    flag("underfill", mass_g < qn - tne, mass_g < qn - 2 * tne)
    flag("overfill", fill > 1 + t.overfill_minor, peak_mm > p.tray.seal_limit_mm)
    crit_r = t.roughness_mm.critical
    flag(
        "surface_irregular",
        tof.roughness_mm > t.roughness_mm.minor,
        crit_r is not None and tof.roughness_mm > crit_r,
    )
    flag("tilted", tof.tilt_deg > t.tilt_deg.minor, tof.tilt_deg > t.tilt_deg.critical)
    flag(
        "zones_invalid",
        tof.valid_share < t.valid_share.minor,
        tof.valid_share < t.valid_share.critical,
    )
    ox = spec["oxidation_index"]
    flag("oxidation", ox >= sp.oxidation.minor, ox >= sp.oxidation.critical)
    cu = None if tof.color_cv is None else 1.0 - float(lin(tof.color_cv, *sp.cv_tol))
    de = spec["delta_e"]
    flag(
        "discoloration",
        de >= sp.de.minor or (cu is not None and cu < sp.u_minor),
        de >= sp.de.critical,
    )
    flag("fat_yellowing", spec["delta_b"] >= sp.db.minor, spec["delta_b"] >= sp.db.critical)
    flag("spectral_saturated", saturated, False)
    q_tof = _weighted(
        [
            (t.weights.fill, _band(fill, 1.0, *t.fill_tol)),
            (
                t.weights.height,
                _band(tof.max_height_mm, t.max_height.target_mm, *t.max_height.tol_mm),
            ),
            (t.weights.tilt, _lower_better(tof.tilt_deg, t.tilt_deg.good, t.tilt_deg.bad)),
            (t.weights.uniformity, tof.surface_uniformity),
        ]
    )
    q_spec = _weighted(
        [
            (sp.weights.freshness, spec["freshness_index"]),
            (sp.weights.fat_quality, spec["fat_quality_index"]),
            (sp.weights.oxidation, 1.0 - ox),
            (sp.weights.color_uniformity, cu),
        ]
    )
    final = _weighted([(p.fusion.tof, q_tof), (p.fusion.spectral, q_spec)]) or 0.0
    g = p.grading
    letter = "A" if final >= g.A else "B" if final >= g.B else "C" if final >= g.C else "REJECT"
    if critical:
        letter = "REJECT"
    elif minor and _ORDER.index(letter) < _ORDER.index(g.minor_defect_cap.value):
        letter = g.minor_defect_cap.value
    return sorted(minor | critical), letter, final
