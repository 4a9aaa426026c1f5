"""Reflectance spectra of the products and CIE colour (docs/domain.md §3, §4, §7 "Spectra").

Every spectrum lives on :data:`WAVELENGTHS_NM`, 380-1000 nm per nm. A product's reflectance
comes from Kubelka-Munk addition: ``KS = KS_base + Σ c_j·ε_j`` and ``R = 1 + KS − √(KS² + 2KS)``
(the infinite-thickness K-M reflectance), with ε_j the named absorbers of docs/domain.md §7 as
Gaussian bands. Colour is CIE 1931 2° XYZ under D65 (tabulated at 10 nm, CIE 015:2004, linearly
interpolated) converted to L*a*b* with the D65 white of docs/domain.md §3.

Pure numpy: no I/O, no clock, no RNG.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

WAVELENGTHS_NM: Final = np.arange(380.0, 1001.0, 1.0)
"""(621,) the simulator's spectral grid, nm."""

ABSORBERS: Final = ("oxy", "deoxy", "met", "carotenoid", "water", "browning")
"""Order of the concentration vector ``c`` (docs/domain.md §7)."""


def _band(centre_nm: float, sigma_nm: float) -> F64:
    return np.exp(-0.5 * ((WAVELENGTHS_NM - centre_nm) / sigma_nm) ** 2)


def _absorber_bands() -> F64:
    """(6, 621) unit absorption spectra ε_j: the Gaussian bands named in docs/domain.md §7.

    Band widths are [D]: myoglobin α/β bands ~10-20 nm wide (the 542/580 doublet of MbO2 is
    resolved in meat spectra [V 15]); the 630 nm MetMb band is weak; carotenoids absorb at
    450/480 (and 430) nm [V 17]; the water overtone near 970 nm is broad [U, 20].
    """
    oxy = _band(542.0, 11.0) + _band(580.0, 9.0)
    deoxy = _band(555.0, 22.0)
    met = _band(505.0, 18.0) + 0.45 * _band(630.0, 14.0)
    carotenoid = 0.6 * _band(430.0, 12.0) + _band(455.0, 14.0) + 0.85 * _band(482.0, 13.0)
    water = _band(970.0, 28.0)
    browning = np.exp(-(WAVELENGTHS_NM - 380.0) / 60.0)
    return np.stack([oxy, deoxy, met, carotenoid, water, browning])


EPSILON: Final = _absorber_bands()
"""(6, 621) absorber spectra in :data:`ABSORBERS` order."""


def km_reflectance(ks: F64) -> F64:
    """Infinite-layer Kubelka-Munk reflectance ``R = 1 + KS − √(KS² + 2·KS)``, any shape."""
    ks = np.maximum(ks, 0.0)
    return 1.0 + ks - np.sqrt(ks * ks + 2.0 * ks)


def ks_of(r: F64) -> F64:
    """Kubelka-Munk ``KS(R) = (1 − R)²/(2R)`` with R clipped to [0.01, 1] (docs/domain.md §4)."""
    r = np.clip(r, 0.01, 1.0)
    return (1.0 - r) ** 2 / (2.0 * r)


def reflectance(ks_base: F64, conc: F64) -> F64:
    """Reflectance spectra by K/S addition.

    Args:
        ks_base: (621,) or (n, 621) scattering-normalised background K/S of the tissue.
        conc: (n, 6) absorber concentrations in :data:`ABSORBERS` order (unitless K/S scale).

    Returns:
        (n, 621) reflectance fractions.
    """
    return km_reflectance(ks_base + conc @ EPSILON)


# CIE 1931 2° colour matching functions and D65, 380-780 nm every 10 nm (CIE 015:2004 tables).
_CIE_NM = np.arange(380.0, 781.0, 10.0)
_XBAR = (
    0.001368,
    0.004243,
    0.014310,
    0.043510,
    0.134380,
    0.283900,
    0.348280,
    0.336200,
    0.290800,
    0.195360,
    0.095640,
    0.032010,
    0.004900,
    0.009300,
    0.063270,
    0.165500,
    0.290400,
    0.433450,
    0.594500,
    0.762100,
    0.916300,
    1.026300,
    1.062200,
    1.002600,
    0.854450,
    0.642400,
    0.447900,
    0.283500,
    0.164900,
    0.087400,
    0.046770,
    0.022700,
    0.011359,
    0.005790,
    0.002899,
    0.001440,
    0.000690,
    0.000332,
    0.000166,
    0.000083,
    0.000042,
)
_YBAR = (
    0.000039,
    0.000120,
    0.000396,
    0.001210,
    0.004000,
    0.011600,
    0.023000,
    0.038000,
    0.060000,
    0.090980,
    0.139020,
    0.208020,
    0.323000,
    0.503000,
    0.710000,
    0.862000,
    0.954000,
    0.994950,
    0.995000,
    0.952000,
    0.870000,
    0.757000,
    0.631000,
    0.503000,
    0.381000,
    0.265000,
    0.175000,
    0.107000,
    0.061000,
    0.032000,
    0.017000,
    0.008210,
    0.004102,
    0.002091,
    0.001047,
    0.000520,
    0.000249,
    0.000120,
    0.000060,
    0.000030,
    0.000015,
)
_ZBAR = (
    0.006450,
    0.020050,
    0.067850,
    0.207400,
    0.645600,
    1.385600,
    1.747060,
    1.772110,
    1.669200,
    1.287640,
    0.812950,
    0.465180,
    0.272000,
    0.158200,
    0.078250,
    0.042160,
    0.020300,
    0.008750,
    0.003900,
    0.002100,
    0.001650,
    0.001100,
    0.000800,
    0.000340,
    0.000190,
    0.000050,
    0.000020,
) + (0.0,) * 14
_D65 = (
    49.9755,
    54.6482,
    82.7549,
    91.486,
    93.4318,
    86.6823,
    104.865,
    117.008,
    117.812,
    114.861,
    115.923,
    108.811,
    109.354,
    107.802,
    104.79,
    107.689,
    104.405,
    104.046,
    100.0,
    96.3342,
    95.788,
    88.6856,
    90.0062,
    89.5991,
    87.6987,
    83.2886,
    83.6992,
    80.0268,
    80.2146,
    82.2778,
    78.2842,
    69.7213,
    71.6091,
    74.349,
    61.604,
    69.8856,
    75.087,
    63.5927,
    46.4182,
    66.8054,
    63.3828,
)

D65_WHITE: Final = np.array([95.047, 100.0, 108.883])
"""CIE D65/2° white point XYZ (docs/domain.md §3)."""


def _xyz_weights() -> F64:
    """(3, 621) weights so that ``XYZ = R @ W.T`` and a perfect white gives exactly D65_WHITE.

    The 10 nm tables are interpolated to 1 nm; each row is then rescaled so R ≡ 1 lands on the
    tabulated white point (the interpolation alone misses it by < 0.1 %).
    """
    d65 = np.interp(WAVELENGTHS_NM, _CIE_NM, _D65, left=0.0, right=0.0)
    cmf = np.stack(
        [np.interp(WAVELENGTHS_NM, _CIE_NM, t, left=0.0, right=0.0) for t in (_XBAR, _YBAR, _ZBAR)]
    )
    w = cmf * d65
    return np.asarray(w * (D65_WHITE / w.sum(axis=1))[:, None], dtype=np.float64)


XYZ_WEIGHTS: Final = _xyz_weights()


def xyz_of(r: F64) -> F64:
    """(n, 3) CIE XYZ (Y = 100 for a perfect white) of (n, 621) reflectance spectra."""
    return r @ XYZ_WEIGHTS.T


def lab_of_xyz(xyz: F64) -> F64:
    """CIE 1976 L*a*b* of (n, 3) XYZ against the D65 white (CIE 15:2004, docs/domain.md §3)."""
    t = xyz / D65_WHITE
    d = 6.0 / 29.0
    f = np.where(t > d**3, np.cbrt(np.maximum(t, 0.0)), t / (3 * d * d) + 4.0 / 29.0)
    return np.stack(
        [116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], axis=1
    )


def lab_of(r: F64) -> F64:
    """(n, 3) L*a*b* of (n, 621) reflectance spectra."""
    return lab_of_xyz(xyz_of(r))
