"""Fusion of the two sensors and the whole-sample scoring entry point (docs/domain.md §5).

``score_batch`` is the scoring core's one front door: n samples of one device, or of devices
that share a profile and an ROI (analyzer.params.BatchParams), ToF and spectral halves as arrays
(either may be absent per sample), in; a frozen :class:`SampleScores` out. Pure: no clock, no
I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from analyzer.arrays import SpectralArrays, TofArrays, WeightArrays
from analyzer.decision import decide
from analyzer.grading import CODE_INDEX, CRITICAL, MINOR, REJECT, clamp, zero_nan
from analyzer.params import BatchParams, ScoringParams
from analyzer.spectral import SpectralScores, score_spectral
from analyzer.tof import TofScores, score_tof
from sqal.wire import DefectCode

F64 = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class FusionScores:
    """Fused verdicts of n samples.

    ``final_score`` (NaN if no sensor scored); ``final_grade`` int8, the likeliest grade;
    ``confidence`` its probability; ``data_quality`` in [0, 1], the §5 sensor-confidence
    figure; ``decision`` int8 (analyzer.decision: 0 PASS, 1 HOLD, 2 REJECT); ``p_reject``
    P(grade REJECT); ``p_defect`` (n, D) P(at least minor) per code; ``defects`` (n, D) int8
    severities: a code is minor where P(at least minor) ≥ ½, critical where P(critical) ≥ ½.
    """

    final_score: F64
    final_grade: NDArray[np.int8]
    confidence: F64
    data_quality: F64
    decision: NDArray[np.int8]
    p_reject: F64
    p_defect: F64
    defects: NDArray[np.int8]


@dataclass(frozen=True, eq=False)
class SampleScores:
    """Everything the core says about n samples."""

    tof: TofScores
    spectral: SpectralScores
    fusion: FusionScores
    weights: WeightArrays | None = None

    @property
    def n(self) -> int:
        return int(self.fusion.final_score.shape[0])


def fuse(
    tof: TofScores,
    spectral: SpectralScores,
    params: ScoringParams | BatchParams,
    weights: WeightArrays | None = None,
) -> FusionScores:
    """Confidence-weighted fusion, then the decision from probabilities (docs/domain.md §5).

    ``final_score = Σ W_s c_s Q_s / Σ W_s c_s`` over sensors with a score, ``data_quality =
    Σ W_s c_s / Σ W_s``. A sensor that is missing, or present without any usable index, has
    c = 0; both cap the grade at ``missing_sensor_cap`` and send the tray to HOLD. A data
    quality below ``min_confidence`` is the critical ``low_confidence`` (grade REJECT, decision
    HOLD: a manual check). A weight the line's checkweigher should have sent and did not is
    ``missing_weight``, handled like a missing sensor. Every other defect counts by its
    probability (analyzer.decision).
    """
    p = BatchParams.of(params)
    grading = p.profile.grading
    w_t, w_s = p.profile.fusion.tof, p.profile.fusion.spectral
    c_t, c_s = tof.confidence, spectral.confidence
    q_t, q_s = zero_nan(tof.quality_score), zero_nan(spectral.quality_score)
    den = w_t * c_t + w_s * c_s
    with np.errstate(invalid="ignore", divide="ignore"):
        final = (w_t * c_t * q_t + w_s * c_s * q_s) / den
        tof_share = np.where(den > 0, w_t * c_t / den, 0.0)
    final = np.where(den > 0, clamp(final, 0.0, 1.0), np.nan)
    quality = clamp(den / (w_t + w_s), 0.0, 1.0)

    defects = np.maximum(tof.defects, spectral.defects)
    defects[:, CODE_INDEX[DefectCode.MISSING_TOF]] = np.where(~tof.present, MINOR, 0)
    defects[:, CODE_INDEX[DefectCode.MISSING_SPECTRAL]] = np.where(~spectral.present, MINOR, 0)
    low = quality < grading.min_confidence
    defects[:, CODE_INDEX[DefectCode.LOW_CONFIDENCE]] = np.where(low, CRITICAL, 0)
    # A sensor with weight that gave nothing (absent, or no usable index) caps the grade.
    blind = ((w_t > 0) & (c_t <= 0)) | ((w_s > 0) & (c_s <= 0))
    if weights is not None:
        unweighed = weights.expected & ~weights.present
        defects[:, CODE_INDEX[DefectCode.MISSING_WEIGHT]] = np.where(unweighed, MINOR, 0)
        blind = blind | unweighed
    d = decide(tof, spectral, defects, final, tof_share, blind, low, p)
    defects = np.where(d.p_critical >= 0.5, CRITICAL, np.where(d.p_minor >= 0.5, MINOR, 0))
    return FusionScores(
        final_score=final,
        final_grade=d.grade,
        confidence=d.confidence,
        data_quality=quality,
        decision=d.decision,
        p_reject=d.p_grade[:, REJECT],
        p_defect=d.p_minor,
        defects=defects.astype(np.int8),
    )


def score_batch(
    tof: TofArrays,
    spectral: SpectralArrays,
    params: ScoringParams | BatchParams,
    weights: WeightArrays | None = None,
) -> SampleScores:
    """Score n samples.

    Args:
        tof: n ToF frames (``present`` False where the frame never came).
        spectral: n spectral readings, same order.
        params: the device's scoring parameters, or each sample's device's
            (:meth:`BatchParams.per_sample`): a sample scores the same either way.
        weights: the checkweigher's readings where the line has one (None: it has none).
    """
    p = BatchParams.of(params)
    t = score_tof(tof, p, weights)
    s = score_spectral(spectral, p, t.spot_distance_mm, t.reflectance_cv)
    return SampleScores(tof=t, spectral=s, fusion=fuse(t, s, p, weights), weights=weights)
