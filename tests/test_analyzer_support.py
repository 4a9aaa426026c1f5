"""Frames of known geometry and calibrations for the analyzer tests and bench.

Builders only, plus checks of the builders themselves (a builder that is wrong would make every
golden test wrong in the same direction).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from analyzer.params import zone_offsets, zone_pitch_per_mm
from sqal.wire import CHANNELS, Calibration, SpectralFrame, TofFrame

TS = (datetime.now(UTC) - timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)
"""Yesterday 08:00 UTC: inside any service's ts window (sqal.wire.TsWindow)."""
T_INT_MS = 30 * 200 * 2.78e-3  # atime 29, astep 199 → 16.68 ms
G16 = 16.0  # g_eff at nominal gain 16


def plane_distances(d0: float, c_mm: float, slope: float, layout: int = 8) -> np.ndarray:
    """Distances (N, N) of the surface h = slope·x + c, x = u·k·z on the surface (exact).

    With z = d0 − h: h = slope·u·k·(d0 − h) + c, so h = (slope·u·k·d0 + c)/(1 + slope·u·k).
    """
    k = zone_pitch_per_mm(layout)
    u, _ = zone_offsets(layout)
    h = (slope * u * k * d0 + c_mm) / (1.0 + slope * u * k)
    return np.asarray(d0 - h)


def tof_payload(
    distance_mm: Any,
    *,
    device: str = "dev1",
    seq: int = 0,
    layout: int = 8,
    status: int = 5,
    sigma_mm: float = 2.0,
    reflectance_pct: float = 40.0,
    ts: datetime = TS,
) -> dict[str, Any]:
    """A ToF frame as wire JSON fields."""
    n = layout
    dist = np.broadcast_to(np.asarray(distance_mm), (n, n))
    return {
        "device_id": device,
        "sample_id": f"{device}-abc123-{seq:08d}",
        "seq": seq,
        "ts": ts.isoformat(),
        "layout": n,
        "distance_mm": np.rint(dist).astype(int).tolist(),
        "target_status": [[status] * n for _ in range(n)],
        "signal_per_spad": [[1500.0] * n for _ in range(n)],
        "ambient_per_spad": [[1.0] * n for _ in range(n)],
        "range_sigma_mm": [[sigma_mm] * n for _ in range(n)],
        "reflectance_pct": [[reflectance_pct] * n for _ in range(n)],
        "ranging_hz": 15.0,
        "integration_ms": 20.0,
    }


def spectral_payload(
    raw: list[int], *, device: str = "dev1", seq: int = 0, ts: datetime = TS, **over: Any
) -> dict[str, Any]:
    """A spectral frame (gain 16, 16.68 ms) as wire JSON fields; ``raw`` has 11 counts."""
    fields: dict[str, Any] = {
        "device_id": device,
        "sample_id": f"{device}-abc123-{seq:08d}",
        "seq": seq,
        "ts": (ts + timedelta(milliseconds=20)).isoformat(),
        "channels": dict(zip([c.value for c in CHANNELS], raw, strict=True)),
        "gain": 16,
        "atime": 29,
        "astep": 199,
        "integration_ms": round(T_INT_MS, 2),
        "led_ma": 24,
        "saturated": [],
    }
    fields.update(over)
    return fields


def raw_for_reflectance(r: float, white_bc: float) -> int:
    """Raw count whose reflectance is ``r`` against a white of ``white_bc`` (dark 0, ρw 1)."""
    return round(r * white_bc * G16 * T_INT_MS)


def calibration(
    *,
    d0_mm: float = 260.0,
    white_bc: float = 12.5,
    z_cal_mm: float = 230.0,
    color_matrix: list[list[float]] | None = None,
    lab_ref: tuple[float, float, float] | None = None,
) -> Calibration:
    """A calibration with dark 0, a flat white of ``white_bc``, ρw = 1."""
    if color_matrix is None:
        # XYZ = white point × mean(R_F1..F8): a grey reflectance R has L* = 116·R^(1/3) − 16.
        color_matrix = [[w / 8.0] * 8 + [0.0] for w in (95.047, 100.0, 108.883)]
    return Calibration(
        id="cal-dev1-0001",
        ts=TS,
        d0_mm=d0_mm,
        dark_bc=[0.0] * 10,
        white_bc=[white_bc] * 10,
        rho_white=[1.0] * 10,
        z_cal_mm=z_cal_mm,
        color_matrix=color_matrix,
        lab_ref=lab_ref,
    )


def dome_distances(
    rng: np.random.Generator, d0: float = 260.0, height_mm: float = 40.0, noise_mm: float = 1.0
) -> np.ndarray:
    """A lobe-like dome over the tray centre with noise, (8, 8) distances (float)."""
    u, v = zone_offsets(8)
    rho2 = (u / 3.2) ** 2 + (v / 2.3) ** 2
    h = height_mm * np.clip(1.0 - rho2, 0.0, None) ** 0.35 + rng.normal(0.0, noise_mm, u.shape)
    return np.asarray(d0 - h)


def test_plane_builder_lies_on_its_plane() -> None:
    d0, c, slope = 260.0, 25.0, math.tan(math.radians(5.0))
    dist = plane_distances(d0, c, slope)
    k = zone_pitch_per_mm(8)
    u, _ = zone_offsets(8)
    h = d0 - dist
    x = u * k * dist
    np.testing.assert_allclose(h, slope * x + c, rtol=0, atol=1e-9)


def test_raw_for_reflectance_round_trips() -> None:
    raw = raw_for_reflectance(0.5, 12.5)
    assert raw == 1668
    assert raw / (G16 * T_INT_MS) / 12.5 == 0.5


def test_payload_builders_validate() -> None:
    TofFrame.model_validate(tof_payload(230))
    SpectralFrame.model_validate(spectral_payload([1000] * 11))
