"""The plant's time zone: the times the station's pages show (``sqal station --tz``).

Times are stored and sent in UTC; pages show them in the plant's zone, whatever the zone of the
browser that opens them (a supervisor's laptop in another country, a line PC left in UTC). The
live script formats the stream's times itself, so it needs the zone's IANA name (``Intl``'s
``timeZone``): without ``--tz`` the machine's zone is named from ``TZ`` or ``/etc/localtime``
(a link into the zone database on Debian and most systems), else its current offset is used.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LOCALTIME = Path("/etc/localtime")


def local_zone_name() -> str | None:
    """This machine's zone as an IANA name (``Europe/Paris``), or ``None`` if it cannot tell."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = str(LOCALTIME.resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
            return name
    return None


def station_zone(name: str | None) -> tuple[tzinfo, str | None]:
    """The plant's zone and its IANA name: ``name`` (``--tz``), else this machine's.

    Raises:
        ConfigError: ``name`` is no zone.
    """
    from views.command import plant_zone

    if name is not None:
        zone = plant_zone(name)
        return zone, name
    local = local_zone_name()
    if local is not None:
        return ZoneInfo(local), local
    return plant_zone(None), None


def offset_minutes(zone: tzinfo, now: datetime | None = None) -> int:
    """The zone's offset from UTC now, in minutes (the live script's fallback)."""
    off = (now or datetime.now(UTC)).astimezone(zone).utcoffset()
    return int(off.total_seconds() // 60) if off is not None else 0


def local_time(t: datetime, zone: tzinfo, with_date: bool = True) -> str:
    """``2026-03-02 06:00:00`` (or ``06:00:00``) in ``zone``."""
    return t.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")
