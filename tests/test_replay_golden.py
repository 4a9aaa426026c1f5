"""Golden replay (issue 6): a recorded run replayed into a fresh pipeline gives the same results.

Record a simulated run from one stack (broker, analyzer, ingest, TimescaleDB), replay the
capture into a second, fresh stack, and compare the two results tables: same samples, same
scores, same grades, same defects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capture.record import record
from capture.replay import replay
from tests.chaos.stack import Stack, wait_for

TRAYS_PER_NODE = 20
NODES = 2
RESULT_COLUMNS = """device_id, sample_id, profile, calibration_id, final_score, final_grade,
    confidence, defects, tof_volume_mm3, tof_max_height_mm, tof_tilt_deg, tof_grade,
    spectral_oxidation_index, spectral_lab_l, spectral_grade"""


@pytest.fixture
def two_stacks() -> Iterator[tuple[Stack, Stack]]:
    first, second = Stack(), Stack()
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.close()
        second.close()


def results(stack: Stack) -> list[tuple[Any, ...]]:
    return stack.query(f"SELECT {RESULT_COLUMNS} FROM results ORDER BY device_id, sample_id")  # noqa: S608


def record_a_simulated_run(stack: Stack, capture: Path, nodes: int, trays: int) -> None:
    """Record ``sqal/v1/#`` of ``stack`` while a simulated fleet runs and its results are stored."""
    n = trays * nodes
    ready = threading.Event()

    def recorder() -> None:
        async def go() -> None:
            started = asyncio.Event()
            task = asyncio.create_task(
                record(stack.url, ["sqal/v1/#"], capture, duration_s=60, ready=started)
            )
            await started.wait()
            ready.set()
            stored = lambda: stack.scalar("SELECT count(*) FROM results") >= n  # noqa: E731
            await asyncio.to_thread(wait_for, stored, 60)
            task.cancel()

        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(go())

    thread = threading.Thread(target=recorder)
    thread.start()
    assert ready.wait(15)
    subprocess.run(
        [sys.executable, "-m", "app", "sim", "--broker", stack.url, "--devices", str(nodes),
         "--rate", "600", "--count", str(trays), "--seed", "9", "--faults", "none",
         "--profile", "pate_terrine_300g"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    thread.join(90)
    assert wait_for(lambda: stack.scalar("SELECT count(*) FROM results") == n, 30)


def test_replayed_capture_gives_identical_results(
    two_stacks: tuple[Stack, Stack], tmp_path: Path
) -> None:
    original, fresh = two_stacks
    capture = tmp_path / "run.sqalcap"
    n = TRAYS_PER_NODE * NODES
    record_a_simulated_run(original, capture, NODES, TRAYS_PER_NODE)

    # Only what devices publish: frames, and the retained configs they came with.
    stats = replay(
        [capture], fresh.url, max_rate=True, retain="keep",
        topics=["sqal/v1/+/+/config", "sqal/v1/+/+/tof", "sqal/v1/+/+/spectral"],
    )  # fmt: skip
    assert stats.published >= 2 * n
    assert wait_for(lambda: fresh.scalar("SELECT count(*) FROM results") == n, 60)

    before, after = results(original), results(fresh)
    assert len(before) == n
    assert after == before


@pytest.fixture
def one_stack() -> Iterator[Stack]:
    stack = Stack()
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def replay_cli(capture: Path, url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "replay", str(capture), "--broker", url, "--max-rate",
         "--topic", "sqal/v1/+/+/tof", "--topic", "sqal/v1/+/+/spectral", *flags],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_replay_into_the_pipeline_that_saw_it_needs_fresh_ids_to_give_results(
    one_stack: Stack, tmp_path: Path
) -> None:
    stack, trays = one_stack, 10
    capture = tmp_path / "run.sqalcap"
    record_a_simulated_run(stack, capture, 1, trays)
    scored = "SELECT sample_id, final_grade, final_score FROM results ORDER BY sample_id"
    before = stack.query(scored)

    # The same trays again, as recorded: duplicates, scored and stored by nobody; a second loop
    # of them is warned about.
    same = replay_cli(capture, stack.url, "--loop", "2")
    assert same.returncode == 0, same.stderr
    assert "Warning: frames keep their recorded sample ids" in same.stderr
    assert "--fresh-ids gives each tray a new one" in same.stderr

    fresh = replay_cli(capture, stack.url, "--fresh-ids", "--json")
    assert fresh.returncode == 0, fresh.stderr
    assert "Warning" not in fresh.stderr
    doc = json.loads(fresh.stdout)
    assert doc["fresh_ids"] == doc["samples"] == 2 * trays
    assert wait_for(lambda: stack.scalar("SELECT count(*) FROM results") >= 2 * trays, 60)
    time.sleep(1)  # the duplicates came first: had they been scored, their rows would be in
    after = stack.query(scored)
    assert len(after) == 2 * trays
    again = [row for row in after if row not in before]
    assert len(again) == trays
    # every tray scored again under one new id (both frames met), to the same grade and score
    runs = {sid.rsplit(".r", 1)[1] for sid, _, _ in again}
    assert len(runs) == 1
    assert runs.pop().endswith("-0")
    assert sorted((sid.rsplit(".r", 1)[0], g, sc) for sid, g, sc in again) == sorted(before)
