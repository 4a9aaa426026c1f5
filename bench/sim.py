"""Samples rendered per second on one core: both frames, 8x8, no broker (issue 3 benchmark).

Target: >= 2,000 samples/s. Three figures per profile: the physics alone (surface, ray casting,
ToF and AS7341 models, frame fields), physics + ground truth, and physics + truth + validated,
encoded wire frames (what the fleet does per tray).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import numpy as np

from bench.common import header, rate
from device_sim.device import SimDevice
from device_sim.model import ProductModel, product_model
from device_sim.render import Shot, device_optics, render_batch
from device_sim.trays import DEFECTS, draw_tray
from sqal.wire import TofSettings

N = 512


def _shots(name: str, n: int) -> list[Shot]:
    model = product_model(name)
    dev = device_optics(np.random.default_rng(1))
    rates = dict.fromkeys(DEFECTS, 0.03)
    out = []
    for i in range(n):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(7, spawn_key=(0, 1, i))))
        draw = draw_tray(model, rng, rates, model.profile.scenarios.production)
        out.append(
            Shot(
                draw,
                rng,
                dev,
                TofSettings(layout=8),
                model.profile.spectral.settings,
                3600.0,
                False,
            )
        )
    return out


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(header("sim"))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for name in ("foie_gras_lobe_400g", "pate_terrine_300g"):
        model = product_model(name)
        shots = _shots(name, N)  # drawn once; each render consumes fresh noise from them
        for label, truth in (("physics", False), ("physics+truth", True)):

            def render(
                model: ProductModel = model, shots: list[Shot] = shots, truth: bool = truth
            ) -> None:
                render_batch(model, shots, truth=truth)

            r, spread = rate(render, N, repeats=5)
            print(
                f"{name} {label:<24} n={N}  {r:7.0f} samples/s  {1000 / r:.3f} ms/sample"
                f"  spread {spread:.0%}"
            )

        def full(name: str = name) -> None:
            rates = dict.fromkeys(DEFECTS, 0.03)
            SimDevice("line1", "line1-node01", 0, 7, name, 0.1, start, rates=rates).produce(N)

        r, spread = rate(full, N, repeats=5)
        print(
            f"{name} {'draw+physics+truth+wire':<24} n={N}  {r:7.0f} samples/s  "
            f"{1000 / r:.3f} ms/sample  spread {spread:.0%}"
        )


if __name__ == "__main__":
    main()
