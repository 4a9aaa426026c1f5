"""Scoring parameters: a device's profile and calibration compiled into numbers and masks.

Everything the scoring core needs comes from here: the product profile (sqal.profiles) with the
device's calibration (sqal.wire.Calibration) laid over the profile's placeholders, as
docs/calibration.md decides. Build once per (device, config); the core
never looks anything up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property

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

    @cached_property
    def batch_key(self) -> tuple[str, bytes]:
        """Devices with equal keys are scored in one call (:class:`BatchParams`): the same
        profile, hence the same layout, and the same ROI."""
        return self.profile.model_dump_json(), self.roi.tobytes()

    @cached_property
    def row(self) -> BatchParams:
        """These constants as a batch's one row, for every sample of a call (built once)."""
        return BatchParams.of_device(self)


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


PRIOR_NAMES = (
    "oxidation_index", "delta_b", "delta_e", "tilt_deg", "roughness_mm", "max_height_mm",
)  # fmt: skip
"""The variables a reference batch may give a prior for (sqal.wire.ProductPrior), in the
column order of :attr:`BatchParams.prior_mean`."""


@dataclass(frozen=True, eq=False)
class BatchParams:
    """The scoring constants of each sample in one call of the core, whose samples may come
    from several devices (analyzer.fusion.score_batch).

    A call costs ~1.5 ms before its first sample; scored one device at a time, an analyzer
    serving 200 devices spent 3 ms of CPU a sample (bench.pipeline --lines 50
    --devices-per-line 4). Devices that share a profile and an ROI (:attr:`ScoringParams.batch_key`)
    are scored together instead, each sample reading its own device's calibration here.

    ``shared`` is any of the devices: what the profile and the ROI fix (layout, k, masks,
    thresholds). Every other field is an array whose first axis is either n (one row per
    sample) or 1 (one device for the whole call), so numpy's broadcasting takes both; only
    element-wise arithmetic and per-row reductions use them, so a sample's scores do not
    depend on the other samples of its call. NaN stands for what a calibration lacks.

    Attributes:
        d0_mm, range_scale, z_cal_mm, count_noise_k, common_noise_frac: (r,).
        d0_zone_mm, signal0_zone: (r, N²).
        floor_k: (r,) K_f of analyzer.tof's zone split (the empty tray's median S₀·D₀² over the
            ROI), NaN where the device has no signal map.
        mass_a, mass_b, mass_c, mass_sigma_g, mass_sigma_frac: (r,) the mass model
            (analyzer.massmodel), ``mass_sigma_g`` NaN for the profile's model.
        dark_bc, white_bc, rho_white: (r, 10), NaN unless the device has all three.
        reflectance_ready: (r,) bool, True where the three references exist.
        color_matrix: (r, 3, 9), 0 where ``has_color`` is False.
        anchors: (r, 5) as :attr:`ScoringParams.anchors`; lab_ref: (r, 3).
        prior_mean, prior_sd: (r, 6) the product prior per :data:`PRIOR_NAMES`, NaN where none.
    """

    shared: ScoringParams
    d0_mm: NDArray[np.float64]
    d0_zone_mm: NDArray[np.float64]
    range_scale: NDArray[np.float64]
    signal0_zone: NDArray[np.float64]
    floor_k: NDArray[np.float64]
    mass_a: NDArray[np.float64]
    mass_b: NDArray[np.float64]
    mass_c: NDArray[np.float64]
    mass_sigma_g: NDArray[np.float64]
    mass_sigma_frac: NDArray[np.float64]
    dark_bc: NDArray[np.float64]
    white_bc: NDArray[np.float64]
    rho_white: NDArray[np.float64]
    reflectance_ready: NDArray[np.bool_]
    z_cal_mm: NDArray[np.float64]
    color_matrix: NDArray[np.float64]
    has_color: NDArray[np.bool_]
    anchors: NDArray[np.float64]
    lab_ref: NDArray[np.float64]
    count_noise_k: NDArray[np.float64]
    common_noise_frac: NDArray[np.float64]
    prior_mean: NDArray[np.float64]
    prior_sd: NDArray[np.float64]

    # What the profile and the ROI fix: the same for every sample of a call.
    @property
    def profile(self) -> Profile:
        return self.shared.profile

    @property
    def layout(self) -> int:
        return self.shared.layout

    @property
    def k(self) -> float:
        return self.shared.k

    @property
    def roi(self) -> NDArray[np.bool_]:
        return self.shared.roi

    @property
    def tne_g(self) -> float:
        return self.shared.tne_g

    @property
    def rows(self) -> int:
        """1 (one device for every sample) or n."""
        return int(self.d0_mm.shape[0])

    @classmethod
    def of(cls, params: ScoringParams | BatchParams) -> BatchParams:
        """``params`` for a call: one device's constants as one row, or as they are."""
        return params if isinstance(params, BatchParams) else params.row

    @classmethod
    def of_device(cls, p: ScoringParams) -> BatchParams:
        """One device's constants as a batch's one row."""
        m = p.layout * p.layout
        nan10 = np.full(10, np.nan)
        ready = p.dark_bc is not None and p.white_bc is not None and p.rho_white is not None
        s0 = p.signal0_zone
        floor_k = math.nan
        if s0 is not None:
            floor_ok = p.roi.ravel() & (s0 > 0) & np.isfinite(s0)
            if floor_ok.any():
                floor_k = float(np.median(s0[floor_ok] * p.d0_zone_mm[floor_ok] ** 2))
        prior = p.product_prior
        ips = [getattr(prior, name) if prior is not None else None for name in PRIOR_NAMES]
        mm = p.mass_model

        def row(x: object) -> NDArray[np.float64]:
            return np.asarray(x, dtype=np.float64)[None]

        def flag(x: bool) -> NDArray[np.bool_]:
            return np.array([x])

        return cls(
            shared=p,
            d0_mm=row(p.d0_mm),
            d0_zone_mm=row(p.d0_zone_mm),
            range_scale=row(p.range_scale),
            signal0_zone=row(np.full(m, np.nan) if s0 is None else s0),
            floor_k=row(floor_k),
            mass_a=row(mm.a_g),
            mass_b=row(mm.b_g_per_cm3),
            mass_c=row(mm.c_g_per_cm2),
            mass_sigma_g=row(math.nan if mm.sigma_g is None else mm.sigma_g),
            mass_sigma_frac=row(mm.sigma_frac),
            dark_bc=row(p.dark_bc if ready else nan10),
            white_bc=row(p.white_bc if ready else nan10),
            rho_white=row(p.rho_white if ready else nan10),
            reflectance_ready=flag(ready),  # the references above are NaN exactly when False
            z_cal_mm=row(math.nan if p.z_cal_mm is None else p.z_cal_mm),
            color_matrix=row(np.zeros((3, 9)) if p.color_matrix is None else p.color_matrix),
            has_color=flag(p.color_matrix is not None),
            anchors=row(p.anchors),
            lab_ref=row(p.lab_ref),
            count_noise_k=row(math.nan if p.count_noise_k is None else p.count_noise_k),
            common_noise_frac=row(p.common_noise_frac),
            prior_mean=row([math.nan if ip is None else ip.mean for ip in ips]),
            prior_sd=row([math.nan if ip is None else ip.sd for ip in ips]),
        )

    @classmethod
    def per_sample(cls, params: Sequence[ScoringParams]) -> BatchParams:
        """Each sample's device constants (``params[i]`` for sample i), all of one
        :attr:`ScoringParams.batch_key`.

        Raises:
            ValueError: the devices differ in profile or ROI, or ``params`` is empty.
        """
        unique: dict[int, int] = {}
        devices: list[ScoringParams] = []
        for p in params:
            if id(p) not in unique:
                unique[id(p)] = len(devices)
                devices.append(p)
        if not devices:
            raise ValueError("no samples")
        first = devices[0]
        if len(devices) == 1:
            return first.row
        if any(d.batch_key != first.batch_key for d in devices[1:]):
            raise ValueError("samples of one call must share the profile and the ROI")
        index = np.fromiter((unique[id(p)] for p in params), dtype=np.intp, count=len(params))
        rows = [d.row for d in devices]
        stacked = {f: np.concatenate([getattr(r, f) for r in rows])[index] for f in _ARRAY_FIELDS}
        return cls(shared=first, **stacked)


_ARRAY_FIELDS = tuple(f.name for f in fields(BatchParams) if f.name != "shared")
