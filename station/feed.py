"""The station's live data: MQTT results, device status and dead letters into the board.

One :class:`~sqal.subscriber.Subscriber` (persistent session of a few minutes, so a station
restart misses nothing and a long outage queues nothing stale), whose paho thread only hands
messages off; one worker thread decodes them, updates the :class:`~station.live.Board` under a
lock, acknowledges them and pushes the changes to the browsers (:class:`Hub`). Once a second
the worker stores changed alarms and tells every page whether the broker and the database are
reachable (the page shows "stale" otherwise).

Neither the broker nor the database has to be up when the station starts: it keeps trying,
and the pages say what is missing meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqal.errors import BrokerError, ConfigError, PayloadError, StorageError
from sqal.metrics import Registry
from sqal.profiles import load_profile
from sqal.subscriber import Delivery, Handoff, Subscriber
from sqal.wire import (
    DEAD_LETTERS,
    DeadLetter,
    DeviceStatus,
    Kind,
    Result,
    decode,
    decode_as,
    is_dead_letter_topic,
    line_and_device,
    parse_topic,
    subscription,
)
from station.live import Alarm, AlarmKind, Board, Event, Tray
from storage import station as db

log = logging.getLogger(__name__)

TICK_S = 1.0
"""How often pages hear whether the broker and the database are reachable."""
HISTORY = timedelta(hours=12)
"""How far back the trays and device states shown at start are read from the database."""
INBOX = 5000


@lru_cache(maxsize=64)
def reject_rate_max(profile: str) -> float | None:
    """A profile's ``alerts.reject_rate_max``; ``None`` for a profile this station lacks."""
    try:
        return load_profile(profile).alerts.reject_rate_max
    except ConfigError:
        return None


def tray_of(line: str, r: Result) -> Tray:
    decision = r.fusion.decision.value if r.fusion.decision is not None else None
    return Tray(line, r.device_id, r.sample_id, r.ts, r.fusion.final_grade.value, decision,
                tuple(d.value for d in r.fusion.defects), r.profile,
                r.tof.mass_g if r.tof is not None else None)  # fmt: skip


class Hub:
    """Pushes events from the worker thread to the browsers' event streams (asyncio queues)."""

    MAX_QUEUED = 2000
    """A browser this far behind is dropped; its EventSource reconnects and gets a snapshot."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: dict[asyncio.Queue[Event | None], str | None] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def clients(self) -> int:
        return len(self._clients)

    def subscribe(self, line: str | None) -> asyncio.Queue[Event | None]:
        """A queue of the events of ``line`` (every line's ticks); in the event loop."""
        q: asyncio.Queue[Event | None] = asyncio.Queue(self.MAX_QUEUED)
        self._clients[q] = line
        return q

    def subscribed(self, q: asyncio.Queue[Event | None]) -> bool:
        return q in self._clients

    def unsubscribe(self, q: asyncio.Queue[Event | None]) -> None:
        self._clients.pop(q, None)

    def publish(self, events: Iterable[Event]) -> None:
        """From any thread."""
        batch = list(events)
        if batch and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
                self._loop.call_soon_threadsafe(self._fanout, batch)

    def close(self) -> None:
        """End every event stream (shutdown), from any thread: each gets ``None`` and returns."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._end_all)

    def _end_all(self) -> None:
        for q in list(self._clients):
            self._clients.pop(q, None)
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)

    def _fanout(self, events: list[Event]) -> None:
        for q, line in list(self._clients.items()):
            for ev in events:
                if ev.line and line is not None and ev.line != line:
                    continue
                try:
                    q.put_nowait(ev)
                except asyncio.QueueFull:
                    # Too far behind: its stream ends when it drains to the end (get() of an
                    # unsubscribed queue sees no more), and the browser reconnects.
                    self._clients.pop(q, None)
                    break


@dataclass(frozen=True)
class FeedConfig:
    broker: str
    dsn: str
    client_id: str
    session_expiry_s: int
    rate_window: timedelta


class Feed:
    """MQTT → board → browsers, and the alarms into the database."""

    def __init__(self, cfg: FeedConfig, hub: Hub, registry: Registry) -> None:
        self.cfg = cfg
        self.hub = hub
        self.board = Board(cfg.rate_window)
        self.lock = threading.Lock()
        self.db_ok = False
        self._inbox: Handoff[Delivery | None] = Handoff(INBOX, "station inbox")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sub = Subscriber(
            cfg.broker,
            cfg.client_id,
            [subscription(Kind.RESULT), subscription(Kind.STATUS), DEAD_LETTERS],
            self._inbox.put,
            on_link=lambda up: self._inbox.signal(None),
            session_expiry_s=cfg.session_expiry_s,
        )
        self.received = registry.counter("received", "Messages received, by kind.", "kind")
        self.unusable = registry.counter(
            "unusable", "Messages the station could not read, by reason.", "reason"
        )
        self.latency = registry.histogram(
            "update_seconds", "From a message's arrival to its event handed to the browsers."
        )
        registry.gauge("broker_connected", "1 while the broker connection is up.",
                       lambda: float(self.sub.connected))  # fmt: skip
        registry.gauge("db_reachable", "1 while the database answered the last attempt.",
                       lambda: float(self.db_ok))  # fmt: skip
        registry.gauge("sse_clients", "Browsers on the live stream.", lambda: hub.clients)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker and the broker connection (which keeps trying in the background)."""
        for name, target in (("station-feed", self._work), ("station-connect", self._connect)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._inbox.close()
        self._inbox.signal(None)
        with contextlib.suppress(Exception):  # shutdown: paho may be mid-connect
            self.sub.stop()
        for t in self._threads:
            t.join(timeout=5)

    def _connect(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self.sub.start(timeout_s=10)
                return
            except BrokerError as exc:
                log.warning("station: %s; trying again in %.0f s", exc, delay)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, 10.0)

    # --- the worker ----------------------------------------------------------------------
    def _work(self) -> None:
        self._load_history()
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                item = self._inbox.get(timeout_s=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                item = None
            if item is not None:
                self._handle(item)
                self.sub.done([item])
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_S
                self._tick()

    def _handle(self, d: Delivery) -> None:
        now = datetime.now(UTC)
        try:
            events = self._apply(d, now)
        except PayloadError as exc:
            self.unusable.inc(label=exc.reason.value)
            log.debug("station: unusable message on %s: %s", d.topic, exc)
            return
        self.hub.publish(events)
        self.latency.observe(time.monotonic() - d.arrived_s)

    def _apply(self, d: Delivery, now: datetime) -> list[Event]:
        if is_dead_letter_topic(d.topic):
            dl = decode_as(DeadLetter, d.payload, d.topic)
            self.received.inc(label="dead_letter")
            where = line_and_device(dl.topic)
            with self.lock:
                return self.board.dead_letter(where[0] if where else "", dl.reason.value, now)
        topic = parse_topic(d.topic)
        obj = decode(topic, d.payload)
        self.received.inc(label=topic.kind.value)
        with self.lock:
            if isinstance(obj, Result):
                limit = reject_rate_max(obj.profile)
                return self.board.add_result(tray_of(topic.line, obj), now, limit)
            if isinstance(obj, DeviceStatus):
                seen = obj.ts if (d.retained and obj.ts is not None) else now
                return self.board.set_status(topic.line, topic.device, obj.state.value, seen)
        return []

    def _load_history(self) -> None:
        """The last trays and device states, so a page opened right after a start is not empty."""
        since = datetime.now(UTC) - HISTORY
        try:
            with db.session(self.cfg.dsn, "station: cannot read history") as conn:
                lines = db.known_lines(conn, since)
                trays = {ln: db.recent_trays(conn, ln, since, 50) for ln in lines}
                status = db.latest_status(conn, since)
                alarms = db.open_alarms(conn)
        except StorageError as exc:
            log.warning("%s; the line views start empty", exc)
            return
        self.db_ok = True
        with self.lock:
            for line, rows in trays.items():
                for r in reversed(rows):
                    tray = Tray(line, r["device_id"], r["sample_id"], r["ts"], r["final_grade"],
                                r["decision"], tuple(r["defects"] or ()), r["profile"],
                                r["tof_mass_g"])  # fmt: skip
                    self.board.add_result(tray, r["received_at"], reject_rate_max(r["profile"]),
                                          live=False)  # fmt: skip
            for s in status:
                self.board.line(s["line_id"])
                self.board.set_status(s["line_id"], s["device_id"], s["state"], s["ts"])
            self.board.restore(
                Alarm(
                    a.line_id,
                    AlarmKind(a.kind),
                    a.subject,
                    a.raised_at,
                    a.detail,
                    a.id,
                    a.cleared_at,
                    a.acked_by,
                    a.acked_at,
                )
                for a in alarms
            )

    def _tick(self) -> None:
        with self.lock:
            dirty = [a for a in self.board.alarms if a.dirty or a.id is None]
            closed, self.board.closed = self.board.closed, []
        stored: list[Alarm] = []
        try:
            with db.session(self.cfg.dsn, "station: cannot store alarms") as conn:
                for a in [*dirty, *closed]:
                    if a.id is None:
                        a.id = db.insert_alarm(conn, a.line, a.kind.value, a.subject,
                                               a.raised_at, a.detail)  # fmt: skip
                        stored.append(a)
                    if a.cleared_at is not None:
                        db.clear_alarm(conn, a.id, a.cleared_at)
                conn.execute("SELECT 1")
            for a in dirty:
                a.dirty = False
            self.db_ok = True
        except StorageError as exc:
            if self.db_ok:
                log.warning("%s; retrying every %g s", exc, TICK_S)
            self.db_ok = False
            with self.lock:
                self.board.closed[:0] = closed
        events = [Event(a.line, "alarm", a.doc()) for a in stored]
        events.append(Event("", "tick", self.health()))
        self.hub.publish(events)

    def health(self) -> dict[str, Any]:
        """Whether the broker and the database are reachable, and each line's seconds since
        its last result (ages, not times: the browser's clock may differ from ours)."""
        now = datetime.now(UTC)
        with self.lock:
            ages = {ln: (now - st.last_result_at).total_seconds()
                    for ln, st in self.board.lines.items() if st.last_result_at}  # fmt: skip
        return {"broker": self.sub.connected, "db": self.db_ok, "ages": ages}

    def ack(self, alarm_id: int, user: str, store: Callable[[int, str, datetime], bool]) -> bool:
        """Acknowledge an alarm: stored first (``store``), then shown; False if not open."""
        now = datetime.now(UTC)
        if not store(alarm_id, user, now):
            return False
        with self.lock:
            alarm = self.board.ack(alarm_id, user, now)
        if alarm is not None:
            self.hub.publish([Event(alarm.line, "alarm", alarm.doc())])
        return True
