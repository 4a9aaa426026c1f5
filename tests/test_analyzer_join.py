"""The ToF/spectral join, driven by an injected clock."""

from __future__ import annotations

import pytest

from analyzer.join import Joiner, Outcome, Release
from analyzer.liveness import BrokerLiveness
from sqal.wire import SpectralFrame, TofFrame, Weight
from tests.test_analyzer_support import spectral_payload, tof_payload


def tof(seq: int, device: str = "dev1") -> TofFrame:
    return TofFrame.model_validate(tof_payload(230, seq=seq, device=device))


def spec(seq: int, device: str = "dev1") -> SpectralFrame:
    return SpectralFrame.model_validate(spectral_payload([1000] * 11, seq=seq, device=device))


def test_halves_meet_whatever_their_order() -> None:
    j: Joiner[str] = Joiner(join_timeout_s=2.0)
    assert j.offer("L1", spec(1), "s1", now=0.0) == (Outcome.WAITING, [])
    outcome, ready = j.offer("L1", tof(1), "t1", now=0.5)
    assert outcome is Outcome.JOINED
    (r,) = ready
    assert (r.device_id, r.sample_id, r.line) == ("dev1", "dev1-abc123-00000001", "L1")
    assert r.tof is not None
    assert r.spectral is not None
    assert r.handles == ("s1", "t1")
    assert r.release is Release.JOINED
    assert len(j) == 0


def test_same_sample_id_on_two_devices_does_not_join() -> None:
    j: Joiner[int] = Joiner()
    j.offer("L1", tof(1, "devA"), 1, now=0.0)
    outcome, ready = j.offer("L1", spec(1, "devB"), 2, now=0.0)
    assert outcome is Outcome.WAITING
    assert ready == []
    assert len(j) == 2


def test_a_lone_half_is_released_after_the_timeout_not_before() -> None:
    j: Joiner[str] = Joiner(join_timeout_s=2.0)
    j.offer("L1", tof(1), "t1", now=10.0)
    assert j.next_deadline() == pytest.approx(12.0)
    assert j.expire(now=11.999) == []
    (r,) = j.expire(now=12.0)
    assert r.release is Release.TIMEOUT
    assert r.spectral is None
    assert r.tof is not None
    assert j.stats.timed_out == 1
    assert j.next_deadline() is None


def test_the_late_half_after_a_timeout_gives_no_second_result() -> None:
    j: Joiner[str] = Joiner(join_timeout_s=2.0)
    j.offer("L1", tof(1), "t1", now=0.0)
    j.expire(now=2.0)
    assert j.offer("L1", spec(1), "s1", now=2.5) == (Outcome.LATE, [])
    assert j.stats.late == 1


def test_duplicates_while_waiting_ride_along_and_after_release_are_dropped() -> None:
    j: Joiner[str] = Joiner()
    j.offer("L1", tof(1), "t1", now=0.0)
    assert j.offer("L1", tof(1), "t1-dup", now=0.1) == (Outcome.HELD, [])
    _, (r,) = j.offer("L1", spec(1), "s1", now=0.2)
    assert r.handles == ("t1", "t1-dup", "s1")
    assert j.offer("L1", spec(1), "s1-dup", now=0.3) == (Outcome.DUPLICATE, [])
    assert j.offer("L1", tof(1), "t1-dup2", now=0.4) == (Outcome.DUPLICATE, [])
    assert j.stats.duplicates == 3
    assert j.stats.joined == 1


def test_done_keys_are_forgotten_after_their_window() -> None:
    j: Joiner[str] = Joiner(done_ttl_s=60.0, done_capacity=2)
    for seq in range(3):
        j.offer("L1", tof(seq), "t", now=0.0)
        j.offer("L1", spec(seq), "s", now=0.0)
    # Capacity 2: sample 0 was forgotten, a copy of it starts over (bounded memory).
    assert j.offer("L1", tof(0), "t", now=1.0)[0] is Outcome.WAITING
    assert j.offer("L1", tof(2), "t", now=1.0)[0] is Outcome.DUPLICATE
    # TTL: after 60 s nothing is remembered.
    assert j.offer("L1", spec(2), "s", now=61.0)[0] is Outcome.WAITING


def test_the_pending_cap_evicts_the_oldest_and_counts_it() -> None:
    j: Joiner[int] = Joiner(max_pending=2)
    j.offer("L1", tof(1), 1, now=0.0)
    j.offer("L1", tof(2), 2, now=0.1)
    outcome, (r,) = j.offer("L1", tof(3), 3, now=0.2)
    assert outcome is Outcome.WAITING
    assert r.sample_id.endswith("00000001")
    assert r.release is Release.EVICTED
    assert j.stats.evicted == 1
    assert len(j) == 2
    assert j.offer("L1", spec(1), 4, now=0.3)[0] is Outcome.LATE


def test_drain_releases_everything_on_shutdown() -> None:
    j: Joiner[int] = Joiner()
    j.offer("L1", tof(1), 1, now=0.0)
    j.offer("L1", spec(2), 2, now=0.0)
    assert {r.sample_id[-1] for r in j.drain(now=0.5)} == {"1", "2"}
    assert len(j) == 0


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Joiner(max_pending=0)


def test_after_an_outage_every_waiting_half_waits_a_whole_timeout_again() -> None:
    j: Joiner[str] = Joiner(join_timeout_s=2.0)
    j.offer("L1", tof(1), "t1", now=100.0)
    j.offer("L1", tof(2), "t2", now=101.9)
    j.restart_waits(131.0)  # the broker was away; we are back at 131 s, devices about now too
    assert j.expire(132.9) == []
    assert j.next_deadline() == 133.0
    released = j.expire(133.0)
    assert [r.sample_id for r in released] == ["dev1-abc123-00000001", "dev1-abc123-00000002"]


def test_a_silent_broker_pauses_the_timeout_and_its_waking_gets_a_grace() -> None:
    """SIGSTOP on the broker: the half waits out the freeze and meets its partner after it."""
    j: Joiner[str] = Joiner(join_timeout_s=2.0)
    live = BrokerLiveness(stall_gap_s=0.5, grace_s=0.25)
    live.saw(9.0)
    live.saw(10.0)  # a gap of 1 s: the working period starts again here
    j.offer("L1", tof(1), "t1", now=10.0)
    assert live.settled() is None  # working for less than the grace
    live.saw(10.3)
    assert live.settled() == pytest.approx(10.05)
    # frozen from 10.3 to 20.0: wall-clock time passes, evidence does not
    assert j.expire(now=15.0, settled=live.settled()) == []
    assert j.expire(now=20.0, settled=live.settled()) == []
    assert live.saw(20.0) == pytest.approx(9.7)  # the first message after waking
    assert live.settled() is None  # the service expires nothing until it is not
    outcome, _ = j.offer("L1", spec(1), "s1", now=20.001)  # held in the broker, delivered now
    assert outcome is Outcome.JOINED


def test_a_lone_half_times_out_once_the_broker_shows_work_past_the_deadline() -> None:
    j: Joiner[str] = Joiner(join_timeout_s=2.0)
    live = BrokerLiveness(stall_gap_s=0.5, grace_s=0.25)
    for t in (10.0, 10.2, 10.4, 10.6, 10.8, 11.0, 11.2, 11.4, 11.6, 11.8, 12.0, 12.2):
        live.saw(t)
    assert j.offer("L1", tof(1), "t1", now=10.0)[0] is Outcome.WAITING
    assert j.expire(now=12.2, settled=live.settled()) == []  # settled 11.95 < deadline 12.0
    live.saw(12.25)
    (r,) = j.expire(now=12.3, settled=live.settled())
    assert r.release is Release.TIMEOUT
    assert r.last_offer_s == 12.3  # stamped with the clock, not the settled time


def test_probes_keep_a_waiting_half_company_and_chase_a_due_one() -> None:
    live = BrokerLiveness(stall_gap_s=0.5, grace_s=0.25, keepalive_s=0.2, probe_every_s=0.1)
    assert live.next_probe_s(None) is None  # nothing waits: no probe
    live.saw(10.0)
    assert live.next_probe_s(12.25) == pytest.approx(10.2)  # keep-alive after 0.2 s silence
    live.probed(1, 10.2)
    assert live.next_probe_s(12.25) is None  # one outstanding at a time
    assert not live.answered(7, 10.21)  # not ours
    assert live.answered(1, 10.21)
    assert live.rtt_s == pytest.approx(0.01)
    live.saw(10.21)
    assert live.next_probe_s(12.25) == pytest.approx(10.41)
    # due at 12.25; the silence since 10.21 was a stall, so the working period starts at 12.2
    # and the settling evidence must come from 12.45 on: a keep-alive at 12.401 is sooner
    live.saw(12.2)
    live.probed(2, 12.2)
    live.answered(2, 12.201)
    live.saw(12.201)
    assert live.next_probe_s(12.25) == pytest.approx(12.401)
    live.probed(3, 12.401)
    live.answered(3, 12.402)
    live.saw(12.402)
    assert live.next_probe_s(12.25) == pytest.approx(12.501)  # chased, paced by probe_every_s
    live.saw(12.6)
    assert live.settled() == pytest.approx(12.35)
    assert live.next_probe_s(12.25) == pytest.approx(12.8)  # settled: keep-alive only
    live.probed(4, 12.8)
    live.reset_probe()  # the connection dropped; its answer will never come
    assert live.next_probe_s(12.25) is not None


def _quiet_line(live: BrokerLiveness, rtt_s: float, due_s: float, until_s: float) -> float | None:
    """A lone half due at ``due_s`` and no traffic but probes, each answered ``rtt_s`` later, as
    the analyzer's worker drives them; the time the half may expire, or None by ``until_s``."""
    t, answer_at, mid = 0.0, None, 0
    live.saw(0.0)  # the half itself
    while t < until_s:
        if answer_at is not None and t >= answer_at:
            live.answered(mid, answer_at)
            live.saw(answer_at)
            answer_at = None
        settled = live.settled()
        if settled is not None and settled >= due_s:
            return t
        at = live.next_probe_s(due_s)
        if at is not None and t >= at:
            mid += 1
            live.probed(mid, t)
            answer_at = t + rtt_s
        t = round(t + 0.01, 6)
    return None


@pytest.mark.parametrize("rtt_s", [0.001, 0.1, 0.3, 0.55, 0.65])
def test_a_slow_but_working_broker_still_settles_a_lone_half(rtt_s: float) -> None:
    """Probe answers slower than the stall gap must not pass for stalls forever (review)."""
    live = BrokerLiveness()
    released = _quiet_line(live, rtt_s, due_s=2.25, until_s=10.0)
    assert released is not None
    assert released <= 2.25 + live.grace_s + 2 * (rtt_s + live.keepalive_s) + 0.1


def test_silence_ended_by_a_probe_answer_is_a_stall() -> None:
    live = BrokerLiveness()
    live.saw(0.0)
    live.probed(1, 0.2)
    assert live.answered(1, 9.8)  # frozen meanwhile
    assert live.rtt_s is None  # a stall's round trip teaches nothing about the usual one
    assert live.saw(9.8) > live.stall_s()
    assert live.settled() is None  # the working period starts again at the answer


def test_a_backlog_in_the_inbox_is_evidence_enough_to_wait_for() -> None:
    """Arrivals the worker has not processed yet (a backlog) need no probe, and an answer that
    arrived clears the outstanding probe for /healthz at once (review: false "broker silent")."""
    live = BrokerLiveness()
    live.saw(10.0)
    live.saw(10.3)
    live.probed(1, 10.5)
    live.heard(10.6, mid=1)  # arrived; the worker is 20 s behind
    assert live.outstanding is None
    assert live.probe_mid == 1  # the worker's own view changes when it gets there
    assert live.answered(1, 10.6)
    for t in (10.7, 11.0, 12.0, 12.5):
        live.heard(t)  # frames keep arriving, unprocessed
    assert live.next_probe_s(12.25) == pytest.approx(12.7)  # keep-alive from the arrivals


def test_the_same_device_and_sample_on_two_lines_are_two_samples() -> None:
    """#15: keyed by device and sample alone, L1/b01's tof half joined L2/b01's spectral."""
    j: Joiner[str] = Joiner(join_timeout_s=2.0, max_pending=10)
    tof = TofFrame.model_validate(tof_payload(232, device="b01", seq=4))
    spec = SpectralFrame.model_validate(spectral_payload([1668] * 10 + [3], device="b01", seq=4))
    assert j.offer("L1", tof, "t", now=0.0) == (Outcome.WAITING, [])
    assert j.offer("L2", spec, "s", now=0.0) == (Outcome.WAITING, [])
    released = j.expire(now=5.0)
    assert sorted((r.line, r.tof is not None, r.spectral is not None) for r in released) == [
        ("L1", True, False),
        ("L2", False, True),
    ]


def test_a_half_again_with_other_content_is_a_conflict_not_a_copy() -> None:
    j: Joiner[str] = Joiner(join_timeout_s=2.0, max_pending=10)
    tof = TofFrame.model_validate(tof_payload(232, device="d1", seq=1))
    other = TofFrame.model_validate(tof_payload(240, device="d1", seq=1))
    spec = SpectralFrame.model_validate(spectral_payload([1668] * 10 + [3], device="d1", seq=1))
    assert j.offer("L1", tof, "t", now=0.0, digest=1)[0] is Outcome.WAITING
    assert j.offer("L1", tof, "t again", now=0.1, digest=1)[0] is Outcome.HELD
    assert j.offer("L1", other, "t other", now=0.2, digest=2)[0] is Outcome.CONFLICT
    outcome, released = j.offer("L1", spec, "s", now=0.3, digest=3)
    assert outcome is Outcome.JOINED
    assert released[0].handles == ("t", "t again", "s")  # the conflicting one is not among them
    assert j.offer("L1", tof, "t late copy", now=0.4, digest=1)[0] is Outcome.DUPLICATE
    assert j.offer("L1", other, "t late other", now=0.5, digest=2)[0] is Outcome.CONFLICT
    assert j.stats.conflicts == 2


def weight(seq: int, mass_g: float = 401.5, device: str = "dev1") -> Weight:
    return Weight(
        device_id=device,
        sample_id=f"{device}-abc123-{seq:08d}",
        seq=seq,
        ts=tof(seq).ts,
        mass_g=mass_g,
        sigma_g=0.5,
    )


def test_a_weighed_line_s_sample_waits_for_its_weight_too() -> None:
    j: Joiner[str] = Joiner(join_timeout_s=2.0)
    assert j.offer("L1", tof(1), "t1", now=0.0, expect_weight=True)[0] is Outcome.WAITING
    assert j.offer("L1", spec(1), "s1", now=0.1, expect_weight=True) == (Outcome.WAITING, [])
    outcome, (r,) = j.offer("L1", weight(1), "w1", now=0.2, expect_weight=True)
    assert outcome is Outcome.JOINED
    assert r.weight is not None
    assert r.weight.mass_g == pytest.approx(401.5)
    assert r.weight_expected
    assert r.handles == ("t1", "s1", "w1")


def test_a_missing_weight_is_released_like_a_missing_half() -> None:
    j: Joiner[str] = Joiner(join_timeout_s=2.0)
    j.offer("L1", tof(1), "t1", now=0.0, expect_weight=True)
    j.offer("L1", spec(1), "s1", now=0.1, expect_weight=True)
    (r,) = j.expire(now=2.0)
    assert r.release is Release.TIMEOUT
    assert r.weight is None
    assert r.weight_expected
    # Its weight arriving now is late: no second result.
    assert j.offer("L1", weight(1), "w1", now=2.5, expect_weight=True) == (Outcome.LATE, [])


def test_without_a_checkweigher_two_halves_complete_and_a_stray_weight_is_late() -> None:
    j: Joiner[str] = Joiner(join_timeout_s=2.0)
    j.offer("L1", tof(1), "t1", now=0.0)
    outcome, (r,) = j.offer("L1", spec(1), "s1", now=0.1)
    assert outcome is Outcome.JOINED
    assert r.weight is None
    assert not r.weight_expected
    assert j.offer("L1", weight(1), "w1", now=0.2) == (Outcome.LATE, [])


def test_a_second_weight_with_another_mass_conflicts() -> None:
    j: Joiner[str] = Joiner(join_timeout_s=2.0)
    j.offer("L1", weight(1, 401.5), "w1", now=0.0, digest=1, expect_weight=True)
    assert j.offer("L1", weight(1, 401.5), "w1b", now=0.1, digest=1, expect_weight=True)[0] is (
        Outcome.HELD
    )
    assert j.offer("L1", weight(1, 390.0), "w2", now=0.2, digest=2, expect_weight=True)[0] is (
        Outcome.CONFLICT
    )
