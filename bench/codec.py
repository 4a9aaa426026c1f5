"""Decode + validate ToF and spectral frames on one core, against a plain ``json.loads``.

Target (Foundation issue): >= 50,000 ToF frames/s. The reference is ``json.loads`` of the same
bytes, which only parses and builds dicts; the codec parses, validates every field and builds a
frozen model.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from bench.common import header, rate
from sqal.process import tune_gc
from sqal.wire import SpectralFrame, TofFrame, decode, device_topic, encode, parse_topic
from sqal.wire.codec import decode_as

N = 20_000


def sample_tof(rng: np.random.Generator) -> TofFrame:
    """A realistic 8x8 frame, rounded as the ULD reports (see /tmp interfaces in README)."""
    n = 8
    return TofFrame.model_validate(
        {
            "device_id": "dev-01",
            "sample_id": "dev-01-3fa2c1-00012345",
            "seq": 12345,
            "ts": "2026-11-27T08:00:00.123Z",
            "layout": n,
            "distance_mm": rng.integers(200, 262, (n, n)).tolist(),
            "target_status": np.where(rng.random((n, n)) < 0.9, 5, 9).tolist(),
            "signal_per_spad": np.round(rng.uniform(300, 3000, (n, n)), 1).tolist(),
            "ambient_per_spad": np.round(rng.uniform(0, 8, (n, n)), 2).tolist(),
            "range_sigma_mm": np.round(rng.uniform(1, 4, (n, n)), 2).tolist(),
            "reflectance_pct": (np.round(rng.uniform(10, 60, (n, n)) * 2) / 2).tolist(),
            "ranging_hz": 15,
            "integration_ms": 20,
            "sensor_temp_c": 31,
        }
    )


def sample_spectral() -> SpectralFrame:
    names = list(SpectralFrame.model_fields["channels"].annotation.model_fields)  # type: ignore[union-attr]
    counts = [812, 1430, 2210, 2875, 3320, 3655, 3890, 4010, 9000, 1500, 12]
    return SpectralFrame.model_validate(
        {
            "device_id": "dev-01",
            "sample_id": "dev-01-3fa2c1-00012345",
            "seq": 12345,
            "ts": "2026-11-27T08:00:00.160Z",
            "channels": dict(zip(names, counts, strict=True)),
            "gain": 16,
            "atime": 29,
            "astep": 199,
            "integration_ms": 16.68,
            "led_ma": 24,
        }
    )


def main() -> None:
    print(header("codec"))
    tune_gc()  # as the services run (sqal.process): the cyclic GC otherwise adds ±50 % noise
    tof = encode(sample_tof(np.random.default_rng(7)))
    spec = encode(sample_spectral())
    tof_topic = device_topic("L1", "dev-01", "tof")
    parsed = parse_topic(tof_topic)
    print(f"payload sizes: tof {len(tof)} B, spectral {len(spec)} B")

    def loop(fn: Callable[[bytes], object], payload: bytes) -> Callable[[], None]:
        def run() -> None:
            for _ in range(N):
                fn(payload)

        return run

    ref, ref_spread = rate(loop(json.loads, tof), N)
    print(f"json.loads tof         {ref:>10,.0f} frames/s  (±{ref_spread:.0%})")
    res, spread = rate(loop(lambda b: decode_as(TofFrame, b), tof), N)
    print(
        f"decode tof (no topic)  {res:>10,.0f} frames/s  (±{spread:.0%})  "
        f"{1e6 / res:.1f} µs/frame  {res / ref:.2f}x json.loads  target 50,000"
    )
    res, spread = rate(loop(lambda b: decode(parsed, b), tof), N)
    print(f"decode tof + topic     {res:>10,.0f} frames/s  (±{spread:.0%})")
    res, spread = rate(loop(lambda b: decode(tof_topic, b), tof), N)
    print(f"decode tof + parse     {res:>10,.0f} frames/s  (±{spread:.0%})")
    ref, _ = rate(loop(json.loads, spec), N)
    res, spread = rate(loop(lambda b: decode_as(SpectralFrame, b), spec), N)
    print(
        f"decode spectral        {res:>10,.0f} frames/s  (±{spread:.0%})  "
        f"{res / ref:.2f}x json.loads"
    )


if __name__ == "__main__":
    main()
