"""``sqal calibrate --reference``: the line's product prior from a reference batch of good trays.

The shell around :mod:`analyzer.prior`. A plant runs trays it knows are good past the node and
lists their sample ids in a file; the caller reads those samples' raw frames from the database
(only ``app`` may import storage), and this module re-scores them with the device's current
retained config, fits the prior, reports what a manager should check and publishes the config
with the prior in its calibration block and a fresh calibration id.

The frames are re-scored rather than their stored results read: the fit needs each estimate's
σ, which a result does not carry, and the prior must describe the product as the line scores it
from now on (the current calibration), not as it was scored when the trays passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from analyzer.arrays import stack_spectral, stack_tof, stack_weights
from analyzer.calibrate import held_config, new_calibration, read_sample_rows
from analyzer.decision import DECISIONS, HOLD, REJECT_DECISION
from analyzer.fusion import score_batch
from analyzer.grading import CODES
from analyzer.params import ScoringParams, build_params
from analyzer.prior import MIN_REFERENCE, SD_FLOOR_FRAC, fit_prior, prior_columns
from sqal.devices import Target, publish_config
from sqal.errors import CalibrationError, ConfigError
from sqal.profiles import load_profile
from sqal.wire import DeviceConfig, ProductPrior, SpectralFrame, TofFrame, Weight

F64 = NDArray[np.float64]

REFERENCE_BATCH = 256
"""Trays per :func:`analyzer.score_batch` call: the core's vectorised sweet spot (bench.analyzer)
while a batch of thousands of trays stays a few megabytes at a time."""


@dataclass(frozen=True)
class ReferenceIds:
    """The sample ids of a ``--reference`` file that name this device, in file order."""

    sample_ids: list[str]
    other_devices: int = 0


def load_reference_ids(path: Path, device: str) -> ReferenceIds:
    """A CSV with a header and a ``sample_id`` column, optionally ``device_id``.

    Rows naming another device are passed over and counted, so one file can serve a line (the
    weighed step's file, with its ``mass_g``, does as well).

    Raises:
        ConfigError: unreadable, no ``sample_id`` column, or a sample id given twice.
    """
    flag = f"--reference {path}"
    read = read_sample_rows(path, flag, device, ())
    seen: set[str] = set()
    for row in read.rows:
        if row.sample_id in seen:
            raise ConfigError(f"{flag} line {row.line}: sample {row.sample_id} is listed twice")
        seen.add(row.sample_id)
    return ReferenceIds([r.sample_id for r in read.rows], read.other_devices)


@dataclass(frozen=True)
class Flagged:
    """A tray of the reference batch that the current verdict would not pass."""

    sample_id: str
    decision: str
    defects: list[str]


@dataclass(frozen=True)
class Rescored:
    """A reference batch scored as the line scores it.

    Attributes:
        columns: per prior variable, (estimates, σ) of the trays where both sensors scored
            (:func:`analyzer.prior.prior_columns`), over the whole batch.
        unscored: ids with both frames where a sensor still did not score (e.g. a ToF frame of
            another layout than the profile's).
        flagged: trays with both sensors whose decision is HOLD or REJECT.
    """

    columns: dict[str, tuple[F64, F64]]
    unscored: list[str]
    flagged: list[Flagged]


def rescore(
    sample_ids: Sequence[str],
    tof: Mapping[str, TofFrame],
    spectral: Mapping[str, SpectralFrame],
    weights: Mapping[str, Weight],
    params: ScoringParams,
    batch: int = REFERENCE_BATCH,
) -> Rescored:
    """Score the samples' frames through :func:`analyzer.score_batch`, ``batch`` at a time.

    Where the device's config announces a checkweigher, each sample's weight is joined as the
    analyzer joins it (a missing one holds the tray). Pure.
    """
    chunks: list[dict[str, tuple[F64, F64]]] = []
    unscored: list[str] = []
    flagged: list[Flagged] = []
    weighs = params.checkweigher_sigma_g is not None
    for start in range(0, len(sample_ids), batch):
        ids = list(sample_ids[start : start + batch])
        scores = score_batch(
            stack_tof([tof.get(i) for i in ids], params.layout),
            stack_spectral([spectral.get(i) for i in ids]),
            params,
            stack_weights([weights.get(i) for i in ids], [True] * len(ids),
                          params.checkweigher_sigma_g) if weighs else None,
        )  # fmt: skip
        chunks.append(prior_columns(scores))
        both = scores.tof.present & scores.spectral.present
        f = scores.fusion
        for j, sample in enumerate(ids):
            if not both[j]:
                unscored.append(sample)
            elif f.decision[j] in (HOLD, REJECT_DECISION):
                codes = [CODES[k].value for k in np.flatnonzero(f.defects[j])]
                flagged.append(Flagged(sample, DECISIONS[f.decision[j]], sorted(codes)))
    names = list(chunks[0]) if chunks else []
    columns = {
        k: (np.concatenate([c[k][0] for c in chunks]), np.concatenate([c[k][1] for c in chunks]))
        for k in names
    }
    return Rescored(columns, unscored, flagged)


def variable_report(
    columns: Mapping[str, tuple[F64, F64]], prior: ProductPrior
) -> dict[str, dict[str, Any]]:
    """Per prior variable: the fitted mean and sd, the estimates' σ the fit took out (root mean
    square, as :func:`analyzer.prior.fit_prior` removes it), the trays with a value, and
    whether the population came out narrower than the noise (sd floored)."""
    out: dict[str, dict[str, Any]] = {}
    for name, (x, s) in columns.items():
        ok = np.isfinite(x) & np.isfinite(s)
        n = int(ok.sum())
        ip = getattr(prior, name)
        noise = float(np.sqrt(np.mean(s[ok] ** 2))) if n else None
        row: dict[str, Any] = {"n": n, "noise_sigma": noise, "mean": None, "sd": None}
        if ip is not None and noise is not None:
            spread2 = float(np.var(x[ok], ddof=1)) - noise * noise
            row |= {"mean": ip.mean, "sd": ip.sd,
                    "floored": spread2 < (SD_FLOOR_FRAC * noise) ** 2}  # fmt: skip
        out[name] = row
    return out


def calibrate_reference(
    broker: str,
    target: Target,
    listed: ReferenceIds,
    tof: Mapping[str, TofFrame],
    spectral: Mapping[str, SpectralFrame],
    weights: Mapping[str, Weight],
    dry_run: bool = False,
) -> tuple[DeviceConfig, dict[str, Any]]:
    """Fit the line's product prior on a reference batch and publish it in the calibration.

    Args:
        listed: the reference file's sample ids of this device.
        tof, spectral, weights: the stored frames of those samples, by sample id (absent where
            none is stored).
        dry_run: fit and report, publish nothing.

    Raises:
        ConfigError: the device has no retained config.
        CalibrationError: fewer than 30 trays with both sensors scored.
        BrokerError: the broker is unreachable.
    """
    held = held_config(broker, target)
    params = build_params(load_profile(held.profile), held.calibration, held.checkweigher)
    ids = listed.sample_ids
    not_found = [i for i in ids if i not in tof and i not in spectral]
    only_tof = [i for i in ids if i in tof and i not in spectral]
    only_spectral = [i for i in ids if i in spectral and i not in tof]
    matched = [i for i in ids if i in tof and i in spectral]
    summary: dict[str, Any] = {
        "step": "reference",
        "listed": len(ids),
        "other_devices": listed.other_devices,
        "matched": len(matched),
        "not_found": not_found,
        "only_tof": only_tof,
        "only_spectral": only_spectral,
        "calibration_scored_with": params.calibration_id,
    }
    if len(matched) < MIN_REFERENCE:
        raise CalibrationError(
            f"reference: {len(matched)} of {len(ids)} listed trays have both frames stored for "
            f"{target.line}/{target.device}, need at least {MIN_REFERENCE} "
            f"({len(not_found)} not found, {len(only_tof) + len(only_spectral)} with only one "
            "sensor's frame)"
        )
    scored = rescore(matched, tof, spectral, weights, params)
    # fit_reference(scores) over the whole batch, gathered batch by batch.
    prior = fit_prior(scored.columns)
    summary |= {
        "unscored": scored.unscored,
        "trays": prior.n,
        "variables": variable_report(scored.columns, prior),
        "flagged": [
            {"sample_id": f.sample_id, "decision": f.decision, "defects": f.defects}
            for f in scored.flagged
        ],
    }
    now = datetime.now(UTC)
    cal = new_calibration(held.calibration, target, now, product_prior=prior.model_dump())
    config = held.model_copy(update={"calibration": cal, "ts": now})
    if not dry_run:
        asyncio.run(publish_config(broker, target, config))
    summary |= {"calibration_id": None if dry_run else cal.id, "published": not dry_run}
    return config, summary
