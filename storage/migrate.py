"""Numbered SQL migrations, each applied in its own transaction and recorded in ``schema_version``.

Files are ``storage/migrations/NNNN_name.sql``, shipped as package data. ``migrate`` is safe to
run twice and from two processes at once: every file's transaction first takes one advisory
lock, then checks ``schema_version`` again. A file already applied whose text changed is an
error (the database no longer matches the repository), never re-run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from sqal.errors import MigrationError
from storage.connection import storage_error
from storage.edition import Edition, apply_community_features, detect_edition

_NAME = re.compile(r"\A(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql\Z")

MIGRATION_LOCK = 0x5_0A1_0001
"""``pg_advisory_xact_lock`` key serialising concurrent ``sqal db migrate`` runs."""

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: ``version`` from its 4-digit prefix, ``checksum`` sha256 of its text."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrateReport:
    """What ``migrate`` did: files applied now, the resulting version, the edition found."""

    applied: tuple[Migration, ...]
    version: int
    edition: Edition
    community_features: bool


def load_migrations() -> list[Migration]:
    """The migration files shipped with this build, in version order.

    Raises:
        MigrationError: a file is misnamed or two files share a version.
    """
    folder = resources.files("storage").joinpath("migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = _NAME.match(entry.name)
        if m is None:
            raise MigrationError(f"migration file {entry.name!r} must be named NNNN_name.sql")
        version = int(m["version"])
        if version in found:
            raise MigrationError(f"two migration files share version {version:04d}")
        found[version] = Migration(version, m["name"], entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    """Version → checksum of every migration recorded; empty before the first migrate."""
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, checksum FROM schema_version").fetchall()
    return {int(v): str(c) for v, c in rows}


def migrate(conn: psycopg.Connection) -> MigrateReport:
    """Apply every migration not yet recorded, then the Community-only features if available.

    Args:
        conn: an autocommit connection as the database owner (it creates tables and roles).

    Raises:
        MigrationError: a file failed (its transaction was rolled back; earlier files stay
            applied), or an applied file changed since.
    """
    migrations = load_migrations()
    applied: list[Migration] = []
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(_CREATE_VERSION_TABLE)
        for mig in migrations:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                row = conn.execute(
                    "SELECT checksum FROM schema_version WHERE version = %s", (mig.version,)
                ).fetchone()
                if row is not None:
                    if row[0] != mig.checksum:
                        raise MigrationError(
                            f"migration {mig.version:04d}_{mig.name}.sql changed after it was "
                            "applied; restore it and add a new numbered file instead"
                        )
                    continue
                _apply(conn, mig)
                applied.append(mig)
        edition = detect_edition(conn)
        community = False
        if edition.community:
            apply_community_features(conn)
            community = True
    except psycopg.Error as exc:
        raise MigrationError(str(storage_error(exc, "migrate")), exc.sqlstate) from None
    version = max((m.version for m in migrations), default=0)
    return MigrateReport(tuple(applied), version, edition, community)


def _apply(conn: psycopg.Connection, mig: Migration) -> None:
    try:
        # No parameters: psycopg sends the file as one simple query, several statements allowed.
        conn.execute(mig.sql.encode())
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MigrationError(
            f"migration {mig.version:04d}_{mig.name}.sql failed: {first}", exc.sqlstate
        ) from None
    conn.execute(
        "INSERT INTO schema_version (version, name, checksum) VALUES (%s, %s, %s)",
        (mig.version, mig.name, mig.checksum),
    )
