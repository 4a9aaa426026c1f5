"""Expand a panel's SQL the way Grafana does before it reaches PostgreSQL, without a Grafana.

Two steps, as in Grafana (there is no Grafana server on the test machines):

1. the frontend's template interpolation: ``$__interval`` / ``$__interval_ms`` and dashboard
   variables (``$name``, ``${name}``). A single-valued variable is inserted raw (the SQL quotes
   it: ``'$line'``); a multi-valued one (a list here) becomes ``'a','b'`` — Grafana's PostgreSQL
   data source quotes each value and doubles embedded quotes;
2. the backend's macro engine (pkg/tsdb/grafana-postgresql-datasource/macros.go) with the data
   source's TimescaleDB option on, as provisioned: ``$__timeFilter(col)`` →
   ``col BETWEEN '<from>' AND '<to>'`` (RFC 3339, UTC), ``$__timeFrom()``/``$__timeTo()`` → the
   quoted bound, ``$__timeGroup(col, iv)`` → ``time_bucket('<s>s',col)``,
   ``$__timeGroupAlias`` the same ``AS "time"``. Any other ``$__name(...)`` is an error, as it
   is in Grafana.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_INTERVAL = re.compile(r"\A(\d+)(ms|s|m|h|d|w)\Z")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class MacroError(ValueError):
    """A macro or variable Grafana would reject (or that this helper does not know)."""


def interval_text(seconds: int) -> str:
    """Grafana's ``$__interval`` text for a whole number of seconds: ``1m``, ``30s``, ``2h``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_interval_s(text: str) -> float:
    """Seconds of an interval such as ``5m`` (gtime.ParseInterval's common forms)."""
    m = _INTERVAL.match(text.strip().strip("'\""))
    if m is None:
        raise MacroError(f"cannot parse interval {text!r}")
    return int(m[1]) * _UNIT_S[m[2]]


def _rfc3339(t: datetime) -> str:
    if t.tzinfo is None:
        raise MacroError("time range bounds must be timezone-aware")
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def interpolate(
    sql: str, variables: Mapping[str, str | Sequence[str]], interval_s: int = 60
) -> str:
    """Step 1: built-in interval variables and dashboard variables.

    Raises:
        MacroError: a ``$name`` that is neither a built-in nor in ``variables``.
    """
    builtins = {"__interval": interval_text(interval_s), "__interval_ms": str(interval_s * 1000)}

    def sub(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        end = m.end()
        if name.startswith("__") and name not in builtins:
            if end < len(sql) and sql[end] == "(":
                return m[0]  # a macro: left for step 2
            raise MacroError(f"unknown built-in variable ${name}")
        if name in builtins:
            return builtins[name]
        if name not in variables:
            raise MacroError(f"variable ${name} has no value")
        value = variables[name]
        if isinstance(value, str):
            return value
        return ",".join(_quote(v) for v in value)

    return _VARIABLE.sub(sub, sql)


def expand_macros(sql: str, start: datetime, end: datetime) -> str:
    """Step 2: Grafana's PostgreSQL macros with TimescaleDB on.

    Raises:
        MacroError: an unknown macro or a missing argument.
    """

    def sub(m: re.Match[str]) -> str:
        name, args = m[1], [a.strip() for a in m[2].split(",")]
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
        if name == "__timeFrom":
            return f"'{_rfc3339(start)}'"
        if name == "__timeTo":
            return f"'{_rfc3339(end)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            if len(args) < 2:
                raise MacroError(f"${name} needs a column and an interval")
            bucket = f"time_bucket('{parse_interval_s(args[1]):.3f}s',{args[0]})"
            return bucket + (' AS "time"' if name == "__timeGroupAlias" else "")
        raise MacroError(f"unknown macro ${name}")

    return _MACRO.sub(sub, sql)


def expand(
    sql: str,
    *,
    start: datetime,
    end: datetime,
    variables: Mapping[str, str | Sequence[str]] | None = None,
    interval_s: int = 60,
) -> str:
    """A panel's SQL as PostgreSQL receives it from Grafana for this range and these values."""
    return expand_macros(interpolate(sql, variables or {}, interval_s), start, end)
