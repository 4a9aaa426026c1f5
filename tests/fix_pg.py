"""A real PostgreSQL + TimescaleDB for the whole test session, on a free loopback port.

The cluster lives in a folder of its own under /tmp (the server runs as ``postgres`` when the
tests run as root, and pytest's temp folders are closed to other users). Durability is traded
for speed (``fsync=off``): a test cluster is thrown away.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from embedded import Postgres, free_port, start_postgres

FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_names = itertools.count()


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    """The session's cluster; its ``sqal`` database has the TimescaleDB extension."""
    folder = Path(tempfile.mkdtemp(prefix="sqal-pg-"))
    folder.chmod(0o755)
    server = start_postgres(folder, free_port(), extra_settings=FAST)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fresh_db(pg: Postgres) -> Iterator[str]:
    """A new empty database with TimescaleDB for one test; yields its DSN, dropped after."""
    with new_database(pg) as dsn:
        yield dsn


@contextlib.contextmanager
def new_database(pg: Postgres) -> Iterator[str]:
    """A new empty database with TimescaleDB (for fixtures of a wider scope than a test)."""
    name = f"t{next(_names)}_{os.getpid()}"
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = pg.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    try:
        yield dsn
    finally:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
