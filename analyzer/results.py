"""Core scores → :class:`sqal.wire.Result` models (the only place NaN becomes ``None``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from analyzer.decision import DECISIONS
from analyzer.fusion import SampleScores
from analyzer.grading import CODES, GRADES
from sqal import __version__
from sqal.wire import (
    AnalyzerInfo,
    Decision,
    DefectCode,
    Fusion,
    Lab,
    Mode,
    Result,
    SpectralResult,
    TofResult,
    WeighedResult,
)


@dataclass(frozen=True, slots=True)
class SampleMeta:
    """Who a scored sample belongs to: its device, its tray, the device's mode and the line's
    open lot when it was scored."""

    device_id: str
    sample_id: str
    ts: datetime
    mode: Mode = Mode.PRODUCTION
    lot: str | None = None


def _num(x: float | np.floating) -> float | None:
    """A finite float, or None: NaN and inf never reach a result."""
    v = float(x)
    return v if math.isfinite(v) else None


def _codes(row: NDArray[np.int8]) -> list[DefectCode]:
    return sorted((CODES[j] for j in np.flatnonzero(row)), key=lambda c: c.value)


P_DEFECT_MIN = 0.01
"""A result lists the defects at least this likely in ``p_defects``."""


def _p_defects(row: NDArray[np.float64]) -> dict[DefectCode, float]:
    return {CODES[j]: round(float(row[j]), 4) for j in np.flatnonzero(row >= P_DEFECT_MIN)}


def to_results(
    scores: SampleScores,
    meta: Sequence[SampleMeta],
    profile: str,
    calibration_id: str | None,
    processing_ms: Sequence[float],
) -> list[Result]:
    """One :class:`Result` per sample; a section is ``None`` when its frame never came."""
    t, s, f, w = scores.tof, scores.spectral, scores.fusion, scores.weights
    out = []
    for i, m in enumerate(meta):
        tof = None
        if t.present[i]:
            tof = TofResult(
                volume_mm3=_num(t.volume_mm3[i]),
                mass_g=_num(t.mass_g[i]),
                avg_height_mm=_num(t.avg_height_mm[i]),
                max_height_mm=_num(t.max_height_mm[i]),
                height_variation_mm=_num(t.height_variation_mm[i]),
                surface_uniformity=_num(t.surface_uniformity[i]),
                tilt_deg=_num(t.tilt_deg[i]),
                fill_ratio=_num(t.fill_ratio[i]),
                valid_zones=int(t.valid_zones[i]),
                quality_score=_num(t.quality_score[i]),
                grade=GRADES[int(t.grade[i])],
                defects=_codes(t.defects[i]),
                sigma_mass_g=_num(t.sigma_mass_g[i]),
            )
        spectral = None
        if s.present[i]:
            lab = None
            if np.isfinite(s.lab[i]).all():
                lab = Lab(L=float(s.lab[i, 0]), a=float(s.lab[i, 1]), b=float(s.lab[i, 2]))
            spectral = SpectralResult(
                freshness_index=_num(s.freshness_index[i]),
                fat_quality_index=_num(s.fat_quality_index[i]),
                oxidation_index=_num(s.oxidation_index[i]),
                color_uniformity=_num(s.color_uniformity[i]),
                lab=lab,
                quality_score=_num(s.quality_score[i]),
                grade=GRADES[int(s.grade[i])],
                defects=_codes(s.defects[i]),
            )
        out.append(
            Result(
                device_id=m.device_id,
                sample_id=m.sample_id,
                ts=m.ts,
                profile=profile,
                calibration_id=calibration_id,
                tof=tof,
                spectral=spectral,
                fusion=Fusion(
                    final_score=_num(f.final_score[i]),
                    final_grade=GRADES[int(f.final_grade[i])],
                    confidence=float(f.confidence[i]),
                    defects=_codes(f.defects[i]),
                    decision=Decision(DECISIONS[int(f.decision[i])]),
                    data_quality=float(f.data_quality[i]),
                    p_reject=float(f.p_reject[i]),
                    p_defects=_p_defects(f.p_defect[i]),
                ),
                analyzer=AnalyzerInfo(
                    version=__version__, processing_ms=max(0.0, float(processing_ms[i]))
                ),
                weight=(
                    WeighedResult(mass_g=float(w.mass_g[i]), sigma_g=_num(w.sigma_g[i]))
                    if w is not None and w.present[i]
                    else None
                ),
                mode=m.mode,
                lot=m.lot,
            )
        )
    return out
