"""Ingest end to end against the real broker and database, the worker in a thread."""

from __future__ import annotations

import itertools
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from embedded import Mosquitto, free_port
from ingest.service import IngestConfig, IngestService
from sqal.wire import Grade, Kind, device_topic, encode
from tests.hostile import CATALOGUE, INGEST
from tests.test_ingest_frames import (
    T0,
    count,
    drop_session,
    migrated,
    publish_all,
    result,
    spectral_frame,
    status,
    tof_frame,
    wait_until,
    weight,
)

_ids = itertools.count()


@dataclass
class Running:
    service: IngestService
    stop: threading.Event
    thread: threading.Thread
    dsn: str
    line: str
    metrics_url: str


@pytest.fixture
def ingest(broker: Mosquitto, fresh_db: str) -> Iterator[Running]:
    """An ingest worker on the session broker and a fresh migrated database."""
    n = next(_ids)
    port = free_port()
    cfg = IngestConfig(
        broker=broker.url,
        dsn=migrated(fresh_db),
        batch_rows=100,
        flush_s=0.05,
        client_id=f"test-ingest-{n}",
        metrics_port=port,
    )
    svc = IngestService(cfg)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    t.start()
    assert wait_until(lambda: svc.link.connected, 10)
    try:
        yield Running(svc, stop, t, fresh_db, f"line{n}", f"http://127.0.0.1:{port}")
    finally:
        stop.set()
        t.join(10)
        drop_session(broker.url, cfg.client_id)


def test_frames_results_and_status_land_in_their_tables(ingest: Running, broker: Mosquitto) -> None:
    rng = np.random.default_rng(3)
    dev, line = "dev-a", ingest.line
    msgs = []
    for seq in range(50):
        msgs.append((device_topic(line, dev, Kind.TOF), encode(tof_frame(dev, seq, rng))))
        msgs.append((device_topic(line, dev, Kind.SPECTRAL), encode(spectral_frame(dev, seq, rng))))
        grade = [Grade.A, Grade.B, Grade.C, Grade.REJECT][seq % 4]
        msgs.append(
            (device_topic(line, dev, Kind.RESULT), encode(result(dev, seq, grade, 0.5, [])))
        )
    msgs.append((device_topic(line, dev, Kind.STATUS), encode(status(dev, T0))))
    publish_all(broker.url, msgs)
    dsn = ingest.dsn
    assert wait_until(lambda: count(dsn, "SELECT count(*) FROM results") == 50)
    assert wait_until(lambda: count(dsn, "SELECT count(*) FROM device_status") == 1)
    assert count(dsn, "SELECT count(*) FROM tof_frames WHERE line_id = %s", line) == 50
    assert count(dsn, "SELECT count(*) FROM spectral_frames") == 50
    assert count(dsn, "SELECT sum(n_reject) FROM results_1m") == 50 // 4
    assert count(dsn, "SELECT sum(n_total) FROM results_1m") == 50
    assert count(dsn, "SELECT count(*) FROM dead_letters") == 0
    with urllib.request.urlopen(ingest.metrics_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'sqal_ingest_rows_written_total{table="tof_frames"} 50.0' in text
    with urllib.request.urlopen(ingest.metrics_url + "/healthz", timeout=5) as resp:
        assert resp.status == 200


def test_redelivered_result_inserts_nothing_and_rollups_do_not_double(
    ingest: Running, broker: Mosquitto
) -> None:
    dev, line = "dev-r", ingest.line
    topic = device_topic(line, dev, Kind.RESULT)
    payloads = [
        encode(
            result(dev, seq, Grade.REJECT if seq % 2 else Grade.A, 0.25 * (seq % 4), ["oxidation"])
        )
        for seq in range(10)
    ]
    publish_all(broker.url, [(topic, p) for p in payloads])
    dsn = ingest.dsn
    assert wait_until(lambda: count(dsn, "SELECT count(*) FROM results") == 10)
    before = _rollups(dsn)
    # The same messages again, as a broker redelivers them after a lost ack.
    publish_all(broker.url, [(topic, p) for p in payloads])
    assert wait_until(
        lambda: ingest.service.metrics.duplicates.value("results") == 10, timeout_s=10
    )
    assert count(dsn, "SELECT count(*) FROM results") == 10
    assert _rollups(dsn) == before
    assert before[0] == (10, 5, 5, 10)


def _rollups(dsn: str) -> tuple[tuple[int, ...], int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT sum(n_total), sum(n_a), sum(n_reject), sum(score_count) FROM results_1m"
        ).fetchone()
        defects = conn.execute("SELECT sum(n) FROM defects_1m").fetchone()
    assert row is not None
    assert defects is not None
    return tuple(int(v) for v in row), int(defects[0])


INGEST_DEAD = [e for e in CATALOGUE if e.expected(INGEST) is not None and INGEST not in e.known]
"""The shared catalogue's messages ingest receives and dead-letters (tests/hostile.py; each entry
runs alone against both stages in tests/test_hostile_input.py)."""


def _malformed(line: str, i: int) -> tuple[str, bytes, str]:
    """The i-th bad message: (topic, payload, the reason ingest must give)."""
    entry = INGEST_DEAD[i % len(INGEST_DEAD)]
    topic, payload = entry.build(line, f"dev-{i % 7}")
    reason = entry.expected(INGEST)
    assert reason is not None
    return topic, payload, reason.value


def test_a_thousand_malformed_payloads_become_a_thousand_dead_letters(
    ingest: Running, broker: Mosquitto
) -> None:
    line = ingest.line
    rng = np.random.default_rng(9)
    bad = [_malformed(line, i) for i in range(1000)]
    msgs: list[tuple[str, bytes]] = []
    good = 0
    for i, (topic, payload, _) in enumerate(bad):
        msgs.append((topic, payload))
        if i % 5 == 0:
            dev = f"ok-{i % 3}"
            msgs.append((device_topic(line, dev, Kind.TOF), encode(tof_frame(dev, i, rng))))
            good += 1
    # A distance beyond smallint: the codec refuses it now (schema), as the analyzer does; a row
    # the database refuses is isolated from its batch (tests/test_storage_writer.py).
    huge = tof_frame("ok-0", 5000, rng).model_dump(mode="json")
    huge["distance_mm"][0][0] = 40_000
    msgs.append((device_topic(line, "ok-0", Kind.TOF), json.dumps(huge).encode()))
    published = _collect(broker.url, "sqal/v1/_dead/ingest")
    publish_all(broker.url, msgs)
    dsn = ingest.dsn
    assert wait_until(lambda: count(dsn, "SELECT count(*) FROM dead_letters") == 1001)
    assert count(dsn, "SELECT count(*) FROM tof_frames") == good
    assert wait_until(lambda: len(published) == 1001, timeout_s=10)
    expected: dict[str, int] = {}
    for _, _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    expected["schema"] = expected.get("schema", 0) + 1
    got = _reasons(dsn)
    assert got == expected
    empty = sum(1 for _, payload, _ in bad if not payload)  # the catalogue's empty payload
    assert count(dsn, "SELECT count(*) FROM dead_letters WHERE octet_length(payload) = 0") == empty
    m = ingest.service.metrics
    assert m.dead_letters.total() == 1001


def _reasons(dsn: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY 1").fetchall()
    return {str(r): int(n) for r, n in rows}


def _collect(url: str, topic: str) -> list[bytes]:
    """Subscribe now; the returned list fills in paho's thread (the client lives on with it)."""
    from sqal.mqtt import client_id, paho_client

    got: list[bytes] = []
    c = paho_client(url, client_id("test-dead"), persistent=False)
    c.on_message = lambda cl, ud, msg: got.append(bytes(msg.payload))
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(topic, qos=1)
    assert done.wait(5)
    return got


def test_shared_workers_split_the_load_and_store_everything_once(
    broker: Mosquitto, fresh_db: str
) -> None:
    dsn = migrated(fresh_db)
    workers = []
    for i in range(2):
        cfg = IngestConfig(
            broker=broker.url,
            dsn=dsn,
            batch_rows=50,
            flush_s=0.05,
            client_id=f"test-ingest-shared-{i}",
            shared_group="testshare",
            dead_topics=False,
        )
        svc, stop = IngestService(cfg), threading.Event()
        t = threading.Thread(target=svc.run, args=(stop,), daemon=True)
        t.start()
        workers.append((svc, stop, t, cfg.client_id))
    rng = np.random.default_rng(12)
    msgs = [
        (device_topic("shared", f"d{s % 5}", Kind.TOF), encode(tof_frame(f"d{s % 5}", s, rng)))
        for s in range(400)
    ]
    try:
        assert wait_until(lambda: all(w[0].link.connected for w in workers), 10)
        publish_all(broker.url, msgs)
        assert wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") == 400)
        shares = [w[0].metrics.rows_written.value("tof_frames") for w in workers]
        assert sum(shares) == 400
        assert all(s > 0 for s in shares)
    finally:
        for _svc, stop, t, cid in workers:
            stop.set()
            t.join(10)
            drop_session(broker.url, cid)


def test_configs_are_stored_so_results_trace_to_their_calibration(
    ingest: Running, broker: Mosquitto
) -> None:
    from sqal.wire import Calibration, DeviceConfig

    dev, line = "dev-cal", ingest.line
    cal = Calibration(id="cal-dev-cal-1", ts=T0, d0_mm=259.5)
    cfg = DeviceConfig(device_id=dev, profile="foie_gras_lobe_400g", ts=T0, calibration=cal)
    res = result(dev, 1, Grade.A, 0.9, []).model_copy(update={"calibration_id": cal.id})
    msgs = [
        (device_topic(line, dev, Kind.CONFIG), encode(cfg)),
        (device_topic(line, dev, Kind.CONFIG), encode(cfg)),  # the same config again
        (device_topic(line, dev, Kind.RESULT), encode(res)),
    ]
    publish_all(broker.url, msgs)
    dsn = ingest.dsn
    # The session broker holds other tests' retained configs too: count this line's only.
    mine = "SELECT count(*) FROM {} WHERE line_id = %s"
    assert wait_until(lambda: count(dsn, mine.format("results"), line) == 1)
    assert wait_until(lambda: count(dsn, mine.format("device_config"), line) == 1)
    traced = count(
        dsn,
        "SELECT count(*) FROM results r JOIN device_config c USING (device_id, calibration_id)"
        " WHERE r.line_id = %s AND (c.calibration->>'d0_mm')::float = 259.5",
        line,
    )
    assert traced == 1


def test_frames_stamped_a_century_away_open_no_chunk_and_stop_no_one(
    ingest: Running, broker: Mosquitto
) -> None:
    """#15: 2,000 frames with ts over 1990-2090 made ~5,900 chunks and then every batch failed
    with "out of shared memory", for every device. They are dead letters now."""
    from datetime import UTC, datetime, timedelta

    line, rng = ingest.line, np.random.default_rng(11)
    msgs, inside = [], 0
    start, span, now = (
        datetime(1990, 1, 1, tzinfo=UTC),
        timedelta(days=100 * 365),
        datetime.now(UTC),
    )
    for i in range(2000):
        ts = start + span * i / 2000
        inside += now - timedelta(days=8) <= ts <= now + timedelta(days=1)  # the default window
        frame = tof_frame("rogue", i, rng).model_copy(update={"ts": ts})
        msgs.append((device_topic(line, "rogue", Kind.TOF), encode(frame)))
    for seq in range(20):  # a well-behaved device on the same line meanwhile
        msgs.append((device_topic(line, "good", Kind.TOF), encode(tof_frame("good", seq, rng))))
    publish_all(broker.url, msgs)
    dsn = ingest.dsn
    assert wait_until(lambda: count(dsn, "SELECT count(*) FROM dead_letters") == 2000 - inside)
    assert wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") == 20 + inside)
    assert _reasons(dsn) == {"ts_out_of_range": 2000 - inside}
    far = count(
        dsn,
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'tof_frames'"
        " AND (range_end < now() - interval '9 days' OR range_start > now() + interval '2 days')",
    )
    assert far == 0


def test_a_conflicting_duplicate_lands_in_dead_letters(ingest: Running, broker: Mosquitto) -> None:
    line, rng = ingest.line, np.random.default_rng(12)
    first = tof_frame("dup", 1, rng)
    other = first.model_copy(update={"sensor_temp_c": 77.0})
    topic = device_topic(line, "dup", Kind.TOF)
    published = _collect(broker.url, "sqal/v1/_dead/ingest")
    publish_all(broker.url, [(topic, encode(first)), (topic, encode(first))])
    dsn = ingest.dsn
    assert wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") == 1)
    publish_all(broker.url, [(topic, encode(other))])
    assert wait_until(lambda: count(dsn, "SELECT count(*) FROM dead_letters") == 1)
    assert _reasons(dsn) == {"conflict": 1}
    assert wait_until(lambda: len(published) == 1)
    assert json.loads(published[0])["reason"] == "conflict"


def test_a_batch_the_server_always_refuses_is_split_and_its_bad_row_dead_lettered(
    ingest: Running, broker: Mosquitto
) -> None:
    """#15: a batch that failed for a reason retrying cannot fix ("out of shared memory" after
    a device made thousands of chunks) was replayed forever, for every device."""
    import psycopg

    dsn = ingest.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.device_id = 'poison' THEN"
            "   RAISE EXCEPTION 'out of shared memory' USING ERRCODE = 'out_of_memory';"
            " END IF; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON tof_frames"
            " FOR EACH ROW EXECUTE FUNCTION poison()"
        )
    line, rng = ingest.line, np.random.default_rng(13)
    msgs = [
        (device_topic(line, "good", Kind.TOF), encode(tof_frame("good", s, rng))) for s in range(9)
    ]
    msgs.insert(4, (device_topic(line, "poison", Kind.TOF), encode(tof_frame("poison", 1, rng))))
    publish_all(broker.url, msgs)
    assert wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") == 9, timeout_s=60)
    assert count(dsn, "SELECT count(*) FROM dead_letters WHERE device_id = 'poison'") == 1
    detail = count(dsn, "SELECT count(*) FROM dead_letters WHERE detail LIKE %s", "%53200%")
    assert detail == 1


def test_weights_are_stored_once_and_another_mass_under_a_key_is_a_conflict(
    ingest: Running, broker: Mosquitto
) -> None:
    """A checkweigher's weights (#17): a redelivery inserts nothing, a second weight of the same
    tray and time with another mass is dead-lettered as conflict and the first one stays."""
    from sqal.wire import DeviceConfig

    dev, line = "cw-dev", ingest.line
    topic = device_topic(line, dev, Kind.WEIGHT)
    weights = [
        encode(weight(dev, seq, 400.0 + seq / 10, 0.5 if seq % 2 else None)) for seq in range(20)
    ]
    cfg = DeviceConfig(
        device_id=dev, profile="foie_gras_lobe_400g", ts=T0, checkweigher={"sigma_g": 0.5}
    )
    published = _collect(broker.url, "sqal/v1/_dead/ingest")
    publish_all(broker.url, [(topic, w) for w in weights])
    publish_all(broker.url, [(device_topic(line, dev, Kind.CONFIG), encode(cfg))])
    dsn = ingest.dsn
    mine = "SELECT count(*) FROM weights WHERE line_id = %s"
    assert wait_until(lambda: count(dsn, mine, line) == 20)
    publish_all(broker.url, [(topic, w) for w in weights])  # as a broker redelivers them
    m = ingest.service.metrics
    assert wait_until(lambda: m.duplicates.value("weights") == 20, timeout_s=10)
    assert count(dsn, mine, line) == 20
    assert count(dsn, "SELECT count(*) FROM dead_letters") == 0
    heavier = encode(weight(dev, 3, 410.0, 0.5))
    publish_all(broker.url, [(topic, heavier)])
    assert wait_until(lambda: count(dsn, "SELECT count(*) FROM dead_letters") == 1)
    assert _reasons(dsn) == {"conflict": 1}
    assert wait_until(lambda: len(published) == 1)
    assert json.loads(published[0])["reason"] == "conflict"
    assert count(dsn, "SELECT count(*) FROM weights WHERE seq = 3 AND mass_g = 400.3") == 1
    assert count(dsn, "SELECT count(*) FROM weights WHERE sigma_g IS NULL") == 10
    assert wait_until(
        lambda: (
            count(
                dsn,
                "SELECT count(*) FROM device_config WHERE line_id = %s"
                " AND (checkweigher->>'sigma_g')::float = 0.5",
                line,
            )
            == 1
        )
    )
