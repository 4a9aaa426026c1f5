"""The analyzer service: MQTT in, scored results out (the imperative shell around the core).

Threads: the link's network thread only enqueues (messages and PUBACKs of our own publishes); one
worker thread decodes, joins, scores in batches, publishes, and acknowledges.

No sample is lost to a crash: frames arrive with QoS 1 on a persistent session and manual acks
(:class:`sqal.subscriber.Subscriber`); a frame is done only once the result (or dead letter) it
contributed to got its PUBACK from the broker, and acks go out in arrival order. A ``kill -9`` at
any moment leaves every unfinished frame unacknowledged, and the broker sends it again when the
analyzer reconnects with the same client id. A result may then be published twice (allowed);
none is missing.
"""

from __future__ import annotations

import logging
import math
import queue
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from analyzer.arrays import stack_spectral, stack_tof, stack_weights
from analyzer.fusion import score_batch
from analyzer.join import Joiner, Outcome, Ready
from analyzer.liveness import PROBE_FILTER, BrokerLiveness
from analyzer.params import BatchParams, ScoringParams, build_params
from analyzer.results import SampleMeta, to_results
from sqal.errors import BrokerError, ConfigError, PayloadError
from sqal.metrics import Registry
from sqal.mqtt import INFLIGHT_WINDOW
from sqal.profiles import load_profile
from sqal.subscriber import Delivery, Handoff, Subscriber
from sqal.wire import (
    DEFAULT_TS_WINDOW,
    DeadReason,
    DeviceConfig,
    Kind,
    Mode,
    SpectralFrame,
    TofFrame,
    TsWindow,
    Weight,
    dead_letter,
    dead_letter_topic,
    decode,
    decode_lot,
    device_topic,
    encode,
    is_config_deleted,
    is_lot_topic,
    kind_of,
    lot_subscription,
    parse_topic,
    subscription,
)

log = logging.getLogger(__name__)

STAGE = "analyzer"
BATCH_MAX = 512
"""Most messages the worker takes per round; a backlog is scored in batches of this size.

A call of ``score_batch`` costs ~1.5 ms before its first sample (~1,400 small numpy calls) and
~30 µs per sample, so a round's samples are scored in one call per profile and ROI, every device
with its own calibration (analyzer.params.BatchParams). Scored one call per device, 200 devices
cost the analyzer 3.06 ms of CPU a sample (326 samples/s on one core); in one call, 0.45 ms
(bench.pipeline --lines 50 --devices-per-line 4). With 256 messages a round the 8 devices of
the default bench scored 16 samples a call and the analyzer spent 0.8-0.97 ms of CPU a sample
at 1,000 samples/s; 512: 0.61-0.76 ms; 1,000 gained nothing more. Half the inflight window, so
the broker keeps sending while a round is scored."""
RECEIVE_MAXIMUM = 4_000
"""Frames the broker may send the analyzer before it acknowledges one (its MQTT 5 Receive
Maximum), above the one inflight window of every other SQAL client.

Acks go out in arrival order (MQTT 5 §4.6), so a half waiting for its other half holds back the
acks of every frame after it. A broker that keeps to the Receive Maximum (Mosquitto ≥ 2.0.13)
sends nothing more once that many frames came after the waiting half, and its other half comes
only when the join times out, as a partial result: with a window of 1,000 the overload scenario
(tests/chaos/test_overload.py, ~4,500 frames/s from two publishers whose own inflight windows
let halves drift apart) released 1-4 partial results a run, one every 1,000 frames of a
publisher; with 4,000, none in 6 runs. The window covers the frames that arrive while a half
waits: 4,000 is a second's drift between halves at 2,000 samples/s. It costs memory where the
broker runs ahead of our results' PUBACKs (they come on this connection, behind the frames): the
analyzer draining 30,000 queued samples peaked at 114 MB with 1,000, 161 MB with 4,000,
240 MB with 8,000 (bench: docs/operations.md, "Broker version")."""
INBOX_FRAMES = INFLIGHT_WINDOW
"""Frames waiting for the worker. When the inbox holds this many, the link's thread waits for the
worker (sqal.subscriber.Handoff): the broker is held back instead of a frame being dropped. Our
PUBACKs, probe answers and link changes take no place and never wait."""
CONFLICT_DETAIL = (
    "this sample's half came before with other content; the first is kept, this one is not"
)
SHUTDOWN_GRACE_S = 3.0
GIL_SWITCH_S = 0.0005
"""How long a thread may hold the GIL while another waits (CPython's default: 5 ms). The worker
runs ~1,000 small numpy calls per batch without releasing the GIL, so the link's network thread,
woken by a frame or by our own publish, waited up to 5 ms for it before reading the socket or
writing the result: that wait was most of the latency tail at 200 samples/s (bench.analyzer)."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BROKER_SILENT_S = 10.0
"""A liveness probe unanswered this long fails ``/healthz``: the broker is connected but frozen."""
MAX_HOLD_S = 30.0
"""Longest a lone half waits past its join timeout for the broker to show it works (a frozen
broker is dropped by the link's keep-alive, 30 s, within about twice that; away, timeouts pause)."""


@dataclass(frozen=True)
class AnalyzerConfig:
    """How the service runs."""

    broker: str
    profile: str = "foie_gras_lobe_400g"
    client_id: str = "sqal-analyzer"
    join_timeout_s: float = 2.0
    max_pending: int = 50_000
    metrics_port: int | None = None
    lines: tuple[str, ...] = ()
    """Only these lines (``--lines``); empty: every line."""
    batch_max: int = BATCH_MAX
    ts_window: TsWindow = DEFAULT_TS_WINDOW
    """How far a frame's ``ts`` may be from its arrival (``ts_out_of_range`` beyond)."""


@dataclass(frozen=True)
class _Back:
    """The broker connection is back, since ``at_s`` (stamped in the link's thread, before any
    message of the new connection)."""

    at_s: float


@dataclass(frozen=True)
class _Puback:
    mid: int
    received_s: float


@dataclass(frozen=True)
class _Unsuback:
    """The broker answered an UNSUBSCRIBE: a liveness probe's answer (analyzer.liveness)."""

    mid: int
    received_s: float


@dataclass(frozen=True)
class _StateSent:
    """The broker has sent every retained device config of this connection (the fence)."""


_Event = Delivery | _Puback | _Unsuback | _Back | _StateSent


class Metrics:
    """The analyzer's counters (sqal.metrics), one object per service."""

    def __init__(self, registry: Registry, pending: Any, waited: Any) -> None:
        self.received = registry.counter("received_total", "Frames received, by kind.", "kind")
        self.scored = registry.counter("scored_total", "Samples scored.")
        self.published = registry.counter("published_total", "Results published (PUBACKed).")
        self.dead = registry.counter("dead_lettered_total", "Messages dead-lettered.", "reason")
        self.join = registry.counter("join_total", "Join outcomes besides pairs.", "outcome")
        self.pending = registry.gauge("pending_joins", "Samples waiting for a half.", pending)
        self.unacked = registry.gauge("unacked_messages", "Messages received, not yet acked.")
        self.batch = registry.histogram("batch_size", "Samples per scored batch.", BATCH_BUCKETS)
        self.latency = registry.histogram(
            "processing_seconds", "Last frame received to result published."
        )
        self.backpressure = registry.gauge(
            "backpressure_seconds",
            "Time the broker connection waited for room in the inbox (the broker was held back).",
            waited,
        )
        self.stalls = registry.counter(
            "broker_stalls_total", "Silences of the broker that paused join timeouts."
        )
        self.decisions = registry.counter(
            "decisions_total",
            "Results published, by line and decision (PASS, HOLD, REJECT; none: no decision).",
            ("line", "decision"),
        )
        self.reject_rate_max = registry.gauge(
            "reject_rate_max",
            "The highest share of REJECT decisions a line should see: alerts.reject_rate_max of "
            "the profile its last result was scored with.",
            label="line",
        )
        self.inbox_depth = registry.gauge(
            "inbox_messages", "Frames and signals waiting for the worker (a backlog in hand)."
        )


class AnalyzerService:
    """Run with :meth:`run` (blocks until :meth:`stop`)."""

    def __init__(self, cfg: AnalyzerConfig, registry: Registry | None = None) -> None:
        self.cfg = cfg
        self.default_params = build_params(load_profile(cfg.profile))
        self.device_params: dict[tuple[str, str], ScoringParams] = {}
        """Per (line, device): a device id is unique within its line only (docs/contract.md)."""
        self.device_modes: dict[tuple[str, str], Mode] = {}
        """Per (line, device): the mode of its config, stamped on its results."""
        self.lots: dict[str, str | None] = {}
        """Per line: the open lot's id (``None``: the line's lot was ended), stamped on results."""
        self._stamps: dict[tuple[str, str, str], tuple[Mode, str | None]] = {}
        """Per waiting sample: its device's mode and its line's lot when its first half came.
        A tray belongs to the mode and lot of its capture, not of the moment the join released
        it (a lone half waits up to the join timeout, and a calibration ends meanwhile)."""
        self.joiner: Joiner[Delivery] = Joiner(cfg.join_timeout_s, cfg.max_pending)
        self.inbox: Handoff[_Event | None] = Handoff(INBOX_FRAMES, "analyzer inbox")
        self.liveness = BrokerLiveness()
        self.registry = registry or Registry(STAGE)
        self.metrics = Metrics(
            self.registry, lambda: float(len(self.joiner)), lambda: self.inbox.waited_s
        )
        self._awaiting: dict[int, tuple[tuple[Delivery, ...], bool, float]] = {}
        self._stop = threading.Event()
        self._away_since: float | None = None
        self._held: list[Delivery] | None = []
        """Frames that came before this connection's retained configs (None: configs known)."""
        lines = cfg.lines or ["+"]
        self.sub = Subscriber(
            cfg.broker,
            cfg.client_id,
            [
                subscription(k, line=ln)
                for k in (Kind.TOF, Kind.SPECTRAL, Kind.WEIGHT)
                for ln in lines
            ],
            self._on_message,
            state_filters=[
                *(subscription(Kind.CONFIG, line=ln) for ln in lines),
                *(lot_subscription(ln) for ln in lines),
            ],
            on_state=lambda: self.inbox.signal(_StateSent()),
            on_puback=self._on_puback_mid,
            on_unsuback=self._on_unsuback_mid,
            on_link=self._on_link,
            receive_maximum=RECEIVE_MAXIMUM,
        )
        self.ready = threading.Event()
        self.registry.healthy = self._health

    # --- the link's network thread: enqueue only -------------------------------------
    def _on_message(self, d: Delivery) -> bool:
        self.liveness.heard(d.arrived_s)
        return self.inbox.put(d)

    def _on_puback_mid(self, mid: int) -> None:
        now = time.monotonic()
        self.liveness.heard(now)
        self.inbox.signal(_Puback(mid, now))

    def _on_unsuback_mid(self, mid: int) -> None:
        now = time.monotonic()
        self.liveness.heard(now, mid)
        self.inbox.signal(_Unsuback(mid, now))

    def _on_link(self, up: bool) -> None:
        if not up:
            if self._away_since is None:
                self._away_since = time.monotonic()
            return
        since, self._away_since = self._away_since, None
        if since is not None:
            self.liveness.reset_probe()  # its answer went with the old connection
            self.inbox.signal(_Back(time.monotonic()))

    def _health(self) -> tuple[bool, str]:
        if not self.sub.connected:
            return False, "not connected to the broker"
        if not self.sub.listening:
            return False, "connected, but the broker has not granted our subscriptions"
        probe = self.liveness.outstanding  # one read: (mid, sent_s) as one value
        waited = 0.0 if probe is None else time.monotonic() - probe[1]
        if waited > BROKER_SILENT_S:
            # Connected but frozen (analyzer.liveness): halves wait, no result goes out.
            return False, f"broker silent for {waited:.0f} s (liveness probe unanswered)"
        return True, "ok"

    # --- lifecycle ---------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self.inbox.signal(None)

    def run(self) -> None:
        """Connect, subscribe, and work until :meth:`stop`.

        Raises:
            BrokerError: the broker cannot be reached or refused us, or another connection took
                our client id.
        """
        sys.setswitchinterval(GIL_SWITCH_S)
        try:
            self.sub.start()
            self.ready.set()
            log.info("analyzer subscribed", extra={"client_id": self.cfg.client_id})
            while not self._stop.is_set():
                self._round()
                if self.sub.failure is not None and not self._stop.is_set():
                    raise BrokerError(self.sub.failure)
            self._finish_in_flight()
        finally:
            self.inbox.close()  # the link's thread may wait for room: let it go, then join it
            self.sub.stop()

    def _finish_in_flight(self) -> None:
        """On shutdown: wait for PUBACKs of what was published and ack; leave waiting halves
        unacknowledged so the broker sends them again to the next analyzer."""
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while self._awaiting and time.monotonic() < deadline:
            try:
                ev = self.inbox.get(0.05)
            except queue.Empty:
                continue
            if isinstance(ev, _Puback):
                self._on_puback(ev.mid)

    # --- the worker ------------------------------------------------------------------
    def _round(self) -> None:
        with self.sub.corked():  # the round's results and acks leave in one write
            self._work()

    def _work(self) -> None:
        events: list[_Event] = []
        try:
            first = self.inbox.get(self._wait_s(time.monotonic()))
            if first is not None:
                events.append(first)
            while len(events) < self.cfg.batch_max:
                ev = self.inbox.get_nowait()
                if ev is not None:
                    events.append(ev)
        except queue.Empty:
            pass
        ready: list[Ready[Delivery]] = []
        for ev in events:
            if isinstance(ev, Delivery):
                self._saw(ev.arrived_s)
                if self._held is not None and not _is_state(ev.topic):
                    self._held.append(ev)  # scored once this connection's configs are in
                else:
                    ready += self._on_frame(ev)
            elif isinstance(ev, _StateSent):
                held, self._held = self._held or [], None
                for m in held:
                    ready += self._on_frame(m)
            elif isinstance(ev, _Puback):
                self._saw(ev.received_s)
                self._on_puback(ev.mid)
            elif isinstance(ev, _Unsuback):
                self.liveness.answered(ev.mid, ev.received_s)
                self._saw(ev.received_s)  # after: the answer's round trip is known
            else:
                self.joiner.restart_waits(ev.at_s)
                if self._held is None:
                    self._held = []  # the broker sends the retained configs again
        if self._away_since is None:  # no half can arrive while the broker is away
            now = time.monotonic()
            # Join timeouts count up to the settled time (None: the broker has not yet been seen
            # working), but no half waits longer than MAX_HOLD_S past its timeout: a broker that
            # answers too slowly to ever settle must not hold acks (and the line) for good.
            settled = self.liveness.settled()
            until = max(now - MAX_HOLD_S, -math.inf if settled is None else settled)
            ready += self.joiner.expire(now, until)
            self._probe(now)
        if ready:
            self._score(ready)
        self.metrics.unacked.set(self.sub.unacked)
        self.metrics.inbox_depth.set(self.inbox.depth())

    def _due_s(self) -> float | None:
        """When the oldest waiting half may time out, given the broker's grace."""
        deadline = self.joiner.next_deadline()
        return None if deadline is None else deadline + self.liveness.grace_s

    def _wait_s(self, now: float) -> float:
        """How long the worker may sleep: until a half is due or a probe should go out."""
        due = None if self._away_since is not None else self._due_s()
        if due is None:
            return 0.5
        probe = self.liveness.next_probe_s(due)
        wake = [t for t in (due if now < due else None, probe) if t is not None]
        return min(0.5, max(0.0, min(wake, default=now + 0.5) - now))

    def _saw(self, t: float) -> None:
        stall_s = self.liveness.stall_s()
        gap = self.liveness.saw(t)
        if gap > stall_s and len(self.joiner):
            # Keep-alive probes fill every shorter silence while a half waits: the broker's.
            self.metrics.stalls.inc()
            log.warning(
                "broker silent for %.1f s while %d samples waited for a half; "
                "their join timeouts paused meanwhile",
                gap,
                len(self.joiner),
            )

    def _probe(self, now: float) -> None:
        """Ask the broker for a sign of life (analyzer.liveness)."""
        at = self.liveness.next_probe_s(self._due_s())
        if at is None or now < at:
            return
        # Stamped even when it could not go out (connection just lost): no retry storm.
        self.liveness.probed(self.sub.unsubscribe(PROBE_FILTER), now)

    def _on_frame(self, m: Delivery) -> list[Ready[Delivery]]:
        if is_lot_topic(m.topic):
            self._on_lot(m)
            return []
        try:
            topic = parse_topic(m.topic)
            self.metrics.received.inc(label=topic.kind.value)
            if is_config_deleted(topic, m.payload):  # `sqal config delete`
                if self.device_params.pop((topic.line, topic.device), None) is not None:
                    log.info("config of %s/%s deleted: default profile", topic.line, topic.device)
                self._done((m,))
                return []
            frame = decode(topic, m.payload)
            self.cfg.ts_window.check(frame, datetime.now(UTC), m.topic)
            if isinstance(frame, DeviceConfig):
                self._apply_config(topic.line, topic.device, frame)
                self._done((m,))
                return []
            if not isinstance(frame, TofFrame | SpectralFrame | Weight):
                raise PayloadError(DeadReason.BAD_TOPIC, "not a frame topic", m.topic)
            params = self.device_params.get((topic.line, topic.device), self.default_params)
            if isinstance(frame, TofFrame) and frame.layout != params.layout:
                raise PayloadError(
                    DeadReason.SCHEMA,
                    f"layout {frame.layout} differs from profile {params.profile.name}'s "
                    f"{params.layout}",
                    m.topic,
                )
        except PayloadError as exc:
            self._dead_letter(m, exc)
            return []
        # A redelivery is byte-identical: another payload for a half already taken conflicts.
        outcome, released = self.joiner.offer(
            topic.line,
            frame,
            m,
            now=m.arrived_s,
            digest=hash(m.payload),
            expect_weight=params.checkweigher_sigma_g is not None,
        )
        if outcome is Outcome.WAITING:
            self._stamps[topic.line, topic.device, frame.sample_id] = self._stamp_now(
                topic.line, topic.device
            )
        if outcome is Outcome.CONFLICT:
            self._dead_letter(m, PayloadError(DeadReason.CONFLICT, CONFLICT_DETAIL, m.topic))
            return released
        if outcome in (Outcome.HELD, Outcome.DUPLICATE, Outcome.LATE):
            self.metrics.join.inc(label=outcome.value)
        if outcome in (Outcome.DUPLICATE, Outcome.LATE):
            self._done((m,))  # nothing will be published for it: ack (in order) now
        for r in released:
            if r.release.value != "joined":
                self.metrics.join.inc(label=r.release.value)
        return released

    def _stamp_now(self, line: str, device: str) -> tuple[Mode, str | None]:
        """The device's mode and the line's open lot, now."""
        return self.device_modes.get((line, device), Mode.PRODUCTION), self.lots.get(line)

    def _on_lot(self, m: Delivery) -> None:
        """A line's lot (retained): results scored from now on carry its id while it is open."""
        self.metrics.received.inc(label="lot")
        try:
            line, lot = decode_lot(m.topic, m.payload)
        except PayloadError as exc:
            self._dead_letter(m, exc)
            return
        self.lots[line] = lot.lot if lot.is_open else None
        log.info(
            "line %s: lot %s %s",
            line,
            lot.lot,
            "open" if lot.is_open else "ended",
            extra={"line": line},
        )
        self._done((m,))

    def _apply_config(self, line: str, device: str, cfg: DeviceConfig) -> None:
        try:
            params = build_params(load_profile(cfg.profile), cfg.calibration, cfg.checkweigher)
        except ConfigError as exc:
            log.warning("config of %s not applied: %s", device, exc)
            raise PayloadError(DeadReason.UNKNOWN_PROFILE, str(exc)) from None
        self.device_params[line, device] = params
        self.device_modes[line, device] = cfg.mode
        log.info("device %s/%s scored with profile %s (%s)", line, device, cfg.profile, cfg.mode)

    def _score(self, ready: list[Ready[Delivery]]) -> None:
        # One call of the core per profile and ROI, whatever the number of devices: a call's
        # fixed cost (~1.5 ms) paid per device made 200 devices cost 3 ms of CPU a sample.
        groups: dict[tuple[str, bytes], list[tuple[Ready[Delivery], ScoringParams]]] = defaultdict(
            list
        )
        for r in ready:
            p = self.device_params.get((r.line, r.device_id), self.default_params)
            groups[p.batch_key].append((r, p))
        for pairs in groups.values():
            group = [r for r, _ in pairs]
            devices = [p for _, p in pairs]
            p = devices[0]
            try:
                weighs = any(r.weight_expected or r.weight is not None for r in group)
                scores = score_batch(
                    stack_tof([r.tof for r in group], p.layout),
                    stack_spectral([r.spectral for r in group]),
                    BatchParams.per_sample(devices),
                    stack_weights(
                        [r.weight for r in group],
                        [r.weight_expected for r in group],
                        [d.checkweigher_sigma_g for d in devices],
                    )
                    if weighs
                    else None,
                )
                now = time.monotonic()
                meta = [
                    SampleMeta(
                        r.device_id,
                        r.sample_id,
                        _sample_ts(r),
                        *self._stamps.pop(
                            (r.line, r.device_id, r.sample_id),
                            self._stamp_now(r.line, r.device_id),
                        ),
                    )
                    for r in group
                ]
                results = to_results(
                    scores,
                    meta,
                    p.profile.name,
                    [d.calibration_id for d in devices],
                    [1000.0 * (now - r.last_offer_s) for r in group],
                )
            except Exception as exc:  # a scoring bug must not stop the line: dead-letter, go on
                log.exception("scoring failed for %d samples", len(group))
                for r in group:
                    self._stamps.pop((r.line, r.device_id, r.sample_id), None)
                    for m in r.handles:
                        self._dead_letter(m, PayloadError(DeadReason.PROCESSING, repr(exc)[:200]))
                continue
            self.metrics.batch.observe(len(group))
            self.metrics.scored.inc(len(group))
            limit = p.profile.alerts.reject_rate_max  # the profile's: the same for the group
            for r, res in zip(group, results, strict=True):
                decision = res.fusion.decision
                self.metrics.decisions.inc(label=(r.line, decision.value if decision else "none"))
                self.metrics.reject_rate_max.set(limit, r.line)
                mid = self.sub.publish(device_topic(r.line, r.device_id, Kind.RESULT), encode(res))
                self._awaiting[mid] = (tuple(r.handles), True, r.last_offer_s)

    def _dead_letter(self, m: Delivery, exc: PayloadError) -> None:
        self.metrics.dead.inc(label=exc.reason.value)
        letter = dead_letter(STAGE, m.topic, m.payload, exc)
        mid = self.sub.publish(dead_letter_topic(STAGE), encode(letter))
        self._awaiting[mid] = ((m,), False, m.arrived_s)

    def _on_puback(self, mid: int) -> None:
        entry = self._awaiting.pop(mid, None)
        if entry is None:
            return
        handles, is_result, since_s = entry
        if is_result:
            self.metrics.published.inc()
            self.metrics.latency.observe(time.monotonic() - since_s)
        self._done(handles)

    def _done(self, handles: tuple[Delivery, ...]) -> None:
        self.sub.done(handles)


def _is_state(topic: str) -> bool:
    """A retained state message (a device's config, a line's lot): applied on arrival, never
    held behind the fence like a frame."""
    return is_lot_topic(topic) or kind_of(topic) is Kind.CONFIG


def _sample_ts(r: Ready[Delivery]) -> Any:
    """A result's ``ts`` is the ToF capture time, else the spectral one, else the weighing's."""
    frame = r.tof or r.spectral or r.weight
    assert frame is not None
    return frame.ts
