"""Golden replay (issue 6): a recorded run replayed into a fresh pipeline gives the same results.

Record a simulated run from one stack (broker, analyzer, ingest, TimescaleDB), replay the
capture into a second, fresh stack, and compare the two results tables: same samples, same
scores, same grades, same defects.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
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


def test_replayed_capture_gives_identical_results(
    two_stacks: tuple[Stack, Stack], tmp_path: Path
) -> None:
    original, fresh = two_stacks
    capture = tmp_path / "run.sqalcap"
    n = TRAYS_PER_NODE * NODES
    ready = threading.Event()

    def recorder() -> None:
        async def go() -> None:
            started = asyncio.Event()
            task = asyncio.create_task(
                record(original.url, ["sqal/v1/#"], capture, duration_s=60, ready=started)
            )
            await started.wait()
            ready.set()
            stored = lambda: original.scalar("SELECT count(*) FROM results") >= n  # noqa: E731
            await asyncio.to_thread(wait_for, stored, 60)
            task.cancel()

        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(go())

    thread = threading.Thread(target=recorder)
    thread.start()
    assert ready.wait(15)
    subprocess.run(
        [sys.executable, "-m", "app", "sim", "--broker", original.url, "--devices", str(NODES),
         "--rate", "600", "--count", str(TRAYS_PER_NODE), "--seed", "9", "--faults", "none",
         "--profile", "pate_terrine_300g"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    thread.join(90)
    assert wait_for(lambda: original.scalar("SELECT count(*) FROM results") == n, 30)

    # Only what devices publish: frames, and the retained configs they came with.
    stats = replay(
        [capture], fresh.url, max_rate=True,
        topics=["sqal/v1/+/+/config", "sqal/v1/+/+/tof", "sqal/v1/+/+/spectral"],
    )  # fmt: skip
    assert stats.published >= 2 * n
    assert wait_for(lambda: fresh.scalar("SELECT count(*) FROM results") == n, 60)

    before, after = results(original), results(fresh)
    assert len(before) == n
    assert after == before
