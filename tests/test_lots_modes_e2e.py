"""Lots and modes end to end (issue #19 items 1 and 2): the CLI, a simulated node, the analyzer
and ingest on a real broker and database.

A lot set by ``sqal lot start`` is retained, stamped by the analyzer on every result and stored
by ingest; a calibration capture (``sqal calibrate``) runs in calibration mode, its results are
stored apart and never reach the production roll-ups, and the device's mode comes back after;
a failed or interrupted capture restores it too.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest

from analyzer.calibrate import calibrate
from embedded import Mosquitto
from sqal.devices import Target, fetch_configs
from sqal.errors import CalibrationError
from sqal.mqtt import client_id, paho_client
from sqal.publisher import publish_acked
from sqal.wire import DeviceConfig, Lot, Mode, decode, encode, lot_topic, subscription
from tests.test_ingest_frames import migrated

LINE = "line1"
DEVICE = Target(LINE, "line1-node01")
PROFILE = "pate_terrine_300g"
SQAL = [sys.executable, "-m", "app"]


def sqal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SQAL, *args], capture_output=True, text=True, timeout=120)


def ok(*args: str) -> str:
    done = sqal(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def sim(broker: Mosquitto, seed: int, *args: str) -> None:
    ok("sim", "--broker", broker.url, "--profile", PROFILE, "--keep-config", "--seed", str(seed),
       "--faults", "none", *args)  # fmt: skip


def wait_for(check: Callable[[], bool], timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def one(dsn: str, query: str, *params: object) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


class Configs:
    """Every config published on the device's topic, in order (a test subscriber)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.seen: list[DeviceConfig] = []

        def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
            obj = decode(msg.topic, bytes(msg.payload))
            assert isinstance(obj, DeviceConfig)
            self.seen.append(obj)

        self.client = paho_client(
            broker.url, client_id("modes"), persistent=False, on_message=on_message
        )
        self.client.subscribe(DEVICE.topic, qos=1)
        time.sleep(0.5)
        self.seen.clear()  # the retained one

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def modes(self) -> list[Mode]:
        return [c.mode for c in self.seen]


@pytest.fixture
def pipeline(private_broker: Mosquitto, fresh_db: str) -> Iterator[str]:
    """The analyzer and ingest (as ``sqal`` runs them) on a private broker and a fresh database."""
    dsn = migrated(fresh_db)
    url = private_broker.url
    procs = [
        subprocess.Popen([*SQAL, "analyzer", "--broker", url, "--metrics-port", "0",
                          "--client-id", "lots-analyzer", "--lines", LINE],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([*SQAL, "ingest", "--broker", url, "--db", dsn, "--metrics-port", "0",
                          "--client-id", "lots-ingest", "--flush-ms", "50"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]  # fmt: skip
    time.sleep(2.0)
    try:
        yield dsn
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def test_a_lot_set_by_the_cli_is_retained_stamped_and_stored_and_calibration_counts_apart(
    private_broker: Mosquitto, pipeline: str
) -> None:
    broker, dsn = private_broker, pipeline
    target = f"{LINE}/{DEVICE.device}"
    ok("config", "set", target, "--profile", PROFILE, "--broker", broker.url)
    # The product comes from the line's device configs, Qn from its profile, TNE from Qn.
    started = json.loads(ok("lot", "start", "--line", LINE, "--lot", "LOT-A", "--note",
                            "first", "--broker", broker.url, "--json"))  # fmt: skip
    assert (started["product"], started["qn_g"], started["tne_g"]) == (PROFILE, 300.0, 9.0)
    shown = json.loads(ok("lot", "show", "--line", LINE, "--broker", broker.url, "--json"))
    assert shown[LINE]["lot"] == "LOT-A"
    assert shown[LINE]["open"] is True

    sim(broker, 1, "--rate", "600", "--count", "30", "--defect-rate", "0")
    production = "SELECT count(*) FROM results WHERE mode = 'production' AND lot_id = 'LOT-A'"
    assert wait_for(lambda: one(dsn, production) == 30), one(dsn, "SELECT count(*) FROM results")
    assert one(dsn, "SELECT count(*) FROM results WHERE lot_id IS DISTINCT FROM 'LOT-A'") == 0
    assert one(dsn, "SELECT count(*) FROM results WHERE tof_sigma_mass_g > 0") == 30
    lot = one(dsn, "SELECT product, qn_g, tne_g, ended, note FROM lots WHERE lot_id = 'LOT-A'")
    assert lot == (PROFILE, 300.0, 9.0, None, "first")

    # An empty-tray calibration while the lot runs: its trays are stored in calibration mode
    # (and the lot), the roll-ups stay at the 30 production trays, the mode comes back.
    configs = Configs(broker)
    try:
        out: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: out.update(summary=calibrate(
            broker.url, DEVICE, "empty", 25, [0.97] * 10, timeout_s=60,
            confirm=lambda _p: None)[1]))  # fmt: skip
        worker.start()
        time.sleep(1.0)
        # As many trays as the capture takes: the fixture leaves with the calibration mode.
        sim(broker, 2, "--fixture", "empty", "--rate", "1500", "--count", "25")
        worker.join(60)
        assert "summary" in out
    finally:
        configs.close()
    assert configs.modes == [Mode.CALIBRATION, Mode.PRODUCTION]
    assert configs.seen[-1].calibration is not None
    calibration = "SELECT count(*) FROM results WHERE mode = 'calibration'"
    per_mode = "SELECT array_agg(mode || ' ' || n) FROM (SELECT mode, count(*) n FROM results"
    per_mode += " GROUP BY 1) x"
    assert wait_for(lambda: one(dsn, calibration) == 25), one(dsn, per_mode)
    n_cal = 25
    assert one(dsn, "SELECT count(*) FROM results WHERE mode = 'calibration' AND lot_id = 'LOT-A'")
    assert one(dsn, "SELECT sum(n_total) FROM results_1m") == 30
    assert one(dsn, "SELECT mode FROM device_config ORDER BY ts DESC LIMIT 1") == "production"
    assert one(dsn, "SELECT count(*) FROM device_config WHERE mode = 'calibration'") == 1

    # The packers' rules count the lot's production packs only; the rest is reported apart.
    rules = sqal("lot", "rules", "--lot", "LOT-A", "--db", dsn, "--json")
    assert rules.returncode in (0, 1), rules.stderr
    doc = json.loads(rules.stdout)
    assert [g["n"] for g in doc["groups"]] == [30]
    assert doc["not_counted"]["calibration"]["trays"] == n_cal

    # Ending the lot: retained as ended, stored with its end, results after it carry none.
    ok("lot", "end", "--line", LINE, "--broker", broker.url)
    shown = json.loads(ok("lot", "show", "--line", LINE, "--broker", broker.url, "--json"))
    assert shown[LINE]["open"] is False
    assert wait_for(lambda: one(dsn, "SELECT ended FROM lots WHERE lot_id = 'LOT-A'") is not None)
    sim(broker, 3, "--rate", "600", "--count", "10", "--defect-rate", "0")
    assert wait_for(lambda: one(dsn, "SELECT count(*) FROM results WHERE lot_id IS NULL") == 10)
    listed = json.loads(ok("lot", "list", "--line", LINE, "--db", dsn, "--json"))["lots"]
    assert [(x["lot"], x["trays"]) for x in listed] == [("LOT-A", 30)]
    assert listed[0]["not_counted"] == {"calibration": n_cal}

    # The same id reused for another lot is refused (dead letter), the first one stays.
    other = Lot(lot="LOT-A", product=PROFILE, qn_g=300, tne_g=9,
                started=datetime.now(UTC) + timedelta(minutes=1))  # fmt: skip
    publish_acked(broker.url, lot_topic(LINE), encode(other), retain=True, prefix="t")
    conflict = (
        "SELECT count(*) FROM dead_letters WHERE reason = 'conflict' AND right(topic, 4) = '/lot'"
    )
    assert wait_for(lambda: one(dsn, conflict) == 1)
    assert one(dsn, "SELECT ended IS NOT NULL FROM lots WHERE lot_id = 'LOT-A'") is True


def test_a_failed_or_interrupted_calibration_restores_the_devices_mode(
    broker: Mosquitto,
) -> None:
    line = Target("modes-line", "n01")
    ok("config", "set", f"{line.line}/{line.device}", "--profile", PROFILE, "--mode",
       "maintenance", "--broker", broker.url)  # fmt: skip
    seen: list[Mode] = []

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        obj = decode(msg.topic, bytes(msg.payload))
        assert isinstance(obj, DeviceConfig)
        seen.append(obj.mode)

    sub = paho_client(broker.url, client_id("modes2"), persistent=False, on_message=on_message)
    try:
        sub.subscribe(subscription("config", line=line.line), qos=1)
        time.sleep(0.5)
        seen.clear()
        # No node publishes: the capture times out.
        with pytest.raises(CalibrationError, match="0/20 ToF"):
            calibrate(broker.url, line, "empty", 20, [0.97] * 10, timeout_s=1,
                      confirm=lambda _p: None)  # fmt: skip

        def interrupt(_prompt: str) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            calibrate(broker.url, line, "empty", 20, [0.97] * 10, timeout_s=1, confirm=interrupt)
        assert wait_for(lambda: len(seen) == 4, 5)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert seen == [Mode.CALIBRATION, Mode.MAINTENANCE] * 2
    cfg = asyncio.run(fetch_configs(broker.url, line.topic))[line.topic]
    assert isinstance(cfg, DeviceConfig)
    assert (cfg.mode, cfg.calibration) == (Mode.MAINTENANCE, None)
