"""Overload means backpressure, never loss: frames offered far faster than the pipeline works.

Publisher processes send both frames of every sample at QoS 1 as fast as paho lets them, several
times what the analyzer and ingest process (the test prints both rates). Mosquitto 2.0.11 then
sends the services far more than the Receive Maximum they announce; each service's hand-off
(sqal.subscriber.Handoff) holds paho's thread instead of dropping. Every frame must be stored
once, every sample scored once, none partially.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from datetime import UTC, datetime

import pytest

from tests.chaos.burst import publish_samples
from tests.chaos.plugin import NOTES
from tests.chaos.stack import Stack, wait_for

pytestmark = pytest.mark.chaos

LINE = "OVERLOAD"
PUBLISHERS = 2
TS = datetime(2031, 1, 6, 8, 0, tzinfo=UTC)
"""A day of its own: no other chaos scenario writes rows on it."""


def _count(stack: Stack, table: str) -> int:
    return stack.scalar(
        f"SELECT count(*) FROM {table} WHERE line_id = %s AND ts = %s",  # noqa: S608
        LINE,
        TS,
    )


def test_overload_stores_every_frame_and_scores_every_sample_once(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    assert stack.analyzer is not None
    assert stack.ingest is not None
    per_device = int(request.config.getoption("--overload-samples")) // PUBLISHERS
    samples = per_device * PUBLISHERS
    analyzer = stack.analyzer

    def idle() -> bool:  # earlier scenarios' lone halves are scored (and counted) first
        m = analyzer.metrics()
        return m.get("sqal_analyzer_pending_joins", 0.0) == 0 and (
            m.get("sqal_analyzer_unacked_messages", 0.0) == 0
        )

    assert wait_for(idle, 90, every_s=0.5), "the analyzer still holds earlier scenarios' halves"
    scored_before = analyzer.metrics().get("sqal_analyzer_scored_total", 0.0)

    ctx = mp.get_context("spawn")
    start = time.monotonic()
    pubs = [
        ctx.Process(target=publish_samples, args=(stack.url, LINE, f"ovl{i}", per_device, TS))
        for i in range(PUBLISHERS)
    ]
    for p in pubs:
        p.start()
    for p in pubs:
        p.join(300)
        assert p.exitcode == 0, "a publisher failed"
    offered_s = time.monotonic() - start

    def drained() -> bool:
        return _count(stack, "results") >= samples and _count(stack, "tof_frames") >= samples

    assert wait_for(drained, 600, every_s=0.5), (
        f"results {_count(stack, 'results')}, tof {_count(stack, 'tof_frames')} of {samples}"
    )
    drained_s = time.monotonic() - start
    wait_for(lambda: _count(stack, "spectral_frames") >= samples, 60, every_s=0.5)

    assert _count(stack, "tof_frames") == samples
    assert _count(stack, "spectral_frames") == samples
    assert _count(stack, "results") == samples
    partial = stack.scalar(
        "SELECT count(*) FROM results WHERE line_id = %s AND ts = %s "
        "AND NOT (tof_present AND spectral_present)",
        LINE,
        TS,
    )
    if partial:  # say which, and how the analyzer's joiner released them, for the next look
        rows = stack.query(
            "SELECT device_id, sample_id, tof_present, spectral_present FROM results "
            "WHERE line_id = %s AND ts = %s AND NOT (tof_present AND spectral_present)",
            LINE,
            TS,
        )
        joins = {k: v for k, v in analyzer.metrics().items() if "join" in k or "stall" in k}
        raise AssertionError(f"{partial} partial results: {rows[:5]}; analyzer {joins}")
    scored = stack.analyzer.metrics().get("sqal_analyzer_scored_total", 0.0) - scored_before
    assert scored == samples, "a sample was scored twice (or not at all)"
    held = {
        name: svc.metrics().get(f"sqal_{name}_backpressure_seconds", 0.0)
        for name, svc in (("analyzer", stack.analyzer), ("ingest", stack.ingest))
    }
    assert max(held.values()) > 0, "no backpressure: the offered load was no overload"
    NOTES.append(
        f"overload: {2 * samples} frames offered in {offered_s:.1f} s "
        f"({2 * samples / offered_s:.0f}/s), all stored and scored after {drained_s:.1f} s "
        f"({2 * samples / drained_s:.0f}/s); backpressure analyzer {held['analyzer']:.1f} s, "
        f"ingest {held['ingest']:.1f} s"
    )
