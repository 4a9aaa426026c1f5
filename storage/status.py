"""``sqal db status``: schema version, TimescaleDB edition, chunks and rows of every table.

Every table in the schema is listed, found in the catalogue rather than in a list kept here,
so a table a migration adds shows up without touching this module.

Row counts. TimescaleDB's ``approximate_row_count`` sums the chunks' ``reltuples``, which only
ANALYZE (or autovacuum's) updates: a freshly written table, below autovacuum's threshold of 50
rows plus 10 % (PostgreSQL docs, "The Autovacuum Daemon"), reads 0 however many rows it holds.
So the rows are counted exactly up to :data:`EXACT_UP_TO` (reading at most that many rows, so
the cost is bounded whatever the table's size) and estimated only beyond.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from storage.edition import Edition, detect_edition
from storage.migrate import applied_versions, load_migrations

EXACT_UP_TO = 100_000
"""Tables with fewer rows are counted exactly; reading this many rows takes tens of ms."""

_TABLES = """
SELECT c.oid, c.relname, h.num_chunks
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN timescaledb_information.hypertables h
  ON h.hypertable_schema = n.nspname AND h.hypertable_name = c.relname
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
ORDER BY h.num_chunks IS NULL, c.relname
"""
"""Every table of the schema, hypertables first; chunks live in ``_timescaledb_internal``."""


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


def db_status(
    conn: psycopg.Connection, exact: bool = False, exact_up_to: int = EXACT_UP_TO
) -> DbStatus:
    """Read the status.

    Args:
        exact: count every table's rows with ``count(*)`` (slow on big tables).
        exact_up_to: otherwise count exactly the tables with fewer rows than this, and
            estimate the rest (``approximate_row_count``, never below ``exact_up_to``).
    """
    applied = applied_versions(conn)
    shipped = [m.version for m in load_migrations()]
    edition: Edition = detect_edition(conn)
    row = conn.execute("SHOW server_version").fetchone()
    server = str(row[0]) if row else "unknown"
    tables = [
        _table_status(conn, oid, str(name), None if n is None else int(n), exact, exact_up_to)
        for oid, name, n in conn.execute(_TABLES).fetchall()
    ]
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


def _table_status(
    conn: psycopg.Connection, oid: int, name: str, chunks: int | None, exact: bool, up_to: int
) -> TableStatus:
    table = sql.Identifier(name)
    if exact:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        return TableStatus(name, chunks, int(row[0]) if row else 0, True)
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM (SELECT FROM {} LIMIT %s) AS head").format(table), (up_to,)
    ).fetchone()
    counted = int(row[0]) if row else 0
    if counted < up_to:
        return TableStatus(name, chunks, counted, True)
    # approximate_row_count works on plain tables too (reltuples), and on hypertables sums
    # the chunks'.
    est = conn.execute("SELECT approximate_row_count(%s::oid::regclass)", (oid,)).fetchone()
    return TableStatus(name, chunks, max(int(est[0]) if est and est[0] else 0, up_to), False)
