"""Scale past one box: a plant Mosquitto bridged to a central one, the pipeline on the central side.

The devices publish to the plant broker; Mosquitto's own bridge (mosquitto/bridge.conf.example:
QoS 1, persistent sessions at both ends, persistence on in both brokers) forwards their frames,
statuses and configs to the chaos stack's broker, where the analyzer and ingest run. Each broker
is restarted once under a streaming fleet (the plant broker by its PID, which restarts the
bridge; then the central broker), and a backlog queued at the plant while the central broker is
down drains through the bridge. Every sample must be stored and scored exactly once, as in
tests/chaos/test_scenarios.py and test_overload.py; the drain rate is printed, not asserted.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as paho
import pytest

from sqal.mqtt import client_id, paho_client
from sqal.wire import DeviceConfig, Kind, device_topic, encode
from tests.chaos.audit import audit, stored_results
from tests.chaos.bridge import Plant
from tests.chaos.burst import publish_samples
from tests.chaos.fleet import FleetRun
from tests.chaos.plugin import NOTES, ROWS, Row
from tests.chaos.stack import Stack, wait_for

pytestmark = pytest.mark.chaos

STREAM_S = 4.0
"""Shortest time the fleet streams a scenario's samples (the restart lands inside it)."""
OFFERED_PER_S = 60.0
"""Samples per second the fleet offers, as in test_scenarios.py: loss under faults, not
capacity (the backlog test below measures the drain rate)."""
FAULT_AT = 0.3
"""Share of the samples sent before the restart."""
BACKLOG_LINE = "BRIDGE"
BACKLOG_TS = datetime(2031, 2, 1, 8, 0, tzinfo=UTC)
"""A day of its own: no other chaos scenario writes rows on it."""
PUBLISHERS = 2
STALL_S = 60.0
"""A drain that stores nothing for this long has lost its backlog (the bridge reconnects within
about a second, the services within a few; a database pause is shorter in this suite)."""


@pytest.fixture(scope="module")
def plant(stack: Stack) -> Iterator[Plant]:
    """The plant broker, bridged to the stack's broker (the central one) before any test."""
    p = Plant(stack.folder / "plant", stack.mqtt_port)
    p.start()
    try:
        assert p.wait_connected(), "the bridge never connected to the central broker"
        yield p
    finally:
        p.stop()


# Each restart returns the monotonic time its restoration began (start issued).
def restart_plant(stack: Stack, plant: Plant) -> float:
    plant.stop()  # SIGTERM by PID: the bridge's queue and inflight frames go to mosquitto.db
    restored = time.monotonic()
    plant.start()
    return restored


def restart_central(stack: Stack, plant: Plant) -> float:
    assert stack.broker is not None
    stack.broker.stop()  # the bridge's session and the services' queues go to mosquitto.db
    restored = time.monotonic()
    stack.start_broker()
    return restored


SCENARIOS: dict[str, Callable[[Stack, Plant], float]] = {
    "bridge: restart plant": restart_plant,
    "bridge: restart central": restart_central,
}


def retained(url: str, topic_filter: str, wait_s: float = 1.0) -> dict[str, bytes]:
    """The retained messages matching ``topic_filter`` on a broker: topic → payload."""
    got: dict[str, bytes] = {}
    lock = threading.Lock()

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        if msg.retain:
            with lock:
                got[msg.topic] = bytes(msg.payload)

    client = paho_client(url, client_id("retained"), persistent=False, on_message=on_message)
    try:
        client.subscribe(topic_filter, qos=1)
        time.sleep(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return dict(got)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_bridge_restart_loses_and_doubles_no_sample(
    stack: Stack, plant: Plant, request: pytest.FixtureRequest, name: str
) -> None:
    index = list(SCENARIOS).index(name)
    start = datetime(2030, 2, 1, 6, tzinfo=UTC) + timedelta(days=index)
    samples = int(request.config.getoption("--samples"))
    per_device = max(4, samples // 4)
    stream_s = max(STREAM_S, 4 * per_device / OFFERED_PER_S)
    run = FleetRun(plant.url, per_device, start, seed=200 + index, stream_s=stream_s)
    run.start_thread()
    assert wait_for(lambda: run.published_samples() >= FAULT_AT * run.samples, 60 + stream_s), (
        run.error
    )
    restored = SCENARIOS[name](stack, plant)
    sent_by_then = run.published_samples()
    caught_up = wait_for(lambda: stored_results(stack, run.window) >= sent_by_then, 60, 0.1)
    recovery_s = time.monotonic() - restored
    assert run.join(120 + stream_s), f"fleet failed: {run.error!r}"
    wait_for(lambda: stored_results(stack, run.window) >= run.samples, 30, 0.2)
    time.sleep(0.5)  # late copies (redeliveries) land within a batch flush
    found = audit(stack, run)
    ROWS.append(
        Row(name, found.samples, found.lost, found.duplicated, found.seq_gaps, found.partial,
            recovery_s)
    )  # fmt: skip
    assert caught_up
    assert plant.bridge_state() == b"1"
    assert (found.lost, found.duplicated, found.seq_gaps) == (0, 0, 0), found
    # As after a restart without a bridge (test_scenarios.py, docs/reliability.md): a half that
    # reaches the analyzer more than --join-timeout after its other half, because a node or the
    # bridge reconnected late, is stored and its sample graded once with one section null.
    assert found.partial <= max(3, found.samples // 50), found
    # The devices' retained configs (their calibration, which the analyzer needs) crossed the
    # bridge: the central broker retains what the plant broker does, byte for byte.
    at_plant = retained(plant.url, "sqal/v1/+/+/config")
    assert at_plant, "the fleet published no config"
    assert retained(stack.url, "sqal/v1/+/+/config").items() >= at_plant.items()
    assert stack.analyzer is not None
    assert stack.analyzer.healthy()
    assert stack.ingest is not None
    assert stack.ingest.healthy()


def test_a_config_published_centrally_reaches_the_plant(stack: Stack, plant: Plant) -> None:
    topic = device_topic("bridgecfg", "cfg-01", Kind.CONFIG)
    payload = encode(DeviceConfig(device_id="cfg-01", profile="foie_gras_lobe_400g"))
    pub = paho_client(stack.url, client_id("bridge-cfg"), persistent=False)
    try:
        pub.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert wait_for(lambda: retained(plant.url, topic, 0.3).get(topic) == payload, 20, 0.2)
    # No loop: the plant broker sent nothing back (try_private), so the central broker saw one.
    assert retained(stack.url, topic).get(topic) == payload


def drain(count: Callable[[], int], target: int, stall_s: float) -> bool:
    """Wait until ``count()`` reaches ``target``; False once it has not grown for ``stall_s``
    (a lost backlog fails in a minute, not after the longest drain the soak may need)."""
    last, since = -1, time.monotonic()
    while True:
        n = count()
        if n >= target:
            return True
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > stall_s:
            return False
        time.sleep(0.2)


def _count(stack: Stack, table: str) -> int:
    return stack.scalar(
        f"SELECT count(*) FROM {table} WHERE line_id = %s AND ts = %s",  # noqa: S608
        BACKLOG_LINE,
        BACKLOG_TS,
    )


def test_a_backlog_queued_at_the_plant_drains_through_the_bridge_once(
    stack: Stack, plant: Plant, request: pytest.FixtureRequest
) -> None:
    assert stack.analyzer is not None
    per_device = int(request.config.getoption("--bridge-backlog")) // PUBLISHERS
    samples = per_device * PUBLISHERS
    analyzer = stack.analyzer

    def idle() -> bool:  # earlier scenarios' lone halves are scored (and counted) first
        m = analyzer.metrics()
        return m.get("sqal_analyzer_pending_joins", 0.0) == 0 and (
            m.get("sqal_analyzer_unacked_messages", 0.0) == 0
        )

    assert wait_for(idle, 90, every_s=0.5), "the analyzer still holds earlier scenarios' halves"
    scored_before = analyzer.metrics().get("sqal_analyzer_scored_total", 0.0)

    assert stack.broker is not None
    stack.broker.stop()  # the central site is away: the plant broker queues for the bridge
    ctx = mp.get_context("spawn")
    t0 = time.monotonic()
    pubs = [
        ctx.Process(
            target=publish_samples,
            args=(plant.url, BACKLOG_LINE, f"brg{i}", per_device, BACKLOG_TS),
        )
        for i in range(PUBLISHERS)
    ]
    for p in pubs:
        p.start()
    for p in pubs:
        p.join(300)
        assert p.exitcode == 0, "a publisher failed"
    queued_s = time.monotonic() - t0
    restored = time.monotonic()
    stack.start_broker()

    def stored() -> int:
        return min(_count(stack, "results"), _count(stack, "tof_frames"))

    assert drain(stored, samples, STALL_S), (
        f"results {_count(stack, 'results')}, tof {_count(stack, 'tof_frames')} of {samples}"
    )
    drain_s = time.monotonic() - restored
    wait_for(lambda: _count(stack, "spectral_frames") >= samples, 60, every_s=0.5)
    time.sleep(0.5)  # late copies (redeliveries) land within a batch flush

    assert _count(stack, "tof_frames") == samples
    assert _count(stack, "spectral_frames") == samples
    assert _count(stack, "results") == samples
    partial = stack.scalar(
        "SELECT count(*) FROM results WHERE line_id = %s AND ts = %s "
        "AND NOT (tof_present AND spectral_present)",
        BACKLOG_LINE,
        BACKLOG_TS,
    )
    assert partial == 0  # both halves of each sample queued in order, behind one another
    scored = analyzer.metrics().get("sqal_analyzer_scored_total", 0.0) - scored_before
    assert scored == samples, "a sample was scored twice (or not at all)"
    NOTES.append(
        f"bridge: {2 * samples} frames queued at the plant broker in {queued_s:.1f} s while the "
        f"central one was down; from its restart, all through the bridge, stored and scored in "
        f"{drain_s:.1f} s ({samples / drain_s:.0f} samples/s, {2 * samples / drain_s:.0f} "
        "frames/s)"
    )
