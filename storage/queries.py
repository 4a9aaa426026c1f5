"""Read-side queries: ``sqal eval --db``, ``sqal calibrate --weights`` and ``--reference``,
``sqal demo`` and the shift report (:mod:`views`).

Each returns plain data; the SQL stays here (Grafana's panel queries excepted: they are panel
definitions Grafana runs, in ``views/boards``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from pydantic import ValidationError

from sqal.errors import StorageError
from sqal.wire import Decision, Grade, SpectralFrame, TofFrame, Weight
from storage.connection import connect, storage_error
from storage.rows import spectral_frame, tof_frame, weight_frame
from storage.tables import SPECTRAL, TOF, WEIGHTS, Table

_RESULTS = """
SELECT device_id, sample_id, final_grade, defects, final_score, confidence,
       tof_present, tof_volume_mm3, tof_mass_g, tof_max_height_mm, tof_tilt_deg,
       spectral_present, spectral_oxidation_index, decision
FROM results
WHERE received_at >= %s AND mode = 'production'
ORDER BY ts
"""


def results_for_eval(dsn: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """Stored production results as the parts of a result payload that ``sqal eval`` reads
    (calibration and maintenance trays have no truth to compare with).

    Args:
        since: only results stored at or after this time (one run among earlier ones).

    Raises:
        StorageError: the database is unreachable or has no ``results`` table.
    """
    start = since or datetime(1970, 1, 1, tzinfo=UTC)
    with connect(dsn, "sqal-eval") as conn:
        try:
            rows = conn.execute(_RESULTS, (start,)).fetchall()
        except psycopg.Error as exc:
            raise storage_error(exc, "cannot read results") from None
    return [
        {
            "device_id": device_id,
            "sample_id": sample_id,
            "fusion": {
                "final_grade": grade,
                "defects": list(defects or []),
                "final_score": score,
                "confidence": confidence,
                "decision": decision,
            },
            "tof": (
                {"volume_mm3": volume, "mass_g": mass, "max_height_mm": max_h, "tilt_deg": tilt}
                if tof_present
                else None
            ),
            "spectral": {"oxidation_index": ox} if spectral_present else None,
        }
        for (
            device_id,
            sample_id,
            grade,
            defects,
            score,
            confidence,
            tof_present,
            volume,
            mass,
            max_h,
            tilt,
            spectral_present,
            ox,
            decision,
        ) in rows
    ]


_VOLUMES = """
SELECT DISTINCT ON (sample_id) sample_id, tof_volume_mm3, profile
FROM results
WHERE line_id = %s AND device_id = %s AND sample_id = ANY(%s)
ORDER BY sample_id, received_at DESC, ts DESC
"""


@dataclass(frozen=True, slots=True)
class PublishedVolume:
    """A sample's published ToF volume and the profile it was scored with.

    Attributes:
        volume_mm3: the result's ``tof.volume_mm3``; ``None`` when it had no ToF section or no
            usable volume.
    """

    volume_mm3: float | None
    profile: str


def published_volumes(
    dsn: str, line: str, device: str, sample_ids: Sequence[str]
) -> dict[str, PublishedVolume]:
    """The stored volume of each of these samples of one device (the latest result of each).

    Samples without a stored result are absent from the answer.

    Raises:
        StorageError: the database is unreachable or has no ``results`` table.
    """
    with connect(dsn, "sqal-calibrate") as conn:
        try:
            rows = conn.execute(_VOLUMES, (line, device, list(sample_ids))).fetchall()
        except psycopg.Error as exc:
            raise storage_error(exc, "cannot read results") from None
    return {
        sample_id: PublishedVolume(None if volume is None else float(volume), profile)
        for sample_id, volume, profile in rows
    }


_STORED = sql.SQL(
    "SELECT DISTINCT ON (sample_id) {columns} FROM {table}"
    " WHERE line_id = %s AND device_id = %s AND sample_id = ANY(%s)"
    " ORDER BY sample_id, received_at DESC, ts DESC"
)
"""One device's rows of these samples, the latest stored copy of each (a sample stored twice,
e.g. re-sent with another capture time, counts once)."""


@dataclass(frozen=True, slots=True)
class StoredFrames:
    """The stored frames of some samples of one device, by sample id.

    Attributes:
        tof, spectral, weights: one frame per sample that has one (absent otherwise).
    """

    tof: dict[str, TofFrame]
    spectral: dict[str, SpectralFrame]
    weights: dict[str, Weight]


def stored_frames(dsn: str, line: str, device: str, sample_ids: Sequence[str]) -> StoredFrames:
    """The raw frames stored for these samples of one device, as models: ToF, spectral, and the
    checkweigher's weights (none where the line has no checkweigher).

    Raises:
        StorageError: the database is unreachable, lacks a frame table, or holds a row that is
            no valid frame.
    """
    ids = list(sample_ids)
    tables: list[tuple[Table, Callable[[Sequence[object]], Any]]] = [
        (TOF, tof_frame),
        (SPECTRAL, spectral_frame),
        (WEIGHTS, weight_frame),
    ]
    found: list[dict[str, Any]] = []
    with connect(dsn, "sqal-calibrate") as conn:
        for table, model in tables:
            q = _STORED.format(columns=table.column_list, table=table.ident)
            try:
                rows = conn.execute(q, (line, device, ids)).fetchall()
            except psycopg.Error as exc:
                raise storage_error(exc, f"cannot read {table.name}") from None
            try:
                found.append({str(table.value(r, "sample_id")): model(r) for r in rows})
            except ValidationError as exc:
                raise StorageError(
                    f"{table.name}: a stored row is no valid frame: {exc.errors()[0]['msg']}"
                ) from None
    return StoredFrames(*found)


def count_rows(dsn: str, table: str) -> int:
    """Exact row count of one of SQAL's tables (``results``, ``tof_frames``, ...).

    Raises:
        StorageError: unreachable, or no such table.
    """
    with connect(dsn, "sqal-count") as conn:
        try:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
        except psycopg.Error as exc:
            raise storage_error(exc, f"cannot count {table}") from None
    return int(row[0]) if row else 0


NO_DECISION = "no decision"
"""How results without a ``decision`` count: analyzers before 2026-12 did not publish one
(``storage/migrations/0008_decisions.sql`` leaves them NULL); they are counted, not dropped."""
NO_DEFECT_REASON = "(score only)"
"""The HOLD reason of a held tray whose ``p_defects`` has no code at 0.01 or more: its score
alone put P(REJECT) past the profile's ``p_hold``."""
HOLD_TOP_JOIN = (
    "LEFT JOIN LATERAL (SELECT e.key AS reason,\n"
    "    rank() OVER (ORDER BY e.value::float8 DESC) AS rk\n"
    "  FROM jsonb_each(r.p_defects) AS e) top ON top.rk = 1"
)
"""Joined to ``results r``: the ``p_defects`` codes holding the tray's largest probability.

Codes that tie (two certain ones at 1.0, say) each give a row, so a tray counts under every
reason it has; a tray without codes gives one row whose ``top.reason`` is NULL (a LEFT join).
Shared by the Quality dashboard's HOLD reasons and the shift report.
"""
HOLD_REASON = f"coalesce(top.reason, '{NO_DEFECT_REASON}')"
"""A held tray's reason as text, over :data:`HOLD_TOP_JOIN`."""


@dataclass(frozen=True, slots=True)
class ShiftDevice:
    """One device's shift: trays per grade, mean score, ToF seq gaps, latest presence.

    Attributes:
        grades: trays per grade, in :class:`~sqal.wire.Grade` order (A, B, C, REJECT).
        missing_frames: ToF ``seq`` numbers missing within each boot.
        state: the last status before the shift's end, ``unknown`` without one.
    """

    device_id: str
    trays: int
    grades: tuple[int, ...]
    mean_score: float | None
    missing_frames: int
    state: str


@dataclass(frozen=True, slots=True)
class ShiftFacts:
    """A line's shift as stored, counted from ``results`` itself (exact at the edges).

    Attributes:
        grades: trays per grade value, every :class:`~sqal.wire.Grade` present.
        mean_score: mean ``final_score``; ``None`` without trays.
        reject_series: (bucket start, trays, rejects) per bucket, buckets aligned on ``since``.
        defects: (defect, trays), most frequent first.
        volumes_cm3: per profile, the ToF volumes of its trays, in time order.
        devices: per device, by id.
        dead_letters: (stage, reason, count), most frequent first; letters without a line
            count too.
        decisions: trays per decision, every :class:`~sqal.wire.Decision` present, and those
            without one under :data:`NO_DECISION`.
        hold_reasons: (reason, held trays), most frequent first (:data:`HOLD_TOP_JOIN`).
        not_counted: trays that are not product (calibration, maintenance): mode →
            (trays, devices); every other figure counts production trays only.
    """

    grades: dict[str, int]
    mean_score: float | None
    reject_series: list[tuple[datetime, int, int]]
    defects: list[tuple[str, int]]
    volumes_cm3: dict[str, list[float]]
    devices: list[ShiftDevice]
    dead_letters: list[tuple[str, str, int]]
    decisions: dict[str, int]
    hold_reasons: list[tuple[str, int]]
    not_counted: dict[str, tuple[int, int]] = field(default_factory=dict)


_WINDOW = sql.SQL("line_id = %(line)s AND ts >= %(since)s AND ts < %(until)s")
"""A line's period, of any table (frames, status)."""
_PRODUCED = sql.SQL(
    "line_id = %(line)s AND ts >= %(since)s AND ts < %(until)s AND mode = 'production'"
    " AND (%(lot)s::text IS NULL OR lot_id = %(lot)s)"
)
"""A line's production results in the period, of one lot when ``lot`` is given."""


def _count_of(grade: Grade) -> sql.Composable:
    """``count(*) FILTER (WHERE final_grade = 'A')`` for one grade."""
    return sql.SQL("count(*) FILTER (WHERE final_grade = {})").format(sql.Literal(grade.value))


_GRADE_NAMES = [sql.Identifier(f"n_{g.value}") for g in Grade]
_PER_GRADE = sql.SQL(", ").join(
    sql.SQL("{} AS {}").format(_count_of(g), name)
    for g, name in zip(Grade, _GRADE_NAMES, strict=True)
)
"""One count per grade, in :class:`~sqal.wire.Grade` order, named by ``_GRADE_NAMES``."""


# Per device: grades, mean score, ToF seq gaps within each boot, presence at the shift's end.
_DEVICES = sql.SQL(
    "WITH r AS (SELECT device_id, count(*) AS n, {grades}, avg(final_score) AS s"
    " FROM results WHERE {produced} GROUP BY 1),"
    " g AS (SELECT device_id, sum(max_seq - min_seq + 1 - seqs) AS gaps FROM ("
    "   SELECT device_id, max(seq) AS max_seq, min(seq) AS min_seq, count(DISTINCT seq) AS seqs"
    "   FROM tof_frames WHERE {window}"
    "   GROUP BY device_id, substring(sample_id FROM '-([0-9a-f]{{6}})-[0-9]+$')) x GROUP BY 1),"
    # each device's last status before the end: one probe of the unique index per device, not a
    # sort of the line's whole status history (sample_id is 'status' on every status row)
    " st AS (SELECT r.device_id, s.state FROM r CROSS JOIN LATERAL ("
    "   SELECT state FROM device_status WHERE line_id = %(line)s AND device_id = r.device_id"
    "   AND sample_id = 'status' AND ts < %(until)s ORDER BY ts DESC LIMIT 1) AS s)"
    " SELECT r.device_id, r.n, r.s, g.gaps, st.state, {grade_names}"
    " FROM r LEFT JOIN g USING (device_id) LEFT JOIN st USING (device_id) ORDER BY 1"
).format(
    grades=_PER_GRADE,
    window=_WINDOW,
    produced=_PRODUCED,
    grade_names=sql.SQL(", ").join(sql.SQL("r.{}").format(n) for n in _GRADE_NAMES),
)


_LINE_TABLES = ("results", "tof_frames", "spectral_frames", "device_status", "device_config")
"""Where a line leaves a trace; each has an index led by ``line_id``, so each probe is a seek."""

_LINE_SEEN = sql.SQL(" OR ").join(
    sql.SQL("EXISTS (SELECT 1 FROM {} WHERE line_id = %(line)s)").format(sql.Identifier(t))
    for t in _LINE_TABLES
)

# The distinct lines with results, by a loose index scan of results_line_ts (one seek per line,
# not a scan of every row).
_RESULT_LINES = sql.SQL(
    "WITH RECURSIVE l(line_id) AS ("
    " (SELECT line_id FROM results ORDER BY line_id LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT r.line_id FROM results r WHERE r.line_id > l.line_id"
    "         ORDER BY r.line_id LIMIT 1) FROM l WHERE l.line_id IS NOT NULL)"
    " SELECT line_id FROM l WHERE line_id IS NOT NULL LIMIT %(limit)s"
)


def line_seen(conn: psycopg.Connection, line: str) -> bool:
    """Whether the database holds anything of ``line``: a result, a frame, a status, a config.

    Raises:
        StorageError: a query failed.
    """
    try:
        row = conn.execute(sql.SQL("SELECT {}").format(_LINE_SEEN), {"line": line}).fetchone()
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot look the line up") from None
    return bool(row and row[0])


def result_lines(conn: psycopg.Connection, limit: int = 20) -> list[str]:
    """The first ``limit`` line ids with results, in order.

    Raises:
        StorageError: a query failed.
    """
    try:
        return [r[0] for r in conn.execute(_RESULT_LINES, {"limit": limit})]
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot list the lines") from None


def shift_facts(
    conn: psycopg.Connection,
    line: str,
    since: datetime,
    until: datetime,
    bucket: timedelta,
    lot: str | None = None,
) -> ShiftFacts:
    """Read a line's shift, ``since`` included, ``until`` excluded: production trays only, and
    the others counted apart.

    Args:
        bucket: the width of the reject series' buckets.
        lot: only the trays of this lot.

    Raises:
        StorageError: a query failed.
    """
    win = {"line": line, "since": since, "until": until, "lot": lot}
    try:
        facts = _shift_facts(conn, win, bucket)
    except psycopg.Error as exc:
        raise storage_error(exc, "shift report query") from None
    others = not_counted(conn, line, lot, since, until)
    return dataclasses.replace(facts, not_counted=others)


def _shift_facts(conn: psycopg.Connection, win: dict[str, object], bucket: timedelta) -> ShiftFacts:
    grades = {g.value: 0 for g in Grade}
    q = sql.SQL("SELECT final_grade, count(*) FROM results WHERE {} GROUP BY 1").format(_PRODUCED)
    for grade, n in conn.execute(q, win):
        grades[grade] = n
    q = sql.SQL("SELECT avg(final_score) FROM results WHERE {}").format(_PRODUCED)
    row = conn.execute(q, win).fetchone()
    mean_score = None if row is None or row[0] is None else float(row[0])
    q = sql.SQL(
        "SELECT time_bucket(%(bucket)s, ts, %(since)s), count(*), {} FROM results"
        " WHERE {} GROUP BY 1 ORDER BY 1"
    ).format(_count_of(Grade.REJECT), _PRODUCED)
    series = conn.execute(q, {**win, "bucket": bucket}).fetchall()
    q = sql.SQL(
        "SELECT d, count(*) FROM results, unnest(defects) AS d WHERE {}"
        " GROUP BY 1 ORDER BY 2 DESC, 1"
    ).format(_PRODUCED)
    defects = conn.execute(q, win).fetchall()
    volumes: dict[str, list[float]] = {}
    q = sql.SQL(
        "SELECT profile, tof_volume_mm3 / 1000.0 FROM results"
        " WHERE {} AND tof_volume_mm3 IS NOT NULL ORDER BY profile, ts"
    ).format(_PRODUCED)
    for profile, v in conn.execute(q, win):
        volumes.setdefault(profile, []).append(float(v))
    devices = [
        ShiftDevice(d, n, tuple(grade_counts), s, int(gaps or 0), state or "unknown")
        for d, n, s, gaps, state, *grade_counts in conn.execute(_DEVICES, win)
    ]
    dead = conn.execute(
        "SELECT stage, reason, count(*) FROM dead_letters WHERE (line_id = %(line)s"
        " OR line_id IS NULL) AND received_at >= %(since)s AND received_at < %(until)s"
        " GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        win,
    ).fetchall()
    decisions = {d.value: 0 for d in Decision} | {NO_DECISION: 0}
    q = sql.SQL("SELECT decision, count(*) FROM results WHERE {} GROUP BY 1").format(_PRODUCED)
    for decision, n in conn.execute(q, win):
        decisions[decision or NO_DECISION] = n
    q = sql.SQL(
        "SELECT {reason}, count(*) FROM results r {top}"
        " WHERE {window} AND r.decision = 'HOLD' GROUP BY 1 ORDER BY 2 DESC, 1"
    ).format(reason=sql.SQL(HOLD_REASON), top=sql.SQL(HOLD_TOP_JOIN), window=_PRODUCED)
    reasons = [(str(reason), int(n)) for reason, n in conn.execute(q, win)]
    return ShiftFacts(
        grades, mean_score, series, defects, volumes, devices, dead, decisions, reasons
    )


PRODUCTION = "r.mode = 'production'"
"""Results that are product (issue #19): calibration and maintenance trays are counted apart."""


@dataclass(frozen=True, slots=True)
class LotInfo:
    """A stored lot (``lots``, migration 0011) and its production trays so far.

    Attributes:
        trays: production results stamped with the lot.
        not_counted: results stamped with the lot in another mode, by mode.
    """

    line_id: str
    lot_id: str
    product: str
    qn_g: float
    tne_g: float
    started: datetime
    ended: datetime | None
    note: str | None
    trays: int
    not_counted: dict[str, int]


_LOTS = """
SELECT l.line_id, l.lot_id, l.product, l.qn_g, l.tne_g, l.started, l.ended, l.note,
       (SELECT count(*) FROM results r WHERE r.line_id = l.line_id AND r.lot_id = l.lot_id
          AND r.mode = 'production'),
       (SELECT coalesce(jsonb_object_agg(x.mode, x.n), '{}'::jsonb) FROM (
          SELECT r.mode, count(*) AS n FROM results r
          WHERE r.line_id = l.line_id AND r.lot_id = l.lot_id AND r.mode <> 'production'
          GROUP BY 1) x)
FROM lots l
WHERE (%(line)s::text IS NULL OR l.line_id = %(line)s)
  AND (%(lot)s::text IS NULL OR l.lot_id = %(lot)s)
  AND (%(since)s::timestamptz IS NULL OR coalesce(l.ended, 'infinity') >= %(since)s)
ORDER BY l.started DESC, l.line_id
LIMIT %(limit)s
"""


def lots(
    conn: psycopg.Connection,
    line: str | None = None,
    lot: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[LotInfo]:
    """Stored lots, newest first: of one line, one id, or those not ended before ``since``.

    Raises:
        StorageError: a query failed (e.g. the schema predates migration 0011).
    """
    args = {"line": line, "lot": lot, "since": since, "limit": limit}
    try:
        rows = conn.execute(_LOTS, args).fetchall()
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot read lots") from None
    return [
        LotInfo(line_id, lot_id, product, float(qn), float(tne), started, ended, note,
                int(trays), {str(k): int(v) for k, v in (other or {}).items()})
        for line_id, lot_id, product, qn, tne, started, ended, note, trays, other in rows
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class PackGroup:
    """The production packs of one lot (or, without a lot, one nominal quantity) in a selection.

    Attributes:
        lot_id: ``None`` for trays scored while the line had no open lot.
        qn_g, tne_g: the lot's, else the profile's (``targets``).
        mass_g: each pack's mass: the checkweigher's where the result has one, else m̂.
        sigma_g: its σ (the weight's, else m̂'s); ``None`` where unknown.
        weighed: packs whose mass is the checkweigher's.
    """

    lot_id: str | None
    qn_g: float
    tne_g: float
    mass_g: list[float]
    sigma_g: list[float | None]
    weighed: int


_PACKS = """
SELECT r.lot_id, coalesce(l.qn_g, t.qn_g) AS qn, coalesce(l.tne_g, t.tne_g) AS tne,
       array_agg(coalesce(r.weight_mass_g, r.tof_mass_g) ORDER BY r.ts),
       array_agg(CASE WHEN r.weight_mass_g IS NOT NULL THEN r.weight_sigma_g
                 ELSE r.tof_sigma_mass_g END ORDER BY r.ts),
       count(r.weight_mass_g)
FROM results r
LEFT JOIN lots l ON l.line_id = r.line_id AND l.lot_id = r.lot_id
LEFT JOIN unnest(%(profiles)s::text[], %(qn)s::float8[], %(tne)s::float8[])
    AS t(profile, qn_g, tne_g) ON t.profile = r.profile
WHERE r.line_id = %(line)s AND r.mode = 'production'
  AND (%(lot)s::text IS NULL OR r.lot_id = %(lot)s)
  AND (%(since)s::timestamptz IS NULL OR r.ts >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR r.ts < %(until)s)
  AND coalesce(r.weight_mass_g, r.tof_mass_g) IS NOT NULL
  AND coalesce(l.qn_g, t.qn_g) IS NOT NULL
GROUP BY 1, 2, 3
ORDER BY min(r.ts)
"""


def pack_groups(
    conn: psycopg.Connection,
    line: str,
    targets: dict[str, tuple[float, float]],
    lot: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[PackGroup]:
    """The production packs of a line, per lot, for the packers' rules (:mod:`views.packers`).

    Args:
        targets: profile → (Qn, TNE), for trays without a lot.
        lot: only this lot's packs; ``since``/``until``: only packs captured in that period
            (``since`` included), e.g. a shift.

    Raises:
        StorageError: a query failed.
    """
    names = sorted(targets)
    args = {
        "line": line, "lot": lot, "since": since, "until": until, "profiles": names,
        "qn": [targets[p][0] for p in names], "tne": [targets[p][1] for p in names],
    }  # fmt: skip
    try:
        rows = conn.execute(_PACKS, args).fetchall()
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot read the packs") from None
    return [
        PackGroup(lot_id, float(qn), float(tne), [float(m) for m in masses],
                  [None if s is None else float(s) for s in sigmas], int(weighed))
        for lot_id, qn, tne, masses, sigmas, weighed in rows
    ]  # fmt: skip


_NOT_COUNTED = """
SELECT mode, count(*), count(DISTINCT device_id) FROM results r
WHERE r.line_id = %(line)s AND r.mode <> 'production'
  AND (%(lot)s::text IS NULL OR r.lot_id = %(lot)s)
  AND (%(since)s::timestamptz IS NULL OR r.ts >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR r.ts < %(until)s)
GROUP BY 1 ORDER BY 1
"""


def not_counted(
    conn: psycopg.Connection,
    line: str,
    lot: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, tuple[int, int]]:
    """Trays that are not product (calibration, maintenance) in a selection: mode → (trays,
    devices).

    Raises:
        StorageError: a query failed.
    """
    args = {"line": line, "lot": lot, "since": since, "until": until}
    try:
        rows = conn.execute(_NOT_COUNTED, args).fetchall()
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot count the trays not counted") from None
    return {str(mode): (int(n), int(d)) for mode, n, d in rows}


_RECHECKED_MASSES = """
SELECT DISTINCT ON (sample_id) sample_id, mass_g
FROM rechecks
WHERE line_id = %s AND device_id = %s AND mass_g IS NOT NULL
ORDER BY sample_id, ts DESC
"""


def rechecked_masses(dsn: str, line: str, device: str) -> dict[str, float]:
    """By sample id, the mass an operator measured on re-checking the tray (the latest answer
    that has one): weighed trays for ``sqal calibrate --weights --rechecks``.

    Raises:
        StorageError: the database is unreachable or has no ``rechecks`` table.
    """
    with connect(dsn, "sqal-calibrate") as conn:
        try:
            rows = conn.execute(_RECHECKED_MASSES, (line, device)).fetchall()
        except psycopg.Error as exc:
            raise storage_error(exc, "cannot read re-checks") from None
    return {str(s): float(m) for s, m in rows}


def recheck_rows_since(dsn: str, since: datetime | None) -> list[dict[str, Any]]:
    """Re-check answers with their results' grade and mass (``sqal eval --rechecks``).

    Raises:
        StorageError: the database is unreachable or has no ``rechecks`` table.
    """
    from storage.station import recheck_rows

    with connect(dsn, "sqal-eval") as conn:
        try:
            return recheck_rows(conn, since or datetime(1970, 1, 1, tzinfo=UTC))
        except psycopg.Error as exc:
            raise storage_error(exc, "cannot read re-checks") from None
