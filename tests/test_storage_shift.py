"""The shift report's record queries on the real database (storage/shift.py, issue #19 item 5)."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from storage.shift import calibrations_used, dead_letters_by_device, offline_seconds
from tests.views_data import END, START, build_shift, fill


def test_offline_time_per_device_by_hand(fresh_db: str) -> None:
    """build_shift: dev-02 drops out from 60 min + 2 s to 60 min + 25 s (23 s); dev-03 goes
    offline at 100 min and stays so until the end (120 min): 20 min; dev-01 never."""
    fill(fresh_db, build_shift())
    with psycopg.connect(fresh_db) as conn:
        off = offline_seconds(conn, "L1", START, END)
        late = offline_seconds(conn, "L1", START + timedelta(minutes=110), END)
    assert off == pytest.approx({"dev-01": 0.0, "dev-02": 23.0, "dev-03": 1200.0})
    # A period that starts while dev-03 is offline counts from its start (state looked up before).
    assert late["dev-03"] == pytest.approx(600.0)


def test_calibrations_in_force_and_a_change_during_the_period(fresh_db: str) -> None:
    fill(fresh_db, build_shift())
    half = START + timedelta(hours=1)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            "UPDATE results SET calibration_id = 'cal-x-2' WHERE device_id = 'dev-01' AND ts >= %s",
            (half,),
        )
        used = calibrations_used(conn, "L1", START, END)
        n01 = conn.execute(
            "SELECT count(*) FILTER (WHERE ts < %s), count(*) FILTER (WHERE ts >= %s)"
            " FROM results WHERE device_id = 'dev-01'",
            (half, half),
        ).fetchone()
    dev01 = [u for u in used if u.device_id == "dev-01"]
    assert [u.calibration_id for u in dev01] == ["cal-x", "cal-x-2"]
    assert n01 is not None
    assert [u.trays for u in dev01] == list(n01)
    assert dev01[0].last < half <= dev01[1].first
    assert {u.device_id for u in used} == {"dev-01", "dev-02", "dev-03"}


def test_dead_letters_per_device_in_the_period(fresh_db: str) -> None:
    """build_shift: five bad_json and three schema dead letters of L1 name dev-01, 11 min apart
    from 7 min on; two bad_topic ones name no line or device."""
    fill(fresh_db, build_shift())
    with psycopg.connect(fresh_db) as conn:
        assert dead_letters_by_device(conn, "L1", START, END) == {"dev-01": 8}
        assert dead_letters_by_device(conn, "L1", START, START + timedelta(minutes=30)) == {
            "dev-01": 3
        }
        assert dead_letters_by_device(conn, "L2", START, END) == {}
