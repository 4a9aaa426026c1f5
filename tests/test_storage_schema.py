"""Migrations, schema, editions, roles, status and retention against a real TimescaleDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from sqal.errors import ConfigError, MigrationError
from storage.command import db_migrate_command, db_retention_command, db_status_command
from storage.edition import detect_edition
from storage.migrate import load_migrations, migrate
from storage.retention import drop_older_than, parse_age
from storage.status import db_status
from storage.tables import TABLES

_PG_TYPE = {
    "timestamptz": "timestamp with time zone",
    "text": "text",
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "jsonb": "jsonb",
    "bytea": "bytea",
}


def _conn(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)


def test_migrate_twice_is_a_no_op(fresh_db: str) -> None:
    with _conn(fresh_db) as conn:
        first = migrate(conn)
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname='public'").fetchone()
        second = migrate(conn)
        again = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname='public'").fetchone()
        versions = conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
    shipped = [m.version for m in load_migrations()]
    assert [m.version for m in first.applied] == shipped
    assert second.applied == ()
    assert tables == again
    assert [v for (v,) in versions] == shipped


def test_an_applied_migration_that_changed_is_refused(fresh_db: str) -> None:
    with _conn(fresh_db) as conn:
        migrate(conn)
        conn.execute("UPDATE schema_version SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match=r"0001_frames\.sql changed after it was applied"):
            migrate(conn)


def test_writer_columns_exist_with_their_types(fresh_db: str) -> None:
    with _conn(fresh_db) as conn:
        migrate(conn)
        for table in TABLES.values():
            rows = conn.execute(
                "SELECT column_name, data_type, udt_name FROM information_schema.columns"
                " WHERE table_name = %s",
                (table.name,),
            ).fetchall()
            have = {c: (dt, udt) for c, dt, udt in rows}
            for col, typ in table.columns:
                assert col in have, f"{table.name}.{col} missing"
                dt, udt = have[col]
                if typ.endswith("[]"):
                    assert (dt, udt) == ("ARRAY", "_" + typ[:-2]), (table.name, col)
                else:
                    assert dt == _PG_TYPE[typ], (table.name, col, dt)


def test_frames_are_hypertables_with_an_idempotency_key(fresh_db: str) -> None:
    with _conn(fresh_db) as conn:
        migrate(conn)
        hyper = {
            r[0]
            for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
        }
        keys = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_indexes WHERE indexdef LIKE"
                " 'CREATE UNIQUE INDEX % (line_id, device_id, sample_id, ts)'"
            )
        }
    frames = {
        "tof_frames", "spectral_frames", "weights", "results", "device_status", "device_config",
    }  # fmt: skip
    assert frames | {"results_1m", "defects_1m"} <= hyper
    # rechecks (0012): the same key makes ingest's write idempotent; a plain table, a plant
    # re-checks a few hundred trays a day.
    assert keys == frames | {"rechecks"}
    assert "rechecks" not in hyper


def test_apache_edition_is_detected_and_community_features_skipped(fresh_db: str) -> None:
    with _conn(fresh_db) as conn:
        report = migrate(conn)
        edition = detect_edition(conn)
        license_ = conn.execute("SHOW timescaledb.license").fetchone()
        caggs = conn.execute("SELECT count(*) FROM timescaledb_information.continuous_aggregates")
        n_caggs = caggs.fetchone()
        jobs = conn.execute(
            "SELECT count(*) FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_compression'"
        ).fetchone()
    assert license_ == ("apache",)
    assert edition.license == "apache"
    assert not edition.community
    assert edition.name == "apache"
    assert report.community_features is False
    assert n_caggs == (0,)
    assert jobs == (0,)


def test_reader_may_only_select_and_ingest_may_not_delete(fresh_db: str) -> None:
    with _conn(fresh_db) as conn:
        migrate(conn)

        def can(role: str, table: str, priv: str) -> bool:
            row = conn.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, priv))
            return bool(row.fetchone()[0])  # type: ignore[index]

        for t in ("tof_frames", "results", "results_1m", "dead_letters"):
            assert can("sqal_reader", t, "SELECT")
            assert not can("sqal_reader", t, "INSERT")
            assert not can("sqal_ingest", t, "DELETE")
        assert can("sqal_ingest", "tof_frames", "INSERT")
        assert can("sqal_ingest", "results_1m", "UPDATE")
        assert not can("sqal_ingest", "tof_frames", "UPDATE")


def _insert_status(conn: psycopg.Connection, ts: datetime, device: str) -> None:
    conn.execute(
        "INSERT INTO device_status (ts, line_id, device_id, v, state)"
        " VALUES (%s, 'l', %s, 1, 'online')",
        (ts, device),
    )


def test_status_counts_chunks_and_rows(fresh_db: str) -> None:
    now = datetime.now(UTC)
    with _conn(fresh_db) as conn:
        before = db_status(conn)
        migrate(conn)
        for d in range(3):
            _insert_status(conn, now - timedelta(days=20 * d), f"d{d}")
        st = db_status(conn, exact=True)
    assert before.version == 0
    assert before.pending == tuple(m.version for m in load_migrations())
    assert st.version == st.latest
    assert st.pending == ()
    assert st.edition == "apache"
    assert st.timescaledb
    by = {t.name: t for t in st.tables}
    assert by["device_status"].rows == 3
    assert by["device_status"].chunks == 3
    assert by["dead_letters"].chunks is None


def test_retention_drops_old_chunks_and_keeps_recent_ones(fresh_db: str) -> None:
    now = datetime.now(UTC)
    with _conn(fresh_db) as conn:
        migrate(conn)
        for d in (0, 1, 40, 60):
            _insert_status(conn, now - timedelta(days=d), f"d{d}")
        conn.execute(
            "INSERT INTO dead_letters (received_at, stage, topic, reason, detail, payload)"
            " VALUES (%s, 'ingest', 't', 'bad_json', 'x', '\\x00'),"
            " (%s, 'ingest', 't', 'bad_json', 'x', '')",
            (now - timedelta(days=45), now),
        )
        pruned = {p.table: p for p in drop_older_than(conn, parse_age("30d"))}
        left = conn.execute("SELECT device_id FROM device_status ORDER BY 1").fetchall()
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    assert pruned["device_status"].chunks == 2
    assert pruned["dead_letters"].rows == 1
    assert [d for (d,) in left] == ["d0", "d1"]
    assert dead == (1,)


def test_ages_parse_and_bad_ones_name_the_flag() -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age("12h") == timedelta(hours=12)
    assert parse_age("2w") == timedelta(weeks=2)
    for bad in ("30", "0d", "-3d", "3 days", "1y"):
        with pytest.raises(ConfigError, match=r"^--older-than"):
            parse_age(bad)


def _cli() -> typer.Typer:
    app = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False)
    app.command("migrate")(db_migrate_command)
    app.command("status")(db_status_command)
    app.command("retention")(db_retention_command)
    return app


def test_cli_commands_migrate_report_status_and_refuse_bad_flags(fresh_db: str) -> None:
    import json

    runner = CliRunner()
    app = _cli()
    out = runner.invoke(app, ["migrate", "--db", fresh_db, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["version"] == max(m.version for m in load_migrations())
    out = runner.invoke(app, ["migrate", "--db", fresh_db])
    assert "nothing to do" in out.output
    assert "Community edition" in out.output
    out = runner.invoke(app, ["status", "--db", fresh_db, "--json"])
    assert json.loads(out.output)["edition"] == "apache"
    out = runner.invoke(app, ["retention", "--db", fresh_db, "--older-than", "30d", "--table", "x"])
    assert isinstance(out.exception, ConfigError)
    assert "--table 'x'" in str(out.exception)
    out = runner.invoke(app, ["retention", "--db", fresh_db, "--older-than", "7d", "--json"])
    assert json.loads(out.output)["tof_frames"] == {"chunks": 0, "rows": 0}
