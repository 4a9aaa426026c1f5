"""One fault at a time while a fleet streams: every sample graded and stored exactly once.

Each scenario runs a fresh fleet (its own device clock day, so scenarios never mix), injects
its fault once about a third of the samples are out, restores, and audits the database:
every sample has one result row and its two raw frames, no seq is missing, no row is doubled.

*Recovery* is the time from the end of the fault (process restarted, database or broker back)
until the stored results caught up with every sample the fleet had sent by then.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.chaos.audit import audit, stored_results
from tests.chaos.fleet import FleetRun
from tests.chaos.plugin import ROWS, Row
from tests.chaos.stack import Stack, wait_for

pytestmark = pytest.mark.chaos

STREAM_S = 4.0
"""Shortest time the fleet streams a scenario's samples (the fault lands inside it)."""
OFFERED_PER_S = 60.0
"""Samples per second the fleet offers, whatever ``--samples``: the suite tests loss under
faults, not capacity (the sustained capacity, ~200 samples/s here, is bench.pipeline's)."""
FAULT_AT = 0.3
"""Share of the samples sent before the fault is injected."""


@dataclass(frozen=True)
class Options:
    samples: int
    outage_s: float
    freeze_s: float


@pytest.fixture(scope="module")
def options(request: pytest.FixtureRequest) -> Options:
    cfg = request.config
    return Options(
        samples=int(cfg.getoption("--samples")),
        outage_s=float(cfg.getoption("--outage-s")),
        freeze_s=float(cfg.getoption("--freeze-s")),
    )


# Each fault returns the monotonic time its restoration began (restart issued, SIGCONT sent).
def kill_analyzer(stack: Stack, opt: Options) -> float:
    assert stack.analyzer is not None
    stack.analyzer.kill()
    time.sleep(0.5)  # the stream goes on: the broker queues in the analyzer's session
    restored = time.monotonic()
    stack.analyzer.start()
    return restored


def kill_ingest(stack: Stack, opt: Options) -> float:
    assert stack.ingest is not None
    stack.ingest.kill()
    time.sleep(0.5)
    restored = time.monotonic()
    stack.ingest.start()
    return restored


def restart_broker(stack: Stack, opt: Options) -> float:
    assert stack.broker is not None
    stack.broker.stop()  # clean: Mosquitto writes its persistence file on SIGTERM
    restored = time.monotonic()
    stack.start_broker()
    return restored


def stop_postgres(stack: Stack, opt: Options) -> float:
    assert stack.pg is not None
    stack.pg.stop()
    time.sleep(opt.outage_s)
    restored = time.monotonic()
    stack.start_pg()
    return restored


def freeze_broker(stack: Stack, opt: Options) -> float:
    assert stack.broker is not None
    pid = stack.broker.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(opt.freeze_s)
    finally:
        os.kill(pid, signal.SIGCONT)
    return time.monotonic()


SCENARIOS: dict[str, Callable[[Stack, Options], float]] = {
    "kill -9 analyzer": kill_analyzer,
    "kill -9 ingest": kill_ingest,
    "restart mosquitto": restart_broker,
    "stop postgresql": stop_postgres,
    "SIGSTOP mosquitto": freeze_broker,
}


PARTIAL_MAY_HAPPEN = {"restart mosquitto"}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault_loses_and_doubles_no_sample(stack: Stack, options: Options, name: str) -> None:
    index = list(SCENARIOS).index(name)
    start = datetime(2030, 1, 1, 6, tzinfo=UTC) + timedelta(days=index)
    per_device = max(4, options.samples // 4)
    stream_s = max(STREAM_S, 4 * per_device / OFFERED_PER_S)
    run = FleetRun(stack.url, per_device, start, seed=100 + index, stream_s=stream_s)
    run.start_thread()
    assert wait_for(lambda: run.published_samples() >= FAULT_AT * run.samples, 60 + stream_s), (
        run.error
    )
    label = name
    if name == "stop postgresql":
        label = f"stop postgresql {options.outage_s:g} s"
    elif name == "SIGSTOP mosquitto":
        label = f"SIGSTOP mosquitto {options.freeze_s:g} s"
    restored = SCENARIOS[name](stack, options)
    sent_by_then = run.published_samples()
    caught_up = wait_for(
        lambda: stored_results(stack, run.window) >= sent_by_then, 60 + options.outage_s, 0.1
    )
    recovery_s = time.monotonic() - restored
    assert run.join(120 + stream_s), f"fleet failed: {run.error!r}"
    wait_for(lambda: stored_results(stack, run.window) >= run.samples, 30, 0.2)
    # Late copies (redeliveries) would arrive within a batch flush; let them land first.
    time.sleep(0.5)
    found = audit(stack, run)
    ROWS.append(
        Row(label, found.samples, found.lost, found.duplicated, found.seq_gaps, found.partial,
            recovery_s)
    )  # fmt: skip
    assert caught_up
    assert (found.lost, found.duplicated, found.seq_gaps) == (0, 0, 0), found
    # Both frames of every sample were sent: a partial result is a join given up early (a frozen
    # broker: analyzer.liveness). After a restart a node may reconnect later than the analyzer
    # by more than the join timeout (its backoff grows to 5 s when the broker is slow to come
    # back; seen once, README "Reliability"): its half is then truly late, stored, and the
    # sample graded once with one section null.
    # Bounded there at 2 % of the run (seen: 1 and 2 of 240, in two CI runs).
    assert found.partial <= (max(3, found.samples // 50) if name in PARTIAL_MAY_HAPPEN else 0), (
        found
    )
    assert stack.analyzer is not None
    assert stack.analyzer.healthy()
    assert stack.ingest is not None
    assert stack.ingest.healthy()
