"""The ``dead_letters`` table read and marked for ``sqal dead list|show|redrive``.

Ingest writes the rows (its own dead letters, and those other stages publish on
``sqal/v1/_dead/+``, payload whole: docs/contract.md, "Dead letters"). Here they are listed,
read one by one, and marked once republished (migration 0009: ``redriven_at``,
``redrive_count``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from storage.connection import storage_error

_COLUMNS = (
    "id",
    "received_at",
    "stage",
    "topic",
    "line_id",
    "device_id",
    "reason",
    "detail",
    "octet_length(payload)",
    "redriven_at",
    "redrive_count",
)


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """One stored dead letter; ``payload`` is ``None`` where a listing leaves it out."""

    id: int
    received_at: datetime
    stage: str
    topic: str
    line_id: str | None
    device_id: str | None
    reason: str
    detail: str
    payload_bytes: int
    redriven_at: datetime | None
    redrive_count: int
    payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class DeadFilter:
    """Which rows: every given field must match (``None``: any)."""

    line: str | None = None
    reason: str | None = None
    since: datetime | None = None
    ids: tuple[int, ...] | None = None
    not_redriven: bool = False


def _where(f: DeadFilter) -> tuple[sql.Composable, list[object]]:
    parts: list[sql.Composable] = []
    params: list[object] = []
    if f.line is not None:
        parts.append(sql.SQL("line_id = %s"))
        params.append(f.line)
    if f.reason is not None:
        parts.append(sql.SQL("reason = %s"))
        params.append(f.reason)
    if f.since is not None:
        parts.append(sql.SQL("received_at >= %s"))
        params.append(f.since)
    if f.ids is not None:
        parts.append(sql.SQL("id = ANY(%s)"))
        params.append(list(f.ids))
    if f.not_redriven:
        parts.append(sql.SQL("redriven_at IS NULL"))
    if not parts:
        return sql.SQL(""), params
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params


def find_dead(
    conn: psycopg.Connection, f: DeadFilter, limit: int | None, *, payloads: bool = False
) -> list[DeadLetterRow]:
    """Rows matching ``f``, newest first (oldest first with ``payloads``: redrive keeps the
    order the messages first came in), at most ``limit``.

    Raises:
        StorageError: the table is missing (schema before 0009: run ``sqal db migrate``) or
            the login may not read it.
    """
    cols = [sql.SQL(c) for c in _COLUMNS] + ([sql.SQL("payload")] if payloads else [])
    where, params = _where(f)
    order = sql.SQL("ASC" if payloads else "DESC")
    query = sql.SQL("SELECT {} FROM dead_letters{} ORDER BY received_at {}, id {}{}").format(
        sql.SQL(", ").join(cols),
        where,
        order,
        order,
        sql.SQL(" LIMIT %s") if limit is not None else sql.SQL(""),
    )
    if limit is not None:
        params.append(limit)
    try:
        rows = conn.execute(query, params).fetchall()
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot read dead_letters") from None
    return [DeadLetterRow(*r) for r in rows]


def get_dead(conn: psycopg.Connection, dead_id: int) -> DeadLetterRow | None:
    """The row ``dead_id`` with its payload, or ``None``."""
    found = find_dead(conn, DeadFilter(ids=(dead_id,)), 1, payloads=True)
    return found[0] if found else None


def mark_redriven(conn: psycopg.Connection, dead_id: int) -> None:
    """Record that ``dead_id`` was republished now (and once more).

    Raises:
        StorageError: the login may not update the table.
    """
    try:
        with conn.transaction():
            conn.execute(
                "UPDATE dead_letters SET redriven_at = now(), redrive_count = redrive_count + 1"
                " WHERE id = %s",
                (dead_id,),
            )
    except psycopg.Error as exc:
        raise storage_error(exc, f"cannot mark dead letter {dead_id} redriven") from None
