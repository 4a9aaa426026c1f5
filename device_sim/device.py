"""One simulated node's deterministic state and its tray production (no I/O).

A :class:`SimDevice` turns sequence numbers into publishable messages: it draws trays with
per-tray generators (seed, device index, seq), renders them in batches, stamps ids and device
clock times, plans transport faults and returns the truth lines. The fleet shell sends them.

With a checkweigher (``sqal sim --checkweigher``) the node also relays each tray's weight: the
true mass plus N(0, σ), rounded to the 0.1 g a checkweigher reports. Its noise and transport
faults come from a generator stream of their own (:data:`WEIGHT_STREAM`), so the frames are
byte-identical with or without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np

from device_sim.calibration import CAL_UPTIME_S
from device_sim.faults import FramePlan, corrupt, plan_frame
from device_sim.frames import sample_id, spectral_frame, tof_frame, weight
from device_sim.model import ProductModel, product_model
from device_sim.render import DeviceOptics, Fixture, Shot, device_optics, render_batch
from device_sim.trays import draw_tray
from sqal.profiles import Population
from sqal.wire import Kind, SpectralSettings, TofSettings, device_topic, encode

WEIGHT_STREAM: Final = 4
"""Generator stream of a tray's weight noise and its transport faults (1: the tray, 2: the
frames' timing and faults, 3 with no ``seq``: the factory calibration)."""
WEIGH_LEAD_S: Final = 0.5
"""The checkweigher sits upstream of the node: a tray is weighed this long before its capture
(it stamps ``ts`` then, on the node's clock; the node relays the weight at capture, when the
tray gets its ``sample_id``)."""
WEIGHT_RESOLUTION_G: Final = 0.1
"""A checkweigher's display step (e.g. e = 0.1 g for a 600 g range)."""

RESYNC_S: Final = 600.0
"""Device clocks resync every 10 min (docs/domain.md §7 "Timing"): drift accumulates, then steps."""
FIRMWARE: Final = "sqal-sim-1.0"


@dataclass(frozen=True)
class Outgoing:
    """One MQTT publish: due time (s after the fleet's start), topic, payload, retain."""

    due_s: float
    topic: str
    payload: bytes
    retain: bool = False


def _seq_rng(seed: int, index: int, stream: int, seq: int) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index, stream, seq)))
    )


@dataclass
class SimDevice:
    """A node: ids, unit constants, clock, settings in force and its sequence counter."""

    line_id: str
    device_id: str
    index: int
    seed: int
    profile: str
    period_s: float
    start: datetime
    realistic_faults: bool = False
    rates: dict[str, float] = field(default_factory=dict)
    fixture: Fixture | None = None
    seq: int = 0
    scenario: str = "production"
    """Which of the profile's populations the filler draws from (``sqal sim --scenario``)."""
    noise: bool = True
    """``False``: a perfect sensor, every noise source off (``bench.accuracy --ceiling``)."""
    checkweigher_sigma_g: float | None = None
    """The line's checkweigher's standard uncertainty; ``None``: no checkweigher, no weights."""

    def __post_init__(self) -> None:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(self.index, 0)))
        self.boot_id = f"{int(rng.integers(16**6)):06x}"
        self.optics: DeviceOptics = device_optics(rng)
        self.clock_offset_s = float(0.030 * rng.standard_normal())
        self.drift = float(rng.uniform(-20e-6, 20e-6))
        self.phase_s = float(rng.uniform(0.0, self.period_s))
        self.model: ProductModel = product_model(self.profile)
        self.tof = TofSettings(layout=self.model.profile.tof.layout)
        self.spectral: SpectralSettings = self.model.profile.spectral.settings

    @property
    def population(self) -> Population:
        """The filler's population: the scenario's, in the profile in force."""
        return self.model.profile.scenarios.get(self.scenario)

    def apply(self, profile: str, tof: TofSettings, spectral: SpectralSettings) -> bool:
        """Apply a configuration read from the retained config topic; True if it changed."""
        if (profile, tof, spectral) == (self.profile, self.tof, self.spectral):
            return False
        self.model = product_model(profile)
        self.profile, self.tof, self.spectral = profile, tof, spectral
        return True

    def capture_time_s(self, seq: int) -> float:
        """True capture time of tray ``seq``, seconds after the fleet start."""
        return self.phase_s + seq * self.period_s

    def device_ts(self, t_s: float) -> datetime:
        """The device clock's reading at true time ``t_s``: offset + drift since last resync."""
        err = self.clock_offset_s + self.drift * (t_s % RESYNC_S)
        return self.start + timedelta(milliseconds=round((t_s + err) * 1000.0))

    def topic(self, kind: Kind) -> str:
        return device_topic(self.line_id, self.device_id, kind)

    def produce(self, count: int) -> tuple[list[Outgoing], list[dict[str, Any]]]:
        """Render the next ``count`` trays; return their messages and truth lines."""
        seqs = range(self.seq, self.seq + count)
        shots, draws_rng = [], []
        for seq in seqs:
            rng = _seq_rng(self.seed, self.index, 1, seq)
            draw = draw_tray(self.model, rng, self.rates, self.population)
            t = self.capture_time_s(seq)
            shots.append(
                Shot(draw, rng, self.optics, self.tof, self.spectral, self.uptime_s(t), seq == 0)
            )
            draws_rng.append(_seq_rng(self.seed, self.index, 2, seq))
        samples = render_batch(
            self.model, shots, fixture=self.fixture, truth=self.fixture is None, noise=self.noise
        )
        out: list[Outgoing] = []
        truth: list[dict[str, Any]] = []
        for seq, sample, frng in zip(seqs, samples, draws_rng, strict=True):
            t = self.capture_time_s(seq)
            ts_tof = self.device_ts(t)
            ts_spec = ts_tof + timedelta(milliseconds=int(frng.integers(5, 61)))
            sid = sample_id(self.device_id, self.boot_id, seq)
            tof = encode(tof_frame(self.device_id, sid, seq, ts_tof, sample.tof))
            spec = encode(spectral_frame(self.device_id, sid, seq, ts_spec, sample.spectral))
            plans = {}
            for kind, payload, t_send in ((Kind.TOF, tof, t), (Kind.SPECTRAL, spec, t + 0.02)):
                plan = plan_frame(frng, self.realistic_faults, self.period_s)
                plans[kind.value] = plan
                out.extend(self._messages(kind, payload, t_send, plan, frng))
            weighed: dict[str, float] = {}
            sigma = self.checkweigher_sigma_g
            if sigma is not None and sample.truth is not None:
                wrng = _seq_rng(self.seed, self.index, WEIGHT_STREAM, seq)
                mass = self._weigh(sample.truth["mass_g"], wrng)
                ts_w = self.device_ts(t - WEIGH_LEAD_S)
                w = encode(weight(self.device_id, sid, seq, ts_w, mass, sigma))
                plan = plan_frame(wrng, self.realistic_faults, self.period_s)
                plans[Kind.WEIGHT.value] = plan
                out.extend(self._messages(Kind.WEIGHT, w, t - 0.001, plan, wrng))
                weighed = {"mass_g": mass, "sigma_g": sigma}
            if sample.truth is not None:
                truth.append(
                    {
                        "v": 1,
                        "line_id": self.line_id,
                        "device_id": self.device_id,
                        "sample_id": sid,
                        "seq": seq,
                        "profile": self.profile,
                        "ts": ts_tof.isoformat().replace("+00:00", "Z"),
                        **sample.truth,
                        **({"checkweigher": weighed} if weighed else {}),
                        "transport": {k: list(p.faults) for k, p in plans.items()},
                    }
                )
        self.seq += count
        return out, truth

    def _weigh(self, true_g: float, rng: np.random.Generator) -> float:
        """What the checkweigher reads: ``true_g`` + N(0, σ) at its resolution (σ = 0 without
        noise), never below one step."""
        sigma = self.checkweigher_sigma_g or 0.0
        z = float(rng.standard_normal())  # drawn either way: the fault plan follows it
        steps = max(1, round((true_g + (sigma * z if self.noise else 0.0)) / WEIGHT_RESOLUTION_G))
        return round(steps * WEIGHT_RESOLUTION_G, 1)

    def _messages(
        self, kind: Kind, payload: bytes, t_s: float, plan: FramePlan, rng: np.random.Generator
    ) -> list[Outgoing]:
        if plan.lost:
            return []
        body = corrupt(payload, rng) if plan.malformed else payload
        due = t_s + plan.delay_s
        return [Outgoing(due + 0.001 * i, self.topic(kind), body) for i in range(plan.copies)]

    def uptime_s(self, t_s: float) -> float:
        """Node uptime at true time ``t_s``: production starts once the node is calibrated.

        The calibration block (docs/domain.md §2/§3, redone each shift) is captured on a warmed-up
        node at :data:`CAL_UPTIME_S`; trays follow it. Starting trays 5 s after boot while d0 was
        taken at 30 min put the §1 warm-up bias (3 mm·e^(−t/300 s)) into every early height: −5 %
        volume over a 10-minute run, an artefact of the scenario, not of the sensor.
        """
        return CAL_UPTIME_S + max(0.0, t_s - self.phase_s)

    def temperature_c(self, t_s: float) -> float:
        return round(self.optics.temp_c + 4.0 * (1.0 - math.exp(-self.uptime_s(t_s) / 600.0)), 1)
