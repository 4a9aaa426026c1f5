"""``sqal eval``: analyzer results against simulator truth (docs/domain.md §7 "Truth and eval").

:func:`evaluate` is pure: result documents and truth records in, an :class:`EvalReport` out.
Reading files is the only I/O here (:func:`read_jsonl`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sqal.errors import ConfigError

GRADES = ("A", "B", "C", "REJECT")
DATA_QUALITY = {"missing_tof", "missing_spectral", "low_confidence", "uncalibrated"}
"""Fusion codes about the data, not the product: truth never carries them, so they get no
precision/recall line (coverage and the confusion matrix show their effect)."""


@dataclass(frozen=True)
class DefectStats:
    true_positive: int
    false_positive: int
    false_negative: int
    precision: float | None
    recall: float | None


@dataclass(frozen=True)
class EvalReport:
    """What ``sqal eval`` prints. Rates are fractions; volume errors are percent."""

    truth_samples: int
    published_samples: int
    scored_samples: int
    coverage: float | None
    results: int
    duplicate_results: int
    conflicting_duplicates: int
    volume_n: int
    volume_mae_pct: float | None
    volume_bias_pct: float | None
    volume_p95_pct: float | None
    grade_accuracy: float | None
    confusion: list[list[int]]
    missed_reject_rate: float | None
    false_reject_rate: float | None
    defects: dict[str, DefectStats]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["confusion_labels"] = list(GRADES)
        return out


def read_jsonl(path: Path, flag: str) -> list[dict[str, Any]]:
    """JSON objects, one per line; blank lines skipped.

    Raises:
        ConfigError: the file is missing or a line is not a JSON object.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from None
    docs = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            raise ConfigError(f"{flag} {path}:{no}: not JSON") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{flag} {path}:{no}: not a JSON object")
        docs.append(doc)
    return docs


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _published(truth: dict[str, Any]) -> bool:
    """A sample counts for coverage if at least one of its frames was not lost in transport."""
    transport = truth.get("transport") or {}
    return any("lost" not in (transport.get(kind) or []) for kind in ("tof", "spectral"))


def _signature(result: dict[str, Any]) -> tuple[Any, ...]:
    fusion = result.get("fusion") or {}
    return (fusion.get("final_grade"), tuple(fusion.get("defects") or ()))


def evaluate(results: list[dict[str, Any]], truth: list[dict[str, Any]]) -> EvalReport:
    """Join results to truth by (device_id, sample_id) and compute the metrics.

    The first result of a sample is the one judged; later ones count as duplicates (and as
    conflicting when their grade or defects differ).
    """
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_key[(str(r.get("device_id")), str(r.get("sample_id")))].append(r)
    duplicates = sum(len(v) - 1 for v in by_key.values())
    conflicts = sum(1 for v in by_key.values() if len({_signature(r) for r in v}) > 1)

    published = [t for t in truth if _published(t)]
    matched = [(t, by_key[(t["device_id"], t["sample_id"])][0]) for t in published
               if (t["device_id"], t["sample_id"]) in by_key]  # fmt: skip

    errors = []
    for t, r in matched:
        tof = r.get("tof") or {}
        v_hat, v_true = tof.get("volume_mm3"), t.get("volume_mm3")
        if v_hat is not None and v_true:
            errors.append((v_hat - v_true) / v_true * 100.0)
    err = np.asarray(errors, dtype=np.float64)

    confusion = [[0] * 4 for _ in GRADES]
    for t, r in matched:
        confusion[GRADES.index(t["grade"])][GRADES.index(r["fusion"]["final_grade"])] += 1
    n = len(matched)
    correct = sum(confusion[i][i] for i in range(4))
    true_rej = sum(confusion[3])
    missed = true_rej - confusion[3][3]
    true_ok = n - true_rej
    false_rej = sum(confusion[i][3] for i in range(3))

    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for t, r in matched:
        want = set(t.get("defects") or ()) - DATA_QUALITY
        got = set((r.get("fusion") or {}).get("defects") or ()) - DATA_QUALITY
        for code in want | got:
            key = "tp" if code in want and code in got else ("fn" if code in want else "fp")
            counts[code][key] += 1
    defects = {
        code: DefectStats(
            true_positive=c["tp"],
            false_positive=c["fp"],
            false_negative=c["fn"],
            precision=_ratio(c["tp"], c["tp"] + c["fp"]),
            recall=_ratio(c["tp"], c["tp"] + c["fn"]),
        )
        for code, c in sorted(counts.items())
    }
    return EvalReport(
        truth_samples=len(truth),
        published_samples=len(published),
        scored_samples=n,
        coverage=_ratio(n, len(published)),
        results=len(results),
        duplicate_results=duplicates,
        conflicting_duplicates=conflicts,
        volume_n=int(err.size),
        volume_mae_pct=float(np.mean(np.abs(err))) if err.size else None,
        volume_bias_pct=float(np.mean(err)) if err.size else None,
        volume_p95_pct=float(np.percentile(np.abs(err), 95)) if err.size else None,
        grade_accuracy=_ratio(correct, n),
        confusion=confusion,
        missed_reject_rate=_ratio(missed, true_rej),
        false_reject_rate=_ratio(false_rej, true_ok),
        defects=defects,
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:.3f}{unit}"


def format_report(rep: EvalReport) -> str:
    """The human-readable report."""
    lines = [
        f"samples      {rep.truth_samples} in truth, {rep.published_samples} published, "
        f"{rep.scored_samples} scored (coverage {_pct(rep.coverage)})",
        f"results      {rep.results}, duplicates {rep.duplicate_results} "
        f"({rep.conflicting_duplicates} conflicting)",
        f"volume       MAE {_num(rep.volume_mae_pct, ' %')}, bias {_num(rep.volume_bias_pct, ' %')}"
        f", p95 {_num(rep.volume_p95_pct, ' %')} over {rep.volume_n}",
        f"grade        accuracy {_pct(rep.grade_accuracy)}, missed REJECT "
        f"{_pct(rep.missed_reject_rate)}, false REJECT {_pct(rep.false_reject_rate)}",
        "confusion    rows true, columns predicted: " + " ".join(f"{g:>6}" for g in GRADES),
    ]
    for g, row in zip(GRADES, rep.confusion, strict=True):
        lines.append(f"  {g:<10} {'':>32}" + " ".join(f"{v:>6}" for v in row))
    lines.append("defects      precision  recall   tp   fp   fn")
    for code, d in rep.defects.items():
        lines.append(
            f"  {code:<20} {_num(d.precision):>6} {_num(d.recall):>7} "
            f"{d.true_positive:>4} {d.false_positive:>4} {d.false_negative:>4}"
        )
    return "\n".join(lines)
