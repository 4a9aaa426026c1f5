"""Scoring parameters: a device's profile and calibration compiled into numbers and masks.

Everything the scoring core needs comes from here: the product profile (sqal.profiles) with the
device's calibration (sqal.wire.Calibration) laid over the profile's placeholders, as
docs/calibration.md decides. Build once per (device, config); the core
never looks anything up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from analyzer.massmodel import MassModel
from sqal.profiles import Profile, tne_g
from sqal.wire import Calibration, CheckweigherSettings, ProductPrior

FOV_DEG = 45.0
"""VL53L8CH square field of view (docs/domain.md §1); zone pitch k = 2·tan(FOV/2)/N."""

SPOT_HALF_ANGLE_DEG = 10.0
"""Half angle of the spectral sensor's aperture tube (docs/domain.md §3): the ToF zones whose
centres fall inside this cone give the surface distance z_s of the spectral spot."""

SIGMA_FLOOR_MM = 0.5
"""Floor on a zone's reported σ before weighting by 1/σ² (docs/domain.md §2 fits). The ULD reports σ
in 1/128 mm steps; a zone claiming 0.01 mm would otherwise carry the whole fit."""

MIN_NEIGHBOURS_FILL = 3
"""An invalid ROI zone takes the median height of at least this many valid 8-neighbours
(docs/domain.md §2, volume_method ``integrate``), else 0."""


def zone_pitch_per_mm(layout: int) -> float:
    """k of docs/domain.md §1: zone pitch at distance z is k·z (0.10355 at 8x8, 0.20711 at 4x4)."""
    return 2.0 * math.tan(math.radians(FOV_DEG / 2.0)) / layout


def zone_offsets(layout: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(u, v) of every zone, each (N, N): u = c − (N−1)/2 (columns), v = r − (N−1)/2 (rows)."""
    idx = np.arange(layout, dtype=np.float64) - (layout - 1) / 2.0
    v, u = np.meshgrid(idx, idx, indexing="ij")
    return u, v


def _overlap_1d(
    centre: NDArray[np.float64], half: float, lo: float, hi: float
) -> NDArray[np.float64]:
    """Share of [centre − half, centre + half] that lies in [lo, hi]."""
    left = np.maximum(centre - half, lo)
    right = np.minimum(centre + half, hi)
    return np.asarray(np.clip(right - left, 0.0, None) / (2.0 * half), dtype=np.float64)


def roi_mask(profile: Profile, d0_mm: float) -> NDArray[np.bool_]:
    """The ROI of docs/domain.md §2, (N, N) bool.

    A zone belongs when its footprint on the base plane (a square of side k·d0 around
    (u·k·d0, v·k·d0)) lies at least ``min_inside`` inside the tray's inner rectangle (length
    along the columns, width along the rows), shifted by ``offset_mm``; or the profile's explicit
    ``zone_mask``.
    """
    tof = profile.tof
    if tof.roi.zone_mask is not None:
        return np.asarray(tof.roi.zone_mask, dtype=bool)
    k = zone_pitch_per_mm(tof.layout)
    u, v = zone_offsets(tof.layout)
    pitch = k * d0_mm
    ox, oy = tof.roi.offset_mm
    half_l, half_w = profile.tray.inner_length_mm / 2.0, profile.tray.inner_width_mm / 2.0
    fx = _overlap_1d(u * pitch, pitch / 2.0, ox - half_l, ox + half_l)
    fy = _overlap_1d(v * pitch, pitch / 2.0, oy - half_w, oy + half_w)
    return np.asarray(fx * fy >= tof.roi.min_inside - 1e-12)


def spot_mask(layout: int) -> NDArray[np.bool_]:
    """Zones whose centre direction lies inside the spectral spot's cone, (N, N) bool."""
    u, v = zone_offsets(layout)
    k = zone_pitch_per_mm(layout)
    return np.asarray(np.hypot(u, v) * k <= math.tan(math.radians(SPOT_HALF_ANGLE_DEG)))


def neighbour_index(layout: int) -> NDArray[np.intp]:
    """(N², 8) flat indices of each zone's 8-neighbours; N² (one past the end) pads the border."""
    n = layout
    out = np.full((n * n, 8), n * n, dtype=np.intp)
    steps = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    for r in range(n):
        for c in range(n):
            for j, (dr, dc) in enumerate(steps):
                rr, cc = r + dr, c + dc
                if 0 <= rr < n and 0 <= cc < n:
                    out[r * n + c, j] = rr * n + cc
    return out


def four_neighbour_index(layout: int) -> NDArray[np.intp]:
    """(N², 4) flat indices of each zone's 4-neighbours; N² pads the border (never in P)."""
    n = layout
    out = np.full((n * n, 4), n * n, dtype=np.intp)
    for r in range(n):
        for c in range(n):
            for j, (dr, dc) in enumerate(((-1, 0), (1, 0), (0, -1), (0, 1))):
                rr, cc = r + dr, c + dc
                if 0 <= rr < n and 0 <= cc < n:
                    out[r * n + c, j] = rr * n + cc
    return out


@dataclass(frozen=True, eq=False)
class ScoringParams:
    """One device's scoring constants (profile + calibration), ready for the vectorised core.

    Attributes:
        profile: the validated product profile.
        calibration_id: the calibration's id, echoed in results; None without calibration.
        d0_mm: sensor-to-empty-tray-base distance (calibrated, else the mount distance); the
            base plane of the volume and fit geometry.
        d0_zone_mm: (N²,) per-zone empty-tray distance, row-major: the calibration's
            ``d0_map_mm`` when present (it carries each zone's fixed range offset,
            docs/domain.md §1), else ``d0_mm`` everywhere. Heights are h_i = d0_zone_i − distance_i.
        k: zone pitch per mm of distance (docs/domain.md §1).
        roi: (N, N) bool ROI; spot: (N, N) bool zones of the spectral spot.
        u, v: (N, N) zone offsets (columns, rows).
        dark_bc, white_bc, rho_white: (10,) channel references F1..F8, Clear, NIR, or None.
        z_cal_mm: white tile distance, or None.
        color_matrix: (3, 9) M of XYZ = M·[R_F1..R_F8, 1], or None.
        anchors: (MI_fresh, MI_met, BR_fresh, BR_ox, NR_ref).
        lab_ref: (3,) reference L*a*b*.
        tne_g: tolerable negative error for the nominal mass.
        mass_model: m̂ from V̂ and its own σ: the calibration's ``mass_model`` (fitted on the
            line's weighed trays) when it has one, else the profile's (docs/domain.md §2).
    """

    profile: Profile
    calibration_id: str | None
    d0_mm: float
    d0_zone_mm: NDArray[np.float64]
    k: float
    roi: NDArray[np.bool_]
    spot: NDArray[np.bool_]
    u: NDArray[np.float64]
    v: NDArray[np.float64]
    neighbours8: NDArray[np.intp]
    neighbours4: NDArray[np.intp]
    dark_bc: NDArray[np.float64] | None
    white_bc: NDArray[np.float64] | None
    rho_white: NDArray[np.float64] | None
    z_cal_mm: float | None
    color_matrix: NDArray[np.float64] | None
    anchors: tuple[float, float, float, float, float]
    lab_ref: NDArray[np.float64]
    tne_g: float
    mass_model: MassModel
    valid_status: NDArray[np.int64] = field(default_factory=lambda: np.array([5, 6, 9]))
    product_prior: ProductPrior | None = None
    """The line's good product from a reference batch (analyzer.prior): the decision's prior
    for the variables it lists; ``None``: those take a flat prior."""
    range_scale: float = 1.0
    """The ToF range's slope from the white step (measured height per true height); heights are
    divided by it. 1 without that measurement."""
    count_noise_k: float | None = None
    """The spectral sensor's shot noise, var(raw) = k·raw (the white step measured it); with
    ``common_noise_frac`` it gives the spectral indices their σ. ``None``: no error model, the
    indices count as exact."""
    common_noise_frac: float = 0.0
    signal0_zone: NDArray[np.float64] | None = None
    """(N²,) the empty tray's signal per zone (the calibration's ``signal0_map_kcps``): with it
    a zone that sees product and floor at once is split into the two (analyzer.tof); ``None``:
    every zone is read as one surface."""
    checkweigher_sigma_g: float | None = None
    """The line's checkweigher σ as the device's config announces it; ``None``: no checkweigher,
    no weight expected (docs/contract.md "Weight")."""

    @property
    def layout(self) -> int:
        return self.profile.tof.layout

    @property
    def reflectance_ready(self) -> bool:
        """True when dark and white references exist, so reflectances can be computed."""
        return self.dark_bc is not None and self.white_bc is not None


def build_params(
    profile: Profile,
    calibration: Calibration | None = None,
    checkweigher: CheckweigherSettings | None = None,
) -> ScoringParams:
    """Compile a profile, (optionally) a device calibration and the line's checkweigher into
    :class:`ScoringParams`."""
    cal = calibration
    d0 = cal.d0_mm if cal is not None and cal.d0_mm is not None else profile.tof.mount_distance_mm
    layout = profile.tof.layout
    u, v = zone_offsets(layout)
    sp = profile.spectral
    anchors = cal.anchors if cal is not None and cal.anchors is not None else sp.anchors
    lab_ref = cal.lab_ref if cal is not None and cal.lab_ref is not None else sp.lab_ref

    def arr(values: list[float] | list[list[float]] | None) -> NDArray[np.float64] | None:
        return None if values is None else np.asarray(values, dtype=np.float64)

    rho = arr(cal.rho_white) if cal is not None else None
    dark = arr(cal.dark_bc) if cal is not None else None
    white = arr(cal.white_bc) if cal is not None else None
    d0_zone = np.full(layout * layout, float(d0))
    if cal is not None and cal.d0_map_mm is not None and len(cal.d0_map_mm) == layout:
        # A map for another layout (the node was reconfigured) cannot be used: scalar d0.
        d0_zone = np.asarray(cal.d0_map_mm, dtype=np.float64).ravel()
    signal0 = None
    if cal is not None and cal.signal0_map_kcps is not None and len(cal.signal0_map_kcps) == layout:
        signal0 = np.asarray(cal.signal0_map_kcps, dtype=np.float64).ravel()
    mass_model = (
        MassModel.from_calibration(cal.mass_model)
        if cal is not None and cal.mass_model is not None
        else MassModel.from_profile(profile.product)
    )
    if dark is not None and white is not None and rho is None:
        rho = np.ones(10)  # a reference without its ρw: treat the tile as ideal, ratios still hold
    return ScoringParams(
        profile=profile,
        calibration_id=cal.id if cal is not None else None,
        d0_mm=float(d0),
        d0_zone_mm=d0_zone,
        k=zone_pitch_per_mm(layout),
        roi=roi_mask(profile, float(d0)),
        spot=spot_mask(layout),
        u=u,
        v=v,
        neighbours8=neighbour_index(layout),
        neighbours4=four_neighbour_index(layout),
        dark_bc=dark,
        white_bc=white,
        rho_white=rho,
        z_cal_mm=cal.z_cal_mm if cal is not None else None,
        color_matrix=arr(cal.color_matrix) if cal is not None else None,
        anchors=(anchors.MI_fresh, anchors.MI_met, anchors.BR_fresh, anchors.BR_ox, anchors.NR_ref),
        lab_ref=np.asarray(lab_ref, dtype=np.float64),
        tne_g=tne_g(profile.product.nominal_mass_g),
        mass_model=mass_model,
        valid_status=np.asarray(profile.tof.valid_status, dtype=np.int64),
        product_prior=cal.product_prior if cal is not None else None,
        signal0_zone=signal0,
        range_scale=(cal.range_scale if cal is not None and cal.range_scale is not None else 1.0),
        count_noise_k=cal.count_noise_k if cal is not None else None,
        common_noise_frac=(
            cal.common_noise_frac if cal is not None and cal.common_noise_frac is not None else 0.0
        ),
        checkweigher_sigma_g=checkweigher.sigma_g if checkweigher is not None else None,
    )
