"""Record from and replay into a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from capture.fileformat import CaptureReader, CaptureWriter, Record
from capture.record import record, rotated_path
from capture.replay import Remap, remap_topic, replay
from embedded import Mosquitto
from sqal.errors import BrokerError, ConfigError
from sqal.mqtt import client_id, paho_client


def publisher(broker: Mosquitto) -> paho.Client:
    return paho_client(broker.url, client_id("test-pub"), persistent=False)


async def record_while(broker: Mosquitto, out: Path, topics: list[str], count: int,
                       publish: list[tuple[str, bytes, bool]],
                       rotate_mb: float | None = None) -> list[Record]:  # fmt: skip
    ready = asyncio.Event()
    task = asyncio.create_task(record(broker.url, topics, out, count=count, duration_s=20,
                                      ready=ready, rotate_mb=rotate_mb))  # fmt: skip
    await asyncio.wait_for(ready.wait(), 10)
    pub = publisher(broker)
    try:
        for topic, payload, retain in publish:
            pub.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        pub.disconnect()
        pub.loop_stop()
    stats = await task
    assert stats.stopped_by == "count"
    return [rec for path in stats.files for rec in CaptureReader(path)]


def test_record_keeps_topic_qos_payload_bytes_and_properties(
    broker: Mosquitto, tmp_path: Path
) -> None:
    line = "rec1"
    msgs = [(f"sqal/v1/{line}/d1/tof", bytes([i, 0, 255, 10]), False) for i in range(50)]
    recs = asyncio.run(record_while(broker, tmp_path / "c.sqalcap", [f"sqal/v1/{line}/#"],
                                    50, msgs))  # fmt: skip
    assert [r.payload for r in recs] == [m[1] for m in msgs]
    assert all(r.qos == 1 and not r.retain for r in recs)
    offsets = [r.offset_s for r in recs]
    assert offsets == sorted(offsets)


def test_record_rotates_files(broker: Mosquitto, tmp_path: Path) -> None:
    line = "rec2"
    msgs = [(f"sqal/v1/{line}/d1/tof", b"x" * 4000, False) for _ in range(30)]
    out = tmp_path / "big.sqalcap"
    recs = asyncio.run(record_while(broker, out, [f"sqal/v1/{line}/#"], 30, msgs, 0.05))
    assert len(recs) == 30
    assert rotated_path(out, 1).name == "big.0001.sqalcap"
    files = sorted(tmp_path.glob("big.*.sqalcap"))
    assert files[0] == rotated_path(out, 1)
    assert len(files) == 3  # 30 x 4 kB in files cut past 50 KiB


def test_record_unreachable_broker_is_a_broker_error(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match=r"127\.0\.0\.1:1"):
        asyncio.run(record("mqtt://127.0.0.1:1", ["#"], tmp_path / "c.sqalcap", count=1))


def _wait(
    sub: paho.Client, got: list[paho.MQTTMessage], n: int, timeout_s: float
) -> list[paho.MQTTMessage]:
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    sub.disconnect()
    sub.loop_stop()
    return got


def test_replay_keeps_schedule_remaps_and_filters(broker: Mosquitto, tmp_path: Path) -> None:
    path = tmp_path / "c.sqalcap"
    w = CaptureWriter(path, {}, 0.0)
    for i in range(40):
        w.write(Record(i * 0.025, 0.0, f"sqal/v1/L1/d{i % 2}/tof", b"%d" % i, qos=1,
                       properties={"UserProperty": [["n", str(i)]]}))  # fmt: skip
    w.close()

    got: list[paho.MQTTMessage] = []
    sub = paho_client(broker.url, client_id("test-sub"), persistent=False)
    sub.on_message = lambda _c, _u, msg: got.append(msg)
    sub.subscribe("sqal/v1/rp9/#", qos=1)
    time.sleep(0.2)
    stats = replay([path], broker.url, remaps=[Remap.parse("L1=rp9")],
                   topics=["sqal/v1/L1/d0/#"], speed=1.0)  # fmt: skip
    _wait(sub, got, 20, 10)

    assert stats.published == 20
    assert stats.skipped == 20
    assert [m.payload for m in got] == [b"%d" % i for i in range(0, 40, 2)]
    assert all(m.topic == "sqal/v1/rp9/d0/tof" for m in got)
    assert got[0].properties is not None
    assert got[0].properties.UserProperty == [("n", "0")]  # type: ignore[attr-defined]
    # 20 messages due over 0.95 s of capture time: on schedule, not early, not drifting
    assert 0.9 <= stats.schedule_s < 1.5
    assert stats.lateness(50) < 20


def test_remap_replaces_whole_levels_only() -> None:
    r = [Remap.parse("L1=L9")]
    assert remap_topic("sqal/v1/L1/d1/tof", r) == "sqal/v1/L9/d1/tof"
    assert remap_topic("sqal/v1/L10/d1/tof", r) == "sqal/v1/L10/d1/tof"
    assert remap_topic("a/b/c", [Remap.parse("a/b=x")]) == "x/c"
    with pytest.raises(ConfigError, match="OLD=NEW"):
        Remap.parse("L1")


def test_replay_to_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.sqalcap"
    CaptureWriter(path, {}, 0.0).close()
    done = subprocess.run(
        [sys.executable, "-m", "app", "replay", str(path), "--broker", "mqtt://127.0.0.1:1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("Error: cannot reach broker mqtt://127.0.0.1:1")
    assert done.stderr.count("\n") == 1


def test_capture_info_cli(tmp_path: Path) -> None:
    path = tmp_path / "c.sqalcap"
    w = CaptureWriter(path, {"broker": "mqtt://x:1"}, 0.0)
    for i in range(3):
        w.write(Record(float(i), 0.0, "a/b", b"12345"))
    w.close()
    done = subprocess.run([sys.executable, "-m", "app", "capture", "info", str(path), "--json"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    info = json.loads(done.stdout)
    assert info["messages"] == 3
    assert info["topics"] == {"a/b": {"messages": 3, "bytes": 15}}
    bad = subprocess.run([sys.executable, "-m", "app", "capture", "info", __file__],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.strip().endswith("is not a SQAL capture file")
