"""Calibration references from captured frames (docs/domain.md §2, §3): pure, no I/O.

``sqal calibrate`` captures frames of a fixture and hands them here:

- **empty**: ≥ 20 frames of an empty tray → ``d0_mm`` (ROI median), ``signal0_map_kcps`` (per
  zone, the mean signal: the floor's return) and ``d0_map_mm`` (per zone,
  the mean of the valid readings within 3 robust σ of their median; a median of whole-mm
  readings would keep ±0.5 mm of quantisation).
- **dark**: frames of a black trap with the LED on → mean basic counts per channel.
- **white**: frames of the white tile → mean basic counts per channel, and ``z_cal_mm`` from
  the ToF frames of the tile (median distance over the spectral spot's zones).

A capture that cannot give a trustworthy reference is refused with the reason
(:class:`CalibrationError`): saturated, too dark, moving, or mostly invalid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from analyzer.arrays import SpectralArrays, TofArrays, effective_gain
from analyzer.params import roi_mask, spot_mask
from sqal.errors import CalibrationError
from sqal.profiles import Profile
from sqal.wire import CHANNELS

F64 = NDArray[np.float64]
Step = Literal["empty", "dark", "white"]

MIN_FRAMES: Final = 20
"""Fewest frames a reference is computed from (docs/domain.md §2: "ROI median of 20 frames")."""
OUTLIER_MAD: Final = 3.0
MIN_VALID_SHARE: Final = 0.9
"""An empty-tray capture whose ROI zones are valid less often than this is refused."""
MAX_ZONE_DRIFT: Final = 2.5
"""Refuse when a zone's spread over the frames exceeds this many times its reported σ: the
tray or the mount moved during the capture (reported σ is a 1σ noise estimate,
docs/domain.md §1)."""
MAX_CHANNEL_CV: Final = 0.05
"""Refuse a white capture whose counts vary more than 5 % between frames (LED warming, tile
moving)."""
DARK_MAX_FS: Final = 0.10
"""A dark capture reading above 10 % of full scale in any channel is not dark: trap missing."""
WHITE_MIN_FS: Final = 0.20
"""A white capture below 20 % of full scale in an F channel is too dim to be a reference
(docs/domain.md §3 sets gain so the white reads 60-80 % FS)."""
N_CAL_CHANNELS: Final = 10
"""F1-F8, Clear, NIR: Flicker is not a reflectance channel."""


@dataclass(frozen=True)
class EmptyReference:
    """Empty-tray distances."""

    d0_mm: float
    d0_map_mm: F64
    signal_map_kcps: F64
    valid_share: float
    drift_ratio: float
    frames: int


@dataclass(frozen=True)
class SpectralReference:
    """Mean basic counts of a fixture, channel order F1-F8, Clear, NIR; for the white tile also
    its count noise (:func:`count_noise`)."""

    bc: F64
    cv: F64
    peak_fs: float
    frames: int
    z_cal_mm: float | None = None
    count_noise_k: float | None = None
    common_noise_frac: float | None = None


def count_noise(raw: F64) -> tuple[float, float]:
    """The white tile's count noise, split into its per-channel and common parts.

    ``raw`` (N frames, C channels), all on one fixture. In logs, each frame's reading is the
    channel's mean, times one factor shared by every channel (the LED's drift, the tile's
    distance), times each channel's own scatter (photon shot noise). The shared factor of a
    frame is its mean log deviation over the channels; what is left is the channel's own. Shot
    noise has var(raw) = k·raw, so k = var_relative·mean, one conversion gain for every channel
    (they share the ADCs), so k is pooled over the channels: the analyzer scales it to any
    count (docs/domain.md §3). Returns (k, relative sd of the shared factor).
    """
    mean = raw.mean(axis=0)
    logs = np.log(np.maximum(raw, 1e-9) / mean)
    shared = logs.mean(axis=1)
    own = logs - shared[:, None]
    c = raw.shape[1]
    # Taking each frame's mean over c channels out removes 1/c of every channel's own variance.
    var_rel = own.var(axis=0, ddof=1) * c / (c - 1)
    return float(np.mean(var_rel * mean)), float(shared.std(ddof=1))


def _valid(arrays: TofArrays, profile: Profile) -> NDArray[np.bool_]:
    tof = profile.tof
    status_ok = np.isin(arrays.target_status, np.asarray(tof.valid_status))
    return np.asarray(
        status_ok
        & (arrays.range_sigma_mm <= tof.max_sigma_mm)
        & (arrays.signal_per_spad >= tof.min_signal_kcps)
        & arrays.present[:, None, None]
    )


def robust_zone_mean(distance_mm: F64, valid: NDArray[np.bool_]) -> F64:
    """Per zone (axis 0 = frames): mean of valid readings within 3 robust σ of their median."""
    d = np.where(valid, distance_mm, np.nan)
    med = np.nanmedian(d, axis=0)
    mad = np.nanmedian(np.abs(d - med), axis=0) * 1.4826
    keep = np.abs(d - med) <= OUTLIER_MAD * np.maximum(mad, 0.5)
    kept = np.where(keep, d, np.nan)
    return np.asarray(np.nanmean(kept, axis=0))


def empty_reference(arrays: TofArrays, profile: Profile) -> EmptyReference:
    """d0 and its per-zone map from empty-tray frames.

    Raises:
        CalibrationError: too few frames, too many invalid ROI zones, or zones that moved.
    """
    n = int(arrays.present.sum())
    if n < MIN_FRAMES:
        raise CalibrationError(f"empty: {n} ToF frames, need at least {MIN_FRAMES}")
    valid = _valid(arrays, profile)
    roi = roi_mask(profile, profile.tof.mount_distance_mm)
    share = float(valid[:, roi].mean())
    if share < MIN_VALID_SHARE:
        raise CalibrationError(
            f"empty: only {share:.0%} of the ROI zone readings are valid (need "
            f"{MIN_VALID_SHARE:.0%}); clean the window, check the tray is empty and in place"
        )
    zone_valid = valid.mean(axis=0) >= 0.5
    with np.errstate(all="ignore"):
        d_map = robust_zone_mean(arrays.distance_mm, valid)
        spread = np.nanstd(np.where(valid, arrays.distance_mm, np.nan), axis=0)
        sigma = np.nanmedian(np.where(valid, arrays.range_sigma_mm, np.nan), axis=0)
    use = roi & zone_valid
    drift = float(np.nanmedian(spread[use] / np.maximum(sigma[use], 0.5)))
    if drift > MAX_ZONE_DRIFT:
        raise CalibrationError(
            f"empty: the zones moved during the capture (spread {drift:.1f}x their noise); "
            "hold the tray still and capture again"
        )
    d0 = float(np.median(arrays.distance_mm[:, roi][valid[:, roi]]))
    d_map = np.where(zone_valid & np.isfinite(d_map), d_map, d0)
    # The floor's return per zone: what a zone that later sees product and floor at once is
    # split against (docs/domain.md §2 "mixed zones"); 0 where the zone never read valid.
    with np.errstate(all="ignore"):
        s_map = np.nanmean(np.where(valid, arrays.signal_per_spad, np.nan), axis=0)
    s_map = np.where(zone_valid & np.isfinite(s_map), s_map, 0.0)
    return EmptyReference(d0, d_map, s_map, share, drift, n)


RANGE_SCALE_LIMITS = (0.9, 1.1)
"""A range slope outside ±10 % is a wrong tile height or a tile not in place, not a sensor."""


def range_scale(
    arrays: TofArrays, d0_map_mm: F64, tile_height_mm: float, profile: Profile
) -> float:
    """The ToF range's slope from frames of a flat tile of known height above the tray base.

    Each valid ROI zone reads a height d0_i − distance_i with d0_i from the empty step's map
    (which took each zone's fixed offset out at the base): a range error linear in distance
    makes that height tile_height·s. Returns s from the readings' mean within 3 robust σ of
    their median (whole-mm readings would quantise a median, as for the d0 map).

    Raises:
        CalibrationError: no valid reading, or s outside :data:`RANGE_SCALE_LIMITS`.
    """
    valid = _valid(arrays, profile)
    roi = roi_mask(profile, profile.tof.mount_distance_mm).ravel()
    n = arrays.distance_mm.shape[0]
    dist = arrays.distance_mm.reshape(n, -1)[:, roi]
    ok = valid.reshape(n, -1)[:, roi]
    heights = (np.asarray(d0_map_mm, dtype=np.float64).ravel()[roi][None, :] - dist)[ok]
    if heights.size == 0:
        raise CalibrationError("white: no valid ToF reading of the tile to measure the range")
    med = float(np.median(heights))
    mad = 1.4826 * float(np.median(np.abs(heights - med)))
    s = float(heights[np.abs(heights - med) <= 3.0 * max(mad, 1.0)].mean()) / tile_height_mm
    lo, hi = RANGE_SCALE_LIMITS
    if not lo <= s <= hi:
        raise CalibrationError(
            f"white: the tile reads {s * tile_height_mm:.1f} mm high, {s:.3f} times "
            f"--tile-height-mm {tile_height_mm:g}; check the tile's height and that it lies flat"
        )
    return s


def basic_counts(arrays: SpectralArrays) -> F64:
    """(n, 10) basic counts raw/(g_eff·t_int_ms) of channels F1-F8, Clear, NIR
    (docs/domain.md §3)."""
    t_int_ms = (arrays.atime + 1) * (arrays.astep + 1) * 2.78e-3
    scale = effective_gain(arrays.gain) * t_int_ms
    return np.asarray(arrays.raw[:, :N_CAL_CHANNELS] / scale[:, None])


def full_scale(arrays: SpectralArrays) -> F64:
    """(n,) ADC full scale min(65535, (ATIME+1)(ASTEP+1))."""
    return np.asarray(np.minimum(65535.0, (arrays.atime + 1) * (arrays.astep + 1)))


def spectral_reference(
    arrays: SpectralArrays,
    step: Literal["dark", "white"],
    profile: Profile,
    tof: TofArrays | None = None,
) -> SpectralReference:
    """Mean basic counts of a dark-trap or white-tile capture (and z_cal from the tile's ToF).

    Raises:
        CalibrationError: too few frames, mixed settings, saturation, a dark capture that is
            not dark, or a white one that is too dim or unsteady.
    """
    present = arrays.present
    n = int(present.sum())
    if n < MIN_FRAMES:
        raise CalibrationError(f"{step}: {n} spectral frames, need at least {MIN_FRAMES}")
    settings = np.stack([arrays.gain, arrays.atime, arrays.astep], axis=1)[present]
    if len(np.unique(settings, axis=0)) > 1:
        raise CalibrationError(f"{step}: the sensor settings changed during the capture")
    raw = arrays.raw[present, :N_CAL_CHANNELS]
    fs = full_scale(arrays)[present]
    limit = profile.spectral.saturation_frac * fs[:, None]
    flagged = arrays.saturated[present, :N_CAL_CHANNELS] | (raw >= limit)
    if flagged.any():
        names = [CHANNELS[j].value for j in np.flatnonzero(flagged.any(axis=0))]
        raise CalibrationError(
            f"{step}: saturated in {', '.join(names)} (at or near full scale "
            f"{int(fs[0])}); lower spectral.gain or spectral.led_ma and capture again"
        )
    bc = basic_counts(arrays)[present]
    mean = bc.mean(axis=0)
    cv = bc.std(axis=0) / np.maximum(mean, 1e-9)
    peak = float((raw[:, :8] / fs[:, None]).mean(axis=0).max())
    if step == "dark":
        bright = float((raw / fs[:, None]).mean(axis=0).max())
        if bright > DARK_MAX_FS:
            raise CalibrationError(
                f"dark: reads {bright:.0%} of full scale; is the dark trap in place?"
            )
        return SpectralReference(mean, cv, peak, n)
    dim = (raw[:, :8] / fs[:, None]).mean(axis=0)
    if dim.min() < WHITE_MIN_FS:
        j = int(np.argmin(dim))
        raise CalibrationError(
            f"white: {CHANNELS[j].value} reads only {dim[j]:.0%} of full scale; raise "
            "spectral.gain or led_ma, or check the tile"
        )
    if cv[:8].max() > MAX_CHANNEL_CV:
        j = int(np.argmax(cv[:8]))
        raise CalibrationError(
            f"white: {CHANNELS[j].value} varies {cv[j]:.1%} between frames; let the LED "
            "warm up and hold the tile still"
        )
    z_cal = None
    if tof is not None and tof.present.any():
        spot = spot_mask(profile.tof.layout)
        valid = _valid(tof, profile)[:, spot]
        readings = tof.distance_mm[:, spot][valid]
        if readings.size:
            z_cal = float(np.median(readings))
    k, common = count_noise(raw)
    return SpectralReference(mean, cv, peak, n, z_cal, k, common)


RIDGE_LAMBDA: Final = 1e-3
"""Ridge weight of the colour-matrix fit (docs/domain.md §3: λ ≈ 1e−3)."""
CHART_FOLDS: Final = 5
MIN_PATCHES: Final = 24
"""Colour chart + beige/pink/brown/yellow tiles (docs/domain.md §3: ≥ 24 diffuse patches)."""
MAX_HELD_OUT_DE: Final = 3.0
"""Accept a fit whose held-out mean ΔE*ab is at most this (docs/domain.md §3)."""


@dataclass(frozen=True)
class ColourFit:
    """A fitted colour matrix and how well it predicts patches it was not fitted on."""

    matrix: F64
    held_out_de: float
    fitted_de: float
    patches: int


def chart_reflectance(bc: F64, dark_bc: F64, white_bc: F64, rho_white: F64) -> F64:
    """(n, 8) reflectances of chart patches at z_cal: ρw·(BC − dark)/(white − dark), F1-F8."""
    span = np.maximum(white_bc[:8] - dark_bc[:8], 1e-9)
    return np.asarray(rho_white[:8] * (bc[:, :8] - dark_bc[:8]) / span)


def _ridge(r: F64, xyz: F64, lam: float) -> F64:
    x = np.hstack([r, np.ones((r.shape[0], 1))])
    # Ridge least squares as an augmented system (docs/domain.md §3): [X; √λ·I] Mᵀ ≈ [T; 0].
    a = np.vstack([x, np.sqrt(lam) * np.eye(x.shape[1])])
    t = np.vstack([xyz, np.zeros((x.shape[1], 3))])
    mt, *_ = np.linalg.lstsq(a, t, rcond=None)
    m = np.asarray(mt.T)
    # Scale so a perfect white (R ≡ 1) gives Y = 100.
    return np.asarray(m * (100.0 / float(m[1] @ np.ones(x.shape[1]))))


def _mean_de(m: F64, r: F64, xyz: F64) -> float:
    from analyzer.spectral import lab_from_xyz

    pred = np.hstack([r, np.ones((r.shape[0], 1))]) @ m.T
    de = np.linalg.norm(lab_from_xyz(pred) - lab_from_xyz(xyz), axis=1)
    return float(de.mean())


def fit_colour_matrix(
    r: F64, xyz: F64, rng: np.random.Generator, lam: float = RIDGE_LAMBDA
) -> ColourFit:
    """Fit the 3x9 M of ``XYZ = M·[R_F1..R_F8, 1]`` and its held-out ΔE (k-fold).

    Args:
        r: (n, 8) patch reflectances, xyz: (n, 3) reference XYZ (D65/2°, Y of white = 100).
        rng: shuffles the patches into folds.

    Raises:
        CalibrationError: too few patches, or a held-out ΔE over the acceptance limit.
    """
    n = r.shape[0]
    if n < MIN_PATCHES:
        raise CalibrationError(f"colour chart: {n} patches, need at least {MIN_PATCHES}")
    order = rng.permutation(n)
    held = []
    for fold in np.array_split(order, CHART_FOLDS):
        train = np.setdiff1d(order, fold)
        held.append(_mean_de(_ridge(r[train], xyz[train], lam), r[fold], xyz[fold]) * len(fold))
    held_out = float(sum(held) / n)
    m = _ridge(r, xyz, lam)
    if held_out > MAX_HELD_OUT_DE:
        raise CalibrationError(
            f"colour chart: held-out mean ΔE*ab {held_out:.2f} > {MAX_HELD_OUT_DE:g}; check the "
            "patch captures and their reference XYZ"
        )
    return ColourFit(m, held_out, _mean_de(m, r, xyz), n)
