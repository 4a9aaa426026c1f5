"""``sqal db status``: schema version, TimescaleDB edition, chunks and rows per table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from storage.edition import Edition, detect_edition
from storage.migrate import applied_versions, load_migrations

STATUS_TABLES = (
    "tof_frames",
    "spectral_frames",
    "weights",
    "results",
    "device_status",
    "results_1m",
    "defects_1m",
    "dead_letters",
)


@dataclass(frozen=True, slots=True)
class TableStatus:
    """One table: ``chunks`` is ``None`` for a plain table; ``rows`` exact or estimated."""

    name: str
    chunks: int | None
    rows: int
    exact: bool


@dataclass(frozen=True, slots=True)
class DbStatus:
    """What ``sqal db status`` prints.

    Attributes:
        version: newest applied migration (0 before the first ``migrate``).
        latest: newest migration this build ships; ``pending`` lists the rest.
    """

    version: int
    latest: int
    pending: tuple[int, ...]
    postgres: str
    timescaledb: str | None
    edition: str
    community_features: bool
    tables: tuple[TableStatus, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def db_status(conn: psycopg.Connection, exact: bool = False) -> DbStatus:
    """Read the status.

    Args:
        exact: count rows with ``count(*)`` (slow on big tables) instead of TimescaleDB's
            ``approximate_row_count`` (from statistics; 0 before the first ANALYZE).
    """
    applied = applied_versions(conn)
    shipped = [m.version for m in load_migrations()]
    edition: Edition = detect_edition(conn)
    row = conn.execute("SHOW server_version").fetchone()
    server = str(row[0]) if row else "unknown"
    tables = []
    for name in STATUS_TABLES:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        if not exists or not exists[0]:
            continue
        tables.append(_table_status(conn, name, exact))
    return DbStatus(
        version=max(applied, default=0),
        latest=max(shipped, default=0),
        pending=tuple(v for v in shipped if v not in applied),
        postgres=server,
        timescaledb=edition.version,
        edition=edition.name,
        community_features=edition.community,
        tables=tuple(tables),
    )


def _table_status(conn: psycopg.Connection, name: str, exact: bool) -> TableStatus:
    hyper = conn.execute(
        "SELECT num_chunks FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = current_schema() AND hypertable_name = %s",
        (name,),
    ).fetchone()
    chunks = int(hyper[0]) if hyper else None
    if exact or chunks is None:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))
        count = row.fetchone()
        return TableStatus(name, chunks, int(count[0]) if count else 0, True)
    est = conn.execute("SELECT approximate_row_count(%s::regclass)", (name,)).fetchone()
    return TableStatus(name, chunks, max(int(est[0]) if est and est[0] else 0, 0), False)
