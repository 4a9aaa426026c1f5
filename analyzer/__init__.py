"""The SQAL analyzer: per-sensor scoring, fusion, the ToF/spectral join, and its MQTT service.

The scoring core (:func:`score_batch`) is pure and vectorised (docs/domain.md §2, §4, §5); the join
(:class:`Joiner`) is pure and takes ``now``; :mod:`analyzer.service` is the thin MQTT shell.
"""

from analyzer.arrays import SpectralArrays, TofArrays, stack_spectral, stack_tof
from analyzer.fusion import FusionScores, SampleScores, fuse, score_batch
from analyzer.params import BatchParams, ScoringParams, build_params, roi_mask
from analyzer.results import SampleMeta, to_results
from analyzer.spectral import SpectralScores, lab_from_xyz, score_spectral
from analyzer.tof import TofScores, score_tof

__all__ = [
    "BatchParams",
    "FusionScores",
    "SampleMeta",
    "SampleScores",
    "ScoringParams",
    "SpectralArrays",
    "SpectralScores",
    "TofArrays",
    "TofScores",
    "build_params",
    "fuse",
    "lab_from_xyz",
    "roi_mask",
    "score_batch",
    "score_spectral",
    "score_tof",
    "stack_spectral",
    "stack_tof",
    "to_results",
]
