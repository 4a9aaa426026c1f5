"""Optical properties of what the sensors look at: products, tray, conveyor, fixtures [D].

Products are described by a K/S background and absorber concentrations (docs/domain.md §7
"Spectra"); their 940 nm reflectance, which the ToF sees, is read off the same spectrum, so the
two sensors agree about one surface. The numbers are chosen so the fresh references land near
the profiles' ``lab_ref`` (foie gras pale beige-pink, pâté pinkish brown, docs/domain.md §6); the
simulator recomputes anchors and ``lab_ref`` from them, so they need not match exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from device_sim.spectra import EPSILON, WAVELENGTHS_NM, km_reflectance, reflectance

F64 = NDArray[np.float64]
Kind = Literal["free_form", "fills_tray"]

IDX_OXY, IDX_DEOXY, IDX_MET, IDX_CAR, IDX_WATER, IDX_BROWN = range(6)

RHO940_TRAY: Final = 0.45
"""White PP/PET barquette at 940 nm [D]."""
RHO940_CONVEYOR: Final = 0.12
"""Dark belt [D]."""
RHO940_DARK_TRAP: Final = 0.003
"""Black flocked trap: S < 10 kcps at 260 mm, so the ToF reports no target (status 255)."""
R_DARK_TRAP: Final = 0.002
"""The dark trap's reflectance across the spectrum."""
TRAY_REFLECTANCE: Final = np.full_like(WAVELENGTHS_NM, 0.62)
"""(621,) tray base seen by the spectral sensor when the spot misses the product [D]."""


@dataclass(frozen=True)
class ProductOptics:
    """K/S description of one product kind.

    Attributes:
        ks_base: (621,) background K/S (scattering tissue without the named absorbers).
        fresh: (6,) absorber concentrations of the fresh reference.
        degraded: (6,) concentrations of the fully degraded (oxidised) reference.
        blood: (6,) concentrations of a blood spot (haemoglobin ≈ the oxy bands, strong).
        blood_rho940_factor: a blood spot's 940 nm reflectance relative to the product's.
        variation: (6,) relative 1σ tray-to-tray variation of each concentration.
    """

    ks_base: F64
    fresh: F64
    degraded: F64
    blood: F64
    blood_rho940_factor: float
    variation: F64

    def reflectance(self, conc: F64) -> F64:
        """(n, 621) reflectance of (n, 6) concentrations."""
        return reflectance(self.ks_base, conc)

    def rho940(self, conc: F64) -> F64:
        """(n,) reflectance at 940 nm (what the VL53L8CH sees)."""
        i = int(np.searchsorted(WAVELENGTHS_NM, 940.0))
        ks = self.ks_base[i] + conc @ EPSILON[:, i]
        return km_reflectance(ks)


def _foie_gras() -> ProductOptics:
    lam = WAVELENGTHS_NM
    ks_base = 0.05 + 0.4 * np.exp(-(lam - 380.0) / 150.0)
    fresh = np.array([0.60, 0.05, 0.02, 1.00, 0.03, 0.03])
    degraded = np.array([0.10, 0.03, 0.45, 1.00, 0.03, 3.50])
    blood = np.array([6.0, 0.50, 0.20, 0.0, 0.03, 2.0])
    variation = np.array([0.06, 0.06, 0.06, 0.05, 0.03, 0.05])
    return ProductOptics(ks_base, fresh, degraded, blood, 0.55, variation)


def _pate() -> ProductOptics:
    lam = WAVELENGTHS_NM
    ks_base = 0.15 + 0.6 * np.exp(-(lam - 380.0) / 150.0)
    fresh = np.array([0.50, 0.05, 0.30, 0.35, 0.03, 0.70])
    degraded = np.array([0.15, 0.05, 0.40, 0.35, 0.03, 2.40])
    blood = np.array([5.0, 0.50, 0.30, 0.0, 0.03, 2.0])
    variation = np.array([0.06, 0.06, 0.05, 0.05, 0.03, 0.05])
    return ProductOptics(ks_base, fresh, degraded, blood, 0.6, variation)


OPTICS: Final[dict[str, ProductOptics]] = {"free_form": _foie_gras(), "fills_tray": _pate()}
"""Optics by ``profile.product.kind``."""
