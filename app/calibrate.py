"""``sqal calibrate``: the typer-annotated function the CLI registers.

It lives in ``app`` rather than beside :mod:`analyzer.calibrate` because the weighed step reads
the published volumes from the database (:mod:`storage.queries`), and the reference step the
stored frames, and only ``app`` may import both the analyzer and storage
(docs/architecture.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sqal.errors import ConfigError
from sqal.settings import load_settings


def calibrate_command(
    target: Annotated[str, typer.Argument(help="LINE/DEVICE")],
    step: Annotated[str | None, typer.Option("--step", help="empty, dark or white.")] = None,
    colour_chart: Annotated[
        Path | None,
        typer.Option(
            "--colour-chart", help="Fit the colour matrix from a chart file (patch bc + XYZ)."
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            help="Fit the mass model from weighed trays: a CSV of sample_id,mass_g "
            "[,device_id] with a header, joined with the volumes stored for them (--db).",
        ),
    ] = None,
    rechecks: Annotated[
        bool,
        typer.Option(
            "--rechecks",
            help="Also take the masses operators measured when re-checking HOLD trays at the "
            "station as weighed trays (with --weights FILE, or alone); read from --db.",
        ),
    ] = False,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="Fit the line's product prior from a batch of known-good trays: a CSV with "
            "a sample_id column [and device_id] and a header; their stored frames (--db) are "
            "re-scored with the device's current config.",
        ),
    ] = None,
    frames: Annotated[
        int,
        typer.Option("--frames", min=20, help="Frames to capture (100 for a good d0 map)."),
    ] = 20,
    rho_white: Annotated[
        str,
        typer.Option("--rho-white", help="White tile reflectance: one value or ten (F1..NIR)."),
    ] = "0.97",
    tile_height_mm: Annotated[
        float | None,
        typer.Option(
            "--tile-height-mm",
            min=1.0,
            help="With --step white: the tile's top above the tray base, from the fixture's "
            "spec; measures the ToF range's slope (after --step empty).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the frames.")
    ] = 120.0,
    yes: Annotated[bool, typer.Option("--yes", help="Do not wait for Enter.")] = False,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="DSN",
            help="With --weights or --reference: PostgreSQL DSN of the stored results and "
            "frames [env SQAL_DB].",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="With --weights or --reference: fit and print, publish nothing."
        ),
    ] = False,
    broker: Annotated[
        str | None, typer.Option("--broker", help="MQTT broker URL [env SQAL_BROKER].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Capture a calibration fixture, compute its reference and publish the device's new config.

    --weights fits the line's mass model instead, on at least 30 trays weighed on a scale;
    --reference the line's product prior, on at least 30 trays known to be good.
    """
    from analyzer.calibrate import ask, calibrate, calibrate_colour, parse_rho_white
    from sqal.devices import Target

    settings = load_settings(broker=broker, db=db)
    dev = Target.parse(target)
    weighed = weights is not None or rechecks
    if sum((step is not None, colour_chart is not None, weighed, reference is not None)) != 1:
        raise ConfigError(
            "give exactly one of --step, --colour-chart, --weights (and/or --rechecks) and "
            "--reference"
        )
    if not weighed and reference is None and (db is not None or dry_run):
        raise ConfigError("--db and --dry-run go with --weights, --rechecks or --reference")
    if weighed:
        dsn = settings.db.get_secret_value()
        _weighed(settings.broker, dsn, dev, weights, rechecks, dry_run, as_json)
        return
    if reference is not None:
        dsn = settings.db.get_secret_value()
        _reference(settings.broker, dsn, dev, reference, dry_run, as_json)
        return
    if colour_chart is not None:
        _, result = calibrate_colour(settings.broker, dev, colour_chart)
        typer.echo(json.dumps(result) if as_json else (
            f"calibration {result['calibration_id']} published for {target}: colour matrix "
            f"from {result['patches']} patches, held-out mean ΔE*ab {result['held_out_de']:.2f} "
            f"(fitted {result['fitted_de']:.2f})"))  # fmt: skip
        return
    if step not in ("empty", "dark", "white"):
        raise ConfigError(f"--step {step!r}: must be empty, dark or white")
    rho = parse_rho_white(rho_white)

    def progress(c: Any) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\rcapturing: {len(c.tof)} ToF, {len(c.spectral)} spectral\x1b[K")

    def confirm(prompt: str) -> None:
        if yes:
            sys.stderr.write(f"{prompt}\n")
        else:
            ask(prompt)

    if tile_height_mm is not None and step != "white":
        raise ConfigError("--tile-height-mm goes with --step white")
    _, summary = calibrate(settings.broker, dev, step, frames, rho, timeout,  # type: ignore[arg-type]
                           confirm, progress, tile_height_mm)  # fmt: skip
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if as_json:
        typer.echo(json.dumps(summary))
        return
    lines = [f"calibration {summary['calibration_id']} published for {target} ({step})"]
    if step == "empty":
        d0, share, drift = summary["d0_mm"], summary["valid_share"], summary["drift"]
        lines.append(f"d0 {d0:.1f} mm, ROI readings valid {share:.0%}, spread {drift:.2f}x noise")
    else:
        lines.append(f"basic counts {summary['basic_counts']}")
        peak, cv = summary["peak_fs"], summary["max_cv"]
        lines.append(f"peak {peak:.0%} of full scale, max CV {cv:.1%}")
        if "z_cal_mm" in summary:
            lines.append(f"z_cal {summary['z_cal_mm']:.1f} mm")
    typer.echo("\n".join(lines))


FORM_NAMES = {"origin": "through origin", "line": "line", "line+v23": "line + V^⅔"}


def _weighed(
    broker: str,
    dsn: str,
    dev: Any,
    path: Path | None,
    rechecks: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """``--weights``/``--rechecks``: join the masses with the stored volumes, fit, publish."""
    from analyzer.calibrate import Weighings, calibrate_weighed, load_weights
    from storage.queries import published_volumes, rechecked_masses

    weighings = load_weights(path, dev.device) if path is not None else Weighings({})
    source = path.name if path is not None else "the station's re-checks"
    if rechecks:
        rechecked = rechecked_masses(dsn, dev.line, dev.device)
        # The scale's file wins over a mass typed in at the line for the same tray.
        weighings = Weighings({**rechecked, **weighings.mass_g}, weighings.other_devices)
        if path is not None:
            source = f"{path.name} and {len(rechecked)} re-checks"
    if not weighings.mass_g:
        where = f"--weights {path}" if path is not None else "--rechecks"
        raise ConfigError(f"{where}: no tray of {dev.line}/{dev.device}")
    stored = published_volumes(dsn, dev.line, dev.device, list(weighings.mass_g))
    published = {k: (v.volume_mm3, v.profile) for k, v in stored.items()}
    _, s = calibrate_weighed(broker, dev, weighings, published, dry_run)
    if as_json:
        typer.echo(json.dumps(s))
        return
    typer.echo(format_weighed(s, f"{dev.line}/{dev.device}", source))


def format_weighed(s: dict[str, Any], target: str, source: str) -> str:
    """The weighed step's report: the join, the model, each form's leave-one-out σ and bias."""
    unmatched = [
        (len(s[key]), label, s[key])
        for key, label in (("not_found", "not found"), ("no_volume", "without a volume"),
                           ("other_profile", "scored with another profile"))
        if s[key]
    ]  # fmt: skip
    lines = [f"{s['weighed']} trays weighed in {source}, {s['matched']} matched {target}'s results"]
    if s["other_devices"]:
        rows = "row" if s["other_devices"] == 1 else "rows"
        lines[0] += f" ({s['other_devices']} {rows} of other devices passed over)"
    for n, label, ids in unmatched:
        shown = ", ".join(ids[:10]) + (", …" if n > 10 else "")
        lines.append(f"  {n} {label}: {shown}")
    m = s["mass_model"]
    terms = [] if s["form"] == "origin" else [(m["a_g"], ".1f", "g")]
    terms.append((m["b_g_per_cm3"], ".4f", "g/cm³·V"))
    if s["form"] == "line+v23":
        terms.append((m["c_g_per_cm2"], ".3f", "g/cm²·V^⅔"))
    formula = f"{'−' if terms[0][0] < 0 else ''}{abs(terms[0][0]):{terms[0][1]}} {terms[0][2]}"
    for x, f, unit in terms[1:]:
        formula += f" {'−' if x < 0 else '+'} {abs(x):{f}} {unit}"
    lines.append(f"model ({s['reason']}): m = {formula}, on {m['n']} trays")
    lines.append(f"leave-one-out σ {m['sigma_g']:.2f} g")
    lines.append("form              LOO σ      bias of the light / middle / heavy third by volume")
    for c in s["candidates"]:
        bias = " / ".join(f"{b:+.1f}" for b in c["tercile_bias_g"])
        mark = "  <- chosen" if c["form"] == s["form"] else ""
        lines.append(f"{FORM_NAMES[c['form']]:<16} {c['loo_sigma_g']:6.2f} g   {bias} g{mark}")
    if s["published"]:
        lines.append(f"calibration {s['calibration_id']} published for {target}")
    else:
        lines.append("dry run: nothing published")
    return "\n".join(lines)


def _reference(broker: str, dsn: str, dev: Any, path: Path, dry_run: bool, as_json: bool) -> None:
    """``--reference``: re-score the listed trays' stored frames, fit the prior, publish, report."""
    from analyzer.reference import calibrate_reference, load_reference_ids
    from storage.queries import stored_frames

    listed = load_reference_ids(path, dev.device)
    if not listed.sample_ids:
        raise ConfigError(f"--reference {path}: no tray of {dev.line}/{dev.device}")
    frames = stored_frames(dsn, dev.line, dev.device, listed.sample_ids)
    _, s = calibrate_reference(
        broker, dev, listed, frames.tof, frames.spectral, frames.weights, dry_run
    )
    if as_json:
        typer.echo(json.dumps(s))
        return
    typer.echo(format_reference(s, f"{dev.line}/{dev.device}", path.name))


UNMATCHED = (
    ("not_found", "not found"),
    ("only_tof", "with only a ToF frame"),
    ("only_spectral", "with only a spectral frame"),
    ("unscored", "with both frames, one of which did not score (e.g. another ToF layout)"),
)
"""The reference file's ids the prior was not fitted on: summary key and label."""


def _ids(n: int, label: str, ids: list[str]) -> str:
    return f"  {n} {label}: " + ", ".join(ids[:10]) + (", …" if n > 10 else "")


def format_reference(s: dict[str, Any], target: str, source: str) -> str:
    """The reference step's report: the join, each variable's population against its noise, and
    the trays of the batch the current verdict would not pass."""
    lines = [f"{s['listed']} trays listed in {source}, {s['matched']} with both frames stored "
             f"for {target}"]  # fmt: skip
    if s["other_devices"]:
        rows = "row" if s["other_devices"] == 1 else "rows"
        lines[0] += f" ({s['other_devices']} {rows} of other devices passed over)"
    for key, label in UNMATCHED:
        if s[key]:
            lines.append(_ids(len(s[key]), label, s[key]))
    cal = s["calibration_scored_with"] or "no calibration"
    lines.append(f"product prior from {s['trays']} trays, scored with {cal}:")
    lines.append("variable              mean          sd   estimates' σ   trays")
    floored = False
    for name, v in s["variables"].items():
        noise = "—" if v["noise_sigma"] is None else f"{v['noise_sigma']:.4g}"
        if v["mean"] is None:
            lines.append(f"{name:<16} {'no prior':>21}   {noise:>12}   {v['n']:5d}")
            continue
        mark = "*" if v["floored"] else " "
        floored = floored or v["floored"]
        lines.append(
            f"{name:<16} {v['mean']:9.4g} ± {v['sd']:9.4g}{mark}  {noise:>12}   {v['n']:5d}"
        )
    if floored:
        lines.append(
            "  * narrower than its estimates' noise: the batch cannot tell by how much "
            "(sd set to a tenth of the noise)"
        )
    flagged = s["flagged"]
    if flagged:
        lines.append(
            f"{len(flagged)} of these trays the current verdict would not pass; check them "
            "before trusting the batch:"
        )
        for f in flagged[:20]:
            lines.append(f"  {f['sample_id']}  {f['decision']}  {', '.join(f['defects']) or '—'}")
        if len(flagged) > 20:
            lines.append(f"  … and {len(flagged) - 20} more (--json lists them all)")
    if s["published"]:
        lines.append(f"calibration {s['calibration_id']} published for {target}")
    else:
        lines.append("dry run: nothing published")
    return "\n".join(lines)
