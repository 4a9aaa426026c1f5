"""The mass model (docs/domain.md §2 "Mass"): its closed form, the weighed-tray fit on synthetic
trays of known a, b, c and noise, each refusal, and the analyzer scoring with it."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from analyzer.arrays import stack_tof
from analyzer.massmodel import MIN_TRAYS, MassModel, fit
from analyzer.params import build_params
from analyzer.tof import score_tof
from sqal.errors import CalibrationError
from sqal.profiles import MassModel as ProfileMassModel
from sqal.profiles import Product, load_profile
from sqal.wire import Calibration, TofFrame, WeighedMassModel
from tests.test_analyzer_support import tof_payload

PRODUCT = Product(
    kind="free_form",
    nominal_mass_g=400,
    mass_range_g=(100, 800),
    density_g_cm3=1.0,
    mass_model=ProfileMassModel(b_g_per_cm3=1.0, sigma_frac=0.03),
)
"""Qn 400 g at 1 g/cm³: the nominal volume is 400 cm³."""


def trays(
    a: float, b: float, c: float, sigma: float, n: int, v_cm3: tuple[float, float], seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """n trays with volumes uniform over ``v_cm3`` and masses a + b·V + c·V^⅔ + N(0, σ)."""
    rng = np.random.default_rng(seed)
    v = rng.uniform(*v_cm3, n)
    m = a + b * v + c * v ** (2 / 3) + rng.normal(0.0, sigma, n)
    return v * 1000.0, m


# --- the closed form ---------------------------------------------------------------------


def test_predict_and_its_slope_match_the_closed_form() -> None:
    model = MassModel(a_g=12.0, b_g_per_cm3=0.9, c_g_per_cm2=2.0, sigma_g=4.0, n=40)
    # V = 343 cm³: V^⅓ = 7, V^⅔ = 49. m = 12 + 0.9·343 + 2·49 = 418.7 g;
    # dm/dV = 0.9 + (2/3)·2/7 g/cm³ = 0.98571… g/cm³ = 0.98571…e-3 g/mm³.
    mass, slope = model.predict(np.array([343_000.0, np.nan]))
    assert mass[0] == pytest.approx(418.7, rel=1e-12)
    assert slope[0] == pytest.approx((0.9 + 4.0 / 21.0) / 1000.0, rel=1e-12)
    assert np.isnan(mass[1])
    assert np.isnan(slope[1])
    # The slope is the derivative of the mass: a central difference agrees.
    v = np.array([120_000.0, 400_000.0, 650_000.0])
    step = 1.0
    numeric = (model.predict(v + step)[0] - model.predict(v - step)[0]) / (2 * step)
    np.testing.assert_allclose(model.predict(v)[1], numeric, rtol=1e-7)


def test_the_v23_slope_stays_finite_for_an_empty_tray() -> None:
    model = MassModel(a_g=0.0, b_g_per_cm3=0.9, c_g_per_cm2=2.0, sigma_g=4.0, n=40)
    mass, slope = model.predict(np.array([0.0, -500.0]))
    assert mass[0] == 0.0
    assert np.isfinite(slope).all()
    assert slope[0] == pytest.approx((0.9 + 4.0 / 3.0) / 1000.0)  # taken at 1 cm³


def test_a_line_without_v23_keeps_the_old_formula() -> None:
    model = MassModel(a_g=5.0, b_g_per_cm3=0.916, sigma_frac=0.03)
    v = np.array([380_000.0, 420_000.0])
    mass, slope = model.predict(v)
    np.testing.assert_allclose(mass, 5.0 + 0.916 * v / 1000.0, rtol=1e-15)
    np.testing.assert_allclose(slope, 0.916 / 1000.0, rtol=1e-15)


def test_sigma_model_is_the_fitted_sigma_or_a_share_of_the_mass() -> None:
    m = np.array([400.0, np.nan])
    fitted = MassModel(a_g=0.0, b_g_per_cm3=1.0, sigma_g=6.5, n=30)
    assert fitted.sigma_model_g(m)[0] == 6.5
    assert np.isnan(fitted.sigma_model_g(m)[1])
    profile = MassModel.from_profile(PRODUCT)
    assert (profile.a_g, profile.b_g_per_cm3, profile.c_g_per_cm2) == (0.0, 1.0, 0.0)
    assert not profile.fitted
    assert profile.sigma_model_g(m)[0] == pytest.approx(12.0)
    assert np.isnan(profile.sigma_model_g(m)[1])


def test_the_calibration_block_round_trips() -> None:
    model = MassModel(a_g=12.5, b_g_per_cm3=0.91, c_g_per_cm2=0.0, sigma_g=5.2, n=48)
    wire = model.to_calibration()
    assert MassModel.from_calibration(wire) == model
    with pytest.raises(ValueError, match="fitted"):
        MassModel.from_profile(PRODUCT).to_calibration()


@pytest.mark.parametrize(
    ("field", "value"),
    [("sigma_g", 0.0), ("n", 29), ("b_g_per_cm3", 0.0), ("a_g", float("nan")), ("n", 30.0)],
)
def test_the_calibration_block_is_strict(field: str, value: object) -> None:
    doc = {"a_g": 10.0, "b_g_per_cm3": 0.9, "sigma_g": 4.0, "n": 30, field: value}
    with pytest.raises(ValidationError):
        WeighedMassModel.model_validate(doc, strict=True)


# --- the fit -----------------------------------------------------------------------------


def test_fit_recovers_intercept_and_slope() -> None:
    v, m = trays(a=25.0, b=0.9, c=0.0, sigma=4.0, n=200, v_cm3=(250, 550))
    got = fit(v, m, PRODUCT)
    assert got.form == "line"
    assert got.model.a_g == pytest.approx(25.0, abs=5.0)
    assert got.model.b_g_per_cm3 == pytest.approx(0.9, abs=0.012)
    assert got.model.c_g_per_cm2 == 0.0
    assert got.model.n == 200
    # Leave-one-out σ is honest: near the noise, and above the in-sample residual σ.
    assert got.model.sigma_g == pytest.approx(4.0, rel=0.15)
    pred = got.model.predict(v)[0]
    assert got.model.sigma_g is not None
    assert got.model.sigma_g > float(np.sqrt(np.mean((m - pred) ** 2)))


def test_the_intercept_removes_the_bias_a_line_through_the_origin_leaves() -> None:
    v, m = trays(a=40.0, b=0.85, c=0.0, sigma=3.0, n=90, v_cm3=(250, 550))
    got = fit(v, m, PRODUCT)
    by_form = {c.form: c for c in got.candidates}
    light, _, heavy = by_form["origin"].tercile_bias_g
    assert light > 5.0 > -5.0 > heavy  # through the origin: light trays read light, heavy heavy
    assert max(abs(x) for x in by_form["line"].tercile_bias_g) < 2.0
    assert by_form["line"].loo_sigma_g < by_form["origin"].loo_sigma_g


def test_fit_recovers_a_v23_term_when_it_clearly_helps() -> None:
    v, m = trays(a=0.0, b=0.7, c=3.0, sigma=1.0, n=400, v_cm3=(150, 650))
    got = fit(v, m, PRODUCT)
    assert got.form == "line+v23"
    assert got.model.c_g_per_cm2 == pytest.approx(3.0, abs=0.6)
    assert got.model.b_g_per_cm3 == pytest.approx(0.7, abs=0.05)
    assert got.model.a_g == pytest.approx(0.0, abs=12.0)
    assert got.model.sigma_g == pytest.approx(1.0, rel=0.15)


@pytest.mark.parametrize("seed", range(5))
def test_no_v23_term_on_trays_that_follow_a_line(seed: int) -> None:
    v, m = trays(a=25.0, b=0.9, c=0.0, sigma=4.0, n=60, v_cm3=(250, 550), seed=seed)
    assert fit(v, m, PRODUCT).form == "line"


def test_a_narrow_spread_of_volumes_fits_through_the_origin() -> None:
    # A production run: ±2 % of fill, 2 % noise. A free line would be b ≈ 0.5 and a ≈ 200 g.
    v, m = trays(a=0.0, b=1.0, c=0.0, sigma=8.0, n=60, v_cm3=(392, 408))
    got = fit(v, m, PRODUCT)
    assert got.form == "origin"
    assert "through the origin" in got.reason
    assert got.model.a_g == 0.0
    assert got.model.b_g_per_cm3 == pytest.approx(1.0, abs=0.01)
    assert got.model.sigma_g == pytest.approx(8.0, rel=0.25)


def _refusal(v: np.ndarray, m: np.ndarray) -> str:
    with pytest.raises(CalibrationError) as err:
        fit(v, m, PRODUCT)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_fewer_than_30_trays_are_refused() -> None:
    v, m = trays(25.0, 0.9, 0.0, 4.0, MIN_TRAYS - 1, (250, 550))
    assert "29 trays, need at least 30" in _refusal(v, m)


def test_non_finite_values_are_refused() -> None:
    v, m = trays(25.0, 0.9, 0.0, 4.0, 40, (250, 550))
    v[3], m[7] = np.nan, np.inf
    assert "2 trays have a non-finite" in _refusal(v, m)


def test_volumes_not_positive_are_refused() -> None:
    v, m = trays(25.0, 0.9, 0.0, 4.0, 40, (250, 550))
    v[0] = 0.0
    assert "volume ≤ 0" in _refusal(v, m)


def test_masses_outside_the_profile_s_range_are_refused() -> None:
    v, m = trays(25.0, 0.9, 0.0, 4.0, 40, (250, 550))
    m[5] = 0.4  # kilograms
    assert "outside the profile's mass_range_g [100, 800] g (first 0.4 g)" in _refusal(v, m)


def test_a_slope_below_zero_is_refused() -> None:
    v, m = trays(900.0, -0.9, 0.0, 4.0, 60, (250, 550))
    assert "the mass falls as the volume rises" in _refusal(v, m)


def test_an_implausible_density_at_the_nominal_volume_is_refused() -> None:
    # Plausible slope, but 300 g of intercept: 700 g at the nominal 400 cm³ (1.75 g/cm³).
    v, m = trays(300.0, 1.0, 0.0, 3.0, 60, (100, 300))
    assert "implies a density of 1.75 g/cm³ at the nominal volume" in _refusal(v, m)
    # Twice the density everywhere: the slope is out of band, the origin fit reads 2 g/cm³.
    v, m = trays(0.0, 2.0, 0.0, 3.0, 60, (150, 300))
    assert "implies a density of 2.00 g/cm³" in _refusal(v, m)


# --- the analyzer scores with it ---------------------------------------------------------


def test_build_params_takes_the_calibration_s_model_else_the_profile_s() -> None:
    profile = load_profile("foie_gras_lobe_400g")
    plain = build_params(profile).mass_model
    assert plain == MassModel.from_profile(profile.product)
    wire = WeighedMassModel(a_g=14.0, b_g_per_cm3=0.88, sigma_g=5.5, n=40)
    cal = Calibration(id="cal-x", ts=datetime.now(UTC), mass_model=wire)
    assert build_params(profile, cal).mass_model == MassModel.from_calibration(wire)


def test_score_tof_weighs_with_the_calibrated_model() -> None:
    """A flat fill 30 mm high under the foie gras profile: V̂ is the 24 ROI zones' frustums
    k²(d0³ − z³)/3 (docs/domain.md §2), m̂ = a + b·V̂ + c·V̂^⅔ and
    σ_m = √((dm/dV·σ_V)² + σ_g²)."""
    profile = load_profile("foie_gras_lobe_400g")
    model = WeighedMassModel(a_g=14.0, b_g_per_cm3=0.88, c_g_per_cm2=0.5, sigma_g=5.5, n=40)
    cal = Calibration(id="cal-x", ts=datetime.now(UTC), mass_model=model)
    frame = TofFrame.model_validate(tof_payload(np.full((8, 8), 230.0), sigma_mm=0.5))
    s = score_tof(stack_tof([frame], 8), build_params(profile, cal))
    k = 2.0 * math.tan(math.radians(22.5)) / 8
    v_cm3 = 24 * k * k * (260.0**3 - 230.0**3) / 3.0 / 1000.0
    assert s.mass_g[0] == pytest.approx(14.0 + 0.88 * v_cm3 + 0.5 * v_cm3 ** (2 / 3), rel=1e-9)
    # The published σ_V carries the profile's volume scale b_m/ρ; the mass uses V̂ itself.
    sigma_v = (
        s.sigma_volume_mm3[0]
        * profile.product.density_g_cm3
        / (profile.product.mass_model.b_g_per_cm3)
    )
    dm_dv = (0.88 + (2 / 3) * 0.5 * v_cm3 ** (-1 / 3)) / 1000.0
    assert s.sigma_mass_g[0] == pytest.approx(math.hypot(dm_dv * sigma_v, 5.5), rel=1e-9)
