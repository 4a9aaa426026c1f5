"""Analyzer accuracy against simulator truth, in process (no broker): issue 4 targets.

For each profile, simulated nodes (device_sim's fleet devices, seeds fixed, default defect mix,
no transport faults) render N trays; every frame goes through the wire codec, the device's
retained config is decoded and compiled exactly as the service does
(``build_params(load_profile(cfg.profile), cfg.calibration)``), the analyzer core scores the
batch, and :func:`analyzer.evaluation.evaluate` compares results with truth. Besides the eval
summary it prints a breakdown that points at causes: volume error against true height, pose
offset and tilt; per true defect the misses and false alarms with the measured vs true metric;
and, for every wrong grade, which defect or sub-score made it wrong.

    python -m bench.accuracy --samples 5000 [--profile NAME] [--devices 4] [--rate 30]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from analyzer import SampleMeta, build_params, score_batch, stack_spectral, stack_tof, to_results
from analyzer.arrays import stack_weights
from analyzer.evaluation import (
    EvalReport,
    evaluate,
    format_report,
    format_seed_summary,
    summarize_seeds,
)
from analyzer.fusion import SampleScores
from analyzer.grading import band_score, lower_better
from analyzer.massmodel import MassFit, fit
from analyzer.params import ScoringParams
from analyzer.prior import fit_prior, prior_columns
from bench.common import header
from device_sim.command import build_devices
from device_sim.device import SimDevice, _seq_rng
from device_sim.fleet import config_payload
from device_sim.trays import DEFECTS, draw_tray
from sqal.profiles import SCENARIOS, load_profile
from sqal.stats import wilson
from sqal.wire import (
    DeviceConfig,
    ProductPrior,
    SpectralFrame,
    TofFrame,
    WeighedMassModel,
    Weight,
    decode,
    decode_as,
)

PROFILES = ("foie_gras_lobe_400g", "pate_terrine_300g")
CHUNK = 256
START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
TARGETS = {
    "volume_mae_pct": 2.0,
    "grade_accuracy": 0.95,
    "missed_reject_rate": 0.005,
    "false_reject_rate": 0.02,
    "recall": 0.9,
}


@dataclass
class Run:
    """Everything one profile's run produced, sample-aligned."""

    truth: list[dict[str, Any]]
    results: list[dict[str, Any]]
    offset_mm: list[float]
    scores: dict[str, list[float]]


def _params(
    dev: SimDevice,
    mass_model: WeighedMassModel | None = None,
    product_prior: ProductPrior | None = None,
) -> ScoringParams:
    """The device's retained config, decoded and compiled as the service does; with
    ``mass_model`` as after ``sqal calibrate --weights``, with ``product_prior`` as after
    ``sqal calibrate --reference`` put the line's own in it."""
    cfg = decode_as(DeviceConfig, config_payload(dev, START))
    cal = cfg.calibration
    if mass_model is not None and cal is not None:
        cal = cal.model_copy(update={"mass_model": mass_model})
    if product_prior is not None and cal is not None:
        cal = cal.model_copy(update={"product_prior": product_prior})
    return build_params(load_profile(cfg.profile), cal, cfg.checkweigher)


def _offset_mm(dev: SimDevice, seq: int) -> float:
    """Product centre's distance from the tray centre: the tray is redrawn from its seed."""
    draw = draw_tray(dev.model, _seq_rng(dev.seed, dev.index, 1, seq), dev.rates, dev.population)
    return float(math.hypot(draw.lobes[0][0], draw.lobes[0][1]))


def _collect(scores: SampleScores, out: dict[str, list[float]]) -> None:
    t, s = scores.tof, scores.spectral
    for name, arr in (
        ("roughness", t.roughness_mm),
        ("tilt", t.tilt_deg),
        ("fill", t.fill_ratio),
        ("max_h", t.max_height_mm),
        ("uniformity", t.surface_uniformity),
        ("valid_share", t.valid_share),
        ("oxidation", s.oxidation_index),
        ("freshness", s.freshness_index),
        ("fat", s.fat_quality_index),
        ("color_u", s.color_uniformity),
        ("delta_e", s.delta_e),
        ("delta_b", s.delta_b),
        ("conf", scores.fusion.confidence),
        ("final", scores.fusion.final_score),
    ):
        out[name].extend(float(x) for x in arr)


def run_profile(
    profile: str,
    samples: int,
    devices: int,
    rate: float,
    seed: int,
    defect_rate: float | None = None,
    scenario: str = "production",
    ceiling: bool = False,
    only: str | None = None,
    mass_model: WeighedMassModel | None = None,
    rates: dict[str, float] | None = None,
    checkweigher_sigma_g: float | None = None,
    product_prior: ProductPrior | None = None,
    on_scores: Callable[[SampleScores], None] | None = None,
) -> Run:
    """Render, score and collect ``samples`` trays of one profile.

    ``defect_rate`` ``None``: the scenario's (the profile's ``scenarios``). ``ceiling``: the
    same trays seen by a perfect sensor (every noise source off, ``render_batch(noise=False)``).
    """
    fleet = build_devices(
        1, devices, rate, profile, seed, START, "none", None, defect_rate, scenario,
        checkweigher_sigma_g=checkweigher_sigma_g,
    )  # fmt: skip
    for dev in fleet:
        dev.noise = not ceiling
        if only is not None:  # a stratified sample: this defect injected into every tray
            dev.rates = {only: 1.0}
        elif rates is not None:
            dev.rates = dict(rates)
    per_device = math.ceil(samples / devices)
    run = Run([], [], [], defaultdict(list))
    for dev in fleet:
        params = _params(dev, mass_model, product_prior)
        done = 0
        while done < per_device:
            count = min(CHUNK, per_device - done)
            first_seq = dev.seq
            out, truth = dev.produce(count)
            tofs: dict[str, TofFrame] = {}
            specs: dict[str, SpectralFrame] = {}
            weights: dict[str, Weight] = {}
            for msg in out:
                frame = decode(msg.topic, msg.payload)
                if isinstance(frame, TofFrame):
                    tofs[frame.sample_id] = frame
                elif isinstance(frame, SpectralFrame):
                    specs[frame.sample_id] = frame
                elif isinstance(frame, Weight):
                    weights[frame.sample_id] = frame
            ids = [t["sample_id"] for t in truth]
            weighs = params.checkweigher_sigma_g is not None
            scores = score_batch(
                stack_tof([tofs.get(i) for i in ids], params.layout),
                stack_spectral([specs.get(i) for i in ids]),
                params,
                stack_weights(
                    [weights.get(i) for i in ids], [weighs] * len(ids), params.checkweigher_sigma_g
                )
                if weighs
                else None,
            )
            meta = [SampleMeta(dev.device_id, i, tofs[i].ts) for i in ids]
            results = to_results(scores, meta, profile, params.calibration_id, [0.0] * len(ids))
            run.results.extend(r.model_dump(mode="json") for r in results)
            run.truth.extend(truth)
            run.offset_mm.extend(_offset_mm(dev, first_seq + j) for j in range(count))
            _collect(scores, run.scores)
            if on_scores is not None:
                on_scores(scores)
            done += count
    return run


def _bins(label: str, key: np.ndarray, err: np.ndarray, edges: list[float], unit: str) -> None:
    for lo, hi in itertools.pairwise(edges):
        m = (key >= lo) & (key < hi)
        if m.any():
            print(
                f"  volume vs {label:<12} [{lo:5.1f}, {hi:5.1f}) {unit:<3} n={int(m.sum()):5d}  "
                f"bias {err[m].mean():+6.2f} %  MAE {np.abs(err[m]).mean():5.2f} %"
            )


def volume_breakdown(run: Run) -> None:
    """Volume error against true mean height, pose offset, true tilt and injected defect."""
    v_hat = np.array([(r.get("tof") or {}).get("volume_mm3") or np.nan for r in run.results])
    v = np.array([t["volume_mm3"] for t in run.truth])
    err = (v_hat - v) / v * 100.0
    ok = np.isfinite(err)
    height = np.array([t["avg_height_mm"] for t in run.truth])
    tilt = np.array([t["tilt_deg"] for t in run.truth])
    offset = np.array(run.offset_mm)
    e, h, ti, off = err[ok], height[ok], tilt[ok], offset[ok]
    _bins("avg height", h, e, [0, 15, 20, 25, 30, 35, 40, 100], "mm")
    _bins("pose offset", off, e, [0, 3, 6, 10, 15, 25, 40], "mm")
    _bins("true tilt", ti, e, [0, 2, 4, 6, 8, 12, 90], "deg")
    kinds = np.array(
        [",".join(sorted({i["defect"] for i in t["injected"]})) or "none" for t in run.truth]
    )[ok]
    for k in sorted(set(kinds)):
        m = kinds == k
        if m.sum() >= 20:
            print(
                f"  volume vs injected {k:<32} n={int(m.sum()):5d}  bias {e[m].mean():+6.2f} %"
                f"  MAE {np.abs(e[m]).mean():5.2f} %"
            )


METRICS: dict[str, list[tuple[str, str]]] = {
    "underfill": [("fill", "fill_ratio")],
    "overfill": [("fill", "fill_ratio"), ("max_h", "max_height_mm")],
    "tilted": [("tilt", "tilt_deg")],
    "surface_irregular": [("roughness", "roughness_mm")],
    "zones_invalid": [("valid_share", "valid_share")],
    "oxidation": [("oxidation", "spectral.oxidation_index")],
    "fat_yellowing": [("delta_b", "spectral.delta_b")],
    "discoloration": [("delta_e", "spectral.delta_e"), ("color_u", "")],
    "spectral_saturated": [],
}
"""Per defect code: (measured score name, truth field) pairs that decide it."""


def _truth_value(t: dict[str, Any], field: str) -> float:
    if not field:
        return float("nan")
    if field.startswith("spectral."):
        return float(t["spectral"][field.split(".", 1)[1]])
    v = t.get(field)
    return float("nan") if v is None else float(v)


def defect_breakdown(run: Run) -> None:
    """Per true defect: misses and false alarms with the deciding metric, measured vs true."""
    for code, metrics in METRICS.items():
        rows: dict[str, list[int]] = {"tp": [], "fn": [], "fp": []}
        injected = 0
        for i, (t, r) in enumerate(zip(run.truth, run.results, strict=True)):
            want = code in t["defects"]
            got = code in r["fusion"]["defects"]
            injected += any(j["defect"] == code for j in t["injected"])
            if want or got:
                rows["tp" if want and got else "fn" if want else "fp"].append(i)
        tp, fn, fp = (len(rows[k]) for k in ("tp", "fn", "fp"))
        print(
            f"  {code:<19} injected {injected:4d}  true {tp + fn:4d}  tp {tp:4d}  fn {fn:4d}  "
            f"fp {fp:4d}"
        )
        for kind in ("fn", "fp"):
            idx = rows[kind]
            if not idx:
                continue
            parts = []
            for name, field in metrics:
                meas = np.array([run.scores[name][i] for i in idx])
                tru = np.array([_truth_value(run.truth[i], field) for i in idx])
                s = f"{name} measured {np.nanmean(meas):.3f}" if np.isfinite(meas).any() else name
                if np.isfinite(tru).any():
                    s += f" vs true {np.nanmean(tru):.3f}"
                parts.append(s)
            print(f"      {kind}: mean " + "; ".join(parts))


def _subscores_true(t: dict[str, Any], params: ScoringParams) -> dict[str, float]:
    p = params.profile
    tof, sp = p.tof, p.spectral
    one = np.ones(1)
    spec = t["spectral"]
    su = t.get("surface_uniformity")
    return {
        "fill": float(band_score(one * t["fill_ratio"], 1.0, *tof.fill_tol)[0]),
        "height": float(
            band_score(one * t["max_height_mm"], tof.max_height.target_mm, *tof.max_height.tol_mm)[
                0
            ]
        ),
        "tilt": float(lower_better(one * t["tilt_deg"], tof.tilt_deg.good, tof.tilt_deg.bad)[0]),
        "uniformity": float("nan") if su is None else float(su),
        "freshness": float(spec["freshness_index"]),
        "fat_quality": float(spec["fat_quality_index"]),
        "oxidation": 1.0 - float(spec["oxidation_index"]),
        "color_uniformity": float("nan"),
    } | {"_w": float(sp.weights.freshness)}


def _subscores_pred(run: Run, i: int, params: ScoringParams) -> dict[str, float]:
    tof = params.profile.tof
    s = run.scores
    one = np.ones(1)
    return {
        "fill": float(band_score(one * s["fill"][i], 1.0, *tof.fill_tol)[0]),
        "height": float(
            band_score(one * s["max_h"][i], tof.max_height.target_mm, *tof.max_height.tol_mm)[0]
        ),
        "tilt": float(lower_better(one * s["tilt"][i], tof.tilt_deg.good, tof.tilt_deg.bad)[0]),
        "uniformity": s["uniformity"][i],
        "freshness": s["freshness"][i],
        "fat_quality": s["fat"][i],
        "oxidation": 1.0 - s["oxidation"][i],
        "color_uniformity": s["color_u"][i],
    }


def grade_breakdown(run: Run, params: ScoringParams) -> None:
    """For every wrong grade: the defect or the (weighted) sub-score that made it wrong."""
    p = params.profile
    wt, ws = p.fusion.tof, p.fusion.spectral
    tw, sw = p.tof.weights, p.spectral.weights
    tsum = tw.fill + tw.height + tw.tilt + tw.uniformity
    ssum = sw.freshness + sw.fat_quality + sw.oxidation + sw.color_uniformity
    weight = {
        "fill": wt * tw.fill / tsum,
        "height": wt * tw.height / tsum,
        "tilt": wt * tw.tilt / tsum,
        "uniformity": wt * tw.uniformity / tsum,
        "freshness": ws * sw.freshness / ssum,
        "fat_quality": ws * sw.fat_quality / ssum,
        "oxidation": ws * sw.oxidation / ssum,
        "color_uniformity": ws * sw.color_uniformity / ssum,
    }
    causes: Counter[str] = Counter()
    quality = {"missing_tof", "missing_spectral", "low_confidence"}
    for i, (t, r) in enumerate(zip(run.truth, run.results, strict=True)):
        g_true, g_pred = t["grade"], r["fusion"]["final_grade"]
        if g_true == g_pred:
            continue
        want = set(t["defects"])
        got = set(r["fusion"]["defects"]) - quality
        arrow = f"{g_true}->{g_pred}"
        if "low_confidence" in r["fusion"]["defects"]:
            causes[f"{arrow} low_confidence"] += 1
        elif want != got:
            diff = [f"+{c}" for c in sorted(got - want)] + [f"-{c}" for c in sorted(want - got)]
            causes[f"{arrow} defect {' '.join(diff)}"] += 1
        else:
            tru = _subscores_true(t, params)
            pred = _subscores_pred(run, i, params)
            delta = {
                k: weight[k] * (pred[k] - tru[k])
                for k in weight
                if math.isfinite(pred[k]) and math.isfinite(tru[k])
            }
            if not delta:
                causes[f"{arrow} score (no comparable sub-score)"] += 1
                continue
            k = max(delta, key=lambda x: abs(delta[x]))
            causes[f"{arrow} score {k} {'high' if delta[k] > 0 else 'low'}"] += 1
    for cause, n in causes.most_common(25):
        print(f"  wrong grade {cause:<58} {n:5d}")


WEIGHED_SEED_OFFSET = 1000
"""The weighed trays of the line calibration come from other seeds than the evaluation's."""


def weigh_line(
    profile: str, trays: int, seed: int, scenario: str, ceiling: bool = False
) -> MassFit:
    """The plant's ``sqal calibrate --weights`` on simulated trays (docs/calibration.md).

    What an operator does (docs/calibration.md "The mass model"): run ``trays`` trays of the
    line's own product past the node, a third of them filled light and a third heavy on
    purpose (product taken out or added, as the simulator's underfill and overfill do), weigh
    each on a scale, and fit the line's mass model on the volumes the analyzer published
    (:func:`analyzer.massmodel.fit`: intercept, slope, V^⅔ only when leave-one-out says so).
    Without the light and heavy trays the volumes span too little for an intercept. Other
    seeds than the evaluation's, so the model is judged on trays it was not fitted on.
    """
    run = run_profile(
        profile, trays, 2, 30.0, seed + WEIGHED_SEED_OFFSET, None, scenario,
        rates={"underfill": 1 / 3, "overfill": 1 / 3}, ceiling=ceiling,
    )  # fmt: skip
    v = np.array([(r.get("tof") or {}).get("volume_mm3") or np.nan for r in run.results])
    m = np.array([t["mass_g"] for t in run.truth])
    ok = np.isfinite(v)
    return fit(v[ok], m[ok], load_profile(profile).product)


REFERENCE_SEED_OFFSET = 2000
"""The reference batch comes from other seeds than the evaluation's and the weighed trays'."""


def reference_batch(
    profile: str,
    trays: int,
    seed: int,
    scenario: str,
    mass_model: WeighedMassModel | None,
    ceiling: bool = False,
) -> ProductPrior:
    """The plant's ``sqal calibrate --reference`` on simulated trays (docs/calibration.md).

    A batch of the line's own good production (no injected defect) is scored as the line
    scores it, and :func:`analyzer.prior.fit_prior` takes each variable's population from the
    estimates and their σ alone: the truth is never read.
    """
    chunks: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
    run_profile(
        profile, trays, 2, 30.0, seed + REFERENCE_SEED_OFFSET, 0.0, scenario,
        mass_model=mass_model, on_scores=lambda s: chunks.append(prior_columns(s)),
        ceiling=ceiling,
    )  # fmt: skip
    merged = {
        k: (np.concatenate([c[k][0] for c in chunks]), np.concatenate([c[k][1] for c in chunks]))
        for k in chunks[0]
    }
    return fit_prior(merged)


def line_calibration(
    profile: str, args: argparse.Namespace, ceiling: bool
) -> tuple[WeighedMassModel | None, ProductPrior | None]:
    """The line's mass model (``--weighed``) and product prior (``--reference``), each printed.

    A plant calibrates on its own product as it runs: the production population, whatever
    scenario is then evaluated (stress is a robustness run). ``ceiling``: with the perfect
    sensor, for the ceiling's runs.
    """
    tag = " (sensor-perfect)" if ceiling else ""
    mass_model = None
    if args.weighed:
        weighed = weigh_line(profile, args.weighed, args.seed, "production", ceiling)
        mm = weighed.model
        mass_model = mm.to_calibration()
        print(
            f"## {profile}: mass model from {args.weighed} weighed trays{tag} ({weighed.reason}):"
            f" a_g {mm.a_g:.2f}, b_g_per_cm3 {mm.b_g_per_cm3:.4f}, "
            f"c_g_per_cm2 {mm.c_g_per_cm2:.3f}, leave-one-out σ {mm.sigma_g:.2f} g"
        )
    product_prior = None
    if args.reference:
        product_prior = reference_batch(
            profile, args.reference, args.seed, "production", mass_model, ceiling
        )
        shown = ", ".join(
            f"{k} {v['mean']:.3g} ± {v['sd']:.3g}"
            for k, v in product_prior.model_dump(exclude={"n"}).items()
            if v is not None
        )
        print(f"## {profile}: product prior from {product_prior.n} reference trays{tag}: {shown}")
    return mass_model, product_prior


def _verdict(rep: EvalReport) -> list[str]:
    lines = []
    checks = [
        ("volume MAE", rep.volume_mae_pct, TARGETS["volume_mae_pct"], "<=", " %"),
        ("grade accuracy", rep.grade_accuracy, TARGETS["grade_accuracy"], ">=", ""),
        ("missed REJECT", rep.missed_reject_rate, TARGETS["missed_reject_rate"], "<=", ""),
        ("false REJECT", rep.false_reject_rate, TARGETS["false_reject_rate"], "<=", ""),
    ]
    for name, value, target, op, unit in checks:
        ok = value is not None and (value <= target if op == "<=" else value >= target)
        shown = "n/a" if value is None else f"{value:.4f}{unit}"
        lines.append(
            f"  target {name:<16} {shown:>12} {op} {target}{unit}  {'ok' if ok else 'MISS'}"
        )
    for code, d in rep.defects.items():
        ok = d.recall is not None and d.recall >= TARGETS["recall"]
        shown = "n/a" if d.recall is None else f"{d.recall:.3f}"
        lines.append(
            f"  target recall {code:<19} {shown:>6} >= 0.9  {'ok' if ok else 'MISS'}"
            f"  (precision {d.precision if d.precision is None else round(d.precision, 3)})"
        )
    return lines


def per_defect(
    profile: str,
    trays: int,
    args: argparse.Namespace,
    mass_model: WeighedMassModel | None = None,
    product_prior: ProductPrior | None = None,
) -> None:
    """Recall of each defect on a stratified sample: ``trays`` trays with it injected (some
    injections stay within limits: recall counts the trays whose truth carries the code).
    ``caught``: of the trays the code makes a true REJECT, those the gate did not PASS (a
    HOLD goes to the re-check lane, so it counts as caught)."""
    print(f"## {profile}: per defect, {trays} trays each with it injected ({args.scenario})")
    print(
        f"  {'defect':<20} {'true':>5} {'found':>6}  {'recall [95 % interval]':<28} "
        f"{'true REJ':>8} {'caught':>6}  caught [95 % interval]"
    )
    for i, code in enumerate(DEFECTS):
        run = run_profile(
            profile, trays, args.devices, args.rate, args.seed + 1000 * (i + 1), None,
            args.scenario, only=code, mass_model=mass_model, product_prior=product_prior,
            checkweigher_sigma_g=args.checkweigher,
        )  # fmt: skip
        stats = evaluate(run.results, run.truth).defects.get(code)
        true = 0 if stats is None else stats.true_positive + stats.false_negative
        found = 0 if stats is None else stats.true_positive
        rej = [
            r["fusion"].get("decision")
            for t, r in zip(run.truth, run.results, strict=True)
            if code in t["defects"] and t["grade"] == "REJECT"
        ]
        caught = sum(1 for d in rej if d in ("HOLD", "REJECT"))
        print(
            f"  {code:<20} {true:>5} {found:>6}  {_rate(found, true):<28} {len(rej):>8} "
            f"{caught:>6}  {_rate(caught, len(rej))}"
        )


def _rate(k: int, n: int) -> str:
    """``97.5 % [93.1, 99.2]``: k of n with its Wilson 95 % interval, or n/a."""
    ci = wilson(k, n)
    if ci is None:
        return "n/a"
    return f"{100 * k / n:.1f} % [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5000, help="trays per profile")
    ap.add_argument("--profile", action="append", help="profile(s); default both shipped")
    ap.add_argument("--devices", type=int, default=4, help="simulated nodes per profile")
    ap.add_argument("--rate", type=float, default=30.0, help="trays/min per node (sets uptime)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="run seeds SEED..SEED+N-1 and print mean and range (3 points between two seeds "
        "are noise at 5,000 trays)",
    )
    ap.add_argument(
        "--scenario", choices=SCENARIOS, default="production", help="the simulated population"
    )
    ap.add_argument(
        "--defect-rate", type=float, default=None, help="each defect's rate [the scenario's]"
    )
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="also score the same trays seen by a perfect sensor (every noise source off)",
    )
    ap.add_argument(
        "--per-defect",
        type=int,
        default=0,
        metavar="N",
        help="also inject each defect into N trays of its own and print its recall",
    )
    ap.add_argument(
        "--reference",
        type=int,
        default=0,
        metavar="N",
        help="first take each line's product prior from a reference batch of N good trays "
        "(sqal calibrate --reference)",
    )
    ap.add_argument(
        "--checkweigher",
        type=float,
        nargs="?",
        const=0.5,
        default=None,
        metavar="SIGMA_G",
        help="each line has a checkweigher of this σ (0.5 g when given without a value): fill "
        "is decided on its weight",
    )
    ap.add_argument("--quiet", action="store_true", help="summary only, no breakdown")
    ap.add_argument(
        "--weighed",
        type=int,
        default=0,
        metavar="N",
        help="first calibrate each line's mass model on N weighed trays (sqal calibrate --weights)",
    )
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(header("accuracy"))
    for profile in args.profile or PROFILES:
        mass_model, product_prior = line_calibration(profile, args, ceiling=False)
        if args.ceiling:  # the perfect sensor's line is calibrated with that sensor too
            mass_model_c, product_prior_c = line_calibration(profile, args, ceiling=True)
        reports, ceilings = [], []
        for seed in range(args.seed, args.seed + max(1, args.seeds)):
            run = run_profile(
                profile, args.samples, args.devices, args.rate, seed, args.defect_rate,
                args.scenario, mass_model=mass_model, checkweigher_sigma_g=args.checkweigher,
                product_prior=product_prior,
            )  # fmt: skip
            rep = evaluate(run.results, run.truth)
            reports.append(rep)
            print(
                f"## {profile}: {len(run.truth)} samples ({args.scenario}), {args.devices} "
                f"nodes at {args.rate:g} trays/min, seed {seed}"
            )
            print(format_report(rep))
            print("\n".join(_verdict(rep)))
            if args.ceiling:
                perfect = run_profile(
                    profile, args.samples, args.devices, args.rate, seed, args.defect_rate,
                    args.scenario, ceiling=True, mass_model=mass_model_c,
                    checkweigher_sigma_g=args.checkweigher, product_prior=product_prior_c,
                )  # fmt: skip
                ceilings.append(evaluate(perfect.results, perfect.truth))
                print(f"## {profile}: the same trays, sensor-perfect ceiling (no sensor noise)")
                print(format_report(ceilings[-1]))
        if len(reports) > 1:
            print(f"## {profile}: over {len(reports)} seeds ({args.scenario})")
            print(format_seed_summary(summarize_seeds(reports)))
            if ceilings:
                print(f"## {profile}: sensor-perfect ceiling over {len(ceilings)} seeds")
                print(format_seed_summary(summarize_seeds(ceilings)))
        if args.per_defect:
            per_defect(profile, args.per_defect, args, mass_model, product_prior)
        if not args.quiet:
            params = build_params(load_profile(profile))
            volume_breakdown(run)
            defect_breakdown(run)
            grade_breakdown(run, params)


if __name__ == "__main__":
    main()
