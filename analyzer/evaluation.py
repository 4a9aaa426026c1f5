"""``sqal eval``: analyzer results against simulator truth (docs/domain.md §7 "Truth and eval").

:func:`evaluate` is pure: result documents and truth records in, an :class:`EvalReport` out.
Reading files is the only I/O here (:func:`read_jsonl`). Rates come with Wilson 95 % score
intervals (:func:`wilson`), so a figure from a few hundred trays shows how much it can be trusted;
:func:`summarize_seeds` gives the mean and range of the headline figures over several seeds.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sqal.errors import ConfigError
from sqal.stats import Interval, wilson

GRADES = ("A", "B", "C", "REJECT")
DATA_QUALITY = {
    "missing_tof",
    "missing_spectral",
    "missing_weight",
    "low_confidence",
    "uncalibrated",
}
"""Fusion codes about the data, not the product: truth never carries them, so they get no
precision/recall line (coverage and the confusion matrix show their effect)."""
CONFIDENCE_BINS = 10
"""Equal-width bins of ``fusion.confidence`` in the reliability table."""


@dataclass(frozen=True)
class DefectStats:
    true_positive: int
    false_positive: int
    false_negative: int
    precision: float | None
    recall: float | None
    precision_ci: Interval | None
    recall_ci: Interval | None


@dataclass(frozen=True)
class ReliabilityBin:
    """Trays whose confidence fell in [lo, hi) ([lo, hi] for the last bin)."""

    lo: float
    hi: float
    n: int
    mean_confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class EvalReport:
    """What ``sqal eval`` prints. Rates are fractions; volume errors are percent.

    ``*_ci`` are Wilson 95 % intervals as (low, high) fractions. ``abc_*`` count the trays whose
    true and predicted grades are both A, B or C: the misgrades that are not REJECT errors
    (too lenient = predicted a better grade than the truth). ``reliability`` and ``ece`` compare
    ``fusion.confidence`` with how often the grade was right, over the scored trays that carry
    a confidence (``confidence_samples``).
    """

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
    grade_accuracy_ci: Interval | None
    missed_reject_ci: Interval | None
    false_reject_ci: Interval | None
    abc_samples: int
    abc_misgraded: int
    abc_too_lenient: int
    abc_too_strict: int
    abc_error_rate: float | None
    abc_error_ci: Interval | None
    confidence_samples: int
    reliability: list[ReliabilityBin]
    ece: float | None
    estimate_sigma: dict[str, float] = field(default_factory=dict)
    """Per deciding variable: the spread (sd) of estimate − truth over this run's trays."""
    ambiguous_samples: int | None = None
    """Trays whose truth lies within one ``estimate_sigma`` of a threshold of some variable
    (the truth's ``margins``); ``None`` when the truth carries no margins."""
    ambiguous_share: float | None = None
    ambiguous_ci: Interval | None = None
    decidable_accuracy: float | None = None
    decidable_accuracy_ci: Interval | None = None
    decidable_missed_reject: float | None = None
    decidable_missed_reject_ci: Interval | None = None
    decidable_false_reject: float | None = None
    decidable_false_reject_ci: Interval | None = None
    decisions: dict[str, int] = field(default_factory=dict)
    """PASS/HOLD/REJECT counts over the scored trays whose result carries a ``decision``."""
    hold_rate: float | None = None
    hold_ci: Interval | None = None
    gate_missed_reject: float | None = None
    """True REJECT trays the gate let PASS (a HOLD is caught: it goes to the re-check lane)."""
    gate_missed_reject_ci: Interval | None = None
    gate_false_reject: float | None = None
    """True A/B/C trays the gate binned (decision REJECT)."""
    gate_false_reject_ci: Interval | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["confusion_labels"] = list(GRADES)
        return out


TRUTH_KEYS = ("device_id", "sample_id", "grade")
"""Keys every truth line must have (``sqal sim --truth`` writes them): the join and the grade."""


def read_jsonl(path: Path, flag: str, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """JSON objects, one per line; blank lines skipped.

    Args:
        path: the file.
        flag: the option that named it, for the error.
        required: keys every object must have.

    Raises:
        ConfigError: the file is missing, a line is not a JSON object or lacks a required key
            (naming the file, the line number and the key).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{flag} {path}: byte {exc.start} is not UTF-8 (JSON lines)") from None
    docs = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            raise ConfigError(f"{flag} {path}:{no}: not JSON") from None
        except RecursionError:
            raise ConfigError(f"{flag} {path}:{no}: JSON nested too deeply") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{flag} {path}:{no}: not a JSON object")
        missing = [k for k in required if k not in doc]
        if missing:
            raise ConfigError(
                f"{flag} {path}:{no}: no {missing[0]!r} key; each line needs {', '.join(required)}"
            )
        docs.append(doc)
    return docs


def read_truth(path: Path, flag: str = "--truth") -> list[dict[str, Any]]:
    """Truth records of ``sqal sim --truth``, each with :data:`TRUTH_KEYS` and a known grade.

    Raises:
        ConfigError: as :func:`read_jsonl`, or a grade not one of A, B, C, REJECT.
    """
    docs = read_jsonl(path, flag, TRUTH_KEYS)
    for no, doc in enumerate(docs, 1):
        if doc["grade"] not in GRADES:
            raise ConfigError(
                f"{flag} {path}: record {no} has grade {doc['grade']!r}; expected one of "
                f"{', '.join(GRADES)}"
            )
    return docs


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _published(truth: dict[str, Any]) -> bool:
    """A sample counts for coverage if at least one of its frames was not lost in transport."""
    transport = truth.get("transport") or {}
    return any("lost" not in (transport.get(kind) or []) for kind in ("tof", "spectral"))


def _confidence(result: dict[str, Any]) -> float | None:
    """``fusion.confidence`` when it is a number in [0, 1], else None (the tray is left out)."""
    c = (result.get("fusion") or {}).get("confidence")
    if isinstance(c, bool) or not isinstance(c, int | float) or not 0.0 <= c <= 1.0:
        return None
    return float(c)


def reliability(
    pairs: Sequence[tuple[float, bool]], bins: int = CONFIDENCE_BINS
) -> tuple[list[ReliabilityBin], float | None]:
    """The reliability table of (confidence, grade right) pairs and its calibration error.

    Bins are [k/bins, (k+1)/bins), with 1.0 in the last one. The expected calibration error is
    ECE = Σ_b (n_b/N)·|accuracy_b − mean confidence_b| over the non-empty bins; None when N is 0.
    """
    edges = [k / bins for k in range(1, bins)]
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for c, right in pairs:
        members[bisect_right(edges, c)].append((c, right))
    table = []
    gap = 0.0
    for k, got in enumerate(members):
        mean = sum(c for c, _ in got) / len(got) if got else None
        acc = sum(1 for _, r in got if r) / len(got) if got else None
        if mean is not None and acc is not None:
            gap += len(got) * abs(acc - mean)
        table.append(ReliabilityBin(k / bins, (k + 1) / bins, len(got), mean, acc))
    return table, (gap / len(pairs) if pairs else None)


DECIDING: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mass_g": (("mass_g",), ("tof", "mass_g")),
    "peak_height_mm": (("peak_height_mm",), ("tof", "max_height_mm")),
    "tilt_deg": (("tilt_deg",), ("tof", "tilt_deg")),
    "oxidation_index": (("spectral", "oxidation_index"), ("spectral", "oxidation_index")),
    "final_score": (("final_score",), ("fusion", "final_score")),
}
"""Deciding variables with an estimate in the result: (path in the truth, path in the result).
The truth's other margins (roughness, valid share, ΔE, Δb*) have no published estimate, so no
spread to compare them with; they do not count towards the ambiguous share."""


def _at(doc: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = doc
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _sigmas(matched: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, float]:
    """Per deciding variable, the sd of estimate − truth over the trays that carry both."""
    out = {}
    for name, (t_path, r_path) in DECIDING.items():
        diffs = []
        for t, r in matched:
            truth, est = _at(t, t_path), _at(r, r_path)
            if truth is not None and est is not None:
                diffs.append(est - truth)
        if len(diffs) >= 2:
            out[name] = float(np.std(diffs, ddof=1))
    return out


def _ambiguous(t: dict[str, Any], sigma: dict[str, float]) -> bool:
    """Some deciding variable of the truth lies within its estimate's spread of a threshold."""
    margins = t.get("margins") or {}
    return any(
        isinstance(margins.get(name), int | float) and margins[name] < s
        for name, s in sigma.items()
    )


def _decidable(
    matched: list[tuple[dict[str, Any], dict[str, Any]]], sigma: dict[str, float]
) -> dict[str, Any]:
    """The ambiguous share, and accuracy and REJECT errors on the rest (see :class:`EvalReport`)."""
    if not matched or not sigma or not any("margins" in t for t, _ in matched):
        return {}  # without margins or a measured spread, ambiguity cannot be judged
    clear = [(t, r) for t, r in matched if not _ambiguous(t, sigma)]
    n_amb = len(matched) - len(clear)
    right = sum(1 for t, r in clear if t["grade"] == r["fusion"]["final_grade"])
    rej = [(t, r) for t, r in clear if t["grade"] == "REJECT"]
    ok = [(t, r) for t, r in clear if t["grade"] != "REJECT"]
    missed = sum(1 for _, r in rej if r["fusion"]["final_grade"] != "REJECT")
    false = sum(1 for _, r in ok if r["fusion"]["final_grade"] == "REJECT")
    return {
        "ambiguous_samples": n_amb,
        "ambiguous_share": _ratio(n_amb, len(matched)),
        "ambiguous_ci": wilson(n_amb, len(matched)),
        "decidable_accuracy": _ratio(right, len(clear)),
        "decidable_accuracy_ci": wilson(right, len(clear)),
        "decidable_missed_reject": _ratio(missed, len(rej)),
        "decidable_missed_reject_ci": wilson(missed, len(rej)),
        "decidable_false_reject": _ratio(false, len(ok)),
        "decidable_false_reject_ci": wilson(false, len(ok)),
    }


def _gate(matched: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """The reject gate's figures: what ``fusion.decision`` did with true REJECT and A/B/C trays."""
    pairs = [(t, r["fusion"].get("decision")) for t, r in matched]
    pairs = [(t, d) for t, d in pairs if d is not None]
    if not pairs:
        return {}
    counts = Counter(d for _, d in pairs)
    rej = [d for t, d in pairs if t["grade"] == "REJECT"]
    ok = [d for t, d in pairs if t["grade"] != "REJECT"]
    missed = sum(1 for d in rej if d == "PASS")
    false = sum(1 for d in ok if d == "REJECT")
    holds = counts.get("HOLD", 0)
    return {
        "decisions": {k: counts.get(k, 0) for k in ("PASS", "HOLD", "REJECT")},
        "hold_rate": _ratio(holds, len(pairs)),
        "hold_ci": wilson(holds, len(pairs)),
        "gate_missed_reject": _ratio(missed, len(rej)),
        "gate_missed_reject_ci": wilson(missed, len(rej)),
        "gate_false_reject": _ratio(false, len(ok)),
        "gate_false_reject_ci": wilson(false, len(ok)),
    }


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
    # A, B, C are indices 0..2, best first: predicted j < true i is a better grade than deserved.
    abc_n = sum(confusion[i][j] for i in range(3) for j in range(3))
    lenient = sum(confusion[i][j] for i in range(3) for j in range(i))
    strict = sum(confusion[i][j] for i in range(3) for j in range(i + 1, 3))
    confidences = [(_confidence(r), t["grade"] == r["fusion"]["final_grade"]) for t, r in matched]
    table, ece = reliability([(c, ok) for c, ok in confidences if c is not None])

    sigma = _sigmas(matched)
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
            precision_ci=wilson(c["tp"], c["tp"] + c["fp"]),
            recall_ci=wilson(c["tp"], c["tp"] + c["fn"]),
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
        grade_accuracy_ci=wilson(correct, n),
        missed_reject_ci=wilson(missed, true_rej),
        false_reject_ci=wilson(false_rej, true_ok),
        abc_samples=abc_n,
        abc_misgraded=lenient + strict,
        abc_too_lenient=lenient,
        abc_too_strict=strict,
        abc_error_rate=_ratio(lenient + strict, abc_n),
        abc_error_ci=wilson(lenient + strict, abc_n),
        confidence_samples=sum(t.n for t in table),
        reliability=table,
        ece=ece,
        estimate_sigma=sigma,
        **_decidable(matched, sigma),
        **_gate(matched),
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _pct_ci(x: float | None, ci: Interval | None) -> str:
    """``12.30 % [9.10, 16.20]``: a rate and its interval, in percent."""
    if x is None or ci is None:
        return _pct(x)
    return f"{_pct(x)} [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"


def _num(x: float | None, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:.3f}{unit}"


def format_report(rep: EvalReport) -> str:
    """The human-readable report; rates in percent with their 95 % interval in brackets."""
    c = rep.confusion
    true_rej = sum(c[3])
    rates = [
        ("accuracy", _pct_ci(rep.grade_accuracy, rep.grade_accuracy_ci),
         f"{sum(c[i][i] for i in range(4))} of {rep.scored_samples} right"),
        ("missed REJECT", _pct_ci(rep.missed_reject_rate, rep.missed_reject_ci),
         f"{true_rej - c[3][3]} of {true_rej} true REJECT passed"),
        ("false REJECT", _pct_ci(rep.false_reject_rate, rep.false_reject_ci),
         f"{sum(c[i][3] for i in range(3))} of {rep.scored_samples - true_rej} true A/B/C "
         "rejected"),
        ("A/B/C error", _pct_ci(rep.abc_error_rate, rep.abc_error_ci),
         f"{rep.abc_misgraded} of {rep.abc_samples} both A/B/C "
         f"({rep.abc_too_lenient} too lenient, {rep.abc_too_strict} too strict)"),
    ]  # fmt: skip
    lines = [
        f"samples      {rep.truth_samples} in truth, {rep.published_samples} published, "
        f"{rep.scored_samples} scored (coverage {_pct(rep.coverage)})",
        f"results      {rep.results}, duplicates {rep.duplicate_results} "
        f"({rep.conflicting_duplicates} conflicting)",
        f"volume       MAE {_num(rep.volume_mae_pct, ' %')}, bias {_num(rep.volume_bias_pct, ' %')}"
        f", p95 {_num(rep.volume_p95_pct, ' %')} over {rep.volume_n}",
        "grade        rate [95 % interval]",
    ]
    lines += [f"  {name:<14} {value:<24} {what}" for name, value, what in rates]
    lines.append(
        "confusion    rows true, columns predicted: " + " ".join(f"{g:>6}" for g in GRADES)
    )
    for g, row in zip(GRADES, c, strict=True):
        lines.append(f"  {g:<10} {'':>32}" + " ".join(f"{v:>6}" for v in row))
    lines.append(f"defects      {'precision':<26} {'recall':<26}   tp   fp   fn")
    for code, d in rep.defects.items():
        lines.append(
            f"  {code:<20} {_pct_ci(d.precision, d.precision_ci):<26} "
            f"{_pct_ci(d.recall, d.recall_ci):<26} "
            f"{d.true_positive:>4} {d.false_positive:>4} {d.false_negative:>4}"
        )
    if rep.ambiguous_samples is not None:
        spread = ", ".join(f"{k} {v:.3g}" for k, v in rep.estimate_sigma.items())
        lines += [
            f"decidable    {rep.ambiguous_samples} trays ambiguous "
            f"({_pct_ci(rep.ambiguous_share, rep.ambiguous_ci)}): truth within 1 σ of a "
            f"threshold (σ of estimate − truth: {spread})",
            f"  {'accuracy':<14} {_pct_ci(rep.decidable_accuracy, rep.decidable_accuracy_ci):<24}"
            " on the rest",
            f"  {'missed REJECT':<14} "
            f"{_pct_ci(rep.decidable_missed_reject, rep.decidable_missed_reject_ci):<24}",
            f"  {'false REJECT':<14} "
            f"{_pct_ci(rep.decidable_false_reject, rep.decidable_false_reject_ci):<24}",
        ]
    if rep.decisions:
        counts = rep.decisions
        total = sum(counts.values())
        lines += [
            "decision     "
            + ", ".join(f"{k} {counts[k]}" for k in ("PASS", "HOLD", "REJECT"))
            + f" of {total}",
            f"  {'HOLD':<14} {_pct_ci(rep.hold_rate, rep.hold_ci):<24} of all trays",
            f"  {'missed REJECT':<14} "
            f"{_pct_ci(rep.gate_missed_reject, rep.gate_missed_reject_ci):<24}"
            f" true REJECT given PASS ({sum(c[3])} true REJECT)",
            f"  {'false REJECT':<14} "
            f"{_pct_ci(rep.gate_false_reject, rep.gate_false_reject_ci):<24}"
            " true A/B/C given REJECT",
        ]
    lines.append(
        f"confidence   ECE {_num(rep.ece)} over {rep.confidence_samples} scored trays "
        "that carry one"
    )
    if rep.confidence_samples:
        lines.append("  bin          trays  mean conf  grade accuracy")
    for b in rep.reliability if rep.confidence_samples else []:
        shut = "]" if b.hi >= 1.0 else ")"
        lines.append(
            f"  [{b.lo:.1f}, {b.hi:.1f}{shut} {b.n:>7}  {_num(b.mean_confidence):>9}  "
            f"{_pct(b.accuracy):>14}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Spread:
    """One figure over several seeds: its mean and range over the ``n`` that had it."""

    n: int
    mean: float
    min: float
    max: float


@dataclass(frozen=True)
class SeedSummary:
    """The headline figures of several runs (one per seed); None where no run had the figure."""

    seeds: int
    grade_accuracy: Spread | None
    missed_reject_rate: Spread | None
    false_reject_rate: Spread | None
    abc_error_rate: Spread | None
    ece: Spread | None
    hold_rate: Spread | None = None
    gate_missed_reject: Spread | None = None
    gate_false_reject: Spread | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _spread(values: list[float | None]) -> Spread | None:
    have = [v for v in values if v is not None]
    if not have:
        return None
    return Spread(len(have), sum(have) / len(have), min(have), max(have))


def summarize_seeds(reports: Sequence[EvalReport]) -> SeedSummary:
    """Mean and (min, max) of grade accuracy, missed and false REJECT, A/B/C error and ECE.

    A run without a figure (say no true REJECT, so no missed-REJECT rate) is left out of that
    figure only; its ``n`` says how many runs it rests on.
    """
    return SeedSummary(
        seeds=len(reports),
        grade_accuracy=_spread([r.grade_accuracy for r in reports]),
        missed_reject_rate=_spread([r.missed_reject_rate for r in reports]),
        false_reject_rate=_spread([r.false_reject_rate for r in reports]),
        abc_error_rate=_spread([r.abc_error_rate for r in reports]),
        ece=_spread([r.ece for r in reports]),
        hold_rate=_spread([r.hold_rate for r in reports]),
        gate_missed_reject=_spread([r.gate_missed_reject for r in reports]),
        gate_false_reject=_spread([r.gate_false_reject for r in reports]),
    )


def format_seed_summary(summary: SeedSummary) -> str:
    """The seed summary as text: rates in percent, ECE as a fraction."""
    lines = [f"over {summary.seeds} seeds  mean  [min, max]"]
    for name, s, pct in (
        ("grade accuracy", summary.grade_accuracy, True),
        ("missed REJECT", summary.missed_reject_rate, True),
        ("false REJECT", summary.false_reject_rate, True),
        ("A/B/C error", summary.abc_error_rate, True),
        ("ECE", summary.ece, False),
        ("HOLD", summary.hold_rate, True),
        ("gate missed REJ", summary.gate_missed_reject, True),
        ("gate false REJ", summary.gate_false_reject, True),
    ):
        if s is None:
            shown = "n/a"
        elif pct:
            shown = f"{_pct(s.mean)} [{100 * s.min:.2f}, {100 * s.max:.2f}]"
        else:
            shown = f"{s.mean:.3f} [{s.min:.3f}, {s.max:.3f}]"
        note = f" ({s.n} of {summary.seeds} seeds)" if s is not None and s.n < summary.seeds else ""
        lines.append(f"  {name:<16} {shown}{note}")
    return "\n".join(lines)
