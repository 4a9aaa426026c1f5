"""Database roles: ingest writes with sqal_ingest's grants only, readers read and nothing more.

Login roles are made as the README says (``CREATE ROLE … LOGIN IN ROLE sqal_…``); the test
cluster trusts loopback connections, so passwords are set but not what is checked here.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from sqal.wire import Grade, Kind, device_topic, parse_topic
from storage.migrate import migrate
from storage.rows import DeadRow, pending_row
from storage.writer import BatchWriter
from tests.test_ingest_frames import T0, result

_names = itertools.count()
WRITES = [
    "INSERT INTO results (ts, line_id, device_id, sample_id, v, profile, final_grade,"
    " confidence, defects, tof_present, spectral_present, analyzer_version, processing_ms)"
    " VALUES (now(), 'l', 'd', 's', 1, 'p', 'A', 1, '{}', false, false, 'x', 1)",
    "UPDATE results SET final_grade = 'REJECT'",
    "DELETE FROM results",
    "UPDATE results_1m SET n_total = 0",
    "DELETE FROM dead_letters",
]
DDL = [
    "DROP TABLE results",
    "DROP TABLE dead_letters",
    "TRUNCATE results",
    "TRUNCATE tof_frames",
    "ALTER TABLE results ADD COLUMN note text",
    "ALTER TABLE results DROP COLUMN profile",
    "CREATE TABLE public.mine (x int)",
    "CREATE SCHEMA mine",
]


def _as(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.hostname}:{parts.port}"))


@pytest.fixture
def logins(fresh_db: str) -> Iterator[tuple[str, str, str]]:
    """A migrated database and two login roles: (owner DSN, ingest DSN, reader DSN)."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrate(conn)
    tag = f"{os.getpid()}_{next(_names)}"
    ingest, reader = f"ingest_{tag}", f"grafana_{tag}"
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for name, group in ((ingest, "sqal_ingest"), (reader, "sqal_reader")):
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                    sql.Identifier(name), sql.Literal(os.urandom(12).hex()), sql.Identifier(group)
                )
            )
    try:
        yield fresh_db, _as(fresh_db, ingest), _as(fresh_db, reader)
    finally:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            for name in (ingest, reader):
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _refused(dsn: str, statement: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return True
    return False


def test_the_ingest_role_writes_batches_but_cannot_change_or_drop_tables(
    logins: tuple[str, str, str],
) -> None:
    owner, ingest, _ = logins
    rows = []
    for seq, grade in enumerate([Grade.A, Grade.REJECT, Grade.B]):
        topic = parse_topic(device_topic("line-r", "d1", Kind.RESULT))
        row = pending_row(topic, result("d1", seq, grade, 0.5, ["underfill"]), T0, b"{}", seq)
        assert row is not None
        rows.append(row)
    dead = DeadRow(T0, "ingest", "sqal/v1/x", None, None, "bad_json", "test", b"{")
    writer = BatchWriter(ingest)  # COPY into temp staging, insert, roll-ups: ingest's real path
    try:
        report = writer.write(rows, [dead])
        again = writer.write(rows, [])
    finally:
        writer.close()
    assert report.inserted == {"results": 3}
    assert report.dead_letters == 1
    assert again.inserted == {"results": 0}
    refused = {s: _refused(ingest, s) for s in [*DDL, *WRITES[1:3], WRITES[4]]}
    assert refused == dict.fromkeys(refused, True)
    with psycopg.connect(owner) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM results), (SELECT sum(n_total) FROM results_1m),"
            " (SELECT count(*) FROM dead_letters)"
        ).fetchone()
    assert counts == (3, 3, 1)


def test_the_reader_reads_everything_and_writes_nothing(logins: tuple[str, str, str]) -> None:
    owner, _, reader = logins
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(WRITES[0])
    with psycopg.connect(reader) as conn:
        for table in ("results", "results_1m_view", "tof_frames", "weights", "dead_letters"):
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        assert conn.execute("SELECT count(*) FROM results").fetchone() == (1,)
    refused = {s: _refused(reader, s) for s in [*WRITES, *DDL]}
    assert refused == dict.fromkeys(refused, True)
    with psycopg.connect(owner) as conn:
        assert conn.execute("SELECT final_grade FROM results").fetchall() == [("A",)]


def test_login_passwords_are_stored_as_scram_hashes(logins: tuple[str, str, str]) -> None:
    owner, ingest, reader = logins
    with psycopg.connect(owner) as conn:
        stored = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
            ([urlsplit(ingest).username, urlsplit(reader).username],),
        ).fetchall()
    assert len(stored) == 2
    assert all(p.startswith("SCRAM-SHA-256$") for (p,) in stored)
