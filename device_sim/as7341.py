"""AS7341 spectral sensor model under the node's LEDs (docs/domain.md §3, §7 "Spectra").

``raw_c = g_eff·t_int·G_c·∫R·L·T_c dλ·(z_cal/z_s)² + dark + N(0, √(0.5·raw) + 1.5)``, with T_c
Gaussian filters of the datasheet centre/FWHM [V 9], L the white phosphor LED plus the NIR LED,
G_c the channel throughput (normalised so a white tile at ``z_cal`` reads 70 % of full scale in
its brightest F channel at the line settings: "gain so white reads 60-80 % FS", docs/domain.md §3),
clipped at FS = min(65535, (ATIME+1)(ASTEP+1)) with the clipped channels listed in
``saturated``.

Pure numpy: no I/O, no clock; noise comes in as arrays drawn by the caller.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from device_sim.spectra import WAVELENGTHS_NM

F64 = NDArray[np.float64]

CHANNEL_NAMES: Final = (
    "F1_415nm",
    "F2_445nm",
    "F3_480nm",
    "F4_515nm",
    "F5_555nm",
    "F6_590nm",
    "F7_630nm",
    "F8_680nm",
    "Clear",
    "NIR_910nm",
)
"""The ten measured channels, wire order without Flicker (as in ``Calibration.dark_bc``)."""

_F_CENTRE_NM = (415.0, 445.0, 480.0, 515.0, 555.0, 590.0, 630.0, 680.0)
_F_FWHM_NM = (26.0, 30.0, 36.0, 39.0, 39.0, 40.0, 50.0, 52.0)  # AS7341L datasheet [V 9]
_NIR_CENTRE_NM, _NIR_FWHM_NM = 910.0, 40.0  # specified with a 940 nm LED [V 9]; FWHM [U]
CLEAR_AREA: Final = 0.12
"""Clear photodiode throughput relative to a filtered one [U]: it sees 350-1000 nm unfiltered,
so a full-area diode would saturate long before the F channels; the AS7341's Clear diode is
small. Chosen so Clear reads about as much as the brightest F channel on a white tile."""

GAINS: Final = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
G_EFF: Final = (0.512, 1.024, 2.048, 4.16, 8.0, 16.0, 32.0, 64.0, 128.0, 252.8, 496.0)
"""Effective gains for :data:`GAINS` (docs/domain.md §3)."""

REF_GAIN, REF_ATIME, REF_ASTEP, REF_LED_MA = 16.0, 29, 199, 24
"""Line settings at which G_c is normalised (docs/domain.md §3, profile defaults)."""
WHITE_TARGET_FS: Final = 0.70
STRAY_FRAC: Final = 0.003
"""Stray LED light inside the hood, as a fraction of a white tile's signal [D]; what the dark
trap (LED on) measures besides dark counts (docs/domain.md §3)."""


def g_eff(gain: float) -> float:
    """Effective gain of a nominal AS7341 gain (raises ValueError for an unknown one)."""
    return G_EFF[GAINS.index(float(gain))]


def integration_ms(atime: int, astep: int) -> float:
    """``t_int = (ATIME+1)(ASTEP+1)·2.78 µs`` in ms (datasheet DS000718)."""
    return (atime + 1) * (astep + 1) * 2.78e-3


def full_scale(atime: int, astep: int) -> int:
    """``FS = min(65535, (ATIME+1)(ASTEP+1))`` counts."""
    return min(65535, (atime + 1) * (astep + 1))


def _gauss_fwhm(centre: float, fwhm: float) -> F64:
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    return np.asarray(np.exp(-0.5 * ((WAVELENGTHS_NM - centre) / sigma) ** 2), dtype=np.float64)


def led_spectrum_per_ma() -> F64:
    """(621,) relative spectral power of the LEDs per mA: violet-pumped white + 940 nm NIR [D].

    A violet-pumped (full-spectrum, high-CRI) white LED keeps light at 415 nm for F1, where a
    blue-pumped one has almost none; its phosphors emit little past ~750 nm (docs/domain.md §4),
    hence the added 940 nm LED for the NIR channel.
    """
    violet = 3.2 * _gauss_fwhm(412.0, 20.0)
    blue = 1.6 * _gauss_fwhm(455.0, 45.0)
    green = 0.8 * _gauss_fwhm(530.0, 80.0)
    red = 0.5 * _gauss_fwhm(650.0, 90.0)
    nir = 0.7 * _gauss_fwhm(940.0, 45.0)
    return violet + blue + green + red + nir


def responsivity() -> F64:
    """(621,) silicon photodiode relative responsivity, peak near 750 nm [U]."""
    return (WAVELENGTHS_NM / 750.0) * np.exp(-0.5 * ((WAVELENGTHS_NM - 760.0) / 260.0) ** 2)


def _channel_weights() -> F64:
    """(10, 621) per-mA channel weights ``L·T_c·resp`` (unnormalised), channel order above."""
    filters = [_gauss_fwhm(c, w) for c, w in zip(_F_CENTRE_NM, _F_FWHM_NM, strict=True)]
    clear = CLEAR_AREA * ((WAVELENGTHS_NM >= 350.0) & (WAVELENGTHS_NM <= 1000.0))
    nir = _gauss_fwhm(_NIR_CENTRE_NM, _NIR_FWHM_NM)
    t = np.stack([*filters, clear.astype(np.float64), nir])
    return t * led_spectrum_per_ma() * responsivity()


WHITE_TILE: Final = 0.975 - 0.03 * np.exp(-(WAVELENGTHS_NM - 380.0) / 50.0)
"""(621,) white reference tile reflectance (PTFE-like, slightly lower in the violet) [D]."""


def _normalised_weights() -> F64:
    w = _channel_weights()
    white = w @ WHITE_TILE
    scale = (
        WHITE_TARGET_FS
        * full_scale(REF_ATIME, REF_ASTEP)
        / (g_eff(REF_GAIN) * integration_ms(REF_ATIME, REF_ASTEP) * REF_LED_MA * white[:8].max())
    )
    return np.asarray(w * scale, dtype=np.float64)


CHANNEL_WEIGHTS: Final = _normalised_weights()
"""(10, 621) counts per (gain·ms·mA) for a reflectance spectrum at z = z_cal."""


def channel_reflectance(r: F64) -> F64:
    """(n, 10) channel-weighted reflectance: what a perfect white/dark calibration reads."""
    return np.asarray((r @ CHANNEL_WEIGHTS.T) / CHANNEL_WEIGHTS.sum(axis=1), dtype=np.float64)


def white_signal_per_gain_ms_ma() -> F64:
    """(10,) noise-free counts of the white tile at z_cal per unit gain·ms·mA."""
    return CHANNEL_WEIGHTS @ WHITE_TILE


def dark_counts(geff: F64, t_int_ms: F64) -> F64:
    """Dark counts, 0-3 at 512x and 98 ms (datasheet), scaling with gain·time [D]."""
    return 0.4 + 2.6 * (geff / 496.0) * (t_int_ms / 98.0)


def expected_counts(
    r: F64,
    z_s_mm: F64,
    z_cal_mm: float,
    geff: F64,
    t_int_ms: F64,
    led_ma: F64,
    channel_gain: F64,
) -> F64:
    """Noise-free raw counts before clipping.

    Args:
        r: (n, 621) reflectance of the spot.
        z_s_mm: (n,) sensor-to-surface distance of the spot.
        z_cal_mm: the white tile's calibration distance (the G_c normalisation distance).
        geff, t_int_ms, led_ma: (n,) effective gain, integration time, LED current per frame.
        channel_gain: (n, 10) per-device channel throughput × per-tray LED drift.

    Returns:
        (n, 10) expected counts (signal + stray light + dark).
    """
    k = (geff * t_int_ms * led_ma)[:, None]
    signal = k * channel_gain * (r @ CHANNEL_WEIGHTS.T) * ((z_cal_mm / z_s_mm) ** 2)[:, None]
    stray = STRAY_FRAC * k * channel_gain * white_signal_per_gain_ms_ma()
    return signal + stray + dark_counts(geff, t_int_ms)[:, None]


def measure(expected: F64, full_scale_counts: F64, noise: F64) -> tuple[F64, NDArray[np.bool_]]:
    """Noisy, clipped raw counts.

    Args:
        expected: (n, 10) noise-free counts.
        full_scale_counts: (n,) FS per frame.
        noise: (n, 10) standard normal draws.

    Returns:
        (n, 10) integer-valued counts in [0, FS] and (n, 10) True where the count hit FS
        (STATUS2 ASAT_DIGITAL, listed in the frame's ``saturated``).
    """
    raw = np.rint(expected + noise * (np.sqrt(0.5 * np.maximum(expected, 0.0)) + 1.5))
    fs = full_scale_counts[:, None]
    saturated = raw >= fs
    return np.clip(raw, 0.0, fs), saturated
