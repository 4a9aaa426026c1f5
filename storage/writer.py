"""The batch writer: binary COPY into staging, ``INSERT … ON CONFLICT DO NOTHING``, exact roll-ups.

One call to :meth:`BatchWriter.write` is one transaction, and a redelivered message inserts
nothing (docs/architecture.md, "Database"):

- the batch's keys are probed in the unique index and only new rows are binary-COPied straight
  into the hypertable (one pass, no staging); for ``results`` the counts of exactly those rows
  are added to the per-minute roll-ups in the same transaction, so they stay exact;
- a unique violation (another worker won a race) or a refused row makes the batch go again,
  row by row under savepoints, through a staging table: binary COPY, then
  ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING`` whose really inserted rows feed the
  same roll-ups (:func:`storage.rollups.add_rollups`);
- new ``device_status`` rows update each device's latest status the same way, on both paths
  (:func:`storage.laststatus.track_last_status`).

A row the database refuses (a value out of range, a failed CHECK) must not fail its batch:
the batch is retried row by row under savepoints, each refused row becomes a dead letter
(:class:`~storage.rows.DeadRow`, reason ``processing``, built from the topic and payload its
:class:`~storage.rows.PendingRow` carries) in the same transaction, and the rest commit; the
:class:`WriteReport` names the refused rows so the caller can tell (ingest publishes them).
Losing the connection raises :class:`~sqal.errors.StorageError`; the caller keeps the batch and
retries it whole.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from sqal.errors import StorageError
from sqal.wire import DeadReason
from storage.arrays import OutOfRangeError, prepack, register_array_dumpers
from storage.connection import connect, storage_error
from storage.laststatus import LAST_STATUS_COLUMNS, last_status_values, track_last_status
from storage.rollups import ROLLUP_COLUMNS, add_rollups, rollup_values
from storage.rows import DeadRow, LotRow, PendingRow
from storage.tables import DEAD_LETTERS, KEY, LOTS, RESULTS, STATUS, TABLES, Table

log = logging.getLogger(__name__)

UNDEFINED_TABLE = "42P01"


def check_ranges(table: Table, values: tuple[object, ...]) -> None:
    """Raise :class:`OutOfRangeError` when an integer scalar does not fit its column.

    Arrays are checked by :func:`storage.arrays.prepack` while it converts them.

    Raises:
        OutOfRangeError: naming the column and the value.
    """
    for i, name, lo, hi, is_array in table.int_ranges:
        v = values[i]
        if v is None or is_array:
            continue
        if not isinstance(v, int) or v < lo or v > hi:
            raise OutOfRangeError(f"column {name}: {v!r} is outside {lo}..{hi}")


def copy_rows(
    cur: psycopg.Cursor[Any],
    table: Table,
    rows: Sequence[tuple[object, ...]],
    into: sql.Composable | None = None,
) -> None:
    """Binary COPY of ``rows`` (in ``table``'s column order), integers range-checked first.

    Args:
        into: the relation to fill (a staging table shaped like ``table``); ``table`` itself
            by default.

    Raises:
        OutOfRangeError: an integer does not fit its column.
    """
    for v in rows:
        check_ranges(table, v)
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table.ident if into is None else into, table.column_list
    )
    with cur.copy(stmt) as copy:
        copy.set_types(table.copy_types)
        for v in prepack(table, list(rows)):
            copy.write_row(v)


ROW_ERRORS: tuple[type[BaseException], ...] = (
    OutOfRangeError,
    psycopg.DataError,  # 22xxx: out of range, bad array, ...; also raised by client-side dumpers
    psycopg.IntegrityError,  # 23xxx: CHECK, NOT NULL (unique conflicts are DO NOTHING)
    OverflowError,  # a Python int too large for its binary type, raised while dumping
    FloatingPointError,  # a float beyond float4, raised by the numpy array dumpers
    struct.error,
)
"""Errors a single row can cause; the batch is then isolated row by row."""

RETRY_FIXES = ("08", "40", "57")
"""SQLSTATE classes a retry of the same batch can fix: a lost connection, a deadlock or
serialization failure, an administrator's shutdown. Any other error the server gives a batch
again and again is the batch's own (a row that cannot be stored), see :meth:`BatchWriter.write`."""

_PLAIN_ID = re.compile(r"[^\n]*\Z")
"""An id that fits the key probe's newline-separated text (:meth:`BatchWriter._stored_keys`)."""


def retry_fixes(sqlstate: str | None) -> bool:
    """True when retrying the same batch may succeed (no SQLSTATE: the server never answered)."""
    return sqlstate is None or sqlstate.startswith(RETRY_FIXES)


@dataclass(frozen=True, slots=True)
class BrokerStat:
    """A ``broker_stats`` row: one reading of a broker counter (``$SYS``) at ingest's clock."""

    ts: datetime
    counter: str
    value: float


_INSERT_STATS = sql.SQL(
    "INSERT INTO broker_stats (ts, counter, value) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
)


_UPSERT_LOT = sql.SQL(
    "INSERT INTO lots AS l ({columns}) VALUES ({values})"
    " ON CONFLICT (line_id, lot_id) DO UPDATE"
    " SET ended = coalesce(l.ended, excluded.ended), note = coalesce(excluded.note, l.note)"
    " WHERE (l.product, l.qn_g, l.tne_g, l.started)"
    " = (excluded.product, excluded.qn_g, excluded.tne_g, excluded.started)"
    " RETURNING 1"
).format(
    columns=LOTS.column_list,
    values=sql.SQL(", ").join(sql.Placeholder() for _ in LOTS.columns),
)
"""A lot is stored once and updated only by its own later messages (its end, a note): the
same product, Qn, TNE and start. Another lot under a stored id returns nothing: a conflict.
An end is never undone (a redelivered open message keeps ``ended``)."""

LOT_CONFLICT = (
    "a lot with this line and id was stored first with another product, Qn, TNE or start; "
    "it is kept, this one is not"
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A row not stored: the row's tag, the SQLSTATE and the server's message, or a conflict.

    ``reason`` is ``processing`` for a row the database refused, ``conflict`` for a row whose
    key (line, device, sample, ts) is stored with other content: the first one stays.
    """

    tag: int
    sqlstate: str | None
    detail: str
    reason: DeadReason = DeadReason.PROCESSING

    @property
    def dead_detail(self) -> str:
        """The ``detail`` of the row's dead letter."""
        if self.reason is DeadReason.CONFLICT:
            return self.detail
        return f"database refused the row (sqlstate {self.sqlstate}): {self.detail}"

    def dead_row(self, row: PendingRow, stage: str, now: datetime) -> DeadRow:
        """The ``dead_letters`` row of the refused ``row``, line and device read from it."""
        table = TABLES[row.table]
        line, device = (table.value(row.values, c) for c in ("line_id", "device_id"))
        return DeadRow(
            now,
            stage,
            row.topic,
            None if line is None else str(line),
            None if device is None else str(device),
            self.reason.value,
            self.dead_detail,
            row.payload,
        )


@dataclass(frozen=True, slots=True)
class WriteReport:
    """What one committed batch did.

    Attributes:
        inserted: rows really inserted, per table (duplicates excluded).
        offered: rows offered, per table.
        refused: rows not stored, now dead letters: refused by the database, or conflicting
            with a stored row of the same key (in ``rows`` order).
        dead_letters: dead-letter rows written (given plus refused).
    """

    inserted: dict[str, int] = field(default_factory=dict)
    offered: dict[str, int] = field(default_factory=dict)
    refused: tuple[Refusal, ...] = ()
    dead_letters: int = 0


def _stage(table: Table) -> sql.Identifier:
    return sql.Identifier(f"stage_{table.name}")


def _empty_stage(
    conn: psycopg.Connection,
    stage: sql.Identifier,
    like: Table,
    more: sql.Composable | None = None,
) -> None:
    """A temporary table shaped like ``like`` (and ``more`` columns), empty; emptied at commit.

    Earlier savepoints of the transaction may have left rows in it: it is truncated first.
    """
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS{})"
            " ON COMMIT DELETE ROWS"
        ).format(stage, like.ident, more or sql.SQL(""))
    )
    conn.execute(sql.SQL("TRUNCATE {}").format(stage))


def _tagged(table: Table) -> Table:
    """``table``'s columns plus ``dup_tag`` (a row's index), for the conflict check's stage."""
    return Table(f"dup_{table.name}", (*table.columns, ("dup_tag", "int4")), keyed=False)


def _in_order(refused: Sequence[Refusal]) -> tuple[Refusal, ...]:
    return tuple(sorted(refused, key=lambda r: r.tag))


class BatchWriter:
    """Writes batches over one connection, re-opened after a failure.

    Args:
        dsn: the database, as a role with ``sqal_ingest``'s grants.
        application_name: shown in ``pg_stat_activity``.
        stage: the ``stage`` of the dead letters of refused rows.
    """

    def __init__(
        self, dsn: str, application_name: str = "sqal-ingest", stage: str = "ingest"
    ) -> None:
        self._dsn = dsn
        self._app = application_name
        self._stage = stage
        self._conn: psycopg.Connection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def ping(self) -> None:
        """Open the connection if needed and run ``SELECT 1``.

        Raises:
            StorageError: the database is unreachable.
        """
        conn = self._connection()
        try:
            conn.execute("SELECT 1")
            conn.rollback()
        except psycopg.Error as exc:
            self.close()
            raise storage_error(exc, "database check failed") from None

    def write(
        self,
        rows: Sequence[PendingRow],
        dead: Sequence[DeadRow],
        stats: Sequence[BrokerStat] = (),
        *,
        split: bool = False,
        lots: Sequence[LotRow] = (),
    ) -> WriteReport:
        """Write one batch in one transaction.

        Args:
            split: write row by row, and make a dead letter of every row the server refuses
                alone for a reason a retry would not fix (:func:`retry_fixes`), whatever the
                error. Ingest asks for it after the whole batch failed the same way several
                times: a batch that can never be stored must not stop storage for everyone.
            rows: table rows; duplicates of stored rows are skipped, a row the database refuses
                becomes a dead letter (:meth:`Refusal.dead_row`).
            dead: dead letters decided before the write (bad payloads).
            stats: broker counter readings (``broker_stats``, migration 0004).
            lots: lines' lots (``lots``, migration 0011); one whose id is stored for another
                lot is refused as a ``conflict`` dead letter.

        Raises:
            StorageError: the database is unreachable or failed for a reason not tied to one
                row; nothing of the batch was committed.
        """
        conn = self._connection()
        offered: dict[str, int] = {}
        for r in rows:
            offered[r.table] = offered.get(r.table, 0) + 1
        if lots:
            offered[LOTS.name] = len(lots)
        try:
            if split:
                return self._write_isolated(conn, rows, dead, offered, stats, lots, any_error=True)
            try:
                with conn.transaction():
                    inserted, conflicts = self._write_rows(conn, rows, isolating=False)
                    refused = [self._conflict(row) for row in conflicts]
                    more = [r.dead_row(row, self._stage, datetime.now(UTC))
                            for r, row in zip(refused, conflicts, strict=True)]  # fmt: skip
                    lot_refused, lot_dead = self._upsert_lots(conn, lots, inserted)
                    refused += lot_refused
                    more += lot_dead
                    self._copy_dead(conn, [*dead, *more])
                    self._insert_stats(conn, stats)
                return WriteReport(inserted, offered, _in_order(refused), len(dead) + len(more))
            except ROW_ERRORS as exc:
                log.info("batch of %d rows refused (%s); isolating the bad rows", len(rows), exc)
            return self._write_isolated(conn, rows, dead, offered, stats, lots)
        except psycopg.Error as exc:
            self.close()
            err = storage_error(exc, "cannot write batch")
            if exc.sqlstate == UNDEFINED_TABLE:
                err = StorageError(f"{err}; run `sqal db migrate --db DSN` first", exc.sqlstate)
            raise err from None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, self._app, autocommit=True)
            register_array_dumpers(self._conn)
        return self._conn

    def _write_isolated(
        self,
        conn: psycopg.Connection,
        rows: Sequence[PendingRow],
        dead: Sequence[DeadRow],
        offered: dict[str, int],
        stats: Sequence[BrokerStat] = (),
        lots: Sequence[LotRow] = (),
        *,
        any_error: bool = False,
    ) -> WriteReport:
        inserted: dict[str, int] = {}
        refused: list[Refusal] = []
        more: list[DeadRow] = []
        caught: tuple[type[BaseException], ...] = (
            (*ROW_ERRORS, psycopg.Error) if any_error else ROW_ERRORS
        )
        with conn.transaction():
            for row in rows:
                try:
                    with conn.transaction():  # a savepoint per row
                        counts, conflicts = self._write_rows(conn, [row], isolating=True)
                except caught as exc:
                    state = getattr(exc, "sqlstate", None)
                    if isinstance(exc, psycopg.Error) and retry_fixes(state):
                        raise  # the connection or the server, not this row: retry it all

                    text = str(exc).strip().splitlines()
                    r = Refusal(row.tag, state, text[0] if text else type(exc).__name__)
                    refused.append(r)
                    more.append(r.dead_row(row, self._stage, datetime.now(UTC)))
                    continue
                if conflicts:
                    r = self._conflict(row)
                    refused.append(r)
                    more.append(r.dead_row(row, self._stage, datetime.now(UTC)))
                for k, n in counts.items():
                    inserted[k] = inserted.get(k, 0) + n
            lot_refused, lot_dead = self._upsert_lots(conn, lots, inserted)
            refused += lot_refused
            more += lot_dead
            self._copy_dead(conn, [*dead, *more])
            self._insert_stats(conn, stats)
        return WriteReport(inserted, offered, _in_order(refused), len(dead) + len(more))

    def _write_rows(
        self, conn: psycopg.Connection, rows: Sequence[PendingRow], *, isolating: bool
    ) -> tuple[dict[str, int], list[PendingRow]]:
        """Rows inserted per table, and the rows whose key is stored with other content."""
        by_table: dict[str, list[PendingRow]] = {}
        for r in rows:
            by_table.setdefault(r.table, []).append(r)
        inserted: dict[str, int] = {}
        conflicts: list[PendingRow] = []
        for name in sorted(by_table):  # one table order for every worker
            table = TABLES.get(name)
            if table is None or not table.keyed:
                raise StorageError(f"no keyed table {name!r} to write rows into")
            group = by_table[name]
            if isolating:
                inserted[name] = n = self._write_table(conn, table, [r.values for r in group])
                repeats = [] if n else group
            else:
                inserted[name], repeats = self._copy_new(conn, table, group)
            if repeats:
                conflicts += self._conflicting(conn, table, repeats)
        return inserted, conflicts

    @staticmethod
    def _conflict(row: PendingRow) -> Refusal:
        return Refusal(
            row.tag,
            None,
            "a message with the same line, device, sample_id and ts was stored first with "
            "other content; it is kept, this one is not",
            DeadReason.CONFLICT,
        )

    @staticmethod
    def _conflicting(
        conn: psycopg.Connection, table: Table, rows: Sequence[PendingRow]
    ) -> list[PendingRow]:
        """The ``rows`` (keys already stored) whose content differs from the stored row's.

        Compared in the database, column by column in the column's own type (a float4 read
        back into Python would differ from the float that was sent).
        """
        tagged = _tagged(table)
        stage = sql.Identifier(tagged.name)
        _empty_stage(conn, stage, table, sql.SQL(", dup_tag int4"))
        with conn.cursor() as cur:
            copy_rows(cur, tagged, [(*r.values, i) for i, r in enumerate(rows)], into=stage)
        same = sql.SQL(" AND ").join(
            sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(c)) for c in KEY
        )
        cols = [sql.Identifier(c) for c in table.column_names]
        ours = sql.SQL(", ").join(sql.SQL("s.{}").format(c) for c in cols)
        theirs = sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in cols)
        found = conn.execute(
            sql.SQL(
                "SELECT s.dup_tag FROM {} s JOIN {} t ON {}"
                " WHERE t.ts BETWEEN (SELECT min(ts) FROM {}) AND (SELECT max(ts) FROM {})"
                " AND ({}) IS DISTINCT FROM ({})"
            ).format(stage, table.ident, same, stage, stage, ours, theirs)
        ).fetchall()
        return [rows[i] for (i,) in sorted(found)]

    def _write_table(
        self, conn: psycopg.Connection, table: Table, values: list[tuple[object, ...]]
    ) -> int:
        """Rows inserted through a staging table, ``INSERT … ON CONFLICT DO NOTHING``."""
        stage = _stage(table)
        _empty_stage(conn, stage, table)
        with conn.cursor() as cur:
            copy_rows(cur, table, values, into=stage)
            insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                table.ident, table.column_list, table.column_list, stage
            )
            if table is STATUS:
                new = cur.execute(
                    sql.SQL("{} RETURNING {}").format(
                        insert, sql.SQL(", ").join(map(sql.Identifier, LAST_STATUS_COLUMNS))
                    )
                ).fetchall()
                track_last_status(cur, new)
                return len(new)
            if table is not RESULTS:
                cur.execute(insert)
                return max(cur.rowcount, 0)
            new = cur.execute(
                sql.SQL("{} RETURNING {}").format(
                    insert, sql.SQL(", ").join(map(sql.Identifier, ROLLUP_COLUMNS))
                )
            ).fetchall()
            add_rollups(cur, new)
            return len(new)

    def _copy_new(
        self, conn: psycopg.Connection, table: Table, rows: list[PendingRow]
    ) -> tuple[int, list[PendingRow]]:
        """The fast idempotent path: probe the keys, COPY only the new rows straight in.

        One index probe per row instead of a second pass through a staging table. Safe
        because the unique index still guards the table: if another worker inserts one of
        these keys between probe and COPY, the COPY fails with a unique violation, which is
        one of :data:`ROW_ERRORS`, and the batch is redone row by row with ``ON CONFLICT DO
        NOTHING``. For ``results`` the new rows' counts go to the roll-ups
        (:mod:`storage.rollups`) in the same transaction.

        Returns:
            rows inserted, and the rows whose key was stored already (before, or earlier in
            this batch): redeliveries, or conflicts (:meth:`_conflicting` tells them apart).
        """
        values = [r.values for r in rows]
        keys = [table.key(v) for v in values]  # (line, device, sample, ts): storage.tables.KEY
        seen = set(self._stored_keys(conn, table, keys))
        fresh, repeats = [], []
        for k, r in zip(keys, rows, strict=True):
            if k in seen:
                repeats.append(r)
            else:
                seen.add(k)  # a redelivery inside the batch counts once
                fresh.append(r.values)
        if fresh:
            with conn.cursor() as cur:
                copy_rows(cur, table, fresh)
                if table is RESULTS:
                    add_rollups(cur, rollup_values(fresh))
                elif table is STATUS:
                    track_last_status(cur, last_status_values(fresh))
        return len(fresh), repeats

    @staticmethod
    def _stored_keys(
        conn: psycopg.Connection, table: Table, keys: list[tuple[object, ...]]
    ) -> list[tuple[object, ...]]:
        """Which of ``keys`` the table holds already: one index probe per key (LATERAL).

        Each key column goes as one text parameter, a line per key: psycopg dumps a Python
        list element by element, which was 9 % of ingest's time for the four lists of a
        500-row batch. Ids never hold a newline (``sqal.wire`` patterns); should one, the
        columns go as lists.
        """
        ts = [k[3] for k in keys]
        lo, hi = min(ts), max(ts)  # type: ignore[type-var]
        probe = (
            "SELECT k.l, k.d, k.s, k.t FROM {} AS k(l, d, s, t) WHERE EXISTS (SELECT 1 FROM {} x"
            " WHERE x.ts BETWEEN %s AND %s AND x.line_id = k.l AND x.device_id = k.d"
            " AND x.sample_id = k.s AND x.ts = k.t)"
        )
        columns: list[list[str]] = [[str(k[c]) for k in keys] for c in range(3)]
        if all(_PLAIN_ID.match(x) for col in columns for x in col):
            columns.append([k[3].isoformat() for k in keys])  # type: ignore[attr-defined]
            source = sql.SQL(
                "unnest(string_to_array(%s, E'\\n'), string_to_array(%s, E'\\n'),"
                " string_to_array(%s, E'\\n'), string_to_array(%s, E'\\n')::timestamptz[])"
            )
            params: tuple[object, ...] = (*("\n".join(col) for col in columns), lo, hi)
        else:
            source = sql.SQL("unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])")
            params = (*columns, ts, lo, hi)
        query = sql.SQL(probe).format(source, table.ident)
        return conn.execute(query, params).fetchall()

    def _upsert_lots(
        self, conn: psycopg.Connection, lots: Sequence[LotRow], inserted: dict[str, int]
    ) -> tuple[list[Refusal], list[DeadRow]]:
        """Store each lot (:data:`_UPSERT_LOT`), in arrival order; the conflicting ones refused.

        Lots are a few a shift: one statement each, no COPY. ``inserted["lots"]`` counts the
        lots stored or updated (a redelivery updates nothing it did not have).
        """
        refused: list[Refusal] = []
        dead: list[DeadRow] = []
        if not lots:
            return refused, dead
        stored = 0
        with conn.cursor() as cur:
            for lot in lots:
                if cur.execute(_UPSERT_LOT, lot.values()).fetchone() is not None:
                    stored += 1
                    continue
                r = Refusal(lot.tag, None, LOT_CONFLICT, DeadReason.CONFLICT)
                refused.append(r)
                now = datetime.now(UTC)
                dead.append(
                    DeadRow(now, self._stage, lot.topic, lot.line_id, None,
                            r.reason.value, r.dead_detail, lot.payload)
                )  # fmt: skip
        inserted[LOTS.name] = stored
        return refused, dead

    @staticmethod
    def _insert_stats(conn: psycopg.Connection, stats: Sequence[BrokerStat]) -> None:
        if stats:
            with conn.cursor() as cur:
                cur.executemany(_INSERT_STATS, [(b.ts, b.counter, b.value) for b in stats])

    @staticmethod
    def _copy_dead(conn: psycopg.Connection, dead: Sequence[DeadRow]) -> None:
        if dead:
            with conn.cursor() as cur:
                copy_rows(cur, DEAD_LETTERS, [d.values() for d in dead])
