"""A simulated device's calibration block (docs/domain.md §2, §3; docs/contract.md "Config").

The simulator calibrates each device the way an operator would on the line, with its own
physics: 100 empty-tray frames (ROI median → ``d0_mm``; per-zone robust mean → ``d0_map_mm``,
which carries each zone's fixed range offset; per-zone mean signal → ``signal0_map_kcps``), 10
frames of a dark trap and 10 of a white tile at ``z_cal`` (mean basic counts), a 3x9 colour
matrix fitted by ridge least squares on random smooth spectra with a held-out ΔE, and the index
anchors and ``lab_ref`` measured on the fresh and degraded reference spectra.
"""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import Final

import numpy as np
from numpy.typing import NDArray

from device_sim import as7341
from device_sim.materials import IDX_CAR, IDX_MET
from device_sim.model import ProductModel
from device_sim.render import DeviceOptics, Fixture, Sample, Shot, render_batch
from device_sim.spectra import WAVELENGTHS_NM, lab_of_xyz, xyz_of
from device_sim.trays import draw_tray
from sqal.wire import Calibration, SpectralAnchors, SpectralSettings, TofSettings

F64 = NDArray[np.float64]

EMPTY_FRAMES: Final = 100
"""Empty-tray frames (~7 s at 15 Hz). The per-zone map needs them: at σ ≈ 2.6 mm (empty PET
base at 260 mm) a zone's mean of 20 frames still errs by 0.6-0.8 mm, as much as the N(0, 1 mm)
offset it is meant to remove; 100 frames bring it to ~0.25 mm (docs/domain.md §1, §2) [D]."""
OUTLIER_MAD: Final = 3.0
"""A zone's reading farther than this many robust σ (1.4826·MAD) from its median is dropped
before the mean (a stray 12/13 or a speck on the base)."""
REFERENCE_FRAMES: Final = 10
RIDGE_LAMBDA: Final = 1e-3
CAL_UPTIME_S: Final = 1800.0
"""Calibration runs on a warmed-up node (the 3 mm warm-up bias has decayed, docs/domain.md §1)."""


def capture(
    model: ProductModel,
    device: DeviceOptics,
    tof: TofSettings,
    spectral: SpectralSettings,
    fixture: Fixture,
    frames: int,
    rng: np.random.Generator,
    noise: bool = True,
) -> list[Sample]:
    """Render ``frames`` captures of a calibration fixture (``noise`` as ``render_batch``)."""
    shots = []
    for _ in range(frames):
        tray_rng = np.random.default_rng(rng.integers(2**63))
        draw = draw_tray(model, tray_rng, {}, model.profile.scenarios.production)
        shots.append(Shot(draw, tray_rng, device, tof, spectral, CAL_UPTIME_S, False))
    return render_batch(model, shots, fixture=fixture, truth=False, noise=noise)


def roi_median_mm(model: ProductModel, samples: list[Sample]) -> float:
    """ROI median distance of empty-tray frames over zones with a valid status (§2 ``d0``)."""
    layout = samples[0].tof["layout"]
    roi = model.rois[layout]
    valid = set(model.profile.tof.valid_status)
    values = [
        d
        for s in samples
        for d, st, inside in zip(
            np.ravel(s.tof["distance_mm"]), np.ravel(s.tof["target_status"]), roi, strict=True
        )
        if inside and st in valid
    ]
    return float(np.median(values))


def zone_map_mm(
    model: ProductModel, samples: list[Sample], fallback_mm: float
) -> list[list[float]]:
    """Per-zone empty-tray distance (layout x layout, row-major), the ``d0_map_mm`` block.

    Per zone: the mean of its valid-status readings within ``OUTLIER_MAD`` robust σ of their
    median. A mean, not the median the scalar ``d0`` uses: readings are whole mm, so a median
    of integers keeps up to ±0.5 mm of quantisation error that the noise-dithered mean averages
    away (0.45 vs 0.24 mm residual over 100 frames, measured). Zones with no valid reading
    (outside the tray, off the conveyor) take ``fallback_mm``.
    """
    layout = samples[0].tof["layout"]
    d = np.array([np.ravel(s.tof["distance_mm"]) for s in samples], dtype=np.float64)
    st = np.array([np.ravel(s.tof["target_status"]) for s in samples])
    ok = np.isin(st, model.profile.tof.valid_status)
    masked = np.where(ok, d, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN zones fall back below
        med = np.nanmedian(masked, axis=0)
        mad = np.nanmedian(np.abs(masked - med), axis=0)
        keep = ok & (np.abs(d - med) <= OUTLIER_MAD * np.maximum(1.4826 * mad, 1.0))
        mean = np.where(keep, d, 0.0).sum(axis=0) / keep.sum(axis=0)
    out = np.where(keep.any(axis=0), mean, fallback_mm).reshape(layout, layout)
    return [[round(float(v), 2) for v in row] for row in out]


def signal_map_kcps(model: ProductModel, samples: list[Sample]) -> list[list[float]]:
    """Per-zone empty-tray signal (layout x layout), the ``signal0_map_kcps`` block: the mean
    of each zone's valid-status readings (0 where a zone never read valid)."""
    layout = samples[0].tof["layout"]
    sig = np.array([np.ravel(s.tof["signal_per_spad"]) for s in samples], dtype=np.float64)
    st = np.array([np.ravel(s.tof["target_status"]) for s in samples])
    ok = np.isin(st, model.profile.tof.valid_status)
    cnt = ok.sum(axis=0)
    mean = np.where(ok, sig, 0.0).sum(axis=0) / np.maximum(cnt, 1)
    out = np.where(cnt > 0, mean, 0.0).reshape(layout, layout)
    return [[round(float(v), 1) for v in row] for row in out]


def mean_basic_counts(samples: list[Sample]) -> F64:
    """(10,) mean ``BC = raw/(g_eff·t_int_ms)`` over frames, channels F1..F8, Clear, NIR."""
    bc = [
        np.array([s.spectral["channels"][c] for c in as7341.CHANNEL_NAMES])
        / (as7341.g_eff(s.spectral["gain"]) * s.spectral["integration_ms"])
        for s in samples
    ]
    return np.asarray(np.mean(bc, axis=0))


def white_noise(samples: list[Sample]) -> tuple[float, float]:
    """The white frames' count noise as a plant's calibration measures it (docs/calibration.md).

    Per frame, the log ratio of each raw count to its channel's mean splits into a part all
    channels share (the frame's mean over channels: LED drift) and each channel's own (shot
    noise, var = k·raw). Returns (k pooled over channels, relative sd of the shared part).
    """
    raw = np.array([[s.spectral["channels"][c] for c in as7341.CHANNEL_NAMES] for s in samples])
    mu = raw.mean(axis=0)
    dev = np.log(np.maximum(raw, 1e-9) / mu)
    frame = dev.mean(axis=1, keepdims=True)
    n_ch = raw.shape[1]
    own_var = (dev - frame).var(axis=0, ddof=1) * n_ch / (n_ch - 1)
    return float((own_var * mu).mean()), float(frame.std(ddof=1))


def _training_spectra(model: ProductModel, rng: np.random.Generator, n: int) -> F64:
    """Half generic smooth spectra (a colour chart), half product-like tiles [D]."""
    lam = WAVELENGTHS_NM
    generic = np.full((n // 2, lam.size), 0.0)
    for i in range(n // 2):
        base = rng.uniform(0.03, 0.5)
        bumps = sum(
            rng.uniform(-0.4, 0.6)
            * np.exp(-0.5 * ((lam - rng.uniform(380, 760)) / rng.uniform(25, 120)) ** 2)
            for _ in range(int(rng.integers(1, 4)))
        )
        generic[i] = np.clip(base + bumps, 0.02, 0.95)
    o = model.optics
    q = rng.uniform(0.0, 1.0, n - n // 2)
    conc = o.fresh * rng.uniform(0.6, 1.4, (q.size, 6)) + q[:, None] * (o.degraded - o.fresh)
    conc[:, IDX_CAR] += rng.uniform(0.0, 2.0, q.size)
    conc[:, IDX_MET] *= rng.uniform(0.5, 2.0, q.size)
    return np.vstack([generic, o.reflectance(conc)])


def fit_color_matrix(model: ProductModel, rng: np.random.Generator) -> tuple[F64, float]:
    """Fit ``XYZ = M·[R_F1..R_F8, 1]`` by ridge least squares; return M (3, 9) and held-out ΔE.

    ``argmin ‖X·Mᵀ − T‖² + λ‖M‖²`` solved as lstsq on the augmented system (docs/domain.md §3); the
    channel reflectances carry 0.5 % measurement noise; M is scaled so R ≡ 1 gives Y = 100.
    """
    spectra = _training_spectra(model, rng, 240)
    ch = as7341.channel_reflectance(spectra)[:, :8] * (1.0 + 0.005 * rng.standard_normal((240, 8)))
    x = np.hstack([ch, np.ones((240, 1))])
    t = xyz_of(spectra)
    order = rng.permutation(240)
    train, test = order[:180], order[180:]
    xa = np.vstack([x[train], np.sqrt(RIDGE_LAMBDA) * np.eye(9)])
    ta = np.vstack([t[train], np.zeros((9, 3))])
    m = np.linalg.lstsq(xa, ta, rcond=None)[0].T
    m *= 100.0 / (m[1] @ np.ones(9))
    de = np.linalg.norm(lab_of_xyz(x[test] @ m.T) - lab_of_xyz(t[test]), axis=1)
    return m, float(de.mean())


def calibrate(
    model: ProductModel,
    device: DeviceOptics,
    tof: TofSettings,
    spectral: SpectralSettings,
    rng: np.random.Generator,
    cal_id: str,
    now: datetime,
    noise: bool = True,
) -> Calibration:
    """The calibration block a device publishes in its retained config. ``noise`` False: as a
    sensor without noise measures it (``bench.accuracy --ceiling``), so the references match
    the noiseless frames they are applied to (no zone offsets in the d0 map, no count noise)."""
    empty = capture(model, device, tof, spectral, "empty", EMPTY_FRAMES, rng, noise)
    dark = capture(model, device, tof, spectral, "dark", REFERENCE_FRAMES, rng, noise)
    white = capture(model, device, tof, spectral, "white", REFERENCE_FRAMES, rng, noise)
    d0 = roi_median_mm(model, empty)
    m, de = fit_color_matrix(model, rng)
    k, common = white_noise(white)
    a = model.anchors
    fresh_ch = as7341.channel_reflectance(model.optics.reflectance(model.optics.fresh[None]))
    lab_ref = lab_of_xyz(np.hstack([fresh_ch[:, :8], np.ones((1, 1))]) @ m.T)[0]
    rho_white = as7341.channel_reflectance(as7341.WHITE_TILE[None])[0]
    return Calibration(
        id=cal_id,
        ts=now,
        d0_mm=round(d0, 2),
        d0_map_mm=zone_map_mm(model, empty, d0),
        signal0_map_kcps=signal_map_kcps(model, empty),
        dark_bc=[round(float(v), 5) for v in mean_basic_counts(dark)],
        white_bc=[round(float(v), 5) for v in mean_basic_counts(white)],
        rho_white=[round(float(v), 5) for v in rho_white],
        z_cal_mm=model.z_cal_mm,
        color_matrix=[[round(float(v), 6) for v in row] for row in m],
        color_delta_e=round(de, 3),
        anchors=SpectralAnchors(
            MI_fresh=a.mi_fresh,
            MI_met=a.mi_met,
            BR_fresh=a.br_fresh,
            BR_ox=a.br_ox,
            NR_ref=a.nr_ref,
        ),
        lab_ref=(
            round(float(lab_ref[0]), 3),
            round(float(lab_ref[1]), 3),
            round(float(lab_ref[2]), 3),
        ),
        count_noise_k=round(k, 5),
        common_noise_frac=round(common, 5),
    )
