"""The analyzer service end to end through the real broker fixture."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from analyzer.service import AnalyzerConfig, AnalyzerService
from embedded import Mosquitto, free_port
from sqal.mqtt import INFLIGHT_WINDOW, paho_client
from sqal.wire import (
    CheckweigherSettings,
    DeadLetter,
    DeviceConfig,
    Kind,
    Result,
    SpectralFrame,
    TofFrame,
    Weight,
    dead_letter_topic,
    device_topic,
    encode,
)
from tests.hostile import HOSTILE
from tests.test_analyzer_support import calibration, spectral_payload, tof_payload

ROOT = Path(__file__).resolve().parent.parent


class Collector:
    """Subscribes to a line's results and the analyzer's dead letters."""

    def __init__(self, broker: Mosquitto, line: str) -> None:
        self.results: dict[str, list[Result]] = defaultdict(list)
        self.dead: list[DeadLetter] = []
        self.lock = threading.Lock()
        self.client = paho_client(broker.url, f"collect-{uuid.uuid4().hex[:8]}", persistent=False)
        self.client.on_message = self.on_message
        self.client.subscribe([(f"sqal/v1/{line}/+/result", 1), (dead_letter_topic("analyzer"), 1)])
        time.sleep(0.2)

    def on_message(self, c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            if msg.topic.endswith("/result"):
                r = Result.model_validate_json(msg.payload)
                self.results[r.sample_id].append(r)
            else:
                self.dead.append(DeadLetter.model_validate_json(msg.payload))

    def wait(self, keys: set[str], timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if keys <= set(self.results):
                    return
            time.sleep(0.05)
        missing = keys - set(self.results)
        raise AssertionError(f"{len(missing)} samples without a result, e.g. {sorted(missing)[:3]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[paho.Client]:
    c = paho_client(broker.url, f"pub-{uuid.uuid4().hex[:8]}", persistent=False)
    yield c
    c.disconnect()
    c.loop_stop()


def send(client: paho.Client, topic: str, payload: bytes, retain: bool = False) -> None:
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def frames(device: str, seq: int) -> tuple[bytes, bytes]:
    tof = TofFrame.model_validate(tof_payload(232, device=device, seq=seq))
    raw = [1668] * 10 + [3]
    spec = SpectralFrame.model_validate(spectral_payload(raw, device=device, seq=seq))
    return encode(tof), encode(spec)


def send_sample(client: paho.Client, line: str, device: str, seq: int) -> None:
    """Both halves of one sample, ToF first, each acknowledged by the broker."""
    tof, spec = frames(device, seq)
    send(client, device_topic(line, device, Kind.TOF), tof)
    send(client, device_topic(line, device, Kind.SPECTRAL), spec)


def sample_id(device: str, seq: int) -> str:
    return f"{device}-abc123-{seq:08d}"


def test_the_broker_grants_the_analyzer_its_inflight_window(broker: Mosquitto) -> None:
    """The broker's CONNACK announces the window the analyzer holds acks in (no less)."""
    service = AnalyzerService(AnalyzerConfig(broker.url, client_id=f"an-{uuid.uuid4().hex[:8]}"))
    service.sub.start()
    try:
        assert service.sub.broker_receive_maximum == INFLIGHT_WINDOW
    finally:
        service.sub.stop()


def test_every_sample_gets_exactly_one_result_and_bad_input_is_dead_lettered(
    broker: Mosquitto, publisher: paho.Client
) -> None:
    line, dev = f"L{uuid.uuid4().hex[:6]}", "devA"
    cfg = DeviceConfig(device_id=dev, profile="foie_gras_lobe_400g", calibration=calibration())
    send(publisher, device_topic(line, dev, Kind.CONFIG), encode(cfg), retain=True)
    collector = Collector(broker, line)
    service = AnalyzerService(
        AnalyzerConfig(broker.url, client_id=f"an-{uuid.uuid4().hex[:8]}", join_timeout_s=0.3)
    )
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        assert service.ready.wait(10)
        tof_t, spec_t = device_topic(line, dev, Kind.TOF), device_topic(line, dev, Kind.SPECTRAL)
        for seq in range(40):
            tof, spec = frames(dev, seq)
            first, second = (
                ((spec_t, spec), (tof_t, tof)) if seq % 3 else ((tof_t, tof), (spec_t, spec))
            )
            send(publisher, *first)
            if seq != 7:  # sample 7 loses its second half: released after the join timeout
                send(publisher, *second)
            if seq % 10 == 0:
                send(publisher, *first)  # a duplicate
        # Bad input amid the stream, from the shared catalogue (every entry against both
        # stages: tests/test_hostile_input.py).
        truncated = HOSTILE["truncated_json"].build(line, dev)
        newer = HOSTILE["newer_version_sparse"].build(line, dev)
        assert truncated[0] == newer[0] == tof_t
        send(publisher, *truncated)
        send(publisher, *newer)
        keys = {sample_id(dev, s) for s in range(40)}
        collector.wait(keys)
        time.sleep(0.5)  # room for a wrong second result to show up
        with collector.lock:
            assert {k: len(v) for k, v in collector.results.items() if len(v) != 1} == {}
            r7 = collector.results[sample_id(dev, 7)][0]
            full = collector.results[sample_id(dev, 1)][0]
            reasons = sorted(d.reason.value for d in collector.dead)
        assert "missing_spectral" in r7.fusion.defects or "missing_tof" in r7.fusion.defects
        assert full.calibration_id == "cal-dev1-0001"
        assert full.tof is not None
        assert full.spectral is not None
        assert full.spectral.lab is not None
        assert full.analyzer.version
        assert full.analyzer.processing_ms >= 0
        assert reasons == ["bad_json", "unsupported_version"]
        bad = next(d for d in collector.dead if d.reason.value == "bad_json")
        assert bad.topic == tof_t
        assert base64.b64decode(bad.payload_b64).startswith(b'{"v": 1')
        assert base64.b64decode(bad.payload_b64) == truncated[1]
        assert service.metrics.dead.value("bad_json") == 1
        assert service.metrics.scored.value() == 40
    finally:
        service.stop()
        worker.join(10)
        collector.close()
        send(publisher, device_topic(line, dev, Kind.CONFIG), b"", retain=True)


def test_a_weighed_line_decides_fill_on_the_weight_and_holds_a_tray_without_one(
    broker: Mosquitto, publisher: paho.Client
) -> None:
    """The device's config announces a checkweigher: each sample waits for its weight too."""
    line, dev = f"L{uuid.uuid4().hex[:6]}", "devW"
    cfg = DeviceConfig(
        device_id=dev,
        profile="foie_gras_lobe_400g",
        calibration=calibration(),
        checkweigher=CheckweigherSettings(sigma_g=0.5),
    )
    send(publisher, device_topic(line, dev, Kind.CONFIG), encode(cfg), retain=True)
    collector = Collector(broker, line)
    service = AnalyzerService(
        AnalyzerConfig(broker.url, client_id=f"an-{uuid.uuid4().hex[:8]}", join_timeout_s=0.5)
    )
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        assert service.ready.wait(10)
        for seq in (1, 2):
            send_sample(publisher, line, dev, seq)
        tof = TofFrame.model_validate_json(frames(dev, 1)[0])
        weighed = Weight(device_id=dev, sample_id=sample_id(dev, 1), seq=1, ts=tof.ts, mass_g=366.0)
        send(publisher, device_topic(line, dev, Kind.WEIGHT), encode(weighed))
        collector.wait({sample_id(dev, 1), sample_id(dev, 2)})
        with collector.lock:
            one = collector.results[sample_id(dev, 1)][0]
            two = collector.results[sample_id(dev, 2)][0]
        assert one.weight is not None
        assert one.weight.mass_g == 366.0
        assert one.weight.sigma_g == 0.5  # the config's σ: the weight stated none
        assert "underfill" in one.fusion.defects  # 366 g < Qn − 2·TNE = 376 g
        assert one.fusion.decision == "REJECT"
        assert two.weight is None
        assert "missing_weight" in two.fusion.defects
        assert two.fusion.decision in ("HOLD", "REJECT")
    finally:
        service.stop()
        worker.join(10)
        collector.close()
        send(publisher, device_topic(line, dev, Kind.CONFIG), b"", retain=True)


def start_service(broker: Mosquitto, cid: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "analyzer", "--broker", broker.url, "--client-id", cid]
    args += ["--metrics-port", str(port), "--join-timeout", "0.5", *extra]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("analyzer did not become healthy")


def test_kill_9_loses_no_sample_with_a_persistent_session(
    broker: Mosquitto, publisher: paho.Client
) -> None:
    line, dev, cid = f"L{uuid.uuid4().hex[:6]}", "devK", f"an-{uuid.uuid4().hex[:8]}"
    collector = Collector(broker, line)
    tof_t, spec_t = device_topic(line, dev, Kind.TOF), device_topic(line, dev, Kind.SPECTRAL)
    proc = start_service(broker, cid, free_port())
    try:
        for seq in range(60):
            tof, spec = frames(dev, seq)
            publisher.publish(tof_t, tof, qos=1)
            publisher.publish(spec_t, spec, qos=1)
        time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: some results out, some not
        proc.wait(10)
        for seq in range(60, 120):  # queued by the broker for the absent session
            tof, spec = frames(dev, seq)
            send(publisher, tof_t, tof)
            send(publisher, spec_t, spec)
        proc = start_service(broker, cid, free_port())
        collector.wait({sample_id(dev, s) for s in range(120)}, timeout_s=20)
        with collector.lock:
            # A repeat after the crash is allowed; its verdict must be the same.
            for rs in collector.results.values():
                assert len({(r.fusion.final_grade, tuple(r.fusion.defects)) for r in rs}) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        collector.close()


def test_metrics_and_health_are_served(broker: Mosquitto) -> None:
    port = free_port()
    proc = start_service(broker, f"an-{uuid.uuid4().hex[:8]}", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
        for name in ("received_total", "scored_total", "published_total", "pending_joins"):
            assert f"sqal_analyzer_{name}" in text
        assert "sqal_analyzer_processing_seconds_bucket" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_an_analyzer_split_by_line_scores_only_its_lines(
    broker: Mosquitto, publisher: paho.Client
) -> None:
    mine, other = f"ln{uuid.uuid4().hex[:6]}", f"lo{uuid.uuid4().hex[:6]}"
    ours, theirs = Collector(broker, mine), Collector(broker, other)
    proc = start_service(broker, f"an-lines-{mine}", free_port(), "--lines", mine)
    try:
        for line in (mine, other):
            tof, spec = frames("d1", 1)
            send(publisher, device_topic(line, "d1", Kind.TOF), tof)
            send(publisher, device_topic(line, "d1", Kind.SPECTRAL), spec)
        ours.wait({sample_id("d1", 1)})
        time.sleep(1.0)  # the other line's sample had every chance to be scored
        assert theirs.results == {}
    finally:
        proc.terminate()
        proc.wait(10)
        ours.close()
        theirs.close()


def test_a_frozen_broker_fails_the_health_check_and_counts_a_stall(
    private_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP on the broker while a half waits: the unanswered probe fails /healthz; after
    SIGCONT the silence is counted as a stall and health comes back (analyzer.liveness)."""
    monkeypatch.setattr("analyzer.service.BROKER_SILENT_S", 0.5)
    line, dev = f"L{uuid.uuid4().hex[:6]}", "devF"
    service = AnalyzerService(
        AnalyzerConfig(private_broker.url, client_id=f"an-{uuid.uuid4().hex[:8]}")
    )
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    pub = paho_client(private_broker.url, f"pub-{uuid.uuid4().hex[:6]}", persistent=False)
    frozen = False
    try:
        assert service.ready.wait(10)
        tof, _ = frames(dev, 1)
        send(pub, device_topic(line, dev, Kind.TOF), tof)  # its spectral half never comes
        assert wait_for(lambda: len(service.joiner) == 1, 5)
        os.kill(private_broker.process.pid, signal.SIGSTOP)
        frozen = True
        assert wait_for(lambda: not service.registry.healthy()[0], 10)
        assert "broker silent" in service.registry.healthy()[1]
        time.sleep(1.5)  # longer than a stall's least silence (BrokerLiveness.stall_s)
        os.kill(private_broker.process.pid, signal.SIGCONT)
        frozen = False
        assert wait_for(lambda: service.registry.healthy() == (True, "ok"), 10)
        assert wait_for(lambda: service.metrics.stalls.total() == 1, 5)
        assert wait_for(lambda: len(service.joiner) == 0, 10)  # then released, as partial
    finally:
        if frozen:
            os.kill(private_broker.process.pid, signal.SIGCONT)
        service.stop()
        worker.join(15)
        pub.disconnect()
        pub.loop_stop()


def wait_for(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def run_in_thread(broker: Mosquitto, cid: str) -> tuple[AnalyzerService, threading.Thread]:
    service = AnalyzerService(AnalyzerConfig(broker.url, client_id=cid, join_timeout_s=0.5))
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    assert service.ready.wait(10)
    return service, worker


def stop(service: AnalyzerService, worker: threading.Thread) -> None:
    service.stop()
    worker.join(15)
    assert not worker.is_alive()


def test_a_backlog_is_scored_with_the_retained_config_whatever_came_first(
    broker: Mosquitto, publisher: paho.Client
) -> None:
    """Frames queued for the analyzer's session come before any subscription of the new
    connection; the retained config they depend on must still decide how they are scored."""
    line, dev, cid = f"L{uuid.uuid4().hex[:6]}", "devB", f"an-{uuid.uuid4().hex[:8]}"
    collector = Collector(broker, line)
    service, worker = run_in_thread(broker, cid)
    stop(service, worker)  # the session stays, subscribed, while the analyzer is away
    try:
        cfg = DeviceConfig(device_id=dev, profile="pate_terrine_300g", calibration=calibration())
        send(publisher, device_topic(line, dev, Kind.CONFIG), encode(cfg), retain=True)
        for seq in range(40):  # a backlog several times a batch
            send_sample(publisher, line, dev, seq)
        service, worker = run_in_thread(broker, cid)
        collector.wait({sample_id(dev, s) for s in range(40)})
        with collector.lock:
            profiles = {r.profile for rs in collector.results.values() for r in rs}
        assert profiles == {"pate_terrine_300g"}
    finally:
        stop(service, worker)
        collector.close()


def test_a_device_id_on_another_line_is_another_device(
    broker: Mosquitto, publisher: paho.Client
) -> None:
    """A config sent to L2/b01 changes nothing on L1/b01 (#15: lines collided on device ids)."""
    first, second = f"A{uuid.uuid4().hex[:6]}", f"B{uuid.uuid4().hex[:6]}"
    ours = Collector(broker, first)
    service, worker = run_in_thread(broker, f"an-{uuid.uuid4().hex[:8]}")
    try:
        cfg = DeviceConfig(device_id="b01", profile="pate_terrine_300g", calibration=calibration())
        send(publisher, device_topic(second, "b01", Kind.CONFIG), encode(cfg), retain=True)
        send_sample(publisher, first, "b01", 7)
        ours.wait({sample_id("b01", 7)})
        with ours.lock:
            assert [r.profile for r in ours.results[sample_id("b01", 7)]] == ["foie_gras_lobe_400g"]
    finally:
        stop(service, worker)
        ours.close()
        send(publisher, device_topic(second, "b01", Kind.CONFIG), b"", retain=True)


def test_a_lost_session_is_subscribed_again_and_the_next_sample_scored(
    broker: Mosquitto, publisher: paho.Client
) -> None:
    """While the analyzer is away, another client takes its id with a clean start: the broker
    deletes the session and its subscriptions. The analyzer reconnects, subscribes again and
    scores on. (Taking the id while it is connected is a takeover: Mosquitto ≥ 2.0.15 says so
    with 0x8E and the analyzer stops, tests/test_service_logs.py.)"""
    line, dev, cid = f"L{uuid.uuid4().hex[:6]}", "devS", f"an-{uuid.uuid4().hex[:8]}"
    collector = Collector(broker, line)
    service, worker = run_in_thread(broker, cid)
    try:
        generation = service.sub.generation
        service.sub._link.drop()  # away: it reconnects after its 1 s delay
        assert wait_for(lambda: not service.sub.connected, 10)
        thief = paho_client(broker.url, cid, persistent=False)  # clean start: session gone
        thief.disconnect()
        thief.loop_stop()
        assert wait_for(lambda: service.sub.generation > generation, 15)
        assert service.sub.session_present is False
        assert wait_for(lambda: service.registry.healthy() == (True, "ok"), 10)
        send_sample(publisher, line, dev, 1)
        collector.wait({sample_id(dev, 1)})
    finally:
        stop(service, worker)
        collector.close()


def test_a_second_different_half_is_a_dead_letter_not_a_silent_drop(
    broker: Mosquitto, publisher: paho.Client
) -> None:
    line, dev = f"L{uuid.uuid4().hex[:6]}", "devC"
    collector = Collector(broker, line)
    service, worker = run_in_thread(broker, f"an-{uuid.uuid4().hex[:8]}")
    try:
        tof, spec = frames(dev, 3)
        other = TofFrame.model_validate(tof_payload(250, device=dev, seq=3))
        send(publisher, device_topic(line, dev, Kind.TOF), tof)
        send(publisher, device_topic(line, dev, Kind.TOF), encode(other))
        send(publisher, device_topic(line, dev, Kind.SPECTRAL), spec)
        collector.wait({sample_id(dev, 3)})
        assert wait_for(lambda: len(collector.dead) == 1, 5)
        with collector.lock:
            assert [d.reason for d in collector.dead] == ["conflict"]
            assert base64.b64decode(collector.dead[0].payload_b64) == encode(other)
            assert len(collector.results[sample_id(dev, 3)]) == 1
    finally:
        stop(service, worker)
        collector.close()


def test_a_config_set_months_ago_is_state_not_a_stale_event(
    broker: Mosquitto, publisher: paho.Client
) -> None:
    """The ts window applies to frames, not to a retained config, whatever its age."""
    from datetime import UTC, datetime, timedelta

    line, dev = f"L{uuid.uuid4().hex[:6]}", "devO"
    old = datetime.now(UTC) - timedelta(days=90)
    cfg = DeviceConfig(
        device_id=dev, profile="pate_terrine_300g", ts=old, calibration=calibration()
    )
    send(publisher, device_topic(line, dev, Kind.CONFIG), encode(cfg), retain=True)
    collector = Collector(broker, line)
    service, worker = run_in_thread(broker, f"an-{uuid.uuid4().hex[:8]}")
    try:
        send_sample(publisher, line, dev, 5)
        collector.wait({sample_id(dev, 5)})
        with collector.lock:
            assert [r.profile for r in collector.results[sample_id(dev, 5)]] == [
                "pate_terrine_300g"
            ]
    finally:
        stop(service, worker)
        collector.close()
        send(publisher, device_topic(line, dev, Kind.CONFIG), b"", retain=True)
