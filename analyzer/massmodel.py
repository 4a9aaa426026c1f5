"""Mass from the measured volume: the profile's model, or a line's own fitted on weighed trays.

Pure (docs/domain.md §2 "Mass"): numpy in, numbers out. With V the analyzer's volume V̂ in cm³:

```text
m̂ = a + b·V + c·V^⅔          (g; a in g, b in g/cm³, c in g/cm²)
σ_model = σ_g                 (fitted: the leave-one-out residual σ of the weighed trays)
        = sigma_frac·m̂        (the profile's model: a = 0, b = the density, c = 0)
```

A constant a absorbs what the sensor misses or adds regardless of size (a hidden lobe tip, the
film's bulge); c·V^⅔ grows with the product's surface, as a rim of mixed edge zones does.
:func:`fit` chooses among three forms by the rules in its docstring and refuses a set of trays
that cannot give a trustworthy model (:class:`~sqal.errors.CalibrationError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sqal.errors import CalibrationError
from sqal.profiles import Product
from sqal.wire import WeighedMassModel

F64 = NDArray[np.float64]
Form = Literal["origin", "line", "line+v23"]

MIN_TRAYS: Final = 30
"""Fewest weighed trays a model is fitted on (docs/domain.md §2): with 2-3 parameters, 30 trays
put the leave-one-out σ within about ±13 % (1/√(2n)) of the true residual σ."""
DENSITY_BAND: Final = (0.5, 1.5)
"""The implied density m̂(Vn)/Vn at the nominal volume Vn = Qn/ρ, and a fitted slope, must lie
within these multiples of the profile's density: outside, the weights do not belong to these
trays (wrong unit, tare included, ids shifted) or volume noise flattened the slope."""
MAX_SLOPE_RSE: Final = 0.10
"""A slope whose standard error exceeds 10 % of it is not determined by the trays: their
volumes span too little for the noise."""
V23_MIN_GAIN: Final = 0.05
"""The V^⅔ term is kept only when it lowers the leave-one-out σ by at least 5 % ..."""
V23_Z: Final = 2.0
"""... and the per-tray drop of the squared leave-one-out residuals is positive by more than
two standard errors (a paired test: both fits see the same trays)."""
SIGMA_FLOOR_G: Final = 0.1
"""A fitted σ never goes below a checkweigher's 0.1 g division (and the contract's σ > 0)."""
V23_SLOPE_FLOOR_CM3: Final = 1.0
"""The V^⅔ term's slope (2c/3)·V^(−⅓) is infinite at V = 0; it is taken at no less than 1 cm³,
so an empty tray keeps a finite σ_m (and still reads as a critical underfill)."""


@dataclass(frozen=True)
class MassModel:
    """m̂ = a_g + b_g_per_cm3·V + c_g_per_cm2·V^⅔ (V in cm³) and its own σ.

    Attributes:
        a_g: intercept, g.
        b_g_per_cm3: slope, g/cm³ (the density when the model is the profile's).
        c_g_per_cm2: V^⅔ coefficient, g/cm²; 0 when the term is not used.
        sigma_g: the fitted model's σ in g (leave-one-out residual σ); None for the profile's.
        sigma_frac: the profile's model's σ as a share of m̂; 0 for a fitted one.
        n: weighed trays the model was fitted on; 0 for the profile's.
    """

    a_g: float
    b_g_per_cm3: float
    c_g_per_cm2: float = 0.0
    sigma_g: float | None = None
    sigma_frac: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if self.sigma_g is not None and not self.sigma_g > 0:
            raise ValueError(f"sigma_g must be positive, not {self.sigma_g}")
        if self.sigma_frac < 0:
            raise ValueError(f"sigma_frac must not be negative, not {self.sigma_frac}")

    @classmethod
    def from_profile(cls, product: Product) -> MassModel:
        """The profile's model: its ``mass_model`` (a = 0 and b = the density by default), c = 0,
        σ = ``sigma_frac``·m̂."""
        mm = product.mass_model
        return cls(a_g=mm.a_g, b_g_per_cm3=mm.b_g_per_cm3, sigma_frac=mm.sigma_frac)

    @classmethod
    def from_calibration(cls, wire: WeighedMassModel) -> MassModel:
        """A line's model as its calibration block carries it."""
        return cls(wire.a_g, wire.b_g_per_cm3, wire.c_g_per_cm2, sigma_g=wire.sigma_g, n=wire.n)

    def to_calibration(self) -> WeighedMassModel:
        """The calibration block's ``mass_model`` (a fitted model only).

        Raises:
            ValueError: this is the profile's model (it has no σ in g).
        """
        if self.sigma_g is None:
            raise ValueError("only a fitted mass model goes into a calibration")
        return WeighedMassModel(
            a_g=round(self.a_g, 4),
            b_g_per_cm3=round(self.b_g_per_cm3, 6),
            c_g_per_cm2=round(self.c_g_per_cm2, 6),
            sigma_g=round(self.sigma_g, 3),
            n=self.n,
        )

    @property
    def fitted(self) -> bool:
        """True for a line's model fitted on weighed trays."""
        return self.sigma_g is not None

    def predict(self, volume_mm3: ArrayLike) -> tuple[F64, F64]:
        """Mass and its slope for measured volumes.

        Args:
            volume_mm3: (...) volumes in mm³; NaN passes through.

        Returns:
            (mass_g, dmass_dvolume): both shaped like ``volume_mm3``; the slope in g per mm³.
        """
        return predict_mass(self.a_g, self.b_g_per_cm3, self.c_g_per_cm2, volume_mm3)

    def sigma_model_g(self, mass_g: ArrayLike) -> F64:
        """σ of the model itself at these masses, g: ``sigma_g`` for a fitted model,
        ``sigma_frac``·|m̂| for the profile's; NaN where the mass is NaN."""
        sigma_g = np.nan if self.sigma_g is None else self.sigma_g
        return model_sigma_g(sigma_g, self.sigma_frac, mass_g)


def predict_mass(
    a_g: ArrayLike, b_g_per_cm3: ArrayLike, c_g_per_cm2: ArrayLike, volume_mm3: ArrayLike
) -> tuple[F64, F64]:
    """(m̂, dm̂/dV in g per mm³) of :class:`MassModel` for coefficients that are numbers or, in a
    batch of several devices, arrays that broadcast against ``volume_mm3``."""
    v = np.asarray(volume_mm3, dtype=np.float64)
    a = np.asarray(a_g, dtype=np.float64)
    b = np.asarray(b_g_per_cm3, dtype=np.float64)
    c = np.asarray(c_g_per_cm2, dtype=np.float64)
    mass = a + b * v / 1000.0
    slope = np.where(np.isnan(v), np.nan, b / 1000.0)
    if (c != 0.0).any():  # where c is 0 the term adds exactly 0
        v_cm3 = v / 1000.0
        mass = mass + c * np.cbrt(v_cm3) ** 2
        with np.errstate(invalid="ignore"):
            at = np.maximum(np.abs(v_cm3), V23_SLOPE_FLOOR_CM3)
        slope = slope + (2.0 / 3.0) * c / np.cbrt(at) / 1000.0
    return np.asarray(mass, dtype=np.float64), np.asarray(slope, dtype=np.float64)


def model_sigma_g(sigma_g: ArrayLike, sigma_frac: ArrayLike, mass_g: ArrayLike) -> F64:
    """:meth:`MassModel.sigma_model_g` for coefficients that are numbers or arrays: ``sigma_g``
    (NaN for the profile's model, which reads ``sigma_frac``·|m̂| instead)."""
    m = np.asarray(mass_g, dtype=np.float64)
    fitted = ~np.isnan(sigma_g)
    out = np.where(fitted, np.where(np.isnan(m), np.nan, sigma_g), np.abs(m) * sigma_frac)
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class Candidate:
    """One form fitted to the weighed trays.

    Attributes:
        coef: (a_g, b_g_per_cm3, c_g_per_cm2), zeros for the terms the form lacks.
        loo_sigma_g: RMS of the leave-one-out residuals m_i − m̂_(−i), g.
        tercile_bias_g: mean leave-one-out residual of the lightest, middle and heaviest third
            of the trays by measured volume, g (positive: the model reads light there).
        slope_rse: standard error of the slope over the slope.
    """

    form: Form
    coef: tuple[float, float, float]
    loo_sigma_g: float
    tercile_bias_g: tuple[float, float, float]
    slope_rse: float


@dataclass(frozen=True)
class MassFit:
    """The fitted model, the form chosen and why, and every form tried (for the report)."""

    model: MassModel
    form: Form
    reason: str
    candidates: tuple[Candidate, ...]


_COLUMNS: Final[dict[str, tuple[int, ...]]] = {
    "origin": (1,),
    "line": (0, 1),
    "line+v23": (0, 1, 2),
}
"""Which of (a, b, c) each form's design columns carry: 1, V, V^⅔."""


def _ols(form: Form, x: F64, m: F64, v_cm3: F64) -> tuple[Candidate, F64]:
    """Least squares of m on the columns of x; returns the candidate and its leave-one-out
    residuals, in closed form e_i / (1 − h_ii) (h the hat matrix's diagonal, from the QR)."""
    q, r = np.linalg.qr(x)
    beta = np.linalg.solve(r, q.T @ m)
    hat = np.minimum(np.einsum("ij,ij->i", q, q), 1.0 - 1e-9)
    resid = m - x @ beta
    loo = resid / (1.0 - hat)
    n, p = x.shape
    cols = _COLUMNS[form]
    coef = [0.0, 0.0, 0.0]
    for j, value in zip(cols, beta, strict=True):
        coef[j] = float(value)
    # Var(β) = s²·(XᵀX)⁻¹ = s²·R⁻¹R⁻ᵀ: the slope's variance is s² times its row of R⁻¹ squared.
    r_inv = np.linalg.inv(r)
    row = r_inv[cols.index(1)]
    se_b = float(np.sqrt(float(resid @ resid) / max(n - p, 1) * float(row @ row)))
    thirds = np.array_split(np.argsort(v_cm3, kind="stable"), 3)
    bias = [float(loo[i].mean()) for i in thirds]
    b = coef[1]
    cand = Candidate(
        form=form,
        coef=(coef[0], coef[1], coef[2]),
        loo_sigma_g=float(np.sqrt(np.mean(loo**2))),
        tercile_bias_g=(bias[0], bias[1], bias[2]),
        slope_rse=se_b / abs(b) if b != 0 else float("inf"),
    )
    return cand, loo


def _check(volume_mm3: F64, mass_g: F64, product: Product) -> None:
    n = volume_mm3.size
    if volume_mm3.shape != mass_g.shape or volume_mm3.ndim != 1:
        raise CalibrationError("weighed: volumes and masses must be two lists of the same length")
    if n < MIN_TRAYS:
        raise CalibrationError(f"weighed: {n} trays, need at least {MIN_TRAYS}")
    bad = ~(np.isfinite(volume_mm3) & np.isfinite(mass_g))
    if bad.any():
        raise CalibrationError(f"weighed: {int(bad.sum())} trays have a non-finite volume or mass")
    if (volume_mm3 <= 0).any():
        k = int((volume_mm3 <= 0).sum())
        raise CalibrationError(f"weighed: {k} trays have a volume ≤ 0; were they empty?")
    lo, hi = product.mass_range_g
    out = (mass_g < lo) | (mass_g > hi)
    if out.any():
        raise CalibrationError(
            f"weighed: {int(out.sum())} masses outside the profile's mass_range_g [{lo:g}, "
            f"{hi:g}] g (first {float(mass_g[out][0]):g} g); net grams, tray tared?"
        )


def fit(volume_mm3: ArrayLike, mass_g: ArrayLike, product: Product) -> MassFit:
    """Fit a line's mass model to weighed trays.

    The rules, in order:

    1. Refuse fewer than :data:`MIN_TRAYS` trays, a non-finite value, a volume ≤ 0 or a mass
       outside the profile's ``mass_range_g``.
    2. Fit m = a + b·V by ordinary least squares. A slope determined by the trays (standard
       error ≤ :data:`MAX_SLOPE_RSE` of it) but ≤ 0 is refused: the weights are not these trays'.
    3. When the slope is not determined, or lies outside :data:`DENSITY_BAND` times the
       profile's density, the volumes span too little for their noise (volume noise flattens
       an OLS slope by var(V)/(var(V) + σ_V²), and a free intercept makes up the difference at
       the mean, so light and heavy trays would read too close to the mean): fit m = b·V
       through the origin instead, whose one parameter only needs the trays' mean ratio. A
       production run spanning ±2 % of fill lands here; weigh light and heavy trays too.
    4. Else try m = a + b·V + c·V^⅔ and keep it only when its leave-one-out σ is at least
       :data:`V23_MIN_GAIN` lower and the paired per-tray gain in squared leave-one-out
       residuals is positive by more than :data:`V23_Z` standard errors, and the mass still
       rises with the volume over the trays' range.
    5. Refuse the chosen model when its implied density m̂(Vn)/Vn at the nominal volume
       Vn = Qn/ρ lies outside :data:`DENSITY_BAND` times the profile's density.

    σ_g is the RMS of the chosen form's leave-one-out residuals: honest about how the model
    weighs a tray it was not fitted on, where the in-sample σ would flatter it.

    Args:
        volume_mm3: (n,) the analyzer's volumes V̂ of the weighed trays, mm³.
        mass_g: (n,) their net masses on a scale, g.
        product: the profile's product section (mass range, Qn, density).

    Raises:
        CalibrationError: one of the refusals above, with its reason.
    """
    v = np.asarray(volume_mm3, dtype=np.float64)
    m = np.asarray(mass_g, dtype=np.float64)
    _check(v, m, product)
    n = v.size
    vc = v / 1000.0
    ones = np.ones(n)
    rho = product.density_g_cm3
    band = (DENSITY_BAND[0] * rho, DENSITY_BAND[1] * rho)
    line, line_loo = _ols("line", np.column_stack([ones, vc]), m, vc)
    origin, _ = _ols("origin", vc[:, None], m, vc)
    b = line.coef[1]
    determined = line.slope_rse <= MAX_SLOPE_RSE
    if determined and b <= 0:
        raise CalibrationError(
            f"weighed: the mass falls as the volume rises (slope {b:.3f} g/cm³); "
            "are the weights matched to the right sample ids?"
        )
    candidates: list[Candidate] = [origin, line]
    if not determined or not band[0] <= b <= band[1]:
        chosen = origin
        why = (
            f"volumes span too little for a slope (line: b = {b:.3f} ± "
            f"{line.slope_rse * abs(b):.3f} g/cm³): fitted through the origin"
        )
    else:
        chosen, why = line, "a line with an intercept"
        x3 = np.column_stack([ones, vc, np.cbrt(vc) ** 2])
        v23, v23_loo = _ols("line+v23", x3, m, vc)
        candidates.append(v23)
        gain = line_loo**2 - v23_loo**2
        clear = gain.mean() > V23_Z * gain.std(ddof=1) / np.sqrt(n)
        _, b3, c3 = v23.coef
        rising = all(b3 + 2.0 / 3.0 * c3 / np.cbrt(x) > 0 for x in (vc.min(), vc.max()))
        if v23.loo_sigma_g <= (1.0 - V23_MIN_GAIN) * line.loo_sigma_g and clear and rising:
            chosen, why = v23, "a line with an intercept and a V^⅔ term"
    a, b, c = chosen.coef
    model = MassModel(a, b, c, sigma_g=max(chosen.loo_sigma_g, SIGMA_FLOOR_G), n=n)
    vn_mm3 = product.nominal_mass_g / rho * 1000.0
    implied = float(model.predict(vn_mm3)[0]) / (vn_mm3 / 1000.0)
    if not band[0] <= implied <= band[1]:
        raise CalibrationError(
            f"weighed: the fit implies a density of {implied:.2f} g/cm³ at the nominal volume "
            f"(the profile says {rho:g}); are these the right trays and grams?"
        )
    return MassFit(model=model, form=chosen.form, reason=why, candidates=tuple(candidates))
