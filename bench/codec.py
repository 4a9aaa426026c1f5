"""Decode + validate ToF and spectral frames on one core, against a plain ``json.loads``.

Also ingest's two paths from a batch of ToF payloads to rows packed for COPY: one frame at a
time through pydantic, and in bulk (:mod:`sqal.wire.tofbulk`). Target (Foundation issue):
>= 50,000 ToF frames/s. The reference is ``json.loads`` of the same
bytes, which only parses and builds dicts; the codec parses, validates every field and builds a
frozen model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from bench.common import header, rate
from sqal.wire import (
    SpectralFrame,
    TofFrame,
    decode,
    decode_tof_bulk,
    device_topic,
    encode,
    parse_topic,
)
from sqal.wire.codec import decode_as
from storage.arrays import prepack
from storage.rows import pending_row, tof_block_rows
from storage.tables import TOF

N = 20_000
BATCH = 500  # ingest's default batch (ingest.batching.DEFAULT_BATCH_ROWS)


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
    # ingest's path for a batch of ToF frames: decode and rows packed for COPY, both ways
    batch = [(parsed, encode(sample_tof(np.random.default_rng(i)))) for i in range(BATCH)]
    now = datetime.now(UTC)

    def per_frame() -> None:
        rows = [pending_row(t, decode(t, p), now, p, 0) for t, p in batch]
        prepack(TOF, [r.values for r in rows if r is not None])

    def bulk() -> None:
        for b in decode_tof_bulk(batch):
            n = len(b.positions)
            tof_block_rows(b, [parsed] * n, [batch[i][1] for i in b.positions], b.positions)

    slow, slow_spread = rate(per_frame, BATCH, repeats=15)
    fast, fast_spread = rate(bulk, BATCH, repeats=15)
    print(
        f"ingest rows, {BATCH} ToF: pydantic + prepack {slow:>8,.0f} frames/s (±{slow_spread:.0%}) "
        f"{1e6 / slow:.1f} µs; bulk {fast:>8,.0f} frames/s (±{fast_spread:.0%}) "
        f"{1e6 / fast:.1f} µs; {fast / slow:.2f}x"
    )
    ref, _ = rate(loop(json.loads, spec), N)
    res, spread = rate(loop(lambda b: decode_as(SpectralFrame, b), spec), N)
    print(
        f"decode spectral        {res:>10,.0f} frames/s  (±{spread:.0%})  "
        f"{res / ref:.2f}x json.loads"
    )


if __name__ == "__main__":
    main()
