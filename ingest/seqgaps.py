"""Per-device ``seq`` gaps seen by ingest: pure bookkeeping, no clock (STYLE.md).

A device numbers its trays 0, 1, 2, … (docs/contract.md); a number that never
arrives is a lost sample. Frames may arrive reordered (docs/domain.md §7) or twice (QoS 1
redelivery), so a missing number only counts as a gap once the device has moved
``REORDER_WINDOW`` numbers past it without it arriving. A number far below the highest seen
is a reboot (the counter restarts) and starts a new stream. Ingest restarts with an empty
tracker: gaps across a restart are for SQL over ``tof_frames`` (the fleet dashboard's
``lag(seq)``), not for this counter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REORDER_WINDOW = 64
"""How far a device may run ahead of a missing number before it counts as lost."""


@dataclass
class _Stream:
    highest: int
    missing: set[int] = field(default_factory=set)


@dataclass
class SeqTracker:
    """Counts confirmed gaps per device."""

    window: int = REORDER_WINDOW
    _streams: dict[str, _Stream] = field(default_factory=dict)

    def observe(self, device: str, seq: int) -> int:
        """Record one frame's ``seq``; returns how many numbers became confirmed gaps now."""
        s = self._streams.get(device)
        if s is None or seq < s.highest - self.window:
            self._streams[device] = _Stream(seq)  # first frame, or the device rebooted
            return 0
        if seq <= s.highest:
            s.missing.discard(seq)  # a reordered frame fills its hole; a duplicate changes nothing
            return 0
        floor = seq - self.window  # numbers below it are confirmed lost
        jumped = max(0, floor - (s.highest + 1))  # never materialised: seq may jump by 2**31
        settled = s.highest - self.window  # every missing number is at or above it
        s.missing.update(range(max(s.highest + 1, floor), seq))
        s.highest = seq
        # The newly confirmed lie in [settled, floor): look through that range or through the
        # set, whichever is shorter (a device that skips numbers keeps ~window of them missing).
        if floor - settled <= len(s.missing):
            confirmed = [m for m in range(settled, floor) if m in s.missing]
        else:
            confirmed = [m for m in s.missing if m < floor]
        s.missing.difference_update(confirmed)
        return jumped + len(confirmed)

    def pending(self) -> int:
        """Numbers missing but still inside the reorder window."""
        return sum(len(s.missing) for s in self._streams.values())
