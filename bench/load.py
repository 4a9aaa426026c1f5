"""Offered load for the pipeline benchmark: a pre-rendered frame pool, publishers, a result tap.

The simulator renders only ~400-500 samples/s per core (README, "Device simulator"), far below
the loads the pipeline is pushed to, so the frames are rendered once (``device_sim`` batch
render, fixed seeds, no transport faults) and replayed on an absolute schedule. Each offered
sample gets a run-unique ``sample_id`` by rewriting the last 8 digits of the template's id
(``{device}-{boot}-{seq:08d}``, same length, so a byte ``replace`` on the encoded payload is
enough); everything else in the frame stays as rendered.

Publishers and the result tap run in their own processes (``spawn``), as the devices and the
line gate would: in the orchestrating process they would share its GIL and measure it. They use
SQAL's own MQTT client (:class:`sqal.link.Link`), not paho: on this 2-core box the load generator
shares the cores with what it measures, and through paho it took 0.37-0.43 ms of CPU a sample
(publishers 0.29-0.34, tap 0.07-0.09) against 0.8 ms for analyzer, ingest, Mosquitto and
PostgreSQL together: a third of the box at 2,000 samples/s. In a plant the devices publish from
their own chips. The step table prints the generator's share (``gen``) beside the services'.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from paho.mqtt.reasoncodes import ReasonCode

from device_sim.device import SimDevice
from device_sim.fleet import config_payload
from device_sim.trays import DEFECTS
from sqal.link import RECEIVE_MAXIMUM, Link
from sqal.mqtt import client_id
from sqal.settings import parse_broker_url
from sqal.wire import Kind, subscription

START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
"""Frames are stamped an hour ago: inside the services' ts window (sqal.wire.TsWindow)."""
SID_DIGITS = 8
MAX_INFLIGHT = 1000
"""Unacknowledged publishes per publisher (at most the broker's Receive Maximum)."""
ACK_WAIT_S = 60.0


@dataclass(frozen=True)
class Template:
    """One rendered sample: both frames, encoded, and the id to rewrite."""

    line: str
    device: str
    sid: bytes
    tof_topic: str
    tof: bytes
    spectral_topic: str
    spectral: bytes
    tof_ts: bytes
    """The ToF frame's ``"ts":"…"`` field as rendered; the spectral one's likewise."""
    spectral_ts: bytes


@dataclass(frozen=True)
class Pool:
    """Rendered samples in publish order (devices interleaved) and each device's retained config."""

    templates: list[Template]
    configs: list[tuple[str, bytes]]
    span: timedelta = timedelta(0)
    """How long the rendered samples last on a device's clock: each replay of the pool is
    stamped this much later than the one before, as a line's next trays would be."""

    @property
    def lines(self) -> list[str]:
        return sorted({t.line for t in self.templates})


def render_pool(
    lines: int, devices_per_line: int, per_device: int, seed: int = 7,
    profile: str = "foie_gras_lobe_400g",
) -> Pool:  # fmt: skip
    """Render ``per_device`` samples for each of ``lines × devices_per_line`` simulated nodes."""
    by_device: list[list[Template]] = []
    configs: list[tuple[str, bytes]] = []
    rates = dict.fromkeys(DEFECTS, 0.03)
    index = 0
    for li in range(1, lines + 1):
        for di in range(1, devices_per_line + 1):
            line, dev_id = f"L{li}", f"L{li}-node{di:02d}"
            dev = SimDevice(line, dev_id, index, seed, profile, 0.1, START, rates=rates)
            index += 1
            configs.append((dev.topic(Kind.CONFIG), config_payload(dev, START)))
            out, _ = dev.produce(per_device)
            tof = [m for m in out if m.topic.endswith("/tof")]
            spec = [m for m in out if m.topic.endswith("/spectral")]
            mine = []
            for t, s in zip(tof, spec, strict=True):
                start = t.payload.index(b'"sample_id":"') + len(b'"sample_id":"')
                sid = t.payload[start : t.payload.index(b'"', start)]
                mine.append(
                    Template(
                        line,
                        dev_id,
                        sid,
                        t.topic,
                        t.payload,
                        s.topic,
                        s.payload,
                        _ts_field(t.payload),
                        _ts_field(s.payload),
                    )
                )
            by_device.append(mine)
    order = [t for group in zip(*by_device, strict=True) for t in group]
    stamps = [_ts_of(f) for t in order for f in (t.tof_ts, t.spectral_ts)]
    return Pool(order, configs, max(stamps) - min(stamps) + timedelta(seconds=1))


def _ts_field(payload: bytes) -> bytes:
    start = payload.index(b'"ts":"')
    return payload[start : payload.index(b'"', start + 6) + 1]


def _ts_of(field: bytes) -> datetime:
    return datetime.fromisoformat(field[6:-1].decode().replace("Z", "+00:00"))


def restamp(payload: bytes, field: bytes, later: timedelta) -> bytes:
    """``payload`` with its ``ts`` moved ``later``.

    Replaying the pool with the rendered stamps put thousands of rows on the same few hundred
    instants: ingest's key probe (one index probe per key within the batch's ts range) then
    matched every earlier replay, and PostgreSQL's CPU per sample grew with the table (1.3 ms
    at 1,000 samples/s after 8 s). A line's clock moves on; so do the replays.
    """
    if not later:
        return payload
    ts = (_ts_of(field) + later).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    return payload.replace(field, b'"ts":"' + ts + b'"', 1)


def sample_id(t: Template, uid: int) -> bytes:
    """The template's id with its sequence digits replaced by ``uid`` (run-unique)."""
    return t.sid[:-SID_DIGITS] + b"%08d" % uid


def uid_of(sid: bytes | str) -> int:
    return int(sid[-SID_DIGITS:])


# --- the generator's MQTT client -----------------------------------------------------------
def connect_link(
    url: str, name: str, prepare: Callable[[Link], None], subscribe: str | None = None
) -> Link:
    """A clean-session :class:`Link` to ``url``, connected. ``prepare`` sets its callbacks
    before it connects; ``subscribe``: a filter subscribed to (QoS 1) at every CONNACK."""
    link = Link(
        parse_broker_url(url), client_id(name), keepalive_s=30, session_expiry_s=0,
        receive_maximum=MAX_INFLIGHT, clean_start=True,
    )  # fmt: skip
    up = threading.Event()
    refused: list[str] = []

    def on_connect(_present: bool, rc: ReasonCode, props: dict[int, object]) -> None:
        if rc.is_failure:
            refused.append(str(rc))
        else:
            limit = props.get(RECEIVE_MAXIMUM)
            link.max_inflight = min(MAX_INFLIGHT, limit if isinstance(limit, int) else 65535)
            if subscribe is not None:
                link.subscribe([(subscribe, 1, 0)])
        up.set()

    prepare(link)
    link.on_connect = on_connect
    link.connect()
    link.start()
    if not up.wait(10.0) or refused:
        link.close()
        raise RuntimeError(f"{name}: broker refused or did not answer {refused}")
    return link


# --- publisher process -------------------------------------------------------------------
def publish_step(
    link: Link, acked: threading.Semaphore, pool: Pool, rate: float, n: int,
    uid_base: int, t0_wall: float, index: int, n_pub: int, counter: Any,
) -> dict[str, Any]:  # fmt: skip
    """Publish samples ``index, index + n_pub, …`` of ``n`` at ``t0 + k / rate`` (absolute).

    Returns uids, the wall time right after each sample's frames were handed to the client, and
    the lateness against the schedule (ms). Waits for every PUBACK before returning.
    """
    ks = range(index, n, n_pub)
    uids = np.empty(len(ks), np.int64)
    t_pub = np.empty(len(ks), np.float64)
    late_ms = np.empty(len(ks), np.float32)
    t0 = time.monotonic() + (t0_wall - time.time())
    templates = pool.templates
    for i, k in enumerate(ks):
        due = t0 + k / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
            now = time.monotonic()
        t = templates[(uid_base + k) % len(templates)]
        new = sample_id(t, uid_base + k)
        later = pool.span * ((uid_base + k) // len(templates))
        tof = restamp(t.tof, t.tof_ts, later).replace(t.sid, new, 1)
        spectral = restamp(t.spectral, t.spectral_ts, later).replace(t.sid, new, 1)
        with link.corked():  # both frames in one write
            link.publish(t.tof_topic, tof)
            link.publish(t.spectral_topic, spectral)
        t_pub[i] = time.time()
        uids[i] = uid_base + k
        late_ms[i] = (now - due) * 1000.0
        counter.value += 2
    deadline = time.monotonic() + ACK_WAIT_S
    for _ in range(2 * len(ks)):
        if not acked.acquire(timeout=max(0.001, deadline - time.monotonic())):
            raise RuntimeError("publisher: broker did not acknowledge every frame")
    return {"uids": uids, "t_pub": t_pub, "late_ms": late_ms}


def _close(link: Link | None) -> None:
    if link is not None:
        link.close()


def _publisher_main(conn: Connection, pool: Pool, index: int, n_pub: int, counter: Any) -> None:
    link: Link | None = None
    acked = threading.Semaphore(0)
    refused: list[int] = []

    def on_puback(_mid: int, reason: int) -> None:
        if reason >= 0x80:  # the broker refused it: the step fails, never counts it published
            refused.append(reason)
        acked.release()

    def prepare(lk: Link) -> None:
        lk.on_puback = on_puback

    while True:
        cmd, args = conn.recv()
        if cmd == "connect":
            _close(link)
            link = connect_link(args, f"bench-pub{index}", prepare)
            conn.send("ok")
        elif cmd == "step":
            assert link is not None
            rate, n, uid_base, t0_wall = args
            out = publish_step(link, acked, pool, rate, n, uid_base, t0_wall, index, n_pub, counter)
            if refused:
                raise RuntimeError(f"publisher: the broker refused {len(refused)} frames")
            conn.send(out)
        else:
            _close(link)
            conn.send("bye")
            return


# --- result tap process ------------------------------------------------------------------
def _tap_main(conn: Connection) -> None:
    """Subscribe to every result; remember the first arrival (wall time) per sample uid."""
    got: dict[int, float] = {}
    lock = threading.Lock()
    key = b'"sample_id":"'
    link: Link | None = None
    subscribed = threading.Event()

    def on_message(_topic: str, p: bytes, mid: int, qos: int, _retain: bool) -> None:
        now = time.time()
        start = p.find(key) + len(key)
        uid = uid_of(p[start : p.find(b'"', start)])
        with lock:
            got.setdefault(uid, now)
        if qos and link is not None:
            link.ack((mid,), link.connection)

    def prepare(lk: Link) -> None:
        lk.on_suback = lambda *_a: subscribed.set()
        lk.on_message = on_message

    while True:
        cmd, args = conn.recv()
        if cmd == "connect":
            _close(link)
            subscribed.clear()
            link = connect_link(args, "bench-tap", prepare, subscription(Kind.RESULT))
            link.on_message = on_message
            if not subscribed.wait(10.0):
                raise RuntimeError("tap: no SUBACK")
            conn.send("ok")
        elif cmd == "collect":
            lo, hi = args
            with lock:
                mine = {u: t for u, t in got.items() if lo <= u < hi}
                for u in mine:
                    del got[u]
            conn.send((np.fromiter(mine.keys(), np.int64), np.fromiter(mine.values(), np.float64)))
        else:
            _close(link)
            conn.send("bye")
            return


class Load:
    """``n_pub`` publisher processes and one result tap, driven step by step."""

    def __init__(self, pool: Pool, n_pub: int) -> None:
        ctx = mp.get_context("spawn")
        self.counters = [ctx.Value("q", 0, lock=False) for _ in range(n_pub)]
        self._pubs: list[tuple[Any, Connection]] = []
        for i in range(n_pub):
            here, there = ctx.Pipe()
            p = ctx.Process(target=_publisher_main, args=(there, pool, i, n_pub, self.counters[i]))
            p.start()
            self._pubs.append((p, here))
        here, there = ctx.Pipe()
        self._tap = ctx.Process(target=_tap_main, args=(there,))
        self._tap.start()
        self._tap_conn = here

    @property
    def pids(self) -> dict[str, list[int]]:
        return {"publishers": [p.pid for p, _ in self._pubs], "tap": [self._tap.pid]}

    def published(self) -> int:
        """Frames handed to the client so far, all publishers."""
        return sum(int(c.value) for c in self.counters)

    def connect(self, broker_url: str) -> None:
        for _, c in [*self._pubs, (None, self._tap_conn)]:
            c.send(("connect", broker_url))
        for _, c in [*self._pubs, (None, self._tap_conn)]:
            c.recv()

    def run_step(self, rate: float, n: int, uid_base: int, lead_s: float = 0.3) -> dict[str, Any]:
        """Publish ``n`` samples at ``rate``/s starting ``lead_s`` from now; merged timings."""
        t0 = time.time() + lead_s
        for _, c in self._pubs:
            c.send(("step", (rate, n, uid_base, t0)))
        parts = [c.recv() for _, c in self._pubs]
        out = {k: np.concatenate([p[k] for p in parts]) for k in ("uids", "t_pub", "late_ms")}
        order = np.argsort(out["uids"])
        return {"t0": t0, **{k: v[order] for k, v in out.items()}}

    def collect(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(uids, wall arrival times) of results seen by the tap for uids in [lo, hi)."""
        self._tap_conn.send(("collect", (lo, hi)))
        uids, times = self._tap_conn.recv()
        return uids, times

    def close(self) -> None:
        for proc, c in [*self._pubs, (self._tap, self._tap_conn)]:
            try:
                c.send(("stop", None))
                c.recv()
            except (EOFError, OSError):
                pass
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
