"""Which TimescaleDB edition the server runs, and the features only the Community edition has.

The Apache-2 edition (``timescaledb.license = 'apache'``) has hypertables, ``time_bucket`` and
``drop_chunks``; compression and continuous aggregates need the Community (TSL) edition,
``timescaledb.license = 'timescale'`` (TimescaleDB docs, "About licenses"). The schema in
``storage/migrations/`` uses Apache features only; :func:`apply_community_features` adds the
rest when the server has them, idempotently, after the numbered files.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

COMMUNITY_LICENSE = "timescale"

COMPRESS_AFTER = "7 days"
"""Raw frame chunks older than this are compressed (Community only); dashboards read results."""

COMPRESSED_TABLES = ("tof_frames", "spectral_frames", "weights", "device_status", "results")


@dataclass(frozen=True, slots=True)
class Edition:
    """The server's TimescaleDB.

    Attributes:
        version: the extension's installed version, ``None`` when it is not installed.
        license: ``timescaledb.license``: ``apache`` or ``timescale``.
    """

    version: str | None
    license: str

    @property
    def community(self) -> bool:
        """True when compression and continuous aggregates are available."""
        return self.version is not None and self.license == COMMUNITY_LICENSE

    @property
    def name(self) -> str:
        if self.version is None:
            return "none"
        return "community" if self.community else self.license


def detect_edition(conn: psycopg.Connection) -> Edition:
    """Read the extension version and the ``timescaledb.license`` setting."""
    row = conn.execute(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),"
        " current_setting('timescaledb.license', true)"
    ).fetchone()
    version, license_ = (row[0], row[1]) if row else (None, None)
    return Edition(version=version, license=license_ or "apache")


def apply_community_features(conn: psycopg.Connection) -> None:
    """Compression policies on the raw tables and an hourly continuous aggregate of results.

    Only call when :attr:`Edition.community` is true: the Apache edition refuses these
    statements. Each statement is idempotent (``if_not_exists``), so running twice is a no-op.
    """
    for name in COMPRESSED_TABLES:
        table = sql.Identifier(name)
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {} SET (timescaledb.compress,"
                    " timescaledb.compress_segmentby = 'device_id',"
                    " timescaledb.compress_orderby = 'ts DESC')"
                ).format(table)
            )
            conn.execute(
                "SELECT add_compression_policy(%s::regclass, %s::interval, if_not_exists => true)",
                (name, COMPRESS_AFTER),
            )
    # A continuous aggregate cannot be created inside a transaction block; conn is autocommit.
    conn.execute(
        """
        CREATE MATERIALIZED VIEW IF NOT EXISTS results_1h
        WITH (timescaledb.continuous) AS
        SELECT time_bucket('1 hour', ts) AS bucket, line_id, device_id,
               count(*) AS n_total,
               count(*) FILTER (WHERE final_grade = 'REJECT') AS n_reject,
               avg(final_score) AS mean_score
        FROM results GROUP BY 1, 2, 3
        WITH NO DATA
        """
    )
    conn.execute(
        "SELECT add_continuous_aggregate_policy('results_1h',"
        " start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',"
        " schedule_interval => INTERVAL '30 minutes', if_not_exists => true)"
    )
    conn.execute("GRANT SELECT ON results_1h TO sqal_reader")
