"""``sqal eval`` metrics on hand-made results and truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analyzer.evaluation import evaluate
from app.cli import main
from capture.fileformat import CaptureWriter, Record


def truth(
    seq: int, grade: str, volume: float, defects: list[str], lost: bool = False
) -> dict[str, Any]:
    return {
        "v": 1, "line_id": "L1", "device_id": "d1", "sample_id": f"d1-s{seq}", "seq": seq,
        "volume_mm3": volume, "grade": grade, "defects": defects,
        "transport": {"tof": ["lost"] if lost else [], "spectral": ["lost"] if lost else []},
    }  # fmt: skip


def result(seq: int, grade: str, volume: float | None, defects: list[str]) -> dict[str, Any]:
    return {
        "device_id": "d1", "sample_id": f"d1-s{seq}",
        "tof": None if volume is None else {"volume_mm3": volume},
        "fusion": {"final_grade": grade, "defects": defects},
    }  # fmt: skip


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
    code, out, _ = run_cli(["eval", "--truth", str(t), "--results", str(r)], capsys)
    assert "missed REJECT 50.00 %" in out


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
