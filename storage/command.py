"""``sqal db migrate|status|retention``: typer-annotated functions the CLI registers."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Annotated

import typer

from sqal.settings import load_settings
from storage.connection import connect
from storage.migrate import migrate
from storage.retention import (
    KEPT_UNLESS_NAMED,
    RETENTION_TABLES,
    ROW_TABLES,
    drop_older_than,
    parse_age,
)
from storage.status import EXACT_UP_TO, db_status

DbOption = Annotated[
    str | None,
    typer.Option("--db", metavar="DSN", help="PostgreSQL DSN [env SQAL_DB]."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _dsn(db: str | None) -> str:
    return load_settings(db=db).db.get_secret_value()


def db_migrate_command(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Apply the numbered SQL migrations not yet applied; safe to run twice."""
    with connect(_dsn(db), "sqal-migrate", autocommit=True) as conn:
        report = migrate(conn)
    names = [f"{m.version:04d}_{m.name}" for m in report.applied]
    if as_json:
        obj = {
            "applied": names,
            "version": report.version,
            "edition": report.edition.name,
            "community_features": report.community_features,
        }
        typer.echo(json.dumps(obj))
        return
    for name in names:
        typer.echo(f"applied {name}")
    extras = "applied" if report.community_features else "skipped (needs the Community edition)"
    typer.echo(
        f"schema at version {report.version}"
        f"{'' if names else ' (nothing to do)'}; TimescaleDB {report.edition.name}:"
        f" compression and continuous aggregates {extras}"
    )


def db_status_command(
    db: DbOption = None,
    as_json: JsonOption = False,
    exact: Annotated[
        bool,
        typer.Option(
            "--exact",
            help=f"Count every table's rows exactly (slow on big tables); without it, tables"
            f" of {EXACT_UP_TO} rows or more are estimated (~).",
        ),
    ] = False,
) -> None:
    """Show the schema version, the TimescaleDB edition and chunks and rows of every table."""
    with connect(_dsn(db), "sqal-status", autocommit=True) as conn:
        st = db_status(conn, exact=exact)
    if as_json:
        typer.echo(json.dumps(st.as_dict()))
        return
    pending = f", pending {', '.join(f'{v:04d}' for v in st.pending)}" if st.pending else ""
    typer.echo(f"schema version  {st.version} of {st.latest}{pending}")
    typer.echo(f"postgresql      {st.postgres}")
    typer.echo(f"timescaledb     {st.timescaledb or 'not installed'} ({st.edition} edition)")
    for t in st.tables:
        chunks = "plain table" if t.chunks is None else f"{t.chunks} chunks"
        rows = f"{t.rows}" if t.exact else f"~{t.rows}"
        typer.echo(f"  {t.name:<20} {chunks:>12}  {rows:>12} rows")


def db_retention_command(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age to keep, e.g. 30d, 12h, 2w.")
    ],
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            help=f"Table to prune (repeatable); default: {', '.join(RETENTION_TABLES)}; also"
            f" {', '.join(KEPT_UNLESS_NAMED)} when named.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print what would be dropped per table; change nothing."),
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Drop chunks (rows, for dead_letters and superseded device configs) older than --older-than.

    A device's configuration in force is kept however old, and so is every configuration a
    stored result was measured under.
    """
    age = parse_age(older_than)
    tables = tuple(table) if table else RETENTION_TABLES
    with connect(_dsn(db), "sqal-retention", autocommit=True) as conn:
        pruned = drop_older_than(conn, age, tables, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps({p.table: {"chunks": p.chunks, "rows": p.rows} for p in pruned}))
        return
    if dry_run:
        typer.echo(f"dry run: nothing changed; with --older-than {older_than}:")
    for p in pruned:
        if p.table in ROW_TABLES:
            what = f"{p.rows} rows {'to delete' if dry_run else 'deleted'}"
        else:
            what = f"{p.chunks} chunks {'to drop' if dry_run else 'dropped'}"
        if p.until is not None and (p.rows or p.chunks):
            what += f" (data before {p.until.astimezone(UTC):%Y-%m-%d %H:%M} UTC)"
        typer.echo(f"{p.table:<20} {what}")
