"""``sqal eval`` metrics on hand-made results and truth."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from analyzer.evaluation import (
    evaluate,
    format_report,
    format_seed_summary,
    reliability,
    summarize_seeds,
)
from app.cli import main
from capture.fileformat import CaptureWriter, Record
from sqal.stats import wilson


def truth(
    seq: int, grade: str, volume: float, defects: list[str], lost: bool = False
) -> dict[str, Any]:
    return {
        "v": 1, "line_id": "L1", "device_id": "d1", "sample_id": f"d1-s{seq}", "seq": seq,
        "volume_mm3": volume, "grade": grade, "defects": defects,
        "transport": {"tof": ["lost"] if lost else [], "spectral": ["lost"] if lost else []},
    }  # fmt: skip


def result(
    seq: int, grade: str, volume: float | None, defects: list[str], conf: float | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "device_id": "d1", "sample_id": f"d1-s{seq}",
        "tof": None if volume is None else {"volume_mm3": volume},
        "fusion": {"final_grade": grade, "defects": defects},
    }  # fmt: skip
    if conf is not None:
        doc["fusion"]["confidence"] = conf
    return doc


TRUTH = [
    truth(0, "A", 100.0, []),
    truth(1, "B", 200.0, ["underfill"]),
    truth(2, "REJECT", 100.0, ["underfill"]),
    truth(3, "REJECT", 100.0, ["oxidation"]),
    truth(4, "C", 100.0, []),
    truth(5, "A", 100.0, [], lost=True),  # both frames lost: not published
]
RESULTS = [
    result(0, "A", 102.0, []),
    result(1, "B", 190.0, ["underfill"]),
    result(2, "REJECT", 97.0, ["underfill"]),
    result(3, "B", None, ["missing_tof"]),  # a missed reject
    result(0, "A", 102.0, []),  # a repeat of sample 0
]


def test_metrics_match_a_hand_count() -> None:
    rep = evaluate(RESULTS, TRUTH)
    assert (rep.truth_samples, rep.published_samples, rep.scored_samples) == (6, 5, 4)
    assert rep.coverage == pytest.approx(0.8)
    assert (rep.duplicate_results, rep.conflicting_duplicates) == (1, 0)
    # Volume errors +2 %, −5 %, −3 % (sample 3 has no ToF section).
    assert rep.volume_n == 3
    assert rep.volume_mae_pct == pytest.approx(10 / 3)
    assert rep.volume_bias_pct == pytest.approx(-2.0)
    assert rep.grade_accuracy == pytest.approx(3 / 4)
    assert rep.confusion[3] == [0, 1, 0, 1]  # rows true: REJECT → B once, REJECT once
    assert rep.missed_reject_rate == pytest.approx(0.5)
    assert rep.false_reject_rate == pytest.approx(0.0)
    assert rep.defects["underfill"].recall == pytest.approx(1.0)
    assert rep.defects["oxidation"].recall == pytest.approx(0.0)
    assert "missing_tof" not in rep.defects


def test_wilson_matches_hand_computed_intervals() -> None:
    # (p + z²/2n ± z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n), z = 1.959964, worked by hand.
    for (k, n), (lo, hi) in {
        (8, 10): (0.4902, 0.9433),
        (0, 10): (0.0, 0.2775),
        (10, 10): (0.7225, 1.0),
        (2, 3): (0.2077, 0.9385),
        (1, 2): (0.0945, 0.9055),
    }.items():
        assert wilson(k, n) == pytest.approx((lo, hi), abs=5e-5), (k, n)
    assert wilson(0, 0) is None
    with pytest.raises(ValueError, match="not within"):
        wilson(3, 2)


def test_rates_carry_wilson_intervals() -> None:
    rep = evaluate(RESULTS, TRUTH)
    assert rep.grade_accuracy_ci == pytest.approx((0.3006, 0.9544), abs=5e-5)  # 3 of 4
    assert rep.missed_reject_ci == pytest.approx((0.0945, 0.9055), abs=5e-5)  # 1 of 2
    assert rep.false_reject_ci == pytest.approx((0.0, 0.6576), abs=5e-5)  # 0 of 2
    underfill, oxidation = rep.defects["underfill"], rep.defects["oxidation"]
    assert underfill.recall_ci == pytest.approx((0.3424, 1.0), abs=5e-5)  # 2 of 2
    assert underfill.precision_ci == pytest.approx((0.3424, 1.0), abs=5e-5)
    assert oxidation.recall_ci == pytest.approx((0.0, 0.7935), abs=5e-5)  # 0 of 1
    assert oxidation.precision_ci is None  # never predicted


def test_abc_misgrades_are_apart_from_reject_errors() -> None:
    truth_ = [
        truth(10, "A", 100.0, []),
        truth(11, "C", 100.0, []),
        truth(12, "B", 100.0, []),
        truth(13, "A", 100.0, []),
        truth(14, "REJECT", 100.0, []),
    ]
    results = [
        result(10, "B", 100.0, []),  # too strict
        result(11, "A", 100.0, []),  # too lenient
        result(12, "B", 100.0, []),
        result(13, "REJECT", 100.0, []),  # a false REJECT, not an A/B/C error
        result(14, "C", 100.0, []),  # a missed REJECT, not an A/B/C error
    ]
    rep = evaluate(results, truth_)
    assert (rep.abc_samples, rep.abc_misgraded) == (3, 2)
    assert (rep.abc_too_lenient, rep.abc_too_strict) == (1, 1)
    assert rep.abc_error_rate == pytest.approx(2 / 3)
    assert rep.abc_error_ci == pytest.approx((0.2077, 0.9385), abs=5e-5)
    assert rep.false_reject_rate == pytest.approx(0.25)
    assert rep.missed_reject_rate == pytest.approx(1.0)
    assert "A/B/C error    66.67 % [20.77, 93.85]   2 of 3 both A/B/C" in format_report(rep)


def test_reliability_bins_and_ece_by_hand() -> None:
    # Bin 9: 0.95 right, 0.95 wrong → |0.5 − 0.95|; bin 5: 0.55 right → |1 − 0.55|;
    # bin 2: 0.25 wrong → |0 − 0.25|. ECE = (2·0.45 + 0.45 + 0.25) / 4 = 0.4.
    table, ece = reliability([(0.95, True), (0.95, False), (0.55, True), (0.25, False)])
    assert ece == pytest.approx(0.4)
    assert [b.n for b in table] == [0, 0, 1, 0, 0, 1, 0, 0, 0, 2]
    assert table[9].mean_confidence == pytest.approx(0.95)
    assert table[9].accuracy == pytest.approx(0.5)
    assert table[0].mean_confidence is None
    # Edges: 0.0 in the first bin, 0.3 opens [0.3, 0.4), 1.0 closes the last one.
    table, _ = reliability([(0.0, True), (0.3, True), (1.0, True)])
    assert [b.n for b in table] == [1, 0, 0, 1, 0, 0, 0, 0, 0, 1]
    table, ece = reliability([])
    assert ece is None
    assert [b.n for b in table] == [0] * 10


def test_eval_reports_confidence_calibration() -> None:
    results = [
        result(0, "A", 102.0, [], conf=1.0),  # right
        result(1, "B", 190.0, ["underfill"], conf=0.35),  # right
        result(2, "REJECT", 97.0, ["underfill"]),  # no confidence: left out
        result(3, "B", None, ["missing_tof"], conf=0.95),  # wrong
        result(0, "A", 102.0, [], conf=0.05),  # a duplicate: not judged
    ]
    results[2]["fusion"]["confidence"] = None
    rep = evaluate(results, TRUTH)
    # Bin 9: 1.0 right, 0.95 wrong → |0.5 − 0.975|; bin 3: 0.35 right → |1 − 0.35|.
    # ECE = (2·0.475 + 0.65) / 3 = 1.6 / 3.
    assert rep.confidence_samples == 3
    assert rep.ece == pytest.approx(1.6 / 3)
    assert [b.n for b in rep.reliability] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 2]
    assert rep.reliability[9].mean_confidence == pytest.approx(0.975)
    assert rep.grade_accuracy == pytest.approx(3 / 4)  # every scored tray, confidence or not
    assert "ECE 0.533 over 3 scored trays" in format_report(rep)
    assert evaluate(RESULTS, TRUTH).ece is None  # no result carries a confidence


def test_seed_summary_gives_mean_and_range() -> None:
    base = evaluate(RESULTS, TRUTH)
    reports = [
        replace(base, grade_accuracy=0.70, missed_reject_rate=0.10, false_reject_rate=0.02,
                abc_error_rate=0.20, ece=0.05),
        replace(base, grade_accuracy=0.80, missed_reject_rate=None, false_reject_rate=0.04,
                abc_error_rate=0.10, ece=0.15),
        replace(base, grade_accuracy=0.75, missed_reject_rate=0.30, false_reject_rate=0.03,
                abc_error_rate=0.30, ece=None),
    ]  # fmt: skip
    s = summarize_seeds(reports)
    got = s.as_dict()
    assert got["seeds"] == 3
    assert got["grade_accuracy"] == pytest.approx({"n": 3, "mean": 0.75, "min": 0.70, "max": 0.80})
    # One seed had no true REJECT: its missed-REJECT rate is left out, and n says so.
    assert got["missed_reject_rate"] == pytest.approx({"n": 2, "mean": 0.2, "min": 0.1, "max": 0.3})
    assert got["false_reject_rate"] == pytest.approx(
        {"n": 3, "mean": 0.03, "min": 0.02, "max": 0.04}
    )
    assert got["abc_error_rate"] == pytest.approx({"n": 3, "mean": 0.2, "min": 0.1, "max": 0.3})
    assert got["ece"] == pytest.approx({"n": 2, "mean": 0.1, "min": 0.05, "max": 0.15})
    text = format_seed_summary(s)
    assert "grade accuracy   75.00 % [70.00, 80.00]" in text
    assert "missed REJECT    20.00 % [10.00, 30.00] (2 of 3 seeds)" in text
    assert summarize_seeds([]).grade_accuracy is None
    assert json.loads(json.dumps(got))["ece"]["n"] == 2


def test_conflicting_duplicates_are_counted() -> None:
    rep = evaluate([*RESULTS, result(1, "C", 190.0, [])], TRUTH)
    assert (rep.duplicate_results, rep.conflicting_duplicates) == (2, 1)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_eval_cli_prints_json_from_a_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t, r = tmp_path / "truth.jsonl", tmp_path / "results.jsonl"
    t.write_text("\n".join(json.dumps(x) for x in TRUTH))
    r.write_text("\n".join(json.dumps(x) for x in RESULTS))
    code, out, err = run_cli(["eval", "--truth", str(t), "--results", str(r), "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["coverage"] == pytest.approx(0.8)
    assert doc["confusion_labels"] == ["A", "B", "C", "REJECT"]
    assert doc["missed_reject_ci"] == pytest.approx([0.0945, 0.9055], abs=5e-5)
    assert doc["defects"]["underfill"]["recall_ci"] == pytest.approx([0.3424, 1.0], abs=5e-5)
    assert (doc["abc_samples"], doc["abc_misgraded"], doc["ece"]) == (2, 0, None)
    assert len(doc["reliability"]) == 10
    code, out, _ = run_cli(["eval", "--truth", str(t), "--results", str(r)], capsys)
    assert "missed REJECT  50.00 % [9.45, 90.55]" in out


def test_eval_cli_reads_results_from_a_capture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t, cap = tmp_path / "truth.jsonl", tmp_path / "results.sqalcap"
    t.write_text("\n".join(json.dumps(x) for x in TRUTH))
    w = CaptureWriter(cap, {}, 0.0)
    for i, doc in enumerate(RESULTS):
        topic = f"sqal/v1/L1/{doc['device_id']}/result"
        w.write(Record(float(i), 0.0, topic, json.dumps(doc).encode(), qos=1))
    w.write(Record(9.0, 0.0, "sqal/v1/L1/d1/tof", b"{}", qos=1))
    w.close()
    code, out, err = run_cli(["eval", "--truth", str(t), "--capture", str(cap), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["coverage"] == pytest.approx(0.8)


def test_eval_cli_wants_exactly_one_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = tmp_path / "truth.jsonl"
    t.write_text("")
    code, _, err = run_cli(["eval", "--truth", str(t)], capsys)
    assert code == 1
    assert err.startswith("Error: give exactly one source")


def test_trays_within_one_estimate_spread_of_a_threshold_are_counted_apart() -> None:
    """Ambiguous: the truth's distance to a threshold (its margins) is under the spread of
    estimate − truth measured in the same run. Mass errors here are +2, −2, +2, −2 g: sd 2.309."""
    docs = []
    for seq, (grade, got, margin) in enumerate(
        [("A", "A", 10.0), ("A", "B", 1.0), ("REJECT", "A", 0.5), ("REJECT", "REJECT", 8.0)]
    ):
        t = truth(seq, grade, 100.0, [])
        t["mass_g"] = 400.0
        t["margins"] = {"mass_g": margin}
        r = result(seq, got, 100.0, [])
        r["tof"]["mass_g"] = 400.0 + (2.0 if seq % 2 == 0 else -2.0)
        docs.append((t, r))
    rep = evaluate([r for _, r in docs], [t for t, _ in docs])
    assert rep.estimate_sigma == {"mass_g": pytest.approx(2.3094, abs=1e-4)}
    assert (rep.ambiguous_samples, rep.ambiguous_share) == (2, 0.5)
    assert (rep.decidable_accuracy, rep.decidable_missed_reject) == (1.0, 0.0)
    assert rep.decidable_false_reject == 0.0
    assert "2 trays ambiguous" in format_report(rep)


def test_truth_without_margins_leaves_the_decidable_figures_empty() -> None:
    rep = evaluate(RESULTS, TRUTH)
    assert rep.ambiguous_samples is None
    assert "ambiguous" not in format_report(rep)
