"""The fleet: one MQTT connection per simulated node, paced in real time (imperative shell).

Each device connects with a retained ``offline`` last will, publishes a retained ``online``
status and its retained config (profile, settings, simulated calibration, checkweigher),
subscribes to its config topic and applies what an operator publishes there, then sends each
tray's two frames (and its weight, with a checkweigher) at QoS 1 when they are due. Rendering
runs in a worker thread, a chunk ahead. If the broker goes away mid-run the device keeps
producing into a bounded queue, reconnects with backoff and counts what the bound dropped.
Every publish's PUBACK is checked (:mod:`device_sim.link`): a refused one (the ACL, 0x87)
stops the fleet with its reason instead of being counted as published.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Final

import numpy as np

from device_sim.calibration import calibrate
from device_sim.device import FIRMWARE, Outgoing, SimDevice
from device_sim.link import LinkLost, NodeLink
from sqal.errors import BrokerError, PayloadError, PublishError
from sqal.mqtt import client_id
from sqal.wire import (
    CheckweigherSettings,
    DeviceConfig,
    DeviceState,
    DeviceStatus,
    Kind,
    decode,
    encode,
)

log = logging.getLogger(__name__)

QUEUE_MAX: Final = 5000
"""Messages a device holds while the broker is away (~40 min at 60 trays/min, 2 frames each;
~28 min with a checkweigher's weight)."""
BACKOFF_S: Final = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
STATUS_EVERY_S: Final = 30.0
RENDER_AHEAD_S: Final = 0.5
"""Trays are rendered in chunks covering this much time: a new config applies within it."""


@dataclass
class Counters:
    """What the fleet did, for the progress bar and the summary."""

    trays: int = 0
    published: int = 0
    dropped_queue: int = 0
    reconnects: int = 0
    configs_applied: int = 0
    faults: dict[str, int] = field(default_factory=dict)


def will_payload(dev: SimDevice) -> bytes:
    return encode(DeviceStatus(device_id=dev.device_id, state=DeviceState.OFFLINE))


def _status(dev: SimDevice, t_s: float, state: DeviceState) -> bytes:
    return encode(
        DeviceStatus(
            device_id=dev.device_id,
            state=state,
            ts=dev.device_ts(t_s),
            firmware=FIRMWARE,
            temperature_c=dev.temperature_c(t_s),
            humidity_pct=55.0,
            uptime_s=round(dev.uptime_s(t_s), 1),
        )
    )


def config_payload(dev: SimDevice, now: datetime) -> bytes:
    """The retained config: profile, settings, a calibration simulated for this device, and the
    line's checkweigher when it has one."""
    rng = np.random.default_rng(np.random.SeedSequence(dev.seed, spawn_key=(dev.index, 3)))
    cal = calibrate(
        dev.model, dev.optics, dev.tof, dev.spectral, rng, f"cal-{dev.device_id}-{dev.seed:x}", now,
        noise=dev.noise,
    )  # fmt: skip
    cfg = DeviceConfig(
        device_id=dev.device_id,
        profile=dev.profile,
        ts=now,
        tof=dev.tof,
        spectral=dev.spectral,
        calibration=cal,
        checkweigher=(
            None
            if dev.checkweigher_sigma_g is None
            else CheckweigherSettings(sigma_g=dev.checkweigher_sigma_g)
        ),
    )
    return encode(cfg)


@dataclass
class DeviceRunner:
    """Drives one :class:`SimDevice` against the broker."""

    dev: SimDevice
    url: str
    count: int
    chunk: int
    counters: Counters
    truth_out: IO[str] | None
    t0: float
    now: datetime
    queue: list[tuple[float, int, Outgoing]] = field(default_factory=list)
    order: int = 0
    done: bool = False

    def push(self, msgs: list[Outgoing]) -> None:
        for m in msgs:
            if len(self.queue) >= QUEUE_MAX:
                self.counters.dropped_queue += 1
                continue
            heapq.heappush(self.queue, (m.due_s, self.order, m))
            self.order += 1

    async def produce(self) -> None:
        """Render chunks ahead of time, never more than two chunks before they are due."""
        while self.dev.seq < self.count:
            due = self.dev.capture_time_s(self.dev.seq)
            wait = due - self.chunk * self.dev.period_s - (time.monotonic() - self.t0)
            if wait > 0:
                await asyncio.sleep(wait)
            n = min(self.chunk, self.count - self.dev.seq)
            msgs, truth = await asyncio.to_thread(self.dev.produce, n)
            self.push(msgs)
            self.counters.trays += n
            for line in truth:
                for faults in line["transport"].values():
                    for f in faults:
                        self.counters.faults[f] = self.counters.faults.get(f, 0) + 1
                if self.truth_out is not None:
                    self.truth_out.write(json.dumps(line) + "\n")
        self.done = True

    async def listen(self, link: NodeLink) -> None:
        """Apply configs an operator publishes on this device's retained config topic."""
        while True:
            msg = await link.messages.get()
            payload = bytes(msg.payload)
            if not payload:
                continue  # `sqal config delete`: a real node keeps running with what it has
            try:
                cfg = decode(msg.topic, payload)
            except PayloadError as exc:
                log.warning("ignoring bad config for %s: %s", self.dev.device_id, exc)
                continue
            if isinstance(cfg, DeviceConfig):
                try:
                    changed = await asyncio.to_thread(
                        self.dev.apply, cfg.profile, cfg.tof, cfg.spectral
                    )
                except Exception as exc:  # noqa: BLE001 - a bad profile name must not stop the node
                    log.warning("cannot apply config to %s: %s", self.dev.device_id, exc)
                    continue
                if changed:
                    self.counters.configs_applied += 1

    async def send(self, link: NodeLink) -> None:
        """Publish queued messages when due; return when production is done and all sent."""
        next_status = 0.0
        while not (self.done and not self.queue):
            elapsed = time.monotonic() - self.t0
            if elapsed >= next_status:
                status = _status(self.dev, elapsed, DeviceState.ONLINE)
                await link.publish(self.dev.topic(Kind.STATUS), status, retain=True)
                next_status = elapsed + STATUS_EVERY_S
            if self.queue and self.queue[0][0] <= elapsed:
                _, _, m = self.queue[0]
                await link.publish(m.topic, m.payload, retain=m.retain)
                heapq.heappop(self.queue)
                self.counters.published += 1
                continue
            wake = self.queue[0][0] - elapsed if self.queue else 0.05
            await asyncio.sleep(min(max(wake, 0.0), 0.05))

    async def run(self, first_connect: asyncio.Event, config: bytes | None) -> None:
        """Connect (again and again if need be) until every message is sent.

        Raises:
            BrokerError: the broker cannot be reached at the first connect.
            PublishError: the broker refused a publish (not authorised, ...).
        """
        will = (self.dev.topic(Kind.STATUS), will_payload(self.dev))
        producer = asyncio.create_task(self.produce())
        attempt = 0
        try:
            while True:
                link: NodeLink | None = None
                try:
                    link = await NodeLink.open(
                        self.url, client_id(f"sim-{self.dev.device_id}"), will
                    )
                    first_connect.set()
                    attempt = 0
                    if config is not None:
                        await link.publish(self.dev.topic(Kind.CONFIG), config, retain=True)
                    link.subscribe(self.dev.topic(Kind.CONFIG))
                    listener = asyncio.create_task(self.listen(link))
                    try:
                        await self.send(link)
                    finally:
                        listener.cancel()
                    await link.publish(self.dev.topic(Kind.STATUS), will[1], retain=True)
                    return
                except PublishError:
                    raise  # the broker refused a message: sending it again changes nothing
                except (LinkLost, BrokerError) as exc:
                    if not first_connect.is_set():
                        raise
                    self.counters.reconnects += 1
                    delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                    attempt += 1
                    log.warning(
                        "%s lost the broker (%s); retrying in %.1f s",
                        self.dev.device_id,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)
                finally:
                    if link is not None:
                        await link.close()
        finally:
            producer.cancel()


async def run_fleet(
    devices: list[SimDevice],
    url: str,
    count: int,
    truth_out: IO[str] | None,
    counters: Counters,
    on_tick: Callable[[Counters], None] | None = None,
    factory_config: bool = True,
) -> float:
    """Run every device until it has sent ``count`` trays; return the elapsed seconds.

    Args:
        factory_config: each node publishes its own config with a simulated factory
            calibration at connect; without it, nodes keep what the broker retains (a
            calibration made with ``sqal calibrate``) and only apply it.

    Raises:
        BrokerError: the broker cannot be reached at start.
    """
    now = devices[0].start if devices else datetime.now(UTC)
    if factory_config:
        configs: list[bytes | None] = list(
            await asyncio.gather(*(asyncio.to_thread(config_payload, d, now) for d in devices))
        )
    else:
        configs = [None] * len(devices)
    t0 = time.monotonic()
    runners = []
    for dev in devices:
        chunk = max(1, min(64, int(RENDER_AHEAD_S / dev.period_s)))
        runners.append(DeviceRunner(dev, url, count, chunk, counters, truth_out, t0, now))
    first = [asyncio.Event() for _ in runners]
    tasks = [
        asyncio.create_task(r.run(e, c)) for r, e, c in zip(runners, first, configs, strict=True)
    ]
    try:
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=0.2, return_when=asyncio.FIRST_EXCEPTION)
            if on_tick is not None:
                on_tick(counters)
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return time.monotonic() - t0
