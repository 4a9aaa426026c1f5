"""Sub-scores, grades and defect severities (docs/domain.md §5), vectorised over a batch.

Conventions of the core: a null value is NaN inside arrays (converted to ``None`` at the wire);
a grade is an int8 index into :data:`GRADES` (0 = A … 3 = REJECT); defects are an (n, D) int8
severity matrix over :data:`CODES` (0 none, 1 minor, 2 critical).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sqal.profiles import Grading
from sqal.wire import DefectCode, Grade

F64 = NDArray[np.float64]
B = NDArray[np.bool_]
I8 = NDArray[np.int8]

GRADES: tuple[Grade, ...] = (Grade.A, Grade.B, Grade.C, Grade.REJECT)
REJECT = 3
CODES: tuple[DefectCode, ...] = tuple(DefectCode)
CODE_INDEX: dict[DefectCode, int] = {c: i for i, c in enumerate(CODES)}
NONE, MINOR, CRITICAL = 0, 1, 2


# The core runs ~150 array operations per batch; at a batch of one sample their fixed cost is
# the whole cost (bench.analyzer). np.clip and np.nan_to_num go through several Python layers
# (~6 and ~20 µs a call); these two do the same with one or two ufunc calls.
def clamp(x: F64, lo: float, hi: float | None = None) -> F64:
    """``np.clip(x, lo, hi)`` for float arrays and scalars (NaN stays NaN)."""
    out = np.maximum(x, lo)
    return np.asarray(out if hi is None else np.minimum(out, hi))


def zero_nan(x: F64) -> F64:
    """NaN → 0, for values that are finite or NaN (where ``np.nan_to_num`` would do the same)."""
    return np.asarray(np.where(np.isnan(x), 0.0, x))


def lin(x: F64, x0: float | F64, x1: float | F64) -> F64:
    """``clip((x − x0)/(x1 − x0), 0, 1)`` (docs/domain.md conventions); NaN stays NaN.

    Equal anchors make the ramp a step at x0 (1 at or past it in the direction of x1 = x0, which
    we take as "≥"); profiles use equal anchors only where the index's weight is 0.
    """
    if np.ndim(x0) or np.ndim(x1):  # anchors per sample (analyzer.params.BatchParams)
        a, b = np.asarray(x0), np.asarray(x1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ramp = clamp((x - a) / (b - a), 0.0, 1.0)
        step = np.where(np.isnan(x), np.nan, (x >= a).astype(np.float64))
        return np.asarray(np.where(a == b, step, ramp))
    if x1 == x0:
        return np.where(np.isnan(x), np.nan, (x >= x0).astype(np.float64))
    return clamp((x - x0) / (x1 - x0), 0.0, 1.0)


def smoothstep(u: F64) -> F64:
    """S(u) = 3u² − 2u³ on clip(u, 0, 1) (docs/domain.md §5)."""
    c = clamp(u, 0.0, 1.0)
    return np.asarray(c * c * (3.0 - 2.0 * c))


def band_score(x: F64, target: float, a: float, b: float) -> F64:
    """``1 − S((|x − t| − a)/(b − a))``: 1 within a of the target, 0 beyond b."""
    return np.asarray(1.0 - smoothstep((np.abs(x - target) - a) / (b - a)))


def lower_better(x: F64, good: float, bad: float) -> F64:
    """``S((bad − x)/(bad − good))``: 1 at or below good, 0 at or above bad."""
    return smoothstep((bad - x) / (bad - good))


def weighted_score(subs: list[F64], weights: list[float]) -> tuple[F64, F64]:
    """``Σ w_k s_k / Σ w_k`` over the non-null sub-scores of each sample; NaN if none.

    Args:
        subs: k arrays of one shape, (n,) or (..., n), NaN where null.
        weights: k profile weights.

    Returns:
        (score, coverage): coverage is the share of the total weight whose sub-score was
        computed; it scales the sensor's confidence (a sensor that could judge only part of
        what its profile weighs is trusted that much less).
    """
    s = np.stack(subs, axis=-1)
    w = np.asarray(weights, dtype=np.float64) * ~np.isnan(s)
    num = (zero_nan(s) * w).sum(axis=-1)  # w is 0 where s is NaN
    den = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    total = float(sum(weights))
    coverage = den / total if total > 0 else np.zeros_like(den)
    return np.asarray(np.where(den > 0, clamp(out, 0.0, 1.0), np.nan)), coverage


def grade_from_score(score: F64, grading: Grading) -> I8:
    """Thresholds A/B/C, else REJECT; a null score grades REJECT (nothing vouches for it).

    Each threshold passed moves one grade up, as ``Grading`` guarantees A > B > C; NaN passes
    none.
    """
    passed = (score >= grading.C).astype(np.int8) + (score >= grading.B) + (score >= grading.A)
    return np.asarray(REJECT - passed, dtype=np.int8)


def cap(grade: I8, limit: Grade, where: B) -> I8:
    """Grades no better than ``limit`` where ``where`` is True ("at most B")."""
    lim = GRADES.index(limit)
    return np.asarray(np.where(where, np.maximum(grade, lim), grade), dtype=np.int8)


def apply_defects(grade: I8, defects: I8, grading: Grading) -> I8:
    """A critical defect rejects; a minor one caps the grade at ``minor_defect_cap``."""
    worst = defects.max(axis=1) if defects.shape[1] else np.zeros(grade.shape, np.int8)
    g = cap(grade, grading.minor_defect_cap, worst >= MINOR)
    return np.asarray(np.where(worst >= CRITICAL, REJECT, g), dtype=np.int8)


def severity(minor: B, critical: B) -> I8:
    """Severity array from the minor and critical conditions (critical wins)."""
    return np.asarray(np.where(critical, CRITICAL, np.where(minor, MINOR, NONE)), dtype=np.int8)


def defect_matrix(n: int, entries: dict[DefectCode, I8]) -> I8:
    """(n, len(CODES)) severities with the given columns set."""
    out = np.zeros((n, len(CODES)), dtype=np.int8)
    for code, sev in entries.items():
        out[:, CODE_INDEX[code]] = sev
    return out
