"""A tray's evidence as the station shows it: height map, colour, mass and σ (pure).

No I/O, no clock: the station reads the stored ToF frame, the device's calibration and the
result, and these functions turn them into what the page draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqal.profiles import Profile

HeightMap = list[list[float | None]]
"""``layout × layout`` heights in mm above the empty tray's base, row-major as on the wire;
``None`` where the zone's target status marks the range unusable."""


def d0_zones(calibration: Mapping[str, Any] | None, layout: int, mount_mm: float) -> list[float]:
    """Per zone, the sensor-to-empty-tray distance the analyzer scores with (analyzer/params.py):
    the calibration's ``d0_map_mm`` when its layout matches, else its ``d0_mm`` everywhere, else
    the profile's mount distance everywhere. Row-major, ``layout²`` values."""
    cal = calibration or {}
    d0_map = cal.get("d0_map_mm")
    if isinstance(d0_map, list) and len(d0_map) == layout:
        return [float(v) for row in d0_map for v in row]
    d0 = cal.get("d0_mm")
    return [float(d0 if isinstance(d0, int | float) else mount_mm)] * (layout * layout)


def height_map(
    distance_mm: Sequence[int],
    target_status: Sequence[int],
    layout: int,
    calibration: Mapping[str, Any] | None,
    profile: Profile,
) -> HeightMap:
    """Heights h_i = (d0_i − distance_i) / range_scale (docs/domain.md §2), zones of a status
    outside the profile's ``valid_status`` left out.

    Args:
        distance_mm, target_status: flattened row-major (zone i = r·layout + c), as stored.
        calibration: the device config's calibration block at the tray's time, or ``None``.
    """
    d0 = d0_zones(calibration, layout, profile.tof.mount_distance_mm)
    scale = (calibration or {}).get("range_scale") or 1.0
    ok = set(profile.tof.valid_status)
    flat: list[float | None] = [
        round((d - dist) / scale, 1) if status in ok else None
        for d, dist, status in zip(d0, distance_mm, target_status, strict=True)
    ]
    return [flat[r * layout : (r + 1) * layout] for r in range(layout)]


def height_colour(h_mm: float | None, top_mm: float) -> str:
    """A cell's background: white at the base, darker blue toward ``top_mm``; grey if unknown."""
    if h_mm is None:
        return "#bbbbbb"
    x = max(0.0, min(1.0, h_mm / top_mm)) if top_mm > 0 else 0.0
    r, g, b = (round(255 - x * (255 - c)) for c in (24, 72, 160))
    return f"#{r:02x}{g:02x}{b:02x}"


def lab_to_srgb(lab_l: float, lab_a: float, lab_b: float) -> str:
    """CIE L*a*b* (D65/2°) as an sRGB hex colour, clipped into the gamut (IEC 61966-2-1)."""
    fy = (lab_l + 16) / 116
    fx, fz = fy + lab_a / 500, fy - lab_b / 200

    def inv(f: float) -> float:
        return f**3 if f**3 > 0.008856 else (f - 16 / 116) / 7.787

    x, y, z = 0.95047 * inv(fx), 1.0 * inv(fy), 1.08883 * inv(fz)
    rgb = (
        3.2406 * x - 1.5372 * y - 0.4986 * z,
        -0.9689 * x + 1.8758 * y + 0.0415 * z,
        0.0557 * x - 0.2040 * y + 1.0570 * z,
    )

    def gamma(c: float) -> int:
        c = max(0.0, min(1.0, c))
        v = 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055
        return round(255 * v)

    r, g, b = (gamma(c) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def mass_sigma_g(
    mass_g: float | None, calibration: Mapping[str, Any] | None, profile: Profile
) -> float | None:
    """σ of a published mass estimate: the line's fitted mass model's ``sigma_g`` when the
    device's calibration holds one, else the profile's ``sigma_frac``·m̂ (analyzer/massmodel.py).
    """
    if mass_g is None or not math.isfinite(mass_g):
        return None
    model = (calibration or {}).get("mass_model")
    if isinstance(model, Mapping) and isinstance(model.get("sigma_g"), int | float):
        return float(model["sigma_g"])
    return profile.product.mass_model.sigma_frac * abs(mass_g)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the page shows of one tray beside its result's verdict."""

    heights: HeightMap | None
    top_mm: float
    colour: str | None
    lab: tuple[float, float, float] | None
    mass_g: float | None
    mass_sigma_g: float | None
    weighed_g: float | None
    p_reject: float | None
    p_defects: list[tuple[str, float]]


def evidence(
    result: Mapping[str, Any],
    tof: tuple[Sequence[int], Sequence[int], int] | None,
    calibration: Mapping[str, Any] | None,
    profile: Profile,
) -> Evidence:
    """Assemble a tray's evidence.

    Args:
        result: a ``results`` row (storage.station.TRAY_COLUMNS).
        tof: the stored frame's ``(distance_mm, target_status, layout)``, or ``None``.
    """
    heights = height_map(*tof, calibration, profile) if tof is not None else None
    parts = [result.get(k) for k in ("spectral_lab_l", "spectral_lab_a", "spectral_lab_b")]
    lab = None
    if all(isinstance(x, int | float) for x in parts):
        lab = (float(parts[0]), float(parts[1]), float(parts[2]))  # type: ignore[arg-type]
    mass = result.get("tof_mass_g")
    p_def = result.get("p_defects") or {}
    return Evidence(
        heights=heights,
        top_mm=profile.tray.depth_mm,
        colour=lab_to_srgb(*lab) if lab is not None else None,
        lab=lab,
        mass_g=float(mass) if mass is not None else None,
        mass_sigma_g=mass_sigma_g(float(mass) if mass is not None else None, calibration, profile),
        weighed_g=result.get("weight_mass_g"),
        p_reject=result.get("p_reject"),
        p_defects=sorted(((str(k), float(v)) for k, v in p_def.items()), key=lambda kv: -kv[1]),
    )
