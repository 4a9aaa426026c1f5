"""Core scores → :class:`sqal.wire.Result` models (the only place NaN becomes ``None``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import numpy as np

from analyzer.decision import DECISIONS
from analyzer.fusion import SampleScores
from analyzer.grading import CODES, GRADES
from sqal import __version__
from sqal.wire import (
    Decision,
    DefectCode,
    Mode,
    Result,
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


def _num(x: float) -> float | None:
    """A finite float, or None: NaN and inf never reach a result."""
    v = float(x)
    return v if math.isfinite(v) else None


def _codes(row: list[int]) -> list[DefectCode]:
    return sorted((CODES[j] for j, hit in enumerate(row) if hit), key=lambda c: c.value)


P_DEFECT_MIN = 0.01
"""A result lists the defects at least this likely in ``p_defects``."""


def _p_defects(row: list[float]) -> dict[DefectCode, float]:
    return {CODES[j]: round(p, 4) for j, p in enumerate(row) if p >= P_DEFECT_MIN}


class _Rows:
    """A dataclass of per-sample arrays as Python lists, one ``tolist()`` per array: a batch's
    results read thousands of single values, and indexing numpy one value at a time costs
    ten times more (docs/performance.md)."""

    def __init__(self, arrays: Any) -> None:
        for field in fields(arrays):
            value = getattr(arrays, field.name)
            setattr(self, field.name, value.tolist() if isinstance(value, np.ndarray) else value)

    def __getattr__(self, name: str) -> Any:  # only for names never set: typed for mypy
        raise AttributeError(name)


def to_results(
    scores: SampleScores,
    meta: Sequence[SampleMeta],
    profile: str,
    calibration_id: str | Sequence[str | None] | None,
    processing_ms: Sequence[float],
) -> list[Result]:
    """One :class:`Result` per sample; a section is ``None`` when its frame never came.

    ``calibration_id``: one for every sample, or each sample's device's.
    """
    calibration_ids = (
        [calibration_id] * len(meta)
        if calibration_id is None or isinstance(calibration_id, str)
        else calibration_id
    )
    t, s, f = _Rows(scores.tof), _Rows(scores.spectral), _Rows(scores.fusion)
    w = None if scores.weights is None else _Rows(scores.weights)
    out = []
    for i, m in enumerate(meta):
        tof = None
        if t.present[i]:
            tof = dict(
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
            lab_i = s.lab[i]
            if all(math.isfinite(x) for x in lab_i):
                lab = {"L": lab_i[0], "a": lab_i[1], "b": lab_i[2]}
            spectral = dict(
                freshness_index=_num(s.freshness_index[i]),
                fat_quality_index=_num(s.fat_quality_index[i]),
                oxidation_index=_num(s.oxidation_index[i]),
                color_uniformity=_num(s.color_uniformity[i]),
                lab=lab,
                quality_score=_num(s.quality_score[i]),
                grade=GRADES[int(s.grade[i])],
                defects=_codes(s.defects[i]),
            )
        # One validation of the whole result from plain values, not a model built per section:
        # 23.5 -> 19.4 µs a sample, the same JSON (docs/performance.md).
        out.append(
            Result.model_validate(
                dict(
                    device_id=m.device_id,
                    sample_id=m.sample_id,
                    ts=m.ts,
                    profile=profile,
                    calibration_id=calibration_ids[i],
                    tof=tof,
                    spectral=spectral,
                    fusion=dict(
                        final_score=_num(f.final_score[i]),
                        final_grade=GRADES[int(f.final_grade[i])],
                        confidence=float(f.confidence[i]),
                        defects=_codes(f.defects[i]),
                        decision=Decision(DECISIONS[int(f.decision[i])]),
                        data_quality=float(f.data_quality[i]),
                        p_reject=float(f.p_reject[i]),
                        p_defects=_p_defects(f.p_defect[i]),
                    ),
                    analyzer=dict(
                        version=__version__, processing_ms=max(0.0, float(processing_ms[i]))
                    ),
                    weight=(
                        {"mass_g": w.mass_g[i], "sigma_g": _num(w.sigma_g[i])}
                        if w is not None and w.present[i]
                        else None
                    ),
                    mode=m.mode,
                    lot=m.lot,
                )
            )
        )
    return out
