"""Rendered samples → contract models (:mod:`sqal.wire`): ids, timestamps, validation.

``sample_id = f"{device_id}-{boot_id}-{seq:08d}"`` (docs/contract.md): ``boot_id`` is six hex
characters drawn at device start, so ids stay unique across reboots.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqal.wire import SpectralFrame, TofFrame, Weight


def sample_id(device_id: str, boot_id: str, seq: int) -> str:
    """The id both frames of one tray carry."""
    return f"{device_id}-{boot_id}-{seq:08d}"


def tof_frame(device_id: str, sid: str, seq: int, ts: datetime, fields: dict[str, Any]) -> TofFrame:
    """A validated ToF frame from rendered fields (see :class:`device_sim.render.Sample`)."""
    return TofFrame.model_validate(
        {"device_id": device_id, "sample_id": sid, "seq": seq, "ts": ts, **fields}
    )


def spectral_frame(
    device_id: str, sid: str, seq: int, ts: datetime, fields: dict[str, Any]
) -> SpectralFrame:
    """A validated spectral frame from rendered fields."""
    return SpectralFrame.model_validate(
        {"device_id": device_id, "sample_id": sid, "seq": seq, "ts": ts, **fields}
    )


def weight(
    device_id: str, sid: str, seq: int, ts: datetime, mass_g: float, sigma_g: float | None
) -> Weight:
    """A validated weight of the tray ``sid`` (what the node relays from the checkweigher)."""
    return Weight(
        device_id=device_id, sample_id=sid, seq=seq, ts=ts, mass_g=mass_g, sigma_g=sigma_g
    )
