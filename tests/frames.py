"""Hand-built payloads shared by the contract tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqal.wire import SpectralChannels, SpectralFrame, TofFrame, Weight

TS = (datetime.now(UTC) - timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=123000)
"""Yesterday 08:00:00.123 UTC: inside any service's ts window (sqal.wire.TsWindow)."""


def tof_frame(device: str = "d1", layout: int = 8, seq: int = 1, **over: object) -> TofFrame:
    n = layout
    fields: dict[str, object] = {
        "device_id": device,
        "sample_id": f"{device}-abc123-{seq:08d}",
        "seq": seq,
        "ts": TS,
        "layout": layout,
        "distance_mm": [[220 + (r + c) % 5 for c in range(n)] for r in range(n)],
        "target_status": [[5] * n for _ in range(n)],
        "signal_per_spad": [[1800.5 + r for c in range(n)] for r in range(n)],
        "ambient_per_spad": [[1.25] * n for _ in range(n)],
        "range_sigma_mm": [[1.75] * n for _ in range(n)],
        "reflectance_pct": [[42.5] * n for _ in range(n)],
        "ranging_hz": 15.0,
        "integration_ms": 20.0,
        "sensor_temp_c": 31.0,
    }
    fields.update(over)
    return TofFrame.model_validate(fields)


def spectral_frame(device: str = "d1", seq: int = 1, **over: object) -> SpectralFrame:
    counts = [812, 1430, 2210, 2875, 3320, 3655, 3890, 4010, 9000, 1500, 12]
    names = list(SpectralChannels.model_fields)
    fields: dict[str, object] = {
        "device_id": device,
        "sample_id": f"{device}-abc123-{seq:08d}",
        "seq": seq,
        "ts": TS,
        "channels": dict(zip(names, counts, strict=True)),
        "gain": 16,
        "atime": 29,
        "astep": 199,
        "integration_ms": 16.68,
        "led_ma": 24,
        "saturated": [],
    }
    fields.update(over)
    return SpectralFrame.model_validate(fields)


def weight(device: str = "d1", seq: int = 1, **over: object) -> Weight:
    """The checkweigher's weight of the tray of :func:`tof_frame` with the same ``seq``."""
    fields: dict[str, object] = {
        "device_id": device,
        "sample_id": f"{device}-abc123-{seq:08d}",
        "seq": seq,
        "ts": TS - timedelta(milliseconds=500),
        "mass_g": 402.7,
        "sigma_g": 0.5,
    }
    fields.update(over)
    return Weight.model_validate(fields)
