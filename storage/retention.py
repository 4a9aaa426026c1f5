"""``sqal db retention``: drop data older than an age from every time-series table.

Dropping whole chunks is the cheap way to delete old time-series data: no row-by-row DELETE,
no vacuum (TimescaleDB docs, "Data retention"); ``drop_chunks`` drops the chunks that end
before the cutoff, so up to one chunk interval of older rows stays. Three tables lose rows by
DELETE instead:

- ``dead_letters``, a plain table, by ``received_at``;
- ``device_config``: a configuration is deleted only once a newer one of the same device
  replaced it before the cutoff and before the oldest result still stored, so every result
  kept can still be traced to the calibration in force (migration 0005) and every device keeps
  its current configuration however old;
- ``device_last_status`` (migration 0010): a device's row goes with its last ``device_status``
  row, that is when the chunk holding it is dropped.

The roll-ups are kept unless named: they are small and what the dashboards show for long
ranges. ``dry_run`` computes the same answer (``show_chunks`` lists exactly the chunks
``drop_chunks`` drops) and changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from sqal.errors import ConfigError, StorageError
from storage.connection import storage_error

RETENTION_TABLES = (
    "tof_frames",
    "spectral_frames",
    "weights",
    "results",
    "device_status",
    "device_config",
    "broker_stats",
    "dead_letters",
)
"""Tables ``sqal db retention`` prunes when no ``--table`` is given: every hypertable but the
roll-ups, and the dead letters. ``results`` comes before ``device_config``, whose pruning looks
at the oldest result left. ``tests/test_storage_schema.py`` fails when a migration adds a
hypertable that is in neither this list nor :data:`KEPT_UNLESS_NAMED`."""

KEPT_UNLESS_NAMED = ("results_1m", "defects_1m")
"""The per-minute roll-ups: pruned only when ``--table`` names them."""

ALL_TABLES = (*RETENTION_TABLES, *KEPT_UNLESS_NAMED)

ROW_TABLES = ("dead_letters", "device_config", "device_last_status")
"""Tables that lose rows by DELETE; the others lose chunks."""

_AGE = re.compile(r"\A(?P<n>\d+)(?P<unit>[smhdw])\Z")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_AGE_DAYS = 36500
"""The longest age accepted: 100 years. Longer ones reach before year 1 in datetime arithmetic
(``now - age``, OverflowError) and mean nothing for a production line's data anyway."""


def parse_age(text: str, flag: str = "--older-than") -> timedelta:
    """Parse ``30d``, ``12h``, ``2w``, ``90m``, ``45s``, at most :data:`MAX_AGE_DAYS`.

    Raises:
        ConfigError: not a positive count followed by one of s, m, h, d, w, or longer than
            100 years.
    """
    m = _AGE.match(text.strip())
    if m is None or int(m["n"]) == 0:
        raise ConfigError(f"{flag} {text!r}: give a positive age like 30d, 12h or 2w")
    seconds = int(m["n"]) * _UNIT_S[m["unit"]]
    if seconds > MAX_AGE_DAYS * 86400:
        raise ConfigError(
            f"{flag} {text!r} is too long: give an age of at most 100 years ({MAX_AGE_DAYS}d)"
        )
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class Pruned:
    """What retention removed, or would remove in a dry run, from one table.

    Attributes:
        chunks: chunks dropped (0 for the :data:`ROW_TABLES`).
        rows: rows deleted (0 for the tables that lose chunks).
        until: the data removed lies before this instant: the end of the newest chunk dropped,
            or the cutoff of a DELETE; ``None`` when nothing is removed.
    """

    table: str
    chunks: int
    rows: int
    until: datetime | None = None


_CHUNKS = """
SELECT count(*), max(c.range_end)
FROM show_chunks(%(table)s::regclass, older_than => %(age)s::interval) AS s(chunk)
JOIN timescaledb_information.chunks c
  ON (quote_ident(c.chunk_schema) || '.' || quote_ident(c.chunk_name))::regclass = s.chunk
"""
"""The chunks ``drop_chunks`` would drop with the same arguments, and the newest one's end."""

_OLD_DEAD = "FROM dead_letters WHERE received_at < now() - %(age)s"
_OLD_CONFIG = """FROM device_config c
WHERE c.ts < now() - %(age)s AND EXISTS (
    SELECT FROM device_config n
    WHERE n.line_id = c.line_id AND n.device_id = c.device_id AND n.ts > c.ts
      AND n.ts <= least(now() - %(age)s,
                        (SELECT min(ts) FROM results WHERE ts >= %(results_until)s)))"""
"""Configurations replaced before the cutoff and before the oldest result kept: the results
before ``results_until`` are those the same run drops (gone already, or going in a dry run)."""
_GONE_STATUS = "FROM device_last_status WHERE ts < %(until)s"


def drop_older_than(
    conn: psycopg.Connection,
    age: timedelta,
    tables: tuple[str, ...] = RETENTION_TABLES,
    *,
    dry_run: bool = False,
) -> list[Pruned]:
    """Drop data older than ``age`` from ``tables``, each table in its own transaction.

    Args:
        conn: an autocommit connection as a role that may drop chunks (the tables' owner).
        dry_run: count what would go and change nothing.

    Returns:
        one entry per table in ``tables``, and one for ``device_last_status`` after
        ``device_status``.

    Raises:
        ConfigError: a table is not one SQAL prunes.
        StorageError: the server refused (a login without the owner's rights: dropping chunks
            needs the table's owner), naming the table; tables before it stay pruned.
    """
    unknown = [t for t in tables if t not in ALL_TABLES]
    if unknown:
        raise ConfigError(f"--table {unknown[0]!r}: choose from {', '.join(ALL_TABLES)}")
    out: list[Pruned] = []
    for name in tables:
        results_until = next((p.until for p in out if p.table == "results" and p.until), None)
        try:
            with conn.transaction():
                out += _prune(conn, name, age, dry_run, results_until)
        except psycopg.Error as exc:
            raise storage_error(exc, f"cannot prune {name}") from None
    return out


def _prune(
    conn: psycopg.Connection,
    name: str,
    age: timedelta,
    dry_run: bool,
    results_until: datetime | None,
) -> list[Pruned]:
    args: dict[str, object] = {
        "table": name,
        "age": age,
        "results_until": results_until or datetime.min.replace(tzinfo=UTC),
    }
    if not dry_run:
        _check_rights(conn, name)
    if name in ROW_TABLES:
        where = _OLD_DEAD if name == "dead_letters" else _OLD_CONFIG
        cutoff = conn.execute("SELECT now() - %s::interval", (age,)).fetchone()
        until = cutoff[0] if cutoff else None
        return [Pruned(name, 0, _delete(conn, where, args, dry_run), until)]
    row = conn.execute(_CHUNKS, args).fetchone()
    n, until = (int(row[0]), row[1]) if row else (0, None)
    if not dry_run and n:
        dropped = conn.execute(
            "SELECT drop_chunks(%(table)s::regclass, older_than => %(age)s::interval)", args
        ).fetchall()
        n = len(dropped)
    if name != "device_status":
        return [Pruned(name, n, 0, until)]
    gone = _delete(conn, _GONE_STATUS, {"until": until}, dry_run) if until is not None else 0
    return [Pruned(name, n, 0, until), Pruned("device_last_status", 0, gone, until)]


_RIGHTS = """
SELECT pg_has_role(current_user, c.relowner, 'USAGE'), has_table_privilege(c.oid, 'DELETE'),
       pg_get_userbyid(c.relowner)
FROM pg_class c WHERE c.oid = %s::regclass
"""


def _check_rights(conn: psycopg.Connection, name: str) -> None:
    """Refuse before looking for old data: a login without the rights would otherwise pass
    silently whenever nothing happens to be old enough (drop_chunks needs the table's owner,
    a row table needs DELETE).

    Raises:
        StorageError: the login may not prune ``name``.
    """
    row = conn.execute(_RIGHTS, (name,)).fetchone()
    if row is None:
        return
    owns, may_delete, owner = row
    if name in ROW_TABLES and not may_delete:
        raise StorageError(f"cannot prune {name}: permission denied to delete its rows")
    if name not in ROW_TABLES and not owns:
        raise StorageError(
            f"cannot prune {name}: permission denied: only its owner ({owner}) may drop chunks"
        )


def _delete(conn: psycopg.Connection, where: str, args: dict[str, object], dry_run: bool) -> int:
    """Delete the rows ``where`` selects (``FROM … WHERE …``), or count them in a dry run."""
    verb = "SELECT count(*)" if dry_run else "DELETE"
    cur = conn.execute(sql.SQL(" ").join([sql.SQL(verb), sql.SQL(where)]), args)
    if dry_run:
        row = cur.fetchone()
        return int(row[0]) if row else 0
    return max(cur.rowcount, 0)
