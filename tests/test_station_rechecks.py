"""Re-checks beyond the station: ingest stores them idempotently, ``sqal eval --rechecks``
reports the verdict against them, ``sqal calibrate --rechecks`` weighs with them; and the
station's pure parts (alarms, evidence)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app as cli
from embedded import Mosquitto
from ingest.service import IngestConfig, IngestService
from sqal.profiles import load_profile
from sqal.stats import wilson
from sqal.wire import (
    Decision,
    DefectCode,
    DeviceTopic,
    Frame,
    Grade,
    Kind,
    Recheck,
    RecheckAnswer,
    decode,
    device_topic,
    encode,
)
from station.evidence import height_map, lab_to_srgb, mass_sigma_g
from station.live import MIN_TRAYS_FOR_RATE_ALARM, AlarmKind, Board, Tray
from storage import station as db
from storage.rows import recheck_row
from tests.station_kit import PROFILE, now_ts, publish, result, station_db, store, wait_for
from tests.test_ingest_frames import count
from views.rechecks import evaluate_rechecks

LINE = "rk-L1"


def recheck(sample: str, result_ts: datetime, answer: str, mass_g: float | None = None,
            decision: Decision = Decision.HOLD, at: datetime | None = None) -> Recheck:  # fmt: skip
    return Recheck(device_id="n1", sample_id=sample, ts=at or now_ts(), result_ts=result_ts,
                   answer=RecheckAnswer(answer), decision=decision, mass_g=mass_g,
                   user="op", note="by hand")  # fmt: skip


def test_a_recheck_round_trips_the_codec_and_its_schema_is_exported(tmp_path: Path) -> None:
    rc = recheck("s1", now_ts(-60), "accept", 399.0)
    topic = device_topic(LINE, "n1", Kind.RECHECK)
    assert decode(topic, encode(rc)) == rc
    out = CliRunner().invoke(cli, ["contract", "export", "--out", str(tmp_path)])
    assert out.exit_code == 0
    assert (tmp_path / "recheck.schema.json").is_file()
    committed = Path(__file__).resolve().parent.parent / "docs/contract/recheck.schema.json"
    assert committed.read_text() == (tmp_path / "recheck.schema.json").read_text()


def test_ingest_stores_a_recheck_once_even_when_the_station_stored_it_first(
    broker: Mosquitto, fresh_db: str
) -> None:
    dsn = station_db(fresh_db)
    t0 = now_ts(-120)
    store(dsn, LINE, [(Kind.RESULT, result("n1", "s1", t0, Decision.HOLD))])
    first = recheck("s1", t0, "reject", 398.5)
    with db.session(dsn, "station insert") as conn:  # what the station does on the form's POST
        assert db.insert_recheck(conn, recheck_row(DeviceTopic(LINE, "n1", Kind.RECHECK), first))
    second = recheck("s1", t0, "accept", None, at=now_ts(1))  # a correction, later
    stop = threading.Event()
    svc = IngestService(IngestConfig(broker=broker.url, dsn=dsn, batch_rows=50, flush_s=0.05,
                                     client_id="ingest-rk", metrics_port=None))  # fmt: skip
    runner = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    runner.start()
    try:
        # Subscribed first: a message published before ingest's first session exists is lost.
        wait_for(
            lambda: getattr(svc, "link", None) is not None and svc.link.connected, 10, "ingest"
        )
        publish(broker.url, LINE, [(Kind.RECHECK, first), (Kind.RECHECK, second)])
        wait_for(lambda: count(dsn, "SELECT count(*) FROM rechecks") == 2, 10, "two rechecks")
        publish(broker.url, LINE, [(Kind.RECHECK, first)])  # redelivered
        wait_for(lambda: svc.metrics.acked.total() >= 3, 10, "ingest")
    finally:
        stop.set()
        runner.join(timeout=15)
    assert count(dsn, "SELECT count(*) FROM rechecks") == 2
    assert count(dsn, "SELECT count(*) FROM dead_letters") == 0


def test_eval_rechecks_prints_the_confusion_table_with_wilson_intervals(fresh_db: str) -> None:
    dsn = station_db(fresh_db)
    t0 = now_ts(-3600)
    items: list[tuple[Kind, Frame]] = []
    answers = []
    for i in range(10):  # 10 HOLD trays: 4 binned, 6 shipped on re-check
        ts = t0 + timedelta(seconds=i)
        items.append((Kind.RESULT, result("n1", f"h{i}", ts, Decision.HOLD, Grade.C,
                                          [DefectCode.OXIDATION], mass_g=400.0 + i)))  # fmt: skip
        answers.append(recheck(f"h{i}", ts, "reject" if i < 4 else "accept", 398.0 + i))
    ts = t0 + timedelta(seconds=30)
    items.append((Kind.RESULT, result("n1", "r0", ts, Decision.REJECT, Grade.REJECT)))
    answers.append(recheck("r0", ts, "accept", decision=Decision.REJECT))
    answers.append(recheck("r0", ts, "reject", decision=Decision.REJECT, at=now_ts(5)))  # later
    items += [(Kind.RECHECK, a) for a in answers]
    store(dsn, LINE, items)
    out = CliRunner().invoke(cli, ["eval", "--rechecks", "--db", dsn])
    assert out.exit_code == 0, out.output
    lo, hi = wilson(4, 10) or (0, 0)
    assert f"HOLD             6       4    40.0 % [{100 * lo:.1f}, {100 * hi:.1f}]" in out.output
    assert "REJECT           0       1   100.0 %" in out.output
    assert "re-checked trays: 11" in out.output
    assert "published mass − measured: mean +2.0 g" in out.output
    out = CliRunner().invoke(cli, ["eval", "--rechecks"])
    assert out.exit_code == 1
    assert "--rechecks needs --db DSN" in str(out.exception)


def test_no_recheck_gives_an_empty_report() -> None:
    assert evaluate_rechecks([]).trays == 0


def test_calibrate_takes_rechecked_masses_as_weighed_trays(
    broker: Mosquitto, fresh_db: str
) -> None:
    import asyncio

    from sqal.devices import Target, publish_config
    from sqal.wire import DeviceConfig

    dsn = station_db(fresh_db)
    target = Target(LINE, "n1")
    asyncio.run(publish_config(broker.url, target, DeviceConfig(device_id="n1", profile=PROFILE)))
    t0 = now_ts(-600)
    store(dsn, LINE, [
        *((Kind.RESULT, result("n1", f"w{i}", t0 + timedelta(seconds=i))) for i in range(3)),
        *((Kind.RECHECK, recheck(f"w{i}", t0 + timedelta(seconds=i), "accept", 400.0 + i))
          for i in range(3)),
    ])  # fmt: skip
    argv = ["calibrate", f"{LINE}/n1", "--rechecks", "--db", dsn, "--broker", broker.url,
            "--dry-run"]  # fmt: skip
    out = CliRunner().invoke(cli, argv)
    assert out.exit_code == 1
    assert str(out.exception).startswith(
        f"weighed: 3 of 3 weighed trays have a published volume of {LINE}/n1"
    )


# --- the pure parts ------------------------------------------------------------------------


def tray(i: int, decision: str) -> Tray:
    return Tray("L1", "n1", f"s{i}", datetime(2026, 12, 5, 8, tzinfo=UTC), "A", decision, (),
                PROFILE)  # fmt: skip


def test_the_reject_rate_alarm_rises_above_the_limit_and_clears_below() -> None:
    board = Board(timedelta(minutes=10))
    t = datetime(2026, 12, 5, 8, tzinfo=UTC)
    for i in range(MIN_TRAYS_FOR_RATE_ALARM - 1):
        board.add_result(tray(i, "REJECT" if i % 5 == 0 else "PASS"), t, 0.05)
    assert board.alarms == []  # too few trays to call it a trend
    board.add_result(tray(99, "PASS"), t, 0.05)
    [alarm] = board.alarms
    assert alarm.kind is AlarmKind.REJECT_RATE
    assert alarm.cleared_at is None
    assert "20.0% of the last 20 trays rejected (limit 5.0%)" in alarm.detail
    assert alarm.facts == {"rate": 0.2, "n": 20, "limit": 0.05}  # worded by the page
    later = t + timedelta(minutes=11)  # the window moved past them
    for i in range(MIN_TRAYS_FOR_RATE_ALARM):
        board.add_result(tray(200 + i, "PASS"), later, 0.05)
    assert alarm.cleared_at == later
    assert alarm.open
    alarm.id = 7
    assert board.ack(7, "op", later) is alarm
    assert board.alarms == []
    assert board.closed == [alarm]


def test_device_offline_and_dead_letter_alarms() -> None:
    board = Board()
    t = datetime(2026, 12, 5, 8, tzinfo=UTC)
    board.set_status("L1", "n1", "offline", t)
    board.set_status("L1", "n1", "offline", t)  # a retained repeat: still one alarm
    assert [a.kind for a in board.alarms] == [AlarmKind.DEVICE_OFFLINE]
    board.set_status("L1", "n1", "online", t + timedelta(seconds=5))
    assert board.alarms[0].cleared_at is not None
    for reason in ("bad_json", "schema", "schema"):
        board.dead_letter("L1", reason, t)
    dead = [a for a in board.alarms if a.kind is AlarmKind.DEAD_LETTERS]
    assert len(dead) == 1
    assert dead[0].detail == "3 unusable messages (last: schema)"
    assert dead[0].doc()["facts"] == {"count": 3, "reason": "schema"}
    dead[0].id = 3
    board.ack(3, "op", t)
    assert all(a.kind is not AlarmKind.DEAD_LETTERS for a in board.alarms)
    board.dead_letter("L1", "bad_topic", t)  # a new one after the acknowledgement
    assert [a.detail for a in board.alarms if a.kind is AlarmKind.DEAD_LETTERS] == [
        "1 unusable message (bad_topic)"
    ]


def test_heights_are_the_d0_map_minus_the_distance_over_the_range_scale() -> None:
    profile = load_profile(PROFILE)
    d0_map = [[220.0 + c for c in range(4)] for _ in range(4)]
    dist = [200] * 16
    status = [5] * 15 + [0]
    h = height_map(dist, status, 4, {"d0_map_mm": d0_map, "range_scale": 1.0}, profile)
    assert h[0] == [20.0, 21.0, 22.0, 23.0]
    assert h[3][3] is None
    h = height_map(dist, [5] * 16, 4, {"d0_mm": 230.0, "range_scale": 0.5}, profile)
    assert h[2][2] == 60.0
    h = height_map(dist, [5] * 16, 4, None, profile)
    assert h[0][0] == profile.tof.mount_distance_mm - 200
    assert lab_to_srgb(100, 0, 0) == "#ffffff"
    assert lab_to_srgb(0, 0, 0) == "#000000"
    assert mass_sigma_g(400.0, {"mass_model": {"sigma_g": 3.5}}, profile) == 3.5
    assert mass_sigma_g(400.0, None, profile) == pytest.approx(
        400.0 * profile.product.mass_model.sigma_frac
    )
