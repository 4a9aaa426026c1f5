"""Shift reports on a schedule (issue #19 item 6): shift boundaries in the plant's time.

Shifts start at wall-clock times of the plant's zone: ``--at 06:00 --every 8h`` is 06:00, 14:00
and 22:00 each day whatever the UTC offset, as systemd's ``OnCalendar=*-*-* 06,14,22:00:00
Europe/Paris`` (``deploy/systemd/``). A report covers a shift as worked, from one boundary to the
next, so across a DST change the night shift lasts 7 h (last Sunday of March in Paris) or 9 h
(last Sunday of October), not a fixed 8 h. A boundary that falls in the spring-forward gap
(02:30 does not exist that night) comes at the instant 02:30 would have been under the old
offset (03:30 new time); in the autumn's repeated hour the first 02:30 counts (``fold=0``,
PEP 495). Only :func:`run_schedule` reads the clock and sleeps, and it is given both.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path

from sqal.errors import ConfigError, SqalError

logger = logging.getLogger(__name__)

DAY = timedelta(days=1)
HEARTBEAT_S = 60.0
"""The longest single sleep: the loop wakes this often to touch its heartbeat file and to look
at the clock again (a suspended machine or a clock set forward wakes it at the latest then)."""
_HHMM = re.compile(r"\A([01]\d|2[0-3]):([0-5]\d)\Z")


@dataclass(frozen=True, slots=True)
class Shifts:
    """Shift starts ``at`` and every ``every`` after it, in the zone ``tz``, every day."""

    at: time
    every: timedelta
    tz: tzinfo

    @classmethod
    def parse(cls, at: str, every: timedelta, tz: tzinfo) -> Shifts:
        """``--at HH:MM`` and ``--every``, which must divide a day into whole minutes.

        Raises:
            ConfigError: ``at`` is not HH:MM, or ``every`` does not divide 24 h.
        """
        m = _HHMM.match(at.strip())
        if m is None:
            raise ConfigError(f"--at {at!r}: give a time of day as HH:MM, e.g. 06:00")
        s = int(every.total_seconds())
        if s < 60 or s % 60 or DAY.total_seconds() % s:
            raise ConfigError(
                f"--every {every}: give whole minutes that divide a day (8h, 12h, 24h, 30m)"
            )
        return cls(time(int(m[1]), int(m[2])), every, tz)

    def times_of_day(self) -> list[time]:
        """The boundaries' wall-clock times, from midnight: 06:00/8h → 06:00, 14:00, 22:00."""
        step = int(self.every.total_seconds()) // 60
        first = (self.at.hour * 60 + self.at.minute) % step
        return [time(m // 60, m % 60) for m in range(first, 24 * 60, step)]

    def on(self, day: date) -> list[datetime]:
        """The boundaries of one local day as aware instants, in order (duplicates, two wall
        times that a spring-forward gap maps to one instant, once)."""
        instants = {datetime.combine(day, t, self.tz).astimezone(UTC) for t in self.times_of_day()}
        return sorted(instants)

    def _around(self, t: datetime) -> list[datetime]:
        local = t.astimezone(self.tz).date()
        return [b for d in (-1, 0, 1) for b in self.on(local + d * DAY)]

    def last(self, t: datetime) -> datetime:
        """The latest boundary at or before ``t`` (aware), in UTC."""
        return max(b for b in self._around(t) if b <= t)

    def next(self, t: datetime) -> datetime:
        """The earliest boundary strictly after ``t`` (aware), in UTC."""
        return min(b for b in self._around(t) if b > t)

    def ending(self, boundary: datetime) -> tuple[datetime, datetime]:
        """The shift that ends at ``boundary``: (its start, ``boundary``)."""
        return self.last(boundary - timedelta(microseconds=1)), boundary


def report_name(line: str, lot: str | None, start: datetime, tz: tzinfo) -> str:
    """``LINE[-LOT]-YYYYMMDD-HHMM.pdf``: the line, the lot when one was chosen, and the start
    of the period in the plant's time (the shift's start, so a shift's report has one name)."""
    stamp = start.astimezone(tz).strftime("%Y%m%d-%H%M")
    return "-".join([line, *([lot] if lot else []), stamp]) + ".pdf"


Step = Callable[[datetime, datetime], object]
"""Writes the report of the period (start, end): the command's report."""


def run_once(
    shifts: Shifts, step: Step, now: datetime, grace: timedelta
) -> tuple[datetime, datetime]:
    """Report the latest shift that ended at least ``grace`` before ``now``; its period."""
    start, end = shifts.ending(shifts.last(now - grace))
    step(start, end)
    return start, end


def run_schedule(
    shifts: Shifts,
    step: Step,
    grace: timedelta,
    clock: Callable[[], datetime],
    sleep: Callable[[float], object],
    heartbeat: Path | None = None,
) -> None:
    """Forever: sleep until ``grace`` after the next boundary, then report the shift it ends.

    A report that fails (no trays in the shift, the database away) is logged and the loop goes
    on to the next shift; only a bug escapes.
    """
    while True:
        boundary = shifts.next(clock() - grace)
        due = boundary + grace
        logger.info("next shift report at %s", due.astimezone(shifts.tz).isoformat())
        while (left := (due - clock()).total_seconds()) > 0:
            if heartbeat is not None:
                heartbeat.touch()
            sleep(min(left, HEARTBEAT_S))
        start, end = shifts.ending(boundary)
        try:
            step(start, end)
        except SqalError as exc:  # a shift without trays must not stop the next shifts' reports
            logger.warning(
                "shift report %s – %s not written: %s",
                start.isoformat(),
                end.isoformat(),
                exc,
                extra={"since": start.isoformat(), "until": end.isoformat()},
            )
