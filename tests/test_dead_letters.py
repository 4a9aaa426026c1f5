"""``sqal dead list|show|redrive`` on the real broker and database (#18 item 6)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import numpy as np
import psycopg
import pytest

from broker.admin import Service, set_passwords, update_acl
from broker.certs import make_certs
from embedded import Mosquitto, free_port
from ingest.service import IngestConfig, IngestService
from sqal.mqtt import paho_client
from sqal.wire import Kind, TsWindow, device_topic, encode
from tests.broker_conf import running
from tests.test_cli import assert_one_error_line, run_main
from tests.test_ingest_frames import (
    count,
    drop_session,
    migrated,
    publish_all,
    tof_frame,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
CLOSED_BROKER = "mqtt://127.0.0.1:1"
_ids = itertools.count()


@contextmanager
def ingest_running(broker: str, dsn: str, cid: str, window_h: float) -> Iterator[IngestService]:
    """An ingest worker in a thread, its session dropped after (as ``sqal ingest`` runs it)."""
    cfg = IngestConfig(broker=broker, dsn=dsn, batch_rows=100, flush_s=0.05, client_id=cid,
                       ts_window=TsWindow.hours(window_h))  # fmt: skip
    svc = IngestService(cfg)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    t.start()
    assert wait_until(lambda: svc.link.connected, 10)
    try:
        yield svc
    finally:
        stop.set()
        t.join(10)


def dead_rows(dsn: str, line: str) -> list[tuple[int, str, datetime | None, int]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT id, reason, redriven_at, redrive_count FROM dead_letters WHERE line_id = %s"
            " ORDER BY id",
            (line,),
        ).fetchall()


_SERVICE_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) ")


def sqal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run a command in process; stderr without the log lines of the ingest the test runs in
    this process too (every command configures logging to stderr, #18 item 2)."""
    code, out, err = run_main(argv, capsys)
    kept = [line for line in err.splitlines(keepends=True) if not _SERVICE_LOG.match(line)]
    return code, out, "".join(kept)


def test_a_frame_dead_lettered_for_its_clock_is_stored_once_after_the_fix_and_two_redrives(
    broker: Mosquitto, fresh_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """ts two days ahead: dead-lettered under the 24 h window; ingest restarted with 72 h (the
    fix), redrive stores it; a second redrive is skipped, a forced one inserts nothing."""
    dsn = migrated(fresh_db)
    n = next(_ids)
    line, dev, cid = f"dl{n}", "dev-a", f"test-dead-{n}"
    frame = tof_frame(dev, 0, np.random.default_rng(1)).model_copy(
        update={"ts": datetime.now(UTC) + timedelta(hours=48)}
    )
    topic = device_topic(line, dev, Kind.TOF)
    try:
        with ingest_running(broker.url, dsn, cid, 24.0):
            publish_all(broker.url, [(topic, encode(frame))])
            assert wait_until(lambda: len(dead_rows(dsn, line)) == 1)
        [(dead_id, reason, redriven_at, _)] = dead_rows(dsn, line)
        assert (reason, redriven_at) == ("ts_out_of_range", None)
        assert count(dsn, "SELECT count(*) FROM tof_frames WHERE line_id = %s", line) == 0

        code, out, _ = sqal(["dead", "list", "--line", line, "--json", "--db", dsn], capsys)
        [listed] = json.loads(out)["dead_letters"]
        assert code == 0
        assert (listed["id"], listed["topic"], listed["stage"]) == (dead_id, topic, "ingest")
        assert listed["redriven_at"] is None

        with ingest_running(broker.url, dsn, cid, 72.0) as svc:
            code, out, err = sqal(
                ["dead", "redrive", str(dead_id), "--json", "--db", dsn, "--broker", broker.url],
                capsys,
            )
            assert (code, err) == (0, "")
            assert json.loads(out) == {"dry_run": False, "redriven": [dead_id], "skipped": []}
            assert wait_until(
                lambda: count(dsn, "SELECT count(*) FROM tof_frames WHERE line_id = %s", line) == 1
            )
            assert dead_rows(dsn, line)[0][3] == 1

            code, out, _ = sqal(
                ["dead", "redrive", str(dead_id), "--db", dsn, "--broker", broker.url], capsys
            )
            assert code == 0
            assert f"skipped {dead_id}: already redriven at" in out
            assert "redrove 0 dead letter(s)" in out

            code, out, _ = sqal(
                ["dead", "redrive", str(dead_id), "--force", "--db", dsn, "--broker", broker.url],
                capsys,
            )
            assert code == 0
            assert f"redrove 1 dead letter(s): {dead_id}" in out
            assert wait_until(lambda: svc.metrics.duplicates.value("tof_frames") == 1)
        assert count(dsn, "SELECT count(*) FROM tof_frames WHERE line_id = %s", line) == 1
        rows = dead_rows(dsn, line)
        assert len(rows) == 1  # the redriven copies made no new dead letter
        assert rows[0][2] is not None
        assert rows[0][3] == 2
    finally:
        drop_session(broker.url, cid)


def insert_dead(
    dsn: str, line: str, *, topic: str | None = None, reason: str = "schema",
    payload: bytes = b'{"v": 1}', detail: str = "a field is missing", age: timedelta | None = None,
) -> int:  # fmt: skip
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "INSERT INTO dead_letters (received_at, stage, topic, line_id, device_id, reason,"
            " detail, payload) VALUES (now() - %s, 'ingest', %s, %s, 'd1', %s, %s, %s)"
            " RETURNING id",
            (age or timedelta(0), topic or f"sqal/v1/{line}/d1/tof", line, reason, detail,
             payload),
        ).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0])


def test_list_filters_by_line_reason_and_age_newest_first_within_a_limit(
    fresh_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = migrated(fresh_db)
    old = insert_dead(dsn, "La", reason="bad_json", age=timedelta(days=3))
    new = insert_dead(dsn, "La", reason="bad_json")
    other = insert_dead(dsn, "La", reason="schema")
    insert_dead(dsn, "Lb", reason="bad_json")

    def ids(*args: str) -> list[int]:
        code, out, err = sqal(["dead", "list", "--json", "--db", dsn, *args], capsys)
        assert (code, err) == (0, "")
        return [d["id"] for d in json.loads(out)["dead_letters"]]

    assert ids("--line", "La") == [other, new, old]
    assert ids("--line", "La", "--reason", "bad_json") == [new, old]
    assert ids("--line", "La", "--since", "1d") == [other, new]
    assert ids("--line", "La", "--limit", "1") == [other]
    code, out, _ = sqal(["dead", "list", "--line", "La", "--db", dsn], capsys)
    assert code == 0
    assert len(out.splitlines()) == 3
    assert "sqal/v1/La/d1/tof" in out.splitlines()[0]
    code, _, err = sqal(["dead", "list", "--reason", "nope", "--db", dsn], capsys)
    assert "--reason 'nope': choose from" in assert_one_error_line(code, err)


def test_show_prints_text_or_hex_safely_and_cuts_unless_full(
    fresh_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = migrated(fresh_db)
    binary = insert_dead(dsn, "Ls", reason="not_utf8", payload=b"\xff\x00\x01abc")
    long_text = ("\x1b[2J" + "é" * 3000).encode()  # a terminal escape, then 6,000 bytes
    text = insert_dead(dsn, "Ls", reason="bad_json", payload=long_text, detail="esc \x1b[31m")

    code, out, _ = sqal(["dead", "show", str(binary), "--db", dsn], capsys)
    assert code == 0
    assert "shown as hex" in out
    assert out.rstrip().endswith("ff0001616263")

    code, out, _ = sqal(["dead", "show", str(text), "--db", dsn], capsys)
    assert code == 0
    assert "\x1b" not in out  # escaped, never sent to the terminal
    assert "\\x1b[2J" in out
    assert "esc \\x1b[31m" in out
    assert "(first 4096 bytes; --full for all)" in out
    assert out.count("é") == (4096 - 4) // 2

    code, out, _ = sqal(["dead", "show", str(text), "--full", "--json", "--db", dsn], capsys)
    doc = json.loads(out)
    assert code == 0
    assert (doc["encoding"], doc["truncated"], doc["payload_bytes"]) == ("utf-8", False, 6004)
    assert doc["payload"] == long_text.decode()

    code, _, err = sqal(["dead", "show", "999999", "--db", dsn], capsys)
    assert assert_one_error_line(code, err) == "Error: no dead letter with id 999999"


def test_redrive_skips_what_cannot_be_sent_and_refuses_no_target(
    fresh_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing here is sent, so the closed broker is never dialled."""
    dsn = migrated(fresh_db)
    big = insert_dead(dsn, "Lr", reason="too_large", payload=b"x" * 70_000)
    dead_topic = insert_dead(dsn, "Lr", topic="sqal/v1/_dead/analyzer", reason="bad_json")
    wildcard = insert_dead(dsn, "Lr", topic="sqal/v1/Lr/+/tof", reason="bad_topic")
    code, out, _ = sqal(
        ["dead", "redrive", "--line", "Lr", "--json", "--db", dsn, "--broker", CLOSED_BROKER],
        capsys,
    )
    doc = json.loads(out)
    assert code == 0
    assert doc["redriven"] == []
    why = {s["id"]: s["why"] for s in doc["skipped"]}
    assert "over the payload size limit" in why[big]
    assert "dead-letter topic" in why[dead_topic]
    assert "wildcards" in why[wildcard]
    assert all(r[2] is None for r in dead_rows(dsn, "Lr"))

    code, _, err = sqal(["dead", "redrive", "--db", dsn, "--broker", CLOSED_BROKER], capsys)
    assert "give dead letter IDs or a filter" in assert_one_error_line(code, err)
    code, _, err = sqal(["dead", "redrive", "424242", "--db", dsn], capsys)
    assert assert_one_error_line(code, err) == "Error: no dead letter with id 424242"


def test_a_dry_run_sends_and_marks_nothing(
    fresh_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = migrated(fresh_db)
    one = insert_dead(dsn, "Ld")
    code, out, _ = sqal(
        ["dead", "redrive", "--line", "Ld", "--dry-run", "--db", dsn, "--broker", CLOSED_BROKER],
        capsys,
    )
    assert code == 0
    assert f"would redrive 1 dead letter(s): {one}" in out
    assert dead_rows(dsn, "Ld")[0][2] is None


def test_a_publish_the_broker_refuses_is_one_error_line_and_the_redrive_user_may(
    fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the production ACL the record user may not publish frames: PUBACK 0x87, the row
    stays unmarked; the redrive user may, and the row is marked."""
    folder = tmp_path / "mqtt"
    folder.mkdir()
    make_certs(folder / "certs", ["localhost"], 30, [], datetime.now(UTC))
    set_passwords(
        folder / "passwd", {"record": "password-of-recorder", "redrive": "password-of-redrive"}
    )
    update_acl(folder / "acl", *Service)
    port = free_port()
    dsn = migrated(fresh_db)
    row = insert_dead(dsn, "Lp")
    with running(ROOT / "mosquitto/production.conf", folder, port, free_port()):
        url = f"mqtt://record:{quote('password-of-recorder')}@127.0.0.1:{port}"
        code, _, err = sqal(["dead", "redrive", str(row), "--db", dsn, "--broker", url], capsys)
        line = assert_one_error_line(code, err)
        assert "refused the publish on sqal/v1/Lp/d1/tof" in line
        assert "0x87" in line
        assert dead_rows(dsn, "Lp")[0][2:] == (None, 0)
        url = f"mqtt://redrive:{quote('password-of-redrive')}@127.0.0.1:{port}"
        code, _, err = sqal(["dead", "redrive", str(row), "--db", dsn, "--broker", url], capsys)
    assert (code, err) == (0, "")
    _, _, redriven_at, count = dead_rows(dsn, "Lp")[0]
    assert redriven_at is not None
    assert count == 1


def test_a_config_naming_a_missing_profile_is_applied_once_the_profile_is_installed(
    broker: Mosquitto,
    fresh_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's example: the analyzer dead-letters the config (unknown_profile), ingest
    stores that dead letter; the profile is installed, the config redriven, and the running
    analyzer scores the device's next tray with it."""
    from analyzer.service import AnalyzerConfig, AnalyzerService
    from sqal.wire import DeviceConfig
    from tests.test_analyzer_service import Collector, sample_id, send_sample
    from tests.test_analyzer_support import calibration

    profiles = tmp_path / "profiles"
    shutil.copytree(ROOT / "profiles", profiles)
    monkeypatch.setenv("SQAL_PROFILES_DIR", str(profiles))
    n = next(_ids)
    line, dev, name = f"dp{n}", "devP", f"redrive_{uuid.uuid4().hex[:8]}"
    dsn = migrated(fresh_db)
    cid = f"test-dead-{n}"
    analyzer = AnalyzerService(
        AnalyzerConfig(broker.url, client_id=f"an-{uuid.uuid4().hex[:8]}", join_timeout_s=0.5)
    )
    worker = threading.Thread(target=analyzer.run, daemon=True)
    collector = Collector(broker, line)
    try:
        with ingest_running(broker.url, dsn, cid, 24.0):
            worker.start()
            assert analyzer.ready.wait(10)
            cfg = DeviceConfig(device_id=dev, profile=name, calibration=calibration())
            publish_all(broker.url, [(device_topic(line, dev, Kind.CONFIG), encode(cfg))])
            assert wait_until(lambda: [r[1] for r in dead_rows(dsn, line)] == ["unknown_profile"])
            [(dead_id, *_)] = dead_rows(dsn, line)
            code, out, _ = sqal(["dead", "show", str(dead_id), "--json", "--db", dsn], capsys)
            assert json.loads(out)["stage"] == "analyzer"

            (profiles / f"{name}.yaml").write_text(f"name: {name}\nextends: pate_terrine_300g\n")
            code, out, err = sqal(
                ["dead", "redrive", "--line", line, "--reason", "unknown_profile", "--db", dsn,
                 "--broker", broker.url],
                capsys,
            )  # fmt: skip
            assert (code, err) == (0, "")
            assert f"redrove 1 dead letter(s): {dead_id}" in out
            assert wait_until(lambda: (line, dev) in analyzer.device_params)
            pub = paho_client(broker.url, f"pub-{uuid.uuid4().hex[:8]}", persistent=False)
            send_sample(pub, line, dev, 1)
            pub.disconnect()
            pub.loop_stop()
            collector.wait({sample_id(dev, 1)})
            with collector.lock:
                assert [r.profile for r in collector.results[sample_id(dev, 1)]] == [name]
            assert len(dead_rows(dsn, line)) == 1
    finally:
        analyzer.stop()
        worker.join(15)
        collector.close()
        drop_session(broker.url, cid)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["show", "99999999999999999999"], "no dead letter with id 99999999999999999999"),
        (["redrive", "99999999999999999999"], "no dead letter with id 99999999999999999999"),
        (["redrive", "--line", "L", "--limit", "99999999999999999999"], "cannot read dead_letters"),
        (["list", "--since", "99999999h"], "--since '99999999h' is too long"),
        (["list", "--since", "yesterday"], "--since 'yesterday': expected an age"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_hostile_values_against_a_real_database_are_one_error_line(
    argv: list[str], problem: str, fresh_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = migrated(fresh_db)
    broker = ["--broker", CLOSED_BROKER] if argv[0] == "redrive" else []
    code, _, err = sqal(["dead", *argv, "--db", dsn, *broker], capsys)
    assert problem in assert_one_error_line(code, err)
