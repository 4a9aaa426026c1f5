"""``sqal db retention``: drop chunks older than an age (TimescaleDB ``drop_chunks``).

Dropping whole chunks is the cheap way to delete old time-series data: no row-by-row DELETE,
no vacuum (TimescaleDB docs, "Data retention"). ``dead_letters`` is a plain table and loses
its old rows by DELETE instead. The roll-ups are kept unless named: they are small and what
the dashboards show for long ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import sql

from sqal.errors import ConfigError
from storage.connection import storage_error

RETENTION_TABLES = (
    "tof_frames",
    "spectral_frames",
    "weights",
    "results",
    "device_status",
    "dead_letters",
)
"""Tables ``sqal db retention`` prunes when no ``--table`` is given."""

ALL_TABLES = (*RETENTION_TABLES, "results_1m", "defects_1m")

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
    """What retention removed from one table: chunks dropped, or rows deleted (plain table)."""

    table: str
    chunks: int
    rows: int


def drop_older_than(
    conn: psycopg.Connection, age: timedelta, tables: tuple[str, ...] = RETENTION_TABLES
) -> list[Pruned]:
    """Drop data older than ``age`` from ``tables``, each table in its own transaction.

    Raises:
        ConfigError: a table is not one SQAL manages.
        StorageError: the server refused (a login without the owner's rights: dropping chunks
            needs the table's owner), naming the table; tables before it stay pruned.
    """
    unknown = [t for t in tables if t not in ALL_TABLES]
    if unknown:
        raise ConfigError(f"--table {unknown[0]!r}: choose from {', '.join(ALL_TABLES)}")
    out = []
    for name in tables:
        try:
            out.append(_prune(conn, name, age))
        except psycopg.Error as exc:
            raise storage_error(exc, f"cannot prune {name}") from None
    return out


def _prune(conn: psycopg.Connection, name: str, age: timedelta) -> Pruned:
    with conn.transaction():
        if name == "dead_letters":
            cur = conn.execute(
                sql.SQL("DELETE FROM {} WHERE received_at < now() - %s").format(
                    sql.Identifier(name)
                ),
                (age,),
            )
            return Pruned(name, 0, max(cur.rowcount, 0))
        dropped = conn.execute(
            "SELECT drop_chunks(%s::regclass, older_than => %s::interval)", (name, age)
        ).fetchall()
        return Pruned(name, len(dropped), 0)
