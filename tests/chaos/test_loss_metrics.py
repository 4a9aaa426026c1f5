"""Loss made visible: seq gaps, duplicates and the broker's dropped counter in ingest's
``/metrics``, broker counters stored in ``broker_stats`` (migration 0004)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.seqgaps import REORDER_WINDOW, SeqTracker
from sqal.mqtt import client_id, paho_client
from sqal.wire import Kind, device_topic, encode
from tests.chaos.stack import Stack, wait_for
from tests.frames import tof_frame


def test_a_skipped_seq_counts_once_past_the_reorder_window() -> None:
    t = SeqTracker(window=4)
    assert [t.observe("d", s) for s in (0, 1, 3, 4, 5, 6)] == [0, 0, 0, 0, 0, 0]
    assert t.pending() == 1  # seq 2 may still come (reordered)
    assert t.observe("d", 7) == 1  # 7 - 4 > 2: seq 2 is lost
    assert t.observe("d", 8) == 0
    assert t.pending() == 0


def test_reordered_and_duplicated_frames_are_not_gaps() -> None:
    t = SeqTracker(window=4)
    got = [t.observe("d", s) for s in (0, 2, 1, 1, 3, 4, 5, 6, 7, 8, 9, 3)]
    assert sum(got) == 0
    assert t.pending() == 0


def test_a_huge_jump_is_counted_without_materialising_it() -> None:
    t = SeqTracker()
    t.observe("d", 0)
    assert t.observe("d", 2**40) == 2**40 - 1 - REORDER_WINDOW
    assert t.pending() == REORDER_WINDOW


def _reference_gaps(seqs: list[int], window: int) -> tuple[list[int], int]:
    """The tracker's rule written plainly: every missing number scanned on every frame."""
    highest: int | None = None
    missing: set[int] = set()
    out = []
    for seq in seqs:
        if highest is None or seq < highest - window:
            highest, missing = seq, set()
            out.append(0)
            continue
        if seq <= highest:
            missing.discard(seq)
            out.append(0)
            continue
        floor = seq - window
        jumped = max(0, floor - (highest + 1))
        missing.update(range(max(highest + 1, floor), seq))
        highest = seq
        confirmed = {m for m in missing if m < floor}
        missing -= confirmed
        out.append(jumped + len(confirmed))
    return out, len(missing)


@given(
    st.lists(st.integers(0, 400), max_size=80) | st.lists(st.integers(0, 40), max_size=80),
    st.integers(1, 16),
)
def test_gaps_match_the_plain_rule(seqs: list[int], window: int) -> None:
    t = SeqTracker(window=window)
    assert ([t.observe("d", s) for s in seqs], t.pending()) == _reference_gaps(seqs, window)


def test_a_reboot_starts_a_new_stream() -> None:
    t = SeqTracker(window=4)
    for s in range(100):
        t.observe("d", s)
    assert t.observe("d", 0) == 0  # the counter restarted: not 99 duplicates, not a gap
    assert t.observe("d", 1) == 0


@pytest.mark.chaos
def test_ingest_exposes_seq_gaps_duplicates_and_broker_counters(stack: Stack) -> None:
    assert stack.ingest is not None
    pub = paho_client(stack.url, client_id("chaos-gaps"), persistent=False)
    seqs = [0, 1, 2, *range(3 + REORDER_WINDOW + 5, 3 + 2 * REORDER_WINDOW + 10)]
    try:
        for seq in [*seqs, 1]:  # seq 1 twice: a redelivery-like duplicate
            frame = tof_frame("gap-01", seq=seq)
            info = pub.publish(device_topic("gaps", "gap-01", Kind.TOF), encode(frame), qos=1)
            info.wait_for_publish(10)
    finally:
        pub.disconnect()
        pub.loop_stop()
    gap = REORDER_WINDOW + 5

    def seen() -> bool:
        m = stack.ingest.metrics()  # type: ignore[union-attr]
        dup = m.get('sqal_ingest_duplicates_total{table="tof_frames"}', 0)
        return m.get("sqal_ingest_seq_gaps_total", 0) >= gap and dup >= 1

    assert wait_for(seen, 20)
    m = stack.ingest.metrics()
    assert m["sqal_ingest_seq_gaps_total"] == gap
    assert "sqal_ingest_broker_dropped" in m
    # Mosquitto publishes $SYS every 10 s (retained, so the first arrives at subscription).
    assert wait_for(lambda: stack.scalar("SELECT count(*) FROM broker_stats") > 0, 15, 0.5)
    names = {r[0] for r in stack.query("SELECT DISTINCT counter FROM broker_stats")}
    assert "publish_dropped" in names
    assert stack.scalar("SELECT count(*) FROM tof_frames WHERE device_id = 'gap-01'") == len(seqs)
