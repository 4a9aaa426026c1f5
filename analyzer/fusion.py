"""Fusion of the two sensors and the whole-sample scoring entry point (docs/domain.md §5).

``score_batch`` is the scoring core's one front door: n samples of one device configuration,
ToF and spectral halves as arrays (either may be absent per sample), in; a frozen
:class:`SampleScores` out. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from analyzer.arrays import SpectralArrays, TofArrays
from analyzer.grading import (
    CODE_INDEX,
    CRITICAL,
    MINOR,
    REJECT,
    cap,
    clamp,
    grade_from_score,
    zero_nan,
)
from analyzer.params import ScoringParams
from analyzer.spectral import SpectralScores, score_spectral
from analyzer.tof import TofScores, score_tof
from sqal.wire import DefectCode

F64 = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class FusionScores:
    """Fused verdicts of n samples: final_score (NaN if no sensor scored), final_grade int8,
    confidence in [0, 1], defects (n, D) int8 severities (union of both sections plus
    missing_tof / missing_spectral / low_confidence)."""

    final_score: F64
    final_grade: NDArray[np.int8]
    confidence: F64
    defects: NDArray[np.int8]


@dataclass(frozen=True, eq=False)
class SampleScores:
    """Everything the core says about n samples."""

    tof: TofScores
    spectral: SpectralScores
    fusion: FusionScores

    @property
    def n(self) -> int:
        return int(self.fusion.final_score.shape[0])


def fuse(tof: TofScores, spectral: SpectralScores, p: ScoringParams) -> FusionScores:
    """Confidence-weighted fusion (docs/domain.md §5).

    ``final_score = Σ W_s c_s Q_s / Σ W_s c_s`` over sensors with a score, ``confidence =
    Σ W_s c_s / Σ W_s``. A sensor that is missing, or present without any usable index, has
    c = 0; both cap the grade at ``missing_sensor_cap``. Any critical defect rejects; a minor
    one caps at ``minor_defect_cap``; confidence below ``min_confidence`` rejects with
    ``low_confidence`` (manual check).
    """
    grading = p.profile.grading
    w_t, w_s = p.profile.fusion.tof, p.profile.fusion.spectral
    c_t, c_s = tof.confidence, spectral.confidence
    q_t, q_s = zero_nan(tof.quality_score), zero_nan(spectral.quality_score)
    den = w_t * c_t + w_s * c_s
    with np.errstate(invalid="ignore", divide="ignore"):
        final = (w_t * c_t * q_t + w_s * c_s * q_s) / den
    final = np.where(den > 0, clamp(final, 0.0, 1.0), np.nan)
    confidence = clamp(den / (w_t + w_s), 0.0, 1.0)

    defects = np.maximum(tof.defects, spectral.defects)
    defects[:, CODE_INDEX[DefectCode.MISSING_TOF]] = np.where(~tof.present, MINOR, 0)
    defects[:, CODE_INDEX[DefectCode.MISSING_SPECTRAL]] = np.where(~spectral.present, MINOR, 0)
    low = confidence < grading.min_confidence
    defects[:, CODE_INDEX[DefectCode.LOW_CONFIDENCE]] = np.where(low, CRITICAL, 0)

    grade = grade_from_score(final, grading)
    sensor_defects = np.maximum(tof.defects, spectral.defects).max(axis=1)
    grade = cap(grade, grading.minor_defect_cap, sensor_defects >= MINOR)
    # A sensor with weight that gave nothing (absent, or no usable index) caps the grade.
    blind = ((w_t > 0) & (c_t <= 0)) | ((w_s > 0) & (c_s <= 0))
    grade = cap(grade, grading.missing_sensor_cap, blind)
    grade = np.where((sensor_defects >= CRITICAL) | low, REJECT, grade).astype(np.int8)
    return FusionScores(
        final_score=final, final_grade=grade, confidence=confidence, defects=defects
    )


def score_batch(tof: TofArrays, spectral: SpectralArrays, p: ScoringParams) -> SampleScores:
    """Score n samples of one device configuration.

    Args:
        tof: n ToF frames (``present`` False where the frame never came).
        spectral: n spectral readings, same order.
        p: the device's scoring parameters.
    """
    t = score_tof(tof, p)
    s = score_spectral(spectral, p, t.spot_distance_mm, t.reflectance_cv)
    return SampleScores(tof=t, spectral=s, fusion=fuse(t, s, p))
