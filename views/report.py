"""The shift report: what one line produced between two instants, as a printable PDF (and HTML).

:func:`load_shift` reads the facts through :func:`storage.queries.shift_facts` (results,
frames, status, dead letters); :func:`render_pdf` and :func:`render_html` draw them on bare
matplotlib ``Figure`` objects (no pyplot: no global figure state, no display). Counts come from
``results`` itself, not the roll-ups, so the report is exact to the second at the shift's edges.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

import numpy as np
import psycopg
from numpy.typing import NDArray

from sqal import __version__
from sqal.errors import ConfigError
from sqal.profiles import load_profile, profile_names
from sqal.settings import parse_aware_time
from sqal.wire import Decision, Grade
from storage.queries import (
    NO_DECISION,
    NO_DEFECT_REASON,
    PackGroup,
    ShiftDevice,
    line_seen,
    pack_groups,
    result_lines,
    shift_facts,
)
from storage.shift import (
    TRAY_COLUMNS,
    CalibrationUse,
    calibrations_used,
    dead_letters_by_device,
    offline_seconds,
    trays,
)
from views import render
from views.boards import ProfileTarget
from views.packers import RULES as PACKERS_RULES
from views.packers import GroupRules, profile_targets, rules_of
from views.spc import RULES, Subgroups, capability, p_chart, western_electric, xbar_s_limits

GRADES = tuple(g.value for g in Grade)
GRADE_COLORS = {"A": "#2e7d32", "B": "#1565c0", "C": "#ef6c00", "REJECT": "#c62828"}
DECISIONS = tuple(d.value for d in Decision)
DECISION_COLORS = {
    "PASS": "#2e7d32",
    "HOLD": "#f9a825",
    "REJECT": "#c62828",
    NO_DECISION: "#9e9e9e",
}
LINES_SHOWN = 10
"""Known lines an unknown ``--line`` error lists."""


@dataclass(frozen=True, slots=True)
class ShiftData:
    """Everything the report shows, read once from the database.

    Attributes:
        reject_series: (bucket start, trays, rejects) per ``bucket``.
        volumes_cm3: per profile, the ToF volumes of its trays.
        dead_letters: (stage, reason, count), most frequent first.
        decisions: trays per decision (PASS, HOLD, REJECT) and, under ``no decision``, those of
            analyzers before 2026-12 that published none.
        hold_reasons: (reason, held trays), most frequent first; a tray whose top defect
            probabilities tie counts under each.
        lot: the lot reported on (``None``: every tray of the line in the period).
        not_counted: trays that are no product (calibration, maintenance): mode → (trays,
            devices). Every other figure counts production trays only.
        packers: the packers' rules of each lot in the period (Directive 76/211/EEC).
        packs: the masses they are computed on, lot by lot in arrival order.
    """

    line_id: str
    since: datetime
    until: datetime
    bucket: timedelta
    grades: dict[str, int]
    mean_score: float | None
    reject_series: list[tuple[datetime, int, int]]
    defects: list[tuple[str, int]]
    volumes_cm3: dict[str, list[float]]
    targets: dict[str, ProfileTarget]
    devices: list[ShiftDevice]
    dead_letters: list[tuple[str, str, int]]
    decisions: dict[str, int]
    hold_reasons: list[tuple[str, int]]
    lot: str | None = None
    not_counted: dict[str, tuple[int, int]] = field(default_factory=dict)
    packers: list[GroupRules] = field(default_factory=list)
    packs: list[PackGroup] = field(default_factory=list)

    @property
    def trays(self) -> int:
        return sum(self.grades.values())

    @property
    def decided(self) -> int:
        """Trays with a decision: the denominator of the decision rates."""
        return sum(self.decisions[d] for d in DECISIONS)

    def decision_rate(self, decision: str) -> float | None:
        """The share of ``decision`` among the trays with one; ``None`` without any."""
        return self.decisions[decision] / self.decided if self.decided else None

    @property
    def reject_rate(self) -> float | None:
        return self.grades["REJECT"] / self.trays if self.trays else None


def parse_instant(text: str, now: datetime, flag: str) -> datetime:
    """``8h`` (that long before ``now``) or an ISO 8601 time with a zone.

    Raises:
        ConfigError: neither form, or a time without a UTC offset.
    """
    from storage.retention import parse_age

    if text and text[-1] in "smhdw" and text[:-1].isdigit():
        age = parse_age(text, flag)
        try:
            return now - age
        except OverflowError:  # --until near year 1, then an age before it
            raise ConfigError(
                f"{flag} {text!r} reaches before year 1 from {now.isoformat()}; give a shorter age"
            ) from None
    return parse_aware_time(text, flag, "an age like 8h or a time like 2026-03-02T06:00:00+00:00")


def bucket_for(span: timedelta) -> timedelta:
    """About 24 bars over the shift, in whole 5-minute steps (at least 5 minutes)."""
    step = 300
    return timedelta(seconds=max(step, round(span.total_seconds() / 24 / step) * step))


def load_shift(
    conn: psycopg.Connection,
    line: str,
    since: datetime,
    until: datetime,
    lot: str | None = None,
) -> ShiftData:
    """Read a line's shift (of one lot, when ``lot`` is given) from the database.

    A line the database has never heard of is an error (a mistyped id would otherwise give a
    well-formed, empty report); a known line without trays in the period renders as such.

    Raises:
        ConfigError: ``since`` is not before ``until``, or the database holds nothing of
            ``line``.
        StorageError: a query failed.
    """
    if since >= until:
        raise ConfigError(f"--since {since.isoformat()} must be before --until {until.isoformat()}")
    if not line_seen(conn, line):
        lines = result_lines(conn, LINES_SHOWN + 1)
        shown = ", ".join(lines[:LINES_SHOWN]) + (", …" if len(lines) > LINES_SHOWN else "")
        there = f"lines with results: {shown}" if lines else "it holds no results yet"
        raise ConfigError(
            f"--line {line}: the database has no result, frame or status of that line; {there}"
        )
    bucket = bucket_for(until - since)
    f = shift_facts(conn, line, since, until, bucket, lot)
    packs = pack_groups(conn, line, profile_targets(), lot, since, until)
    packers = rules_of(packs)
    known = set(profile_names())
    targets = {p: ProfileTarget.load(p) for p in f.volumes_cm3 if p in known}
    return ShiftData(
        line,
        since,
        until,
        bucket,
        f.grades,
        f.mean_score,
        f.reject_series,
        f.defects,
        f.volumes_cm3,
        targets,
        f.devices,
        f.dead_letters,
        f.decisions,
        f.hold_reasons,
        lot,
        f.not_counted,
        packers,
        packs,
    )


def not_counted_lines(d: ShiftData) -> list[str]:
    """ "calibration runs: 43 trays on 1 device, not counted", one line per mode."""
    names = {"calibration": "calibration runs", "maintenance": "maintenance"}
    return [
        f"{names.get(mode, mode)}: {n} trays on {k} device{'s' if k != 1 else ''}, not counted"
        for mode, (n, k) in sorted(d.not_counted.items())
    ]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


DEFECT_NAMES: dict[str, str] = {
    "underfill": "Underfill (mass below the limit)",
    "overfill": "Overfill (giveaway, or product touching the lid)",
    "surface_irregular": "Irregular surface (dents, fragments)",
    "tilted": "Tilted or off-centre product",
    "zones_invalid": "Height sensor blind on part of the tray",
    "oxidation": "Oxidation (browning)",
    "discoloration": "Discoloration (blood spot, off colour)",
    "fat_yellowing": "Fat yellowing",
    "spectral_saturated": "Colour sensor overexposed",
    "missing_tof": "No height frame",
    "missing_spectral": "No colour frame",
    "missing_weight": "No checkweigher weight",
    "low_confidence": "Sensors unsure",
    "uncalibrated": "Colour sensor not calibrated",
    NO_DEFECT_REASON: "Score near REJECT, no single defect",
}
"""Defect codes as a quality manager reads them (docs/domain.md §2, §4, §5)."""


def defect_name(code: str) -> str:
    return DEFECT_NAMES.get(code, code.replace("_", " ").capitalize())


@dataclass(frozen=True, slots=True)
class Record:
    """The record sections read beside the shift: calibrations used, offline time, and dead
    letters per device (:mod:`storage.shift`)."""

    calibrations: list[CalibrationUse]
    offline_s: dict[str, float]
    dead_by_device: dict[str, int]


def load_record(conn: psycopg.Connection, line: str, since: datetime, until: datetime) -> Record:
    """Read the report's record sections of a line's period.

    Raises:
        StorageError: a query failed.
    """
    return Record(
        calibrations_used(conn, line, since, until),
        offline_seconds(conn, line, since, until),
        dead_letters_by_device(conn, line, since, until),
    )


@dataclass(frozen=True, slots=True)
class MassGroup:
    """One lot's production packs for the mass, rules and SPC sections, in arrival order.

    Attributes:
        lot: the lot id; ``None`` for trays scored while no lot was open.
        masses_g: each pack's mass (the checkweigher's where there is one, else m̂).
        weighed: how many of them are the checkweigher's.
        usl_g: the upper limit of capability: Qn plus the profile's giveaway allowance.
        rules: the packers' rules row (already worded), when computed.
    """

    lot: str | None
    qn_g: float
    tne_g: float
    usl_g: float
    masses_g: list[float]
    weighed: int
    rules: dict[str, str] | None = None


def mass_groups(d: ShiftData) -> list[MassGroup]:
    """The report's mass, rules and SPC sections of each lot in ``d``: its packs' masses, the
    packers' rules worded, and the giveaway limit of its product (Qn × (1 + the profile's
    ``overfill_minor``), the profile of the same Qn among the shift's)."""
    allowance = {t.qn_g: load_profile(name).tof.overfill_minor for name, t in d.targets.items()}
    out = []
    for pack, rules in zip(d.packs, d.packers, strict=True):
        r = rules.rules
        usl = pack.qn_g * (1.0 + allowance.get(pack.qn_g, DEFAULT_GIVEAWAY))
        ci = "–" if not math.isfinite(r.ci_low_g) else f"[{r.ci_low_g:.1f}, {r.ci_high_g:.1f}]"
        row = {
            "qn": f"{r.qn_g:g} g",
            "n": str(r.n),
            "weighed": " ⚖" if r.weighed == r.n else (f" ({r.weighed} ⚖)" if r.weighed else ""),
            "mean": f"{r.mean_g:.1f} g {ci}",
            "sd": "–" if not math.isfinite(r.sd_g) else f"{r.sd_g:.1f} g",
            "t1": f"{r.below_t1} = {100 * r.below_t1_share:.1f} % ({r.expected_below_t1:.1f})",
            "t2": f"{r.below_t2} ({r.expected_below_t2:.2f})",
            "giveaway": f"{r.giveaway_g:+.1f} g ({r.giveaway_pct:+.1f} %)",
            "verdict": r.verdict.value,
            "css": r.verdict.value.replace(" ", "-"),
            "rule": r.rule_text
            + "".join(
                f"; also {RULES_BY_CODE[c].text}"
                for c in r.broken
                if c != r.rule and RULES_BY_CODE[c].verdict is r.verdict
            ),
        }
        out.append(
            MassGroup(
                rules.lot_id, pack.qn_g, pack.tne_g, usl, list(pack.mass_g), pack.weighed, row
            )
        )
    return out


RULES_BY_CODE = {rule.code: rule for rule in PACKERS_RULES}
"""The packers' rules by code: a verdict row names every rule broken at its verdict's level."""

DEFAULT_GIVEAWAY = 0.12
"""The giveaway allowance of a lot whose Qn no shipped profile has (both ship 12 %)."""

SPC_SUBGROUP = 5
"""Trays per subgroup of the X̄ and s charts: consecutive packs, as a checkweigher's sample."""
SPC_MIN_SUBGROUPS = 4
SPC_SHOWN = 250
"""Subgroups a control chart draws: the latest ones."""
SPC_FLAGS_LISTED = 20
"""Flagged subgroups the table lists (the latest shown); the count covers them all."""


def _when(t: datetime, tz: tzinfo) -> str:
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float) -> str:
    """``0``, ``42 s``, ``20 min 05 s`` or ``2 h 03 min``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s" if s else "0"


def _mass_section(g: MassGroup) -> dict[str, object]:
    t1, t2 = g.qn_g - g.tne_g, g.qn_g - 2 * g.tne_g
    chart = render.mass_histogram(
        g.masses_g,
        [
            (g.qn_g, "Qn", "#2e7d32"),
            (round(t1, 1), "T1", "#ef6c00"),
            (round(t2, 1), "T2", "#c62828"),
        ],
    )
    source = (
        "all weighed by the checkweigher"
        if g.weighed == len(g.masses_g)
        else f"{g.weighed} weighed by the checkweigher, the rest estimated from the height map"
        if g.weighed
        else "estimated from the height map (m̂; its σ in the rules above)"
    )
    note = (
        f"{len(g.masses_g)} packs, {source}. Qn {g.qn_g:g} g, TNE {g.tne_g:g} g: T1 "
        f"{t1:g} g, T2 {t2:g} g."
    )
    return {"lot": g.lot or "(none open)", "chart": chart, "note": note}


_RULE_WORDS = {
    1: "1: beyond 3σ",
    2: "2: two of three beyond 2σ",
    3: "3: four of five beyond 1σ",
    4: "4: eight on one side",
}


def _spc_section(g: MassGroup) -> dict[str, object] | None:
    """X̄/s charts, rule flags and capability of one lot; ``None`` with too few subgroups or a
    period without spread."""
    chart = Subgroups.consecutive(np.asarray(g.masses_g), SPC_SUBGROUP)
    if chart.n.size < SPC_MIN_SUBGROUPS:
        return None
    lim = xbar_s_limits(chart, chart)  # limits from the period itself (the board: its range)
    if not lim.sigma > 0:  # no subgroup with spread: no zones to chart
        return None
    flags = western_electric(chart.mean, lim.grand_mean, lim.sigma / np.sqrt(chart.n))
    out: NDArray[np.bool_] = np.asarray(flags.any(axis=1))
    t1 = g.qn_g - g.tne_g
    cap = capability(np.asarray(g.masses_g), lim.sigma, t1, g.usl_g)
    # The charts show the latest SPC_SHOWN subgroups (a chart of thousands is a smear and takes
    # the PDF's layout tens of seconds); the rules run on every subgroup and all are counted.
    first = max(0, chart.n.size - SPC_SHOWN)
    shown = slice(first, None)
    flagged = np.flatnonzero(out)
    listed = flagged[flagged >= first][-SPC_FLAGS_LISTED:]
    scope = (
        f"the last {chart.n.size - first} of {chart.n.size} subgroups"
        if first
        else f"{chart.n.size} subgroups"
    )
    return {
        "lot": g.lot or "(none open)",
        "scope": scope,
        "xbar_chart": render.control_chart(
            chart.mean[shown].tolist(),
            lim.grand_mean,
            lim.x_lcl[shown].tolist(),
            lim.x_ucl[shown].tolist(),
            [bool(x) for x in out[shown]],
            "mean mass (g)",
            first=first + 1,
        ),
        "s_chart": render.control_chart(
            chart.sd[shown].tolist(),
            lim.s_bar,
            lim.s_lcl[shown].tolist(),
            lim.s_ucl[shown].tolist(),
            [bool(x) for x in (chart.sd > lim.s_ucl)[shown]],
            "sd (g)",
            first=first + 1,
        ),
        "cp": f"{cap.cp:.2f}",
        "cpk": f"{cap.cpk:.2f}",
        "pp": f"{cap.pp:.2f}",
        "ppk": f"{cap.ppk:.2f}",
        "limits": f"T1 {t1:g} g … giveaway limit {g.usl_g:g} g; σ within {lim.sigma:.2f} g",
        "flagged": int(flagged.size),
        "flags": [
            {"group": i + 1, "rules": ", ".join(_RULE_WORDS[r] for r in RULES if flags[i, r - 1])}
            for i in listed
        ],
    }


def report_context(
    d: ShiftData,
    record: Record,
    groups: list[MassGroup],
    tz: tzinfo,
) -> dict[str, object]:
    """Everything ``views/templates/report.html`` shows, worded and formatted."""
    now = datetime.now(UTC)
    tz_name = str(getattr(tz, "key", None) or now.astimezone(tz).tzname())
    title = f"SQAL shift report · line {d.line_id}" + (f" · lot {d.lot}" if d.lot else "")
    score = "–" if d.mean_score is None else f"{d.mean_score:.3f}"
    summary = [
        ("Trays", str(d.trays)),
        ("Rejects", f"{d.grades['REJECT']} ({_pct(d.reject_rate)})"),
        ("Mean score", score),
        (
            "Decisions",
            ", ".join(f"{x} {d.decisions[x]} ({_pct(d.decision_rate(x))})" for x in DECISIONS)
            + (
                f"; {NO_DECISION} {d.decisions[NO_DECISION]} (analyzers before 2026-12)"
                if d.decisions[NO_DECISION]
                else ""
            ),
        ),
        ("Dead letters", str(sum(n for _, _, n in d.dead_letters))),
    ]
    names = [*DECISIONS, NO_DECISION] if d.decisions[NO_DECISION] else list(DECISIONS)
    decisions = [
        {
            "name": x,
            "count": d.decisions[x],
            "rate": _pct(d.decisions[x] / d.trays if d.trays else None),
        }
        for x in names
    ]
    grades = [
        {"name": g, "count": d.grades[g], "rate": _pct(d.grades[g] / d.trays if d.trays else None)}
        for g in GRADES
    ]
    holds = d.decisions["HOLD"]
    hold_reasons = [
        {"name": defect_name(r), "count": n, "share": _pct(n / holds if holds else None)}
        for r, n in d.hold_reasons
    ]
    total_defects = sum(c for _, c in d.defects)
    pareto_rows, run = [], 0
    for code, c in sorted(d.defects, key=lambda x: -x[1]):
        run += c
        pareto_rows.append(
            {
                "name": defect_name(code),
                "count": c,
                "share": _pct(c / total_defects),
                "cumulative": _pct(run / total_defects),
            }
        )
    by_device: dict[str, list[CalibrationUse]] = {}
    for u in record.calibrations:
        by_device.setdefault(u.device_id, []).append(u)
    events = [
        f"{dev}: calibration changed to {b.calibration_id or 'none'} at {_when(b.first, tz)} "
        f"(before: {a.calibration_id or 'none'}, last used {_when(a.last, tz)})"
        for dev, uses in by_device.items()
        for a, b in itertools.pairwise(uses)
    ]
    spc = [s for g in groups if (s := _spc_section(g)) is not None]
    p_chart_svg, p_note = _p_chart(d)
    return {
        "title": title,
        "tz_name": tz_name,
        "period_local": f"{_when(d.since, tz)} – {_when(d.until, tz)}",
        "period_utc": f"{d.since:%Y-%m-%d %H:%M} – {d.until:%Y-%m-%d %H:%M} UTC",
        "generated": _when(now, tz),
        "version": __version__,
        "rules": [{"lot": g.lot or "(none open)", **g.rules} for g in groups if g.rules],
        "summary": summary,
        "not_counted": [x[0].upper() + x[1:] for x in not_counted_lines(d)],
        "calibrations": [
            {
                "device": u.device_id,
                "calibration": u.calibration_id or "none (uncalibrated)",
                "first": _when(u.first, tz),
                "last": _when(u.last, tz),
                "trays": u.trays,
            }
            for u in record.calibrations
        ],
        "calibration_events": events,
        "trays": d.trays,
        "decisions": decisions,
        "grades": grades,
        "decision_chart": render.bars(
            names, [d.decisions[x] for x in names], [DECISION_COLORS[x] for x in names], "trays"
        )
        if d.trays
        else "",
        "hold_reasons": hold_reasons,
        "pareto_rows": pareto_rows,
        "pareto_chart": render.pareto(
            [defect_name(c) for c, _ in d.defects], [n for _, n in d.defects]
        )
        if d.defects
        else "",
        "reject_chart": render.time_bars(
            [b.astimezone(tz) for b, _, _ in d.reject_series],
            [100 * r / n if n else 0.0 for _, n, r in d.reject_series],
            d.bucket.total_seconds(),
            "% rejected",
            GRADE_COLORS["REJECT"],
        )
        if d.reject_series
        else "",
        "bucket_min": int(d.bucket.total_seconds() // 60),
        "masses": [_mass_section(g) for g in groups if g.masses_g],
        "spc": spc,
        "spc_size": SPC_SUBGROUP,
        "spc_basis": f"Subgroups of {SPC_SUBGROUP} consecutive packs; limits from this period.",
        "p_chart": p_chart_svg,
        "p_note": p_note,
        "devices": [
            {
                "device": r.device_id,
                "trays": r.trays,
                "a": r.grades[0],
                "b": r.grades[1],
                "c": r.grades[2],
                "reject": r.grades[3],
                "reject_rate": _pct(r.grades[3] / r.trays if r.trays else None),
                "missing": r.missing_frames,
                "dead": record.dead_by_device.get(r.device_id, 0),
                "offline": _duration(record.offline_s.get(r.device_id, 0.0)),
                "state": r.state,
            }
            for r in d.devices
        ],
        "dead_letters": d.dead_letters,
    }


def _p_chart(d: ShiftData) -> tuple[str, str]:
    """The reject rate per time slot against the period's own rate (p chart)."""
    series = [(n, r) for _, n, r in d.reject_series if n > 0]
    if len(series) < SPC_MIN_SUBGROUPS:
        return "", ""
    n = np.array([x for x, _ in series])
    r = np.array([x for _, x in series])
    p_bar = float(r.sum() / n.sum())
    chart = p_chart(r, n, p_bar)
    svg = render.control_chart(
        (100 * chart.p).tolist(),
        100 * p_bar,
        (100 * chart.lcl).tolist(),
        (100 * chart.ucl).tolist(),
        chart.out.tolist(),
        "% rejected",
    )
    note = (
        f"p̄ {100 * p_bar:.2f} % over the period, 3σ limits per slot of "
        f"{int(d.bucket.total_seconds() // 60)} min; {int(chart.out.sum())} slot(s) out."
    )
    return svg, note


def render_html(context: dict[str, object]) -> str:
    """The report as one self-contained HTML page (charts inline as SVG)."""
    return render.page("report.html", **context)


def write_report(context: dict[str, object], out: Path, as_html: bool) -> list[Path]:
    """The PDF at ``out`` and, when asked, the same page as HTML beside it; the paths written.

    Raises:
        ConfigError: ``out`` cannot be written.
    """
    html_text = render_html(context)
    try:
        render.write_pdf(html_text, out)
        written = [out]
        if as_html:
            out.with_suffix(".html").write_text(html_text, encoding="utf-8")
            written.append(out.with_suffix(".html"))
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write ({exc.strerror})") from None
    return written


def write_trays_csv(
    conn: psycopg.Connection,
    path: Path,
    line: str,
    since: datetime,
    until: datetime,
    lot: str | None = None,
) -> Path:
    """The production trays of the report as CSV (:data:`storage.shift.TRAY_COLUMNS`; times in
    UTC, ISO 8601), streamed from the database; returns ``path``.

    Raises:
        ConfigError: ``path`` cannot be written.
        StorageError: the query failed.
    """
    try:
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(TRAY_COLUMNS)
            for row in trays(conn, line, since, until, lot):
                w.writerow(
                    x.astimezone(UTC).isoformat() if isinstance(x, datetime) else x for x in row
                )
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot write ({exc.strerror})") from None
    return path
