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
from storage.laststatus import track_last_status
from storage.migrate import load_migrations, migrate
from storage.retention import KEPT_UNLESS_NAMED, RETENTION_TABLES, drop_older_than, parse_age
from storage.status import TableStatus, db_status
from storage.tables import LOTS, TABLES

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
        for table in [*TABLES.values(), LOTS]:
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


def test_status_lists_every_table_and_counts_fresh_rows_exactly(fresh_db: str) -> None:
    """#18: ``device_status`` read "~0 rows" before an ANALYZE, and two tables were missing."""
    t0 = datetime(2026, 3, 2, 6, tzinfo=UTC)  # Monday: 24 minutes inside one 7-day chunk
    with _conn(fresh_db) as conn:
        migrate(conn)
        for k in range(24):
            _insert_status(conn, t0 + timedelta(minutes=k), "d0")
        conn.execute(
            "INSERT INTO broker_stats SELECT %s + make_interval(secs => g), 'publish_dropped', g"
            " FROM generate_series(1, 60) AS g",
            (t0,),
        )
        fresh = db_status(conn, exact_up_to=50)
        conn.execute("ANALYZE broker_stats")
        analysed = db_status(conn, exact_up_to=50)
        listed = {
            r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
    by = {t.name: t for t in fresh.tables}
    owned = {*TABLES, "broker_stats", "results_1m", "defects_1m", "device_last_status"}
    assert owned | {"schema_version"} <= set(by)
    assert set(by) == listed
    assert by["device_status"] == TableStatus("device_status", 1, 24, True)
    assert by["device_config"] == TableStatus("device_config", 0, 0, True)
    # kept by the writer (tests/test_storage_writer.py); a plain INSERT does not touch it
    assert by["device_last_status"] == TableStatus("device_last_status", None, 0, True)
    # past the exact limit: an estimate, never below the limit though the table was not analysed
    assert by["broker_stats"] == TableStatus("broker_stats", 1, 50, False)
    assert {t.name: t for t in analysed.tables}["broker_stats"].rows == 60

    runner = CliRunner()
    out = runner.invoke(_cli(), ["status", "--db", fresh_db])
    assert out.exit_code == 0, out.output
    lines = {ln.split()[0]: ln for ln in out.output.splitlines() if ln.startswith("  ")}
    assert lines["device_status"].split()[-2:] == ["24", "rows"]
    assert set(lines) == listed


def test_migration_0010_fills_the_last_status_from_the_history(fresh_db: str) -> None:
    t0 = datetime(2026, 3, 2, 6, tzinfo=UTC)
    with _conn(fresh_db) as conn:
        migrate(conn)
        # the database as it was before 0010, holding history
        conn.execute("DROP TABLE device_last_status")
        conn.execute("DELETE FROM schema_version WHERE version = 10")
        for k, device in enumerate(["d1", "d2", "d1", "d1", "d2"]):
            _insert_status(conn, t0 + timedelta(minutes=k), device)
        conn.execute("UPDATE device_status SET state = 'offline' WHERE ts = %s", (t0,))
        report = migrate(conn)
        rows = conn.execute(
            "SELECT line_id, device_id, ts, state FROM device_last_status ORDER BY 2"
        ).fetchall()
    assert [m.version for m in report.applied] == [10]
    assert rows == [
        ("l", "d1", t0 + timedelta(minutes=3), "online"),
        ("l", "d2", t0 + timedelta(minutes=4), "online"),
    ]


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


def test_every_hypertable_is_pruned_by_default_or_kept_until_named(fresh_db: str) -> None:
    """#18: broker_stats and device_config grew forever; a new hypertable must be classed."""
    with _conn(fresh_db) as conn:
        migrate(conn)
        hyper = {
            r[0]
            for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
        }
    assert not set(RETENTION_TABLES) & set(KEPT_UNLESS_NAMED)
    assert hyper - set(KEPT_UNLESS_NAMED) <= set(RETENTION_TABLES)
    assert set(KEPT_UNLESS_NAMED) <= hyper
    assert {"broker_stats", "device_config", "weights", "dead_letters"} <= set(RETENTION_TABLES)


_TABLE_ROWS = """
SELECT (SELECT count(*) FROM device_status), (SELECT count(*) FROM device_last_status),
       (SELECT count(*) FROM broker_stats), (SELECT count(*) FROM weights),
       (SELECT count(*) FROM results), (SELECT count(*) FROM device_config),
       (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM results_1m),
       (SELECT count(*) FROM timescaledb_information.chunks)
"""


def _fill_history(conn: psycopg.Connection, now: datetime) -> None:
    """Rows 0 to 100 days old in every table retention prunes by default, and a roll-up."""

    def ago(days: float) -> datetime:
        return now - timedelta(days=days)

    status = [(ago(d), "l", f"d{d}", "online") for d in (0, 1, 40, 60)]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO device_status (ts, line_id, device_id, v, state)"
            " VALUES (%s, %s, %s, 1, %s)",
            status,
        )
        track_last_status(
            cur, [(line, dev, ts, st, None, None, None, None) for ts, line, dev, st in status]
        )
        for d in (0, 45):
            cur.execute("INSERT INTO broker_stats VALUES (%s, 'publish_dropped', 1)", (ago(d),))
            cur.execute(
                "INSERT INTO weights (ts, line_id, device_id, sample_id, seq, v, mass_g)"
                " VALUES (%s, 'l', 'w', 's', 1, 1, 400)",
                (ago(d),),
            )
        cur.execute(
            "INSERT INTO results (ts, line_id, device_id, sample_id, v, profile, final_grade,"
            " confidence, defects, tof_present, spectral_present, analyzer_version,"
            " processing_ms) VALUES (%s, 'l', 'c1', 's', 1, 'p', 'A', 1, '{}', false, false,"
            " 'x', 1)",
            (ago(70),),
        )
        # c1: replaced at 60 and 45 days (only the one of 45 days was in force at the cutoff);
        # c2: one configuration, 100 days old; c3: replaced after the cutoff
        for device, d in (("c1", 90), ("c1", 60), ("c1", 45), ("c2", 100), ("c3", 50), ("c3", 10)):
            cur.execute(
                "INSERT INTO device_config (ts, line_id, device_id, v, profile, tof, spectral)"
                " VALUES (%s, 'l', %s, 1, 'p', '{}', '{}')",
                (ago(d), device),
            )
        cur.execute(
            "INSERT INTO dead_letters (received_at, stage, topic, reason, detail, payload)"
            " VALUES (%s, 'ingest', 't', 'bad_json', 'x', ''), (%s, 'ingest', 't', 'bad_json',"
            " 'x', '')",
            (ago(45), ago(0)),
        )
        cur.execute(
            "INSERT INTO results_1m (bucket, line_id, device_id) VALUES (%s, 'l', 'c1')", (ago(60),)
        )


def test_retention_prunes_every_time_series_table_and_a_dry_run_touches_nothing(
    fresh_db: str,
) -> None:
    now = datetime.now(UTC)
    with _conn(fresh_db) as conn:
        migrate(conn)
        _fill_history(conn, now)
        before = conn.execute(_TABLE_ROWS).fetchone()
        out = CliRunner().invoke(
            _cli(), ["retention", "--db", fresh_db, "--older-than", "30d", "--dry-run"]
        )
        dry = drop_older_than(conn, parse_age("30d"), dry_run=True)
        untouched = conn.execute(_TABLE_ROWS).fetchone()
        done = drop_older_than(conn, parse_age("30d"))
        after = conn.execute(_TABLE_ROWS).fetchone()
        again = drop_older_than(conn, parse_age("30d"), dry_run=True)
        configs = conn.execute("SELECT device_id, ts FROM device_config ORDER BY 1, 2").fetchall()
        last = conn.execute("SELECT device_id FROM device_last_status ORDER BY 1").fetchall()
        rollups = drop_older_than(conn, parse_age("30d"), ("results_1m",))
        rollups_left = conn.execute("SELECT count(*) FROM results_1m").fetchone()

    assert out.exit_code == 0, out.output
    assert out.output.startswith("dry run: nothing changed")
    assert untouched == before
    # the dry run said what the run did, table by table (show_chunks lists what drop_chunks drops)
    assert [(p.table, p.chunks, p.rows) for p in dry] == [(p.table, p.chunks, p.rows) for p in done]
    assert [p.until for p in dry if p.chunks] == [p.until for p in done if p.chunks]
    by = {p.table: p for p in done}
    assert [p.table for p in done] == [
        *RETENTION_TABLES[:5],
        "device_last_status",
        *RETENTION_TABLES[5:],
    ]
    assert (by["device_status"].chunks, by["device_last_status"].rows) == (2, 2)
    for t in ("broker_stats", "weights", "results"):
        assert by[t].chunks == 1, t
    assert (by["device_config"].rows, by["dead_letters"].rows) == (2, 1)
    lines = {ln.split()[0]: ln for ln in out.output.splitlines()[1:]}
    assert set(lines) == set(by)
    assert "2 chunks to drop (data before " in lines["device_status"]
    assert "2 rows to delete" in lines["device_config"]
    # status 4 → 2, last status 4 → 2, broker 2 → 1, weights 2 → 1, results 1 → 0, configs 6 → 4,
    # dead letters 2 → 1, the roll-up kept
    assert before is not None
    assert after is not None
    assert before[:8] == (4, 4, 2, 2, 1, 6, 2, 1)
    assert after[:8] == (2, 2, 1, 1, 0, 4, 1, 1)
    assert all(p.chunks == 0 and p.rows == 0 for p in again)
    # every device keeps the configuration in force at the cutoff, and what came after
    ages = [(d, round((now - ts) / timedelta(days=1))) for d, ts in configs]
    assert ages == [("c1", 45), ("c2", 100), ("c3", 50), ("c3", 10)]
    assert [d for (d,) in last] == ["d0", "d1"]
    assert rollups[0].chunks == 1
    assert rollups_left == (0,)


def test_configurations_of_stored_results_are_kept(fresh_db: str) -> None:
    """c1's configuration of 90 days was in force for its result of 70 days: kept while that is.

    Without the result, it and the one of 60 days go (the test above)."""
    now = datetime.now(UTC)
    with _conn(fresh_db) as conn:
        migrate(conn)
        _fill_history(conn, now)
        kept = drop_older_than(conn, parse_age("30d"), ("device_config",))
        n = conn.execute("SELECT count(*) FROM device_config").fetchone()
    assert kept[0].rows == 0
    assert n == (6,)


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
