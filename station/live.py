"""The live state of the lines (pure): last trays, rolling rates, devices, alarms.

Fed by :mod:`station.feed` from MQTT (results, device status, dead letters) and read by the
pages. No I/O, no clock, no lock: every method takes ``now``, and the feed serialises the calls.
What changed comes back as :class:`Event` values the feed pushes to the browsers.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

TRAYS_KEPT = 50
"""Trays a line view lists (and the feed keeps per line)."""
MIN_TRAYS_FOR_RATE_ALARM = 20
"""A reject-rate alarm needs this many trays in the window: 2 rejects in 5 trays is no trend."""


class AlarmKind(StrEnum):
    DEVICE_OFFLINE = "device_offline"
    REJECT_RATE = "reject_rate"
    DEAD_LETTERS = "dead_letters"


@dataclass(frozen=True, slots=True)
class Tray:
    """One result as a line view lists it."""

    line: str
    device: str
    sample_id: str
    ts: datetime
    grade: str
    decision: str | None
    defects: tuple[str, ...]
    profile: str
    mass_g: float | None = None

    def doc(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "sample_id": self.sample_id,
            "ts": self.ts.isoformat(),
            "grade": self.grade,
            "decision": self.decision,
            "defects": list(self.defects),
            "mass_g": None if self.mass_g is None else round(self.mass_g, 1),
        }


@dataclass(slots=True)
class Alarm:
    """An alarm of one line; open while active or not yet acknowledged.

    Attributes:
        id: its ``station_alarms`` row, ``None`` until the feed stored it.
        subject: the device id, or ``""`` for a line-wide alarm.
        count: events behind it (dead letters since it was raised).
    """

    line: str
    kind: AlarmKind
    subject: str
    raised_at: datetime
    detail: str
    id: int | None = None
    cleared_at: datetime | None = None
    acked_by: str | None = None
    acked_at: datetime | None = None
    count: int = 1
    dirty: bool = True
    """Changed since the feed last stored it."""
    facts: dict[str, Any] = field(default_factory=dict)
    """The figures of ``detail``, for the page to word in its language (``alarm.detail.*`` of
    :mod:`station.words`); empty for an alarm restored from the database (``detail`` then)."""

    @property
    def key(self) -> tuple[str, AlarmKind, str]:
        return (self.line, self.kind, self.subject)

    @property
    def open(self) -> bool:
        return self.cleared_at is None or self.acked_at is None

    def doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "subject": self.subject,
            "raised_at": self.raised_at.isoformat(),
            "detail": self.detail,
            "facts": self.facts,
            "active": self.cleared_at is None,
            "acked_by": self.acked_by,
        }


@dataclass(frozen=True, slots=True)
class Device:
    state: str | None
    """``online``, ``offline``, or ``None`` before any status came."""
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class Rates:
    n: int
    reject: float | None
    hold: float | None

    def doc(self) -> dict[str, Any]:
        return {"n": self.n, "reject": self.reject, "hold": self.hold}


@dataclass(frozen=True, slots=True)
class Event:
    """What one browser of a line is told: ``kind`` is the SSE event name."""

    line: str
    kind: str
    data: dict[str, Any]


@dataclass
class LineState:
    trays: deque[Tray] = field(default_factory=lambda: deque(maxlen=TRAYS_KEPT))
    window: deque[tuple[datetime, str | None]] = field(default_factory=deque)
    counts: Counter[str | None] = field(default_factory=Counter)
    devices: dict[str, Device] = field(default_factory=dict)
    last_result_at: datetime | None = None
    reject_rate_max: float | None = None


class Board:
    """Every line's live state and the open alarms.

    Args:
        window: how far back the rolling reject and HOLD rates look.
    """

    def __init__(self, window: timedelta = timedelta(minutes=10)) -> None:
        self.window = window
        self.lines: dict[str, LineState] = {}
        self.alarms: list[Alarm] = []
        """Open alarms, oldest first (a key may have a cleared, unacknowledged one and an
        active one)."""
        self.closed: list[Alarm] = []
        """Alarms closed since the feed last stored them (acknowledged and cleared)."""

    def line(self, line: str) -> LineState:
        return self.lines.setdefault(line, LineState())

    # --- inputs ------------------------------------------------------------------------
    def add_result(
        self, tray: Tray, now: datetime, reject_rate_max: float | None, live: bool = True
    ) -> list[Event]:
        """A new result: the tray listed, the rates moved, a reject-rate alarm raised or
        cleared. ``live=False`` for history loaded at start (no event, no alarm)."""
        st = self.line(tray.line)
        st.trays.appendleft(tray)
        st.reject_rate_max = reject_rate_max
        st.last_result_at = now if live else max(st.last_result_at or now, now)
        dev = st.devices.get(tray.device)
        st.devices[tray.device] = Device(dev.state if dev else None, now)
        st.window.append((now, tray.decision))
        st.counts[tray.decision] += 1
        self._prune(st, now)
        if not live:
            return []
        events = [Event(tray.line, "tray", tray.doc())]
        events += self._rate_alarm(tray.line, st, now)
        events.append(self._summary(tray.line, now))
        return events

    def set_status(self, line: str, device: str, state: str, now: datetime) -> list[Event]:
        """A device's status: online or offline (its last will), which raises or clears its
        offline alarm."""
        st = self.line(line)
        st.devices[device] = Device(state, now)
        if state == "offline":
            changed = self._raise(line, AlarmKind.DEVICE_OFFLINE, device, now,
                                  f"{device} went offline", {"device": device})  # fmt: skip
        else:
            changed = self._clear(line, AlarmKind.DEVICE_OFFLINE, device, now)
        return [*self._alarm_events(line, changed), self._summary(line, now)]

    def dead_letter(self, line: str, reason: str, now: datetime) -> list[Event]:
        """A dead letter of ``line``: raises its dead-letter alarm or counts one more."""
        alarm = self._active(line, AlarmKind.DEAD_LETTERS, "")
        if alarm is not None:
            alarm.count += 1
            alarm.detail = f"{alarm.count} unusable messages (last: {reason})"
            alarm.facts = {"count": alarm.count, "reason": reason}
            alarm.dirty = True
            return self._alarm_events(line, [alarm])
        new = self._raise(line, AlarmKind.DEAD_LETTERS, "", now, f"1 unusable message ({reason})",
                          {"count": 1, "reason": reason})  # fmt: skip
        return self._alarm_events(line, new)

    def ack(self, alarm_id: int, user: str, now: datetime) -> Alarm | None:
        """Record an acknowledgement; the alarm, or ``None`` when no open alarm has that id.

        A dead-letter alarm is an event, not a condition: acknowledging it also clears it.
        """
        for alarm in self.alarms:
            if alarm.id == alarm_id and alarm.acked_at is None:
                alarm.acked_by, alarm.acked_at, alarm.dirty = user, now, True
                if alarm.kind is AlarmKind.DEAD_LETTERS and alarm.cleared_at is None:
                    alarm.cleared_at = now
                if not alarm.open:
                    self._close(alarm)
                return alarm
        return None

    def restore(self, alarms: Iterable[Alarm]) -> None:
        """Alarms stored by an earlier run, still open."""
        self.alarms.extend(replace(a, dirty=False) for a in alarms)

    # --- views ---------------------------------------------------------------------------
    def rates(self, line: str, now: datetime) -> Rates:
        st = self.line(line)
        self._prune(st, now)
        n = len(st.window)
        if n == 0:
            return Rates(0, None, None)
        return Rates(n, st.counts["REJECT"] / n, st.counts["HOLD"] / n)

    def snapshot(self, line: str, now: datetime) -> dict[str, Any]:
        """Everything a line view shows, as JSON-ready data."""
        st = self.line(line)
        return {
            "line": line,
            "trays": [t.doc() for t in st.trays],
            **self._summary(line, now).data,
        }

    def line_alarms(self, line: str) -> list[Alarm]:
        return [a for a in self.alarms if a.line == line]

    # --- internals -------------------------------------------------------------------------
    def _prune(self, st: LineState, now: datetime) -> None:
        while st.window and st.window[0][0] < now - self.window:
            _, decision = st.window.popleft()
            st.counts[decision] -= 1

    def _summary(self, line: str, now: datetime) -> Event:
        st = self.line(line)
        return Event(line, "summary", {
            "rates": self.rates(line, now).doc(),
            "window_min": round(self.window.total_seconds() / 60),
            "reject_rate_max": st.reject_rate_max,
            "last_result_at": st.last_result_at.isoformat() if st.last_result_at else None,
            "devices": [
                {"device": d, "state": dev.state, "last_seen": dev.last_seen.isoformat()}
                for d, dev in sorted(st.devices.items())
            ],
            "alarms": [a.doc() for a in self.line_alarms(line)],
        })  # fmt: skip

    def _rate_alarm(self, line: str, st: LineState, now: datetime) -> list[Event]:
        limit = st.reject_rate_max
        rates = self.rates(line, now)
        if limit is None or rates.reject is None:
            return []
        if rates.n >= MIN_TRAYS_FOR_RATE_ALARM and rates.reject > limit:
            detail = (f"{rates.reject:.1%} of the last {rates.n} trays rejected "
                      f"(limit {limit:.1%})")  # fmt: skip
            facts = {"rate": rates.reject, "n": rates.n, "limit": limit}
            return self._alarm_events(
                line, self._raise(line, AlarmKind.REJECT_RATE, "", now, detail, facts)
            )
        return self._alarm_events(line, self._clear(line, AlarmKind.REJECT_RATE, "", now))

    def _raise(
        self,
        line: str,
        kind: AlarmKind,
        subject: str,
        now: datetime,
        detail: str,
        facts: dict[str, Any],
    ) -> list[Alarm]:
        if self._active(line, kind, subject) is not None:
            return []  # still active: nothing new
        alarm = Alarm(line, kind, subject, now, detail, facts=facts)
        self.alarms.append(alarm)
        return [alarm]

    def _clear(self, line: str, kind: AlarmKind, subject: str, now: datetime) -> list[Alarm]:
        alarm = self._active(line, kind, subject)
        if alarm is None:
            return []
        alarm.cleared_at, alarm.dirty = now, True
        if not alarm.open:
            self._close(alarm)
        return [alarm]

    def _active(self, line: str, kind: AlarmKind, subject: str) -> Alarm | None:
        """The alarm of this key still counting: not cleared (a condition), or not yet
        acknowledged (dead letters, an event: acknowledging clears it)."""
        for a in self.alarms:
            if a.key == (line, kind, subject) and a.cleared_at is None:
                return a
        return None

    def _close(self, alarm: Alarm) -> None:
        self.alarms = [a for a in self.alarms if a is not alarm]
        self.closed.append(alarm)

    def _alarm_events(self, line: str, changed: list[Alarm]) -> list[Event]:
        return [Event(line, "alarm", a.doc()) for a in changed]
