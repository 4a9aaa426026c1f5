"""The station's SQL (issue #20): its users, read-API tokens, alarms, re-checks and history.

Each function takes an open connection (the station opens one per request, in a worker thread,
so a database restart costs the requests made while it was down, nothing more) and returns
plain data. psycopg's errors become :class:`~sqal.errors.StorageError` here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sqal.errors import StorageError
from storage.connection import connect, storage_error
from storage.tables import RECHECKS

UNDEFINED_TABLE = "42P01"


@contextlib.contextmanager
def session(dsn: str, what: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection for one request, committed at the end; errors as ``StorageError``.

    Raises:
        StorageError: unreachable, or a statement failed (``what`` says which request).
    """
    conn = connect(dsn, "sqal-station")
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        err = storage_error(exc, what)
        if exc.sqlstate == UNDEFINED_TABLE:
            err = StorageError(f"{err}; run `sqal db migrate --db DSN` first", exc.sqlstate)
        raise err from None
    finally:
        conn.close()


# --- users and tokens ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRow:
    name: str
    role: str
    password_hash: str
    language: str


def put_user(
    conn: psycopg.Connection[Any],
    name: str,
    role: str,
    password_hash: str,
    language: str | None = None,
) -> bool:
    """Add a user, or give an existing one this role and password; True when added.

    Args:
        language: the pages' language (``en``, ``fr``); ``None``: English for a new user, the
            same for an existing one.
    """
    row = conn.execute(
        "INSERT INTO station_users (name, role, password_hash, language)"
        " VALUES (%s, %s, %s, coalesce(%s, 'en'))"
        " ON CONFLICT (name) DO UPDATE SET role = excluded.role,"
        " password_hash = excluded.password_hash,"
        " language = coalesce(%s, station_users.language), updated_at = now()"
        " RETURNING (xmax = 0)",
        (name, role, password_hash, language, language),
    ).fetchone()
    return bool(row and row[0])


def set_language(conn: psycopg.Connection[Any], name: str, language: str) -> bool:
    """Store a user's language (the page's switch); False when there is no such user."""
    cur = conn.execute(
        "UPDATE station_users SET language = %s, updated_at = now() WHERE name = %s",
        (language, name),
    )
    return cur.rowcount == 1


def get_user(conn: psycopg.Connection[Any], name: str) -> UserRow | None:
    row = conn.execute(
        "SELECT name, role, password_hash, language FROM station_users WHERE name = %s", (name,)
    ).fetchone()
    return UserRow(*row) if row else None


def set_password_hash(conn: psycopg.Connection[Any], name: str, password_hash: str) -> None:
    """Store a re-hashed password (argon2's parameters were raised since it was set)."""
    conn.execute(
        "UPDATE station_users SET password_hash = %s, updated_at = now() WHERE name = %s",
        (password_hash, name),
    )


def put_token(conn: psycopg.Connection[Any], name: str, digest: bytes) -> None:
    """Store a token's SHA-256 under ``name``, replacing (and so revoking) an older one."""
    conn.execute(
        "INSERT INTO station_tokens (name, token_sha256) VALUES (%s, %s) ON CONFLICT (name)"
        " DO UPDATE SET token_sha256 = excluded.token_sha256, created_at = now(),"
        " last_used_at = NULL, revoked_at = NULL",
        (name, digest),
    )


def token_name(conn: psycopg.Connection[Any], digest: bytes) -> str | None:
    """The name of the live token with this SHA-256 (its last use recorded), else ``None``."""
    row = conn.execute(
        "UPDATE station_tokens SET last_used_at = now()"
        " WHERE token_sha256 = %s AND revoked_at IS NULL RETURNING name",
        (digest,),
    ).fetchone()
    return str(row[0]) if row else None


# --- alarms --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlarmRow:
    id: int
    line_id: str
    kind: str
    subject: str
    raised_at: datetime
    detail: str
    cleared_at: datetime | None
    acked_by: str | None
    acked_at: datetime | None


_ALARM_COLUMNS = "id, line_id, kind, subject, raised_at, detail, cleared_at, acked_by, acked_at"


def open_alarms(conn: psycopg.Connection[Any]) -> list[AlarmRow]:
    """Alarms still active or not yet acknowledged, oldest first."""
    rows = conn.execute(
        f"SELECT {_ALARM_COLUMNS} FROM station_alarms"  # noqa: S608  (a constant list)
        " WHERE acked_at IS NULL OR cleared_at IS NULL ORDER BY raised_at, id"
    ).fetchall()
    return [AlarmRow(*r) for r in rows]


def insert_alarm(
    conn: psycopg.Connection[Any],
    line: str,
    kind: str,
    subject: str,
    raised_at: datetime,
    detail: str,
) -> int:
    """Store a raised alarm; its id (the same row's when it was stored before)."""
    row = conn.execute(
        "INSERT INTO station_alarms (line_id, kind, subject, raised_at, detail)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (line_id, kind, subject, raised_at)"
        " DO UPDATE SET detail = excluded.detail RETURNING id",
        (line, kind, subject, raised_at, detail),
    ).fetchone()
    assert row is not None  # RETURNING of an upsert always yields the row
    return int(row[0])


def clear_alarm(conn: psycopg.Connection[Any], alarm_id: int, at: datetime) -> None:
    conn.execute(
        "UPDATE station_alarms SET cleared_at = %s WHERE id = %s AND cleared_at IS NULL",
        (at, alarm_id),
    )


def ack_alarm(conn: psycopg.Connection[Any], alarm_id: int, user: str, at: datetime) -> bool:
    """Record who acknowledged an alarm; False when there is no such unacknowledged alarm."""
    cur = conn.execute(
        "UPDATE station_alarms SET acked_by = %s, acked_at = %s WHERE id = %s AND acked_at IS NULL",
        (user, at, alarm_id),
    )
    return cur.rowcount == 1


# --- results, evidence, the HOLD queue -----------------------------------------------------

TRAY_COLUMNS = (
    "ts, line_id, device_id, sample_id, profile, final_grade, final_score, confidence,"
    " decision, defects, p_reject, p_defects, tof_mass_g, weight_mass_g, tof_volume_mm3,"
    " spectral_lab_l, spectral_lab_a, spectral_lab_b, received_at"
)
"""The ``results`` columns a tray's line in the station shows."""


def recent_trays(
    conn: psycopg.Connection[Any], line: str, since: datetime, limit: int
) -> list[dict[str, Any]]:
    """A line's latest results since ``since``, newest first."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            f"SELECT {TRAY_COLUMNS} FROM results"  # noqa: S608  (a constant list)
            " WHERE line_id = %s AND ts >= %s ORDER BY ts DESC LIMIT %s",
            (line, since, limit),
        )
        .fetchall()
    )


def known_lines(conn: psycopg.Connection[Any], since: datetime) -> list[str]:
    """Lines with a result or a device status since ``since``."""
    rows = conn.execute(
        "SELECT line_id FROM results WHERE ts >= %s UNION"
        " SELECT line_id FROM device_status WHERE ts >= %s ORDER BY 1",
        (since, since),
    ).fetchall()
    return [str(r[0]) for r in rows]


def latest_status(conn: psycopg.Connection[Any], since: datetime) -> list[dict[str, Any]]:
    """Each device's last status row since ``since``."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT DISTINCT ON (line_id, device_id) line_id, device_id, state, ts"
            " FROM device_status WHERE ts >= %s ORDER BY line_id, device_id, ts DESC",
            (since,),
        )
        .fetchall()
    )


def hold_queue(
    conn: psycopg.Connection[Any], lines: Sequence[str] | None, since: datetime, limit: int
) -> list[dict[str, Any]]:
    """Held trays (decision HOLD) without a re-check answer yet, oldest first."""
    where = sql.SQL("")
    params: list[Any] = [since]
    if lines is not None:
        where = sql.SQL(" AND r.line_id = ANY(%s)")
        params.append(list(lines))
    params.append(limit)
    cols = sql.SQL(", ").join(
        sql.SQL("r.{}").format(sql.Identifier(c.strip())) for c in TRAY_COLUMNS.split(",")
    )
    query = sql.SQL(
        "SELECT {} FROM results r WHERE r.decision = 'HOLD' AND r.ts >= %s{} AND NOT EXISTS"
        " (SELECT 1 FROM rechecks k WHERE k.line_id = r.line_id AND k.device_id = r.device_id"
        " AND k.sample_id = r.sample_id AND k.result_ts = r.ts) ORDER BY r.ts LIMIT %s"
    ).format(cols, where)
    return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()


def one_result(
    conn: psycopg.Connection[Any], line: str, device: str, sample_id: str, ts: datetime
) -> dict[str, Any] | None:
    """The result with this key, or ``None``."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            f"SELECT {TRAY_COLUMNS} FROM results"  # noqa: S608  (a constant list)
            " WHERE line_id = %s AND device_id = %s AND sample_id = %s AND ts = %s",
            (line, device, sample_id, ts),
        )
        .fetchone()
    )


@dataclass(frozen=True, slots=True)
class StoredTof:
    """A tray's stored ToF frame and the calibration its device had then.

    Attributes:
        distance_mm, target_status: flattened row-major (zone i = r·layout + c).
        calibration: the device config's calibration block (jsonb), or ``None``.
        profile: the config's profile name, or ``None`` without a stored config.
    """

    layout: int
    distance_mm: list[int]
    target_status: list[int]
    calibration: dict[str, Any] | None
    profile: str | None


def stored_tof(
    conn: psycopg.Connection[Any], line: str, device: str, sample_id: str, ts: datetime
) -> StoredTof | None:
    """The ToF frame of a sample near ``ts`` and the device's config at that time."""
    row = conn.execute(
        "SELECT layout, distance_mm, target_status FROM tof_frames WHERE line_id = %s"
        " AND device_id = %s AND sample_id = %s AND ts BETWEEN %s - interval '1 hour'"
        " AND %s + interval '1 hour' ORDER BY abs(extract(epoch FROM ts - %s)) LIMIT 1",
        (line, device, sample_id, ts, ts, ts),
    ).fetchone()
    if row is None:
        return None
    cfg = conn.execute(
        "SELECT calibration, profile FROM device_config WHERE line_id = %s AND device_id = %s"
        " AND ts <= %s ORDER BY ts DESC LIMIT 1",
        (line, device, ts),
    ).fetchone()
    return StoredTof(
        int(row[0]),
        list(row[1]),
        list(row[2]),
        cfg[0] if cfg else None,
        cfg[1] if cfg else None,
    )


def device_calibration(
    conn: psycopg.Connection[Any], line: str, device: str, ts: datetime
) -> dict[str, Any] | None:
    """The calibration block of a device's config at ``ts``, or ``None``."""
    row = conn.execute(
        "SELECT calibration FROM device_config WHERE line_id = %s AND device_id = %s"
        " AND ts <= %s ORDER BY ts DESC LIMIT 1",
        (line, device, ts),
    ).fetchone()
    return row[0] if row else None


def insert_recheck(conn: psycopg.Connection[Any], values: tuple[object, ...]) -> bool:
    """Store a re-check row (:func:`storage.rows.recheck_row`); False when its key was stored."""
    cur = conn.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
            RECHECKS.ident,
            RECHECKS.column_list,
            sql.SQL(", ").join(sql.Placeholder() * len(RECHECKS.columns)),
        ),
        values,
    )
    return cur.rowcount == 1


def latest_rechecks(
    conn: psycopg.Connection[Any], lines: Sequence[str] | None, limit: int
) -> list[dict[str, Any]]:
    """The latest re-check answers, newest first."""
    where = sql.SQL("") if lines is None else sql.SQL(" WHERE line_id = ANY(%s)")
    params: list[Any] = [] if lines is None else [list(lines)]
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            sql.SQL(
                "SELECT ts, line_id, device_id, sample_id, result_ts, decision, answer, mass_g,"
                " note, user_name FROM rechecks{} ORDER BY ts DESC LIMIT %s"
            ).format(where),
            [*params, limit],
        )
        .fetchall()
    )


# --- the read API ----------------------------------------------------------------------------

API_COLUMNS = (
    "ts", "line_id", "device_id", "sample_id", "profile", "final_grade", "final_score",
    "confidence", "decision", "defects", "p_reject", "tof_mass_g", "tof_volume_mm3",
    "weight_mass_g", "lot_id", "mode", "received_at",
)  # fmt: skip


def api_results(
    conn: psycopg.Connection[Any],
    *,
    line: str | None,
    device: str | None,
    since: datetime | None,
    until: datetime | None,
    decision: str | None,
    limit: int,
    lot: str | None = None,
    mode: str | None = "production",
) -> list[dict[str, Any]]:
    """Results matching every given filter, newest first (``mode`` ``None``: any mode)."""
    conds: list[sql.Composable] = []
    params: list[Any] = []
    for column, value, op in (
        ("line_id", line, "="),
        ("device_id", device, "="),
        ("ts", since, ">="),
        ("ts", until, "<"),
        ("decision", decision, "="),
        ("lot_id", lot, "="),
        ("mode", mode, "="),
    ):
        if value is not None:
            conds.append(sql.SQL("{} {} %s").format(sql.Identifier(column), sql.SQL(op)))
            params.append(value)
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conds) if conds else sql.SQL("")
    query = sql.SQL("SELECT {} FROM results{} ORDER BY ts DESC LIMIT %s").format(
        sql.SQL(", ").join(map(sql.Identifier, API_COLUMNS)), where
    )
    return conn.cursor(row_factory=dict_row).execute(query, [*params, limit]).fetchall()


SAMPLE_COLUMNS = (
    *API_COLUMNS, "v", "calibration_id", "p_defects", "data_quality", "tof_sigma_mass_g",
    "weight_sigma_g", "tof_avg_height_mm", "tof_max_height_mm", "tof_height_variation_mm",
    "tof_surface_uniformity", "tof_tilt_deg", "tof_fill_ratio", "tof_valid_zones", "tof_grade",
    "tof_defects", "spectral_freshness_index", "spectral_fat_quality_index",
    "spectral_oxidation_index", "spectral_color_uniformity", "spectral_lab_l", "spectral_lab_a",
    "spectral_lab_b", "spectral_grade", "spectral_defects", "analyzer_version", "processing_ms",
)  # fmt: skip
"""The ``results`` columns of one sample in the read API."""


def sample_result(
    conn: psycopg.Connection[Any], line: str, device: str, sample_id: str
) -> dict[str, Any] | None:
    """The result of a sample (its latest stored copy: one sent again with another capture time
    counts once, as :func:`storage.queries.stored_frames` reads frames), or ``None``."""
    query = sql.SQL(
        "SELECT {} FROM results WHERE line_id = %s AND device_id = %s AND sample_id = %s"
        " ORDER BY received_at DESC, ts DESC LIMIT 1"
    ).format(sql.SQL(", ").join(map(sql.Identifier, SAMPLE_COLUMNS)))
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(query, (line, device, sample_id)).fetchone()


def last_statuses(conn: psycopg.Connection[Any], line: str | None) -> list[dict[str, Any]]:
    """Each device's latest status (``device_last_status``, migration 0010), of one line or all,
    by line and device."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT line_id, device_id, state, ts, firmware, temperature_c, humidity_pct,"
            " uptime_s, received_at FROM device_last_status"
            " WHERE %(line)s::text IS NULL OR line_id = %(line)s ORDER BY line_id, device_id",
            {"line": line},
        )
        .fetchall()
    )


def recheck_rows(conn: psycopg.Connection[Any], since: datetime) -> list[dict[str, Any]]:
    """Re-check answers since ``since`` with the grade and mass their result published
    (:func:`views.rechecks.evaluate_rechecks` reads them)."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT k.ts, k.line_id, k.device_id, k.sample_id, k.result_ts, k.decision, k.answer,"
            " k.mass_g, r.final_grade, r.tof_mass_g FROM rechecks k LEFT JOIN results r"
            " ON r.line_id = k.line_id AND r.device_id = k.device_id AND r.sample_id = k.sample_id"
            " AND r.ts = k.result_ts WHERE k.ts >= %s ORDER BY k.ts",
            (since,),
        )
        .fetchall()
    )


def same_recheck_since(
    conn: psycopg.Connection[Any], values: tuple[object, ...], since: datetime
) -> bool:
    """Whether the same user gave the same answer for the same tray since ``since`` (a form
    sent twice, a double click): the second is not recorded."""
    r = dict(zip(RECHECKS.column_names, values, strict=True))
    row = conn.execute(
        "SELECT 1 FROM rechecks WHERE line_id = %s AND device_id = %s AND sample_id = %s"
        " AND result_ts = %s AND answer = %s AND mass_g IS NOT DISTINCT FROM %s"
        " AND note IS NOT DISTINCT FROM %s AND user_name = %s AND ts >= %s",
        (r["line_id"], r["device_id"], r["sample_id"], r["result_ts"], r["answer"],
         r["mass_g"], r["note"], r["user_name"], since),
    ).fetchone()  # fmt: skip
    return row is not None
