"""Frames as arrays: the batch form the scoring core works on.

A batch holds n samples of one device configuration. A sample whose ToF (or spectral) frame
never came has ``present`` False on that side, and placeholder values the core masks out
(status 255: no target; raw counts 0), so every function stays one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sqal.wire import AS7341_GAINS, CHANNELS, SpectralFrame, TofFrame, Weight

G_EFF: dict[float, float] = dict(
    zip(
        AS7341_GAINS,
        (0.512, 1.024, 2.048, 4.16, 8.0, 16.0, 32.0, 64.0, 128.0, 252.8, 496.0),
        strict=True,
    )
)
"""Effective AS7341 gain per nominal gain (docs/domain.md §3)."""

NO_TARGET = 255
"""ULD target_status when no target was detected (docs/domain.md §1)."""


@dataclass(frozen=True, eq=False)
class TofArrays:
    """n ToF frames, each field (n, N, N) float64 (status int64), row-major zones as on the wire.

    Attributes:
        present: (n,) True where the sample's ToF frame arrived.
    """

    distance_mm: NDArray[np.float64]
    target_status: NDArray[np.int64]
    signal_per_spad: NDArray[np.float64]
    range_sigma_mm: NDArray[np.float64]
    reflectance_pct: NDArray[np.float64]
    present: NDArray[np.bool_]

    @property
    def n(self) -> int:
        return int(self.present.shape[0])

    @classmethod
    def empty(cls, n: int, layout: int) -> TofArrays:
        """n absent frames (status 255 everywhere)."""
        shape = (n, layout, layout)
        return cls(
            distance_mm=np.zeros(shape),
            target_status=np.full(shape, NO_TARGET, dtype=np.int64),
            signal_per_spad=np.zeros(shape),
            range_sigma_mm=np.zeros(shape),
            reflectance_pct=np.zeros(shape),
            present=np.zeros(n, dtype=bool),
        )


@dataclass(frozen=True, eq=False)
class SpectralArrays:
    """n AS7341 readings.

    Attributes:
        raw: (n, 11) raw counts in CHANNELS order (F1..F8, Clear, NIR, Flicker).
        gain: (n,) nominal gain; atime, astep: (n,) register values.
        saturated: (n, 11) True where the device listed the channel as saturated.
        flicker: (n,) True where 100/120 Hz mains flicker was reported.
        present: (n,) True where the sample's spectral frame arrived.
    """

    raw: NDArray[np.float64]
    gain: NDArray[np.float64]
    atime: NDArray[np.float64]
    astep: NDArray[np.float64]
    saturated: NDArray[np.bool_]
    flicker: NDArray[np.bool_]
    present: NDArray[np.bool_]

    @property
    def n(self) -> int:
        return int(self.present.shape[0])

    @classmethod
    def empty(cls, n: int) -> SpectralArrays:
        return cls(
            raw=np.zeros((n, len(CHANNELS))),
            gain=np.full(n, 16.0),
            atime=np.full(n, 29.0),
            astep=np.full(n, 199.0),
            saturated=np.zeros((n, len(CHANNELS)), dtype=bool),
            flicker=np.zeros(n, dtype=bool),
            present=np.zeros(n, dtype=bool),
        )


@dataclass(frozen=True, eq=False)
class WeightArrays:
    """n checkweigher readings (issue #17): the tray's net mass and the instrument's σ.

    Attributes:
        expected: (n,) True where the device's line weighs its trays.
        present: (n,) True where the sample's weight arrived.
        mass_g, sigma_g: (n,) NaN where absent.
    """

    expected: NDArray[np.bool_]
    present: NDArray[np.bool_]
    mass_g: NDArray[np.float64]
    sigma_g: NDArray[np.float64]

    @property
    def n(self) -> int:
        return int(self.present.shape[0])

    @classmethod
    def none(cls, n: int) -> WeightArrays:
        """No checkweigher on the line."""
        return cls(
            expected=np.zeros(n, dtype=bool),
            present=np.zeros(n, dtype=bool),
            mass_g=np.full(n, np.nan),
            sigma_g=np.full(n, np.nan),
        )


def stack_weights(
    weights: Sequence[Weight | None],
    expected: Sequence[bool],
    default_sigma_g: float | Sequence[float | None] | None,
) -> WeightArrays:
    """Stack weights (None where missing) into :class:`WeightArrays`.

    A weight without its own ``sigma_g`` takes the one the device's config announces
    (``default_sigma_g``: one for all, or each sample's device's).
    """
    out = WeightArrays.none(len(weights))
    out.expected[:] = np.asarray(expected, dtype=bool)
    defaults = (
        default_sigma_g
        if isinstance(default_sigma_g, Sequence)
        else [default_sigma_g] * len(weights)
    )
    for i, w in enumerate(weights):
        if w is None:
            continue
        sigma = w.sigma_g if w.sigma_g is not None else defaults[i]
        out.mass_g[i] = w.mass_g
        out.sigma_g[i] = np.nan if sigma is None else sigma
        out.present[i] = True
    return out


def stack_tof(frames: Sequence[TofFrame | None], layout: int) -> TofArrays:
    """Stack frames (None where missing) into :class:`TofArrays`.

    A frame whose layout differs from the profile's is treated as missing: its zones cannot be
    mapped onto the profile's ROI (the service dead-letters such frames before they get here).
    """
    out = TofArrays.empty(len(frames), layout)
    for i, f in enumerate(frames):
        if f is None or f.layout != layout:
            continue
        out.distance_mm[i] = f.distance_mm
        out.target_status[i] = f.target_status
        out.signal_per_spad[i] = f.signal_per_spad
        out.range_sigma_mm[i] = f.range_sigma_mm
        out.reflectance_pct[i] = f.reflectance_pct
        out.present[i] = True
    return out


def stack_spectral(frames: Sequence[SpectralFrame | None]) -> SpectralArrays:
    """Stack frames (None where missing) into :class:`SpectralArrays`."""
    out = SpectralArrays.empty(len(frames))
    index = {c: j for j, c in enumerate(CHANNELS)}
    for i, f in enumerate(frames):
        if f is None:
            continue
        out.raw[i] = f.channels.as_tuple()
        out.gain[i] = f.gain
        out.atime[i] = f.atime
        out.astep[i] = f.astep
        for name in f.saturated:
            out.saturated[i, index[name]] = True
        out.flicker[i] = f.flicker_hz in (100, 120)
        out.present[i] = True
    return out


def effective_gain(gain: NDArray[np.float64]) -> NDArray[np.float64]:
    """g_eff for an array of nominal gains (docs/domain.md §3)."""
    idx = np.minimum(np.searchsorted(_NOMINAL_GAINS, gain), len(_NOMINAL_GAINS) - 1)
    return np.asarray(_EFFECTIVE_GAINS[idx])


_NOMINAL_GAINS = np.asarray(AS7341_GAINS, dtype=np.float64)
_EFFECTIVE_GAINS = np.asarray([G_EFF[g] for g in AS7341_GAINS], dtype=np.float64)
