"""The batch writer: idempotent inserts, exact roll-ups, bad rows isolated, typed errors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import psycopg
import pytest

from sqal.errors import StorageError
from sqal.wire import (
    Decision,
    DefectCode,
    DeviceState,
    DeviceStatus,
    Frame,
    Grade,
    Kind,
    WeighedResult,
    device_topic,
    parse_topic,
)
from storage.rows import PendingRow, pending_row
from storage.tables import TABLES
from storage.writer import BatchWriter
from tests.test_ingest_frames import T0, migrated, result, tof_frame, weight


def _rows(kind: Kind, frames: Sequence[Frame]) -> list[PendingRow]:
    out = []
    for i, f in enumerate(frames):
        topic = parse_topic(device_topic("line-w", f.device_id, kind))
        row = pending_row(topic, f, T0, f"payload {i}".encode(), i)
        assert row is not None
        out.append(row)
    return out


def _replace(row: PendingRow, column: str, value: object) -> PendingRow:
    """``row`` with one value changed (a value the database refuses)."""
    values = list(row.values)
    values[TABLES[row.table].index(column)] = value
    return PendingRow(row.table, tuple(values), row.topic, row.payload, row.tag)


def test_duplicates_in_and_across_batches_insert_once_and_count_once(fresh_db: str) -> None:
    dsn = migrated(fresh_db)
    grades = [Grade.A, Grade.B, Grade.REJECT, Grade.REJECT]
    results = [result("d1", s, grades[s % 4], 0.5, ["underfill", "tilted"]) for s in range(8)]
    w = BatchWriter(dsn)
    try:
        rows = _rows(Kind.RESULT, results)
        first = w.write(rows + rows[:3], [])  # redelivered inside the batch too
        second = w.write(rows, [])
    finally:
        w.close()
    assert first.inserted == {"results": 8}
    assert first.offered == {"results": 11}
    assert second.inserted == {"results": 0}
    with psycopg.connect(dsn) as conn:
        roll = conn.execute(
            "SELECT sum(n_total), sum(n_a), sum(n_b), sum(n_reject), sum(score_sum),"
            " sum(score_count) FROM results_1m"
        ).fetchone()
        defects: dict[str, int] = dict(
            conn.execute("SELECT defect, sum(n)::int FROM defects_1m GROUP BY 1").fetchall()
        )
        mean = conn.execute("SELECT mean_score FROM results_1m_view").fetchone()
    assert roll == (8, 2, 2, 4, 4.0, 8)
    assert defects == {"underfill": 8, "tilted": 8}
    assert mean == (0.5,)


def test_keys_with_a_tab_or_newline_are_probed_as_lists_and_stored_once(fresh_db: str) -> None:
    """The key probe sends keys as tab-separated text; an id that could break it (the wire's
    patterns allow none today) goes the slower way, with the same outcome."""
    dsn = migrated(fresh_db)
    results = [result("d1", s, Grade.A, 0.5, []) for s in range(3)]
    rows = [
        _replace(r, "device_id", f"d\t{i}\n") for i, r in enumerate(_rows(Kind.RESULT, results))
    ]
    w = BatchWriter(dsn)
    try:
        first = w.write(rows, [])
        second = w.write(rows, [])
    finally:
        w.close()
    assert first.inserted == {"results": 3}
    assert second.inserted == {"results": 0}


def test_the_same_device_sample_and_time_on_two_lines_are_two_rows(fresh_db: str) -> None:
    """#15: the key lacked the line, so L2/b01's frame sharing a sample id and ts with L1/b01's
    was taken for a duplicate and dropped (no row, no dead letter)."""
    dsn = migrated(fresh_db)
    frame = tof_frame("b01", 3, np.random.default_rng(7))
    rows = []
    for i, line in enumerate(("L1", "L2")):
        row = pending_row(parse_topic(device_topic(line, "b01", Kind.TOF)), frame, T0, b"p", i)
        assert row is not None
        rows.append(row)
    w = BatchWriter(dsn)
    try:
        first = w.write(rows[:1], [])
        second = w.write(rows[1:], [])
    finally:
        w.close()
    assert (first.inserted, second.inserted) == ({"tof_frames": 1}, {"tof_frames": 1})
    with psycopg.connect(dsn) as conn:
        lines = conn.execute("SELECT line_id FROM tof_frames ORDER BY 1").fetchall()
    assert lines == [("L1",), ("L2",)]


def test_a_conflicting_duplicate_is_a_dead_letter_and_the_first_stays(fresh_db: str) -> None:
    """#15: the same key with other content kept the first and only counted a duplicate."""
    dsn = migrated(fresh_db)
    rng = np.random.default_rng(5)
    first = tof_frame("c1", 1, rng)
    other = first.model_copy(update={"sensor_temp_c": 99.5})  # same key, other content
    topic = parse_topic(device_topic("line-w", "c1", Kind.TOF))
    rows = [pending_row(topic, f, T0, p, i) for i, (f, p) in
            enumerate([(first, b"first"), (first, b"again"), (other, b"other")])]  # fmt: skip
    assert all(r is not None for r in rows)
    w = BatchWriter(dsn)
    try:
        once = w.write([rows[0]], [])  # type: ignore[list-item]
        later = w.write([rows[1], rows[2]], [])  # type: ignore[list-item]
        inside = w.write([rows[2], rows[2]], [])  # type: ignore[list-item]
    finally:
        w.close()
    assert once.inserted == {"tof_frames": 1}
    assert [r.tag for r in later.refused] == [2]  # the identical redelivery is no conflict
    assert [r.reason for r in later.refused] == ["conflict"]
    assert [r.tag for r in inside.refused] == [2, 2]
    with psycopg.connect(dsn) as conn:
        temp = conn.execute("SELECT sensor_temp_c FROM tof_frames").fetchall()
        dead = conn.execute("SELECT reason, payload FROM dead_letters ORDER BY id").fetchall()
    assert temp == [(first.sensor_temp_c,)]
    assert dead == [("conflict", b"other")] * 3


def test_a_weight_is_stored_once_and_another_mass_under_its_key_is_a_conflict(
    fresh_db: str,
) -> None:
    dsn = migrated(fresh_db)
    first = weight("cw", 1, 402.7)
    heavier = weight("cw", 1, 402.8)  # same line, device, sample_id and ts
    rows = _rows(Kind.WEIGHT, [first, first, weight("cw", 2), heavier])
    w = BatchWriter(dsn)
    try:
        once = w.write(rows[:3], [])  # the redelivery inside the batch counts once
        again = w.write(rows[:2], [])
        conflict = w.write(rows[3:], [])
    finally:
        w.close()
    assert (once.inserted, once.offered) == ({"weights": 2}, {"weights": 3})
    assert (again.inserted, again.refused) == ({"weights": 0}, ())
    assert [(r.tag, r.reason) for r in conflict.refused] == [(3, "conflict")]
    with psycopg.connect(dsn) as conn:
        stored = conn.execute("SELECT seq, mass_g, sigma_g FROM weights ORDER BY seq").fetchall()
        dead = conn.execute("SELECT reason, payload FROM dead_letters").fetchall()
    assert stored == [(1, 402.7, 0.5), (2, 402.7, 0.5)]  # double precision: exactly as sent
    assert dead == [("conflict", b"payload 3")]


def test_a_refused_row_becomes_a_dead_letter_and_its_batch_commits(fresh_db: str) -> None:
    dsn = migrated(fresh_db)
    rng = np.random.default_rng(4)
    frames = [tof_frame("d2", s, rng) for s in range(20)]
    rows = _rows(Kind.TOF, frames)
    rows[7] = _replace(rows[7], "distance_mm", [40_000] * 64)  # beyond smallint
    w = BatchWriter(dsn)
    try:
        report = w.write(rows, [])
    finally:
        w.close()
    assert report.inserted == {"tof_frames": 19}
    assert [r.tag for r in report.refused] == [7]
    assert report.refused[0].sqlstate == "22003"
    assert "distance_mm" in report.refused[0].detail
    assert report.dead_letters == 1
    with psycopg.connect(dsn) as conn:
        stored = conn.execute("SELECT count(*), min(distance_mm[1]) FROM tof_frames").fetchone()
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        letter = conn.execute(
            "SELECT stage, topic, line_id, device_id, reason, detail, payload FROM dead_letters"
        ).fetchone()
    assert stored is not None
    assert stored[0] == 19
    assert stored[1] > 0
    assert dead == (1,)
    assert letter is not None
    assert letter[:5] == ("ingest", rows[7].topic, "line-w", "d2", "processing")
    assert letter[5] == f"database refused the row (sqlstate 22003): {report.refused[0].detail}"
    assert letter[5] == report.refused[0].dead_detail
    assert bytes(letter[6]) == b"payload 7"


def test_an_unreachable_database_raises_storage_error() -> None:
    from embedded import free_port

    w = BatchWriter(f"postgresql://sqal@127.0.0.1:{free_port()}/sqal")
    with pytest.raises(StorageError, match="cannot connect to the database") as info:
        w.write([], [])
    assert info.value.sqlstate is None


def test_a_database_without_the_schema_raises_storage_error_with_sqlstate(fresh_db: str) -> None:
    rows = _rows(Kind.TOF, [tof_frame("d3", 0, np.random.default_rng(0))])
    w = BatchWriter(fresh_db)
    try:
        with pytest.raises(StorageError) as info:
            w.write(rows, [])
    finally:
        w.close()
    assert info.value.sqlstate == "42P01"  # undefined_table: run sqal db migrate


def test_matrices_are_stored_flat_row_major_with_exact_values(fresh_db: str) -> None:
    dsn = migrated(fresh_db)
    f = tof_frame("d4", 1, np.random.default_rng(8))
    w = BatchWriter(dsn)
    try:
        w.write(_rows(Kind.TOF, [f]), [])
    finally:
        w.close()
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT layout, distance_mm, signal_per_spad, array_ndims(distance_mm) FROM tof_frames"
        ).fetchone()
    assert row is not None
    layout, dist, signal, ndims = row
    assert layout == 8
    assert ndims == 1
    assert dist == [v for r in f.distance_mm for v in r]
    assert signal == pytest.approx([v for r in f.signal_per_spad for v in r], rel=1e-6)


def test_isolated_batch_of_results_keeps_the_rollups_exact(fresh_db: str) -> None:
    """A refused result sends its batch row by row (staging path); roll-ups count the rest."""
    dsn = migrated(fresh_db)
    rows = _rows(Kind.RESULT, [result("d5", s, Grade.REJECT, 0.5, ["oxidation"]) for s in range(6)])
    w = BatchWriter(dsn)
    try:
        w.write(rows[:2], [])  # two already stored: redelivered below
        rows[4] = _replace(rows[4], "tof_valid_zones", 40_000)  # beyond smallint
        report = w.write(rows, [])
    finally:
        w.close()
    assert report.inserted == {"results": 3}
    assert [r.tag for r in report.refused] == [4]
    with psycopg.connect(dsn) as conn:
        roll = conn.execute("SELECT sum(n_total), sum(n_reject) FROM results_1m").fetchone()
        n = conn.execute("SELECT sum(n) FROM defects_1m").fetchone()
    assert roll == (5, 5)
    assert n == (5,)


def test_a_result_s_decision_and_probabilities_are_stored_beside_an_earlier_one_s_nulls(
    fresh_db: str,
) -> None:
    """Migration 0008: decision, data_quality, p_reject, p_defects and the checkweigher's mass
    land in their columns; a result of an earlier analyzer leaves them NULL."""
    dsn = migrated(fresh_db)
    old = result("d9", 1, Grade.A, 0.9, [])
    new = result("d9", 2, Grade.B, 0.8, ["oxidation"])
    fusion = new.fusion.model_copy(
        update={
            "decision": Decision.HOLD,
            "data_quality": 0.95,
            "p_reject": 0.031,
            "p_defects": {DefectCode.OXIDATION: 0.62, DefectCode.UNDERFILL: 0.031},
        }
    )
    new = new.model_copy(
        update={"fusion": fusion, "weight": WeighedResult(mass_g=401.3, sigma_g=0.5)}
    )
    w = BatchWriter(dsn)
    try:
        assert w.write(_rows(Kind.RESULT, [old, new]), []).inserted == {"results": 2}
    finally:
        w.close()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT sample_id, decision, data_quality, p_reject, p_defects, weight_mass_g"
            " FROM results ORDER BY sample_id"
        ).fetchall()
    assert rows[0][1:] == (None, None, None, None, None)
    assert rows[1][1] == "HOLD"
    assert rows[1][2] == pytest.approx(0.95)
    assert rows[1][3] == pytest.approx(0.031)
    assert rows[1][4] == {"oxidation": 0.62, "underfill": 0.031}
    assert rows[1][5] == 401.3


def _status(device: str, minute: int, state: str, firmware: str = "1.0") -> DeviceStatus:
    return DeviceStatus(
        device_id=device,
        state=DeviceState(state),
        ts=T0 + timedelta(minutes=minute),
        firmware=firmware,
        temperature_c=30.0 + minute,
    )


def _last_status(dsn: str) -> dict[str, tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT device_id, ts, state, firmware, temperature_c FROM device_last_status"
            " WHERE line_id = 'line-w'"
        ).fetchall()
    return {str(r[0]): tuple(r[1:]) for r in rows}


def test_each_device_s_last_status_follows_its_newest_status_on_both_paths(
    fresh_db: str,
) -> None:
    """Migration 0010: one row per device, the status of largest ts; a late one changes nothing."""
    dsn = migrated(fresh_db)
    at = {m: T0 + timedelta(minutes=m) for m in range(6)}
    w = BatchWriter(dsn)
    try:
        # fast path, two statuses of d1 in one batch: the later wins whatever the order
        w.write(_rows(Kind.STATUS, [_status("d1", 2, "online"), _status("d1", 1, "online")]), [])
        w.write(_rows(Kind.STATUS, [_status("d2", 1, "online")]), [])
        assert _last_status(dsn) == {
            "d1": (at[2], "online", "1.0", 32.0),
            "d2": (at[1], "online", "1.0", 31.0),
        }
        # a status older than the stored one, and a redelivery: nothing changes
        w.write(_rows(Kind.STATUS, [_status("d1", 0, "offline"), _status("d2", 1, "online")]), [])
        assert _last_status(dsn)["d1"] == (at[2], "online", "1.0", 32.0)
        # the row-by-row path (a refused row in the batch) keeps it too
        rows = _rows(
            Kind.STATUS,
            [_status("d1", 4, "offline", "1.1"), _status("d2", 5, "online"),
             _status("d2", 3, "offline")],
        )  # fmt: skip
        rows[1] = _replace(rows[1], "v", 40_000)  # beyond smallint: refused, a dead letter
        report = w.write(rows, [])
    finally:
        w.close()
    assert report.inserted == {"device_status": 2}
    assert _last_status(dsn) == {
        "d1": (at[4], "offline", "1.1", 34.0),
        "d2": (at[3], "offline", "1.0", 33.0),
    }
