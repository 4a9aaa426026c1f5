"""What each tray is: a seeded draw of mass, shape, pose, spectral state and injected defects.

docs/domain.md §7: mass ~ N(μ·Qn, s) of the scenario's population (the profile's ``scenarios``),
density ~ N(ρ, 1 %), offset N(0, 4 mm), φ ~ N(0, 5°); each defect injected at its rate with the
parameters of §7's table. Every
tray has its own generator, seeded by (seed, device index, seq), so a tray is the same whatever
the batch it is rendered in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from device_sim.materials import IDX_CAR
from device_sim.model import NOMINAL_DOME, ProductModel
from device_sim.surface import FIELD_BANK_PX, FIELD_CORR_MM, MAX_LOBES
from sqal.profiles import Population, tne_g

DEFECTS: Final = (
    "underfill",
    "overfill",
    "tilted",
    "surface_irregular",
    "oxidation",
    "fat_yellowing",
    "discoloration",
    "spectral_saturated",
    "zones_invalid",
)
SPOT_RADIUS_MM: Final = 30.0
"""Spectral spot: Ø 60 mm disc on the sensor axis (docs/domain.md §3 aperture tube, §7)."""


@dataclass(frozen=True)
class Injected:
    """One injected defect and the parameters it was injected with."""

    defect: str
    params: dict[str, Any]


@dataclass(frozen=True)
class TrayDraw:
    """One tray's true state (lengths mm, angles rad unless named ``_deg``)."""

    mass_target_g: float
    density_g_cm3: float
    volume_mm3: float
    lobes: tuple[tuple[float, float, float, float, float, float], ...]
    groove_mm: float
    groove_w_mm: float
    field_bank: int
    field_ox: int
    field_oy: int
    field_std_mm: float
    dent: tuple[float, float, float, float]
    tilt_deg: float
    tilt_axis_rad: float
    conc: tuple[float, ...]
    rho940_factor: float
    blood: tuple[float, float, float]
    saturate: str | None
    invalid_zones8: tuple[int, ...]
    invalid_status: int
    led_drift: float
    injected: tuple[Injected, ...] = field(default_factory=tuple)


def _cluster8(rng: np.random.Generator, size: int) -> tuple[int, ...]:
    """A connected cluster of ``size`` zones on the 8x8 grid (random growth from a seed zone)."""
    start = int(rng.integers(64))
    cells = {start}
    while len(cells) < size:
        r, c = divmod(int(rng.choice(sorted(cells))), 8)
        dr, dc = ((0, 1), (1, 0), (0, -1), (-1, 0))[int(rng.integers(4))]
        if 0 <= r + dr < 8 and 0 <= c + dc < 8:
            cells.add((r + dr) * 8 + c + dc)
    return tuple(sorted(cells))


def draw_tray(
    model: ProductModel,
    rng: np.random.Generator,
    rates: dict[str, float],
    population: Population,
) -> TrayDraw:
    """Draw one tray.

    Args:
        model: the product model (profile, optics, reference tables).
        rng: this tray's own generator.
        rates: injection probability per defect name (missing → 0).
        population: the filler's mass distribution (the scenario's).
    """
    p = model.profile
    qn = p.product.nominal_mass_g
    hit = {d: bool(rng.random() < rates.get(d, 0.0)) for d in DEFECTS}
    if hit["underfill"] and hit["overfill"]:
        hit["overfill"] = False
    injected: list[Injected] = []
    mass = qn * population.fill_mean * (1.0 + population.fill_sd * rng.standard_normal())
    if hit["underfill"]:
        u = float(rng.uniform(tne_g(qn) / qn, 0.25))
        mass *= 1.0 - u
        injected.append(Injected("underfill", {"u": round(u, 4)}))
    if hit["overfill"]:
        o = float(rng.uniform(0.05, 0.2))
        mass *= 1.0 + o
        injected.append(Injected("overfill", {"o": round(o, 4)}))
    mass = float(np.clip(mass, 0.4 * qn, 1.6 * qn))
    density = p.product.density_g_cm3 * (1.0 + 0.01 * rng.standard_normal())
    volume = mass / density * 1000.0

    tray = p.tray
    nominal = qn / p.product.density_g_cm3 * 1000.0
    grow = 1.0 if hit["overfill"] else (volume / nominal) ** (1.0 / 3.0)
    size = (nominal / NOMINAL_DOME["volume_mm3"]) ** (1.0 / 3.0)
    a = min(NOMINAL_DOME["a_mm"] * size, 0.47 * tray.inner_length_mm) * grow
    b = min(NOMINAL_DOME["b_mm"] * size, 0.45 * tray.inner_width_mm) * grow
    a *= 1.0 + 0.03 * rng.standard_normal()
    b *= 1.0 + 0.03 * rng.standard_normal()
    x0, y0 = 4.0 * rng.standard_normal(2)
    phi = math.radians(5.0) * rng.standard_normal()
    gamma = float(rng.uniform(*population.dome_gamma))
    lobes = [(float(x0), float(y0), a, b, phi, gamma)]
    groove = float(rng.uniform(2.0, 5.0)) if rng.random() < 0.7 else 0.0
    groove_w = float(np.clip(8.0 + rng.standard_normal(), 5.0, 12.0))
    bank = int(rng.integers(len(FIELD_CORR_MM)))
    cy, cx = model.scene.inside.shape
    f_ox = int(rng.integers(FIELD_BANK_PX - cx))
    f_oy = int(rng.integers(FIELD_BANK_PX - cy))
    f_std = float(rng.uniform(1.0, 2.0))

    tilt_deg, tilt_axis = 0.0, 0.0
    if hit["tilted"]:
        if p.product.kind == "free_form" and rng.random() < 0.5:
            shift, ang = float(rng.uniform(15.0, 30.0)), float(rng.uniform(0, 2 * math.pi))
            lobes[0] = (x0 + shift * math.cos(ang), y0 + shift * math.sin(ang), a, b, phi, gamma)
            injected.append(Injected("tilted", {"mode": "offset", "offset_mm": round(shift, 2)}))
        else:
            tilt_deg = float(rng.uniform(6.0, 15.0))
            tilt_axis = float(rng.uniform(0, math.pi))
            params = {
                "mode": "tilt",
                "tilt_deg": round(tilt_deg, 2),
                "axis_deg": round(math.degrees(tilt_axis), 1),
            }
            injected.append(Injected("tilted", params))
    dent = (0.0, 1.0, 0.0, 0.0)
    if hit["surface_irregular"]:
        if p.product.kind == "free_form" and rng.random() < 0.5:
            count = int(rng.integers(2, MAX_LOBES + 1))
            xs = np.linspace(-0.5 * a, 0.5 * a, count) + rng.normal(0.0, 4.0, count)
            lobes = [
                (
                    float(x0 + xs[j]),
                    float(y0 + rng.normal(0.0, 6.0)),
                    a * float(rng.uniform(0.45, 0.6)),
                    b * float(rng.uniform(0.6, 0.85)),
                    float(rng.normal(0.0, math.radians(20.0))),
                    gamma,
                )
                for j in range(count)
            ]
            groove = 0.0
            injected.append(Injected("surface_irregular", {"mode": "fragments", "count": count}))
        else:
            depth, width = float(rng.uniform(5.0, 15.0)), float(rng.uniform(10.0, 20.0))
            dx, dy = rng.uniform(-0.45, 0.45, 2) * (a, b)
            dent = (depth, width, float(x0 + dx), float(y0 + dy))
            injected.append(
                Injected(
                    "surface_irregular",
                    {"mode": "dent", "depth_mm": round(depth, 2), "width_mm": round(width, 2)},
                )
            )

    optics = model.optics
    conc = optics.fresh * (1.0 + optics.variation * rng.standard_normal(6))
    q = float(rng.uniform(0.0, 0.06))
    dose = abs(0.03 * rng.standard_normal())
    if hit["oxidation"]:
        target = float(rng.uniform(0.35, 0.9))
        q = float(np.interp(target, model.ox_table, model.ox_q))
        injected.append(Injected("oxidation", {"target_index": round(target, 3), "q": round(q, 3)}))
    if hit["fat_yellowing"]:
        target = float(rng.uniform(4.0, 15.0))
        dose = float(np.interp(target, model.yel_table, model.yel_dose))
        injected.append(
            Injected(
                "fat_yellowing", {"target_delta_b": round(target, 2), "carotenoid": round(dose, 3)}
            )
        )
    conc = conc + q * (optics.degraded - optics.fresh)
    conc[IDX_CAR] += dose
    blood = (0.0, 0.0, 0.0)
    if hit["discoloration"]:
        frac = float(rng.uniform(0.1, 0.4))
        rad = SPOT_RADIUS_MM * math.sqrt(frac)
        off, ang = float(rng.uniform(0.0, SPOT_RADIUS_MM - rad)), float(rng.uniform(0, 2 * math.pi))
        blood = (frac, off * math.cos(ang), off * math.sin(ang))
        injected.append(Injected("discoloration", {"blood_spot_frac": round(frac, 3)}))
    saturate = None
    if hit["spectral_saturated"]:
        saturate = "gain" if rng.random() < 0.5 else "led"
        injected.append(Injected("spectral_saturated", {"mode": saturate}))
    cluster: tuple[int, ...] = ()
    status = 255
    if hit["zones_invalid"]:
        cluster = _cluster8(rng, int(rng.integers(5, 21)))
        status = 255 if rng.random() < 0.5 else 4
        injected.append(Injected("zones_invalid", {"zones_8x8": len(cluster), "status": status}))
    return TrayDraw(
        mass_target_g=mass,
        density_g_cm3=density,
        volume_mm3=volume,
        lobes=tuple(lobes),
        groove_mm=groove,
        groove_w_mm=groove_w,
        field_bank=bank,
        field_ox=f_ox,
        field_oy=f_oy,
        field_std_mm=f_std,
        dent=dent,
        tilt_deg=tilt_deg,
        tilt_axis_rad=tilt_axis,
        conc=tuple(float(c) for c in np.maximum(conc, 0.0)),
        rho940_factor=float(1.0 + 0.03 * rng.standard_normal()),
        blood=blood,
        saturate=saturate,
        invalid_zones8=cluster,
        invalid_status=status,
        led_drift=float(1.0 + 0.01 * rng.standard_normal()),
        injected=tuple(injected),
    )
