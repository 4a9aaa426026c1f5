"""Transport faults of a frame on its way to the broker (docs/domain.md §7 "Transport").

``--faults realistic``: duplicate 1 % (same ``seq``), reorder 5 %, lognormal delay (median
20 ms, p99 500 ms), one frame lost 0.5 %, malformed 0.1 % (→ dead letter). Default: none.
Pure: the caller passes the tray's own generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

REALISTIC: Final = {"duplicate": 0.01, "reorder": 0.05, "lost": 0.005, "malformed": 0.001}
DELAY_MEDIAN_S: Final = 0.020
DELAY_SIGMA: Final = math.log(0.500 / 0.020) / 2.326
"""Lognormal σ putting the p99 at 500 ms for a 20 ms median (z_0.99 = 2.326)."""


@dataclass(frozen=True)
class FramePlan:
    """What happens to one frame: extra delay, copies sent, corruption, loss."""

    delay_s: float
    copies: int
    malformed: bool
    lost: bool
    faults: tuple[str, ...]


NO_FAULT: Final = FramePlan(0.0, 1, False, False, ())


def plan_frame(rng: np.random.Generator, realistic: bool, period_s: float) -> FramePlan:
    """Draw one frame's fate; with ``realistic`` off nothing is drawn and nothing happens."""
    if not realistic:
        return NO_FAULT
    u = rng.random(4)
    delay = float(DELAY_MEDIAN_S * math.exp(DELAY_SIGMA * rng.standard_normal()))
    faults = []
    lost = bool(u[0] < REALISTIC["lost"])
    malformed = bool(u[1] < REALISTIC["malformed"]) and not lost
    copies = 2 if u[2] < REALISTIC["duplicate"] and not lost else 1
    if u[3] < REALISTIC["reorder"]:
        delay += period_s * 1.25  # arrives after the next tray's frames
        faults.append("reorder")
    if delay > 0.1:
        faults.append("delay")
    if lost:
        faults.append("lost")
    if malformed:
        faults.append("malformed")
    if copies > 1:
        faults.append("duplicate")
    return FramePlan(delay, copies, malformed, lost, tuple(faults))


def corrupt(payload: bytes, rng: np.random.Generator) -> bytes:
    """A malformed payload: the JSON cut short (dead-lettered as ``bad_json``)."""
    return payload[: int(rng.integers(1, max(2, len(payload) // 2)))]
