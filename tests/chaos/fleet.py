"""A simulated fleet publishing in a background thread of the test process (device_sim's API).

Frames are sent with ``--faults none``: every loss the audit finds is the pipeline's, never a
frame the simulator dropped on purpose.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from device_sim.command import build_devices
from device_sim.fleet import Counters, run_fleet

LINES = 2
DEVICES_PER_LINE = 2


@dataclass
class FleetRun:
    """One fleet run: ``per_device`` trays on each of ``LINES × DEVICES_PER_LINE`` nodes.

    Attributes:
        start: the device clocks' start, mid-morning of a day of its own; a scenario's rows
            are those with ``ts`` on that day, so scenarios sharing a database never mix.
        stream_s: how long the fleet takes to send everything (sets the tray rate).
    """

    url: str
    per_device: int
    start: datetime
    seed: int
    stream_s: float
    counters: Counters = field(default_factory=Counters)
    error: BaseException | None = None
    _thread: threading.Thread | None = None

    @property
    def devices(self) -> int:
        return LINES * DEVICES_PER_LINE

    @property
    def samples(self) -> int:
        return self.per_device * self.devices

    @property
    def window(self) -> tuple[datetime, datetime]:
        # The day around the start: a device clock's offset may put a frame before ``start``.
        day = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        return day, day + timedelta(days=1)

    def published_samples(self) -> int:
        """Samples whose two frames the broker acknowledged (frames / 2, rounded down)."""
        return self.counters.published // 2

    def start_thread(self) -> None:
        rate = max(1.0, min(6000.0, 60.0 * self.per_device / self.stream_s))
        fleet = build_devices(
            LINES, DEVICES_PER_LINE, rate, "foie_gras_lobe_400g", self.seed, self.start, "none",
            None, None,
        )  # fmt: skip

        def run() -> None:
            try:
                asyncio.run(run_fleet(fleet, self.url, self.per_device, None, self.counters))
            except BaseException as exc:  # noqa: BLE001 - handed to the test, which fails on it
                self.error = exc

        self._thread = threading.Thread(target=run, name="chaos-fleet", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        """Wait for the fleet to finish; True when it did, without error."""
        assert self._thread is not None
        self._thread.join(timeout_s)
        return not self._thread.is_alive() and self.error is None
