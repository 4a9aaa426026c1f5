"""The shift report: what one line produced between two instants, as a printable PDF (and HTML).

:func:`load_shift` reads the facts through :func:`storage.queries.shift_facts` (results,
frames, status, dead letters); :func:`render_pdf` and :func:`render_html` draw them on bare
matplotlib ``Figure`` objects (no pyplot: no global figure state, no display). Counts come from
``results`` itself, not the roll-ups, so the report is exact to the second at the shift's edges.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import matplotlib as mpl
import psycopg
from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from sqal.errors import ConfigError
from sqal.profiles import profile_names
from sqal.settings import parse_aware_time
from sqal.wire import Decision, Grade
from storage.queries import (
    NO_DECISION,
    NO_DEFECT_REASON,
    ShiftDevice,
    line_seen,
    pack_groups,
    result_lines,
    shift_facts,
)
from views.boards import ProfileTarget
from views.packers import GroupRules, profile_targets, rules_of

# TrueType fonts keep the PDF's text extractable (pdftotext, copy-paste); Type 3 would not.
mpl.rcParams.update({"pdf.fonttype": 42, "font.size": 9})

GRADES = tuple(g.value for g in Grade)
GRADE_COLORS = {"A": "#2e7d32", "B": "#1565c0", "C": "#ef6c00", "REJECT": "#c62828"}
DECISIONS = tuple(d.value for d in Decision)
DECISION_COLORS = {
    "PASS": "#2e7d32",
    "HOLD": "#f9a825",
    "REJECT": "#c62828",
    NO_DECISION: "#9e9e9e",
}
A4_LANDSCAPE_IN = (11.69, 8.27)
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
    packers = rules_of(pack_groups(conn, line, profile_targets(), lot, since, until))
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


def _figures(d: ShiftData) -> Iterator[Figure]:
    """The report's pages, each an A4-landscape figure."""
    period = f"{d.since:%Y-%m-%d %H:%M} – {d.until:%Y-%m-%d %H:%M} UTC"
    fig = Figure(figsize=A4_LANDSCAPE_IN)
    lot = f" · lot {d.lot}" if d.lot else ""
    fig.suptitle(f"SQAL shift report · line {d.line_id}{lot}", fontsize=16, x=0.05, ha="left")
    score = "–" if d.mean_score is None else f"{d.mean_score:.3f}"
    lines = [
        f"Period: {period}",
        f"Trays: {d.trays}",
        f"Rejects: {d.grades['REJECT']} ({_pct(d.reject_rate)})",
        f"Mean score: {score}",
        "Grades: " + ", ".join(f"{g} {d.grades[g]}" for g in GRADES),
        "Decisions: "
        + ", ".join(f"{x} {d.decisions[x]} ({_pct(d.decision_rate(x))})" for x in DECISIONS)
        + f"; {NO_DECISION} {d.decisions[NO_DECISION]}",
        "Dead letters: " + str(sum(n for _, _, n in d.dead_letters)),
        *(s[0].upper() + s[1:] for s in not_counted_lines(d)),
        *(
            f"Packers' rules, lot {g.lot_id or '(none open)'}: {g.rules.verdict.value} "
            f"({g.rules.rule_text}); {g.rules.n} packs, mean {g.rules.mean_g:.1f} g"
            for g in d.packers
        ),
    ]
    fig.text(0.05, 0.88, "\n".join(lines), va="top", fontsize=11, linespacing=1.7)
    ax = fig.add_axes((0.55, 0.12, 0.4, 0.7))
    ax.bar(GRADES, [d.grades[g] for g in GRADES], color=[GRADE_COLORS[g] for g in GRADES])
    ax.set_title("Grade mix")
    ax.set_ylabel("trays")
    if not d.trays:
        fig.text(0.05, 0.4, "No trays in this period.", fontsize=12)
    yield fig

    fig = Figure(figsize=A4_LANDSCAPE_IN)
    top, bottom = fig.subplots(2, 1)
    fig.suptitle(f"Rejects and defects · line {d.line_id}", fontsize=14, x=0.05, ha="left")
    if d.reject_series:
        t = [b for b, _, _ in d.reject_series]
        top.bar(
            t,
            [100 * r / n for _, n, r in d.reject_series],
            width=d.bucket * 0.9,
            align="edge",
            color=GRADE_COLORS["REJECT"],
        )
    top.set_title(f"Reject rate over time (per {int(d.bucket.total_seconds() // 60)} min)")
    top.set_ylabel("% of trays")
    names = [n for n, _ in d.defects]
    counts = [c for _, c in d.defects]
    bottom.bar(names, counts, color="#6d4c41")
    bottom.set_title("Defect Pareto")
    bottom.set_ylabel("trays")
    bottom.tick_params(axis="x", labelrotation=20)
    for i, c in enumerate(counts):
        bottom.annotate(str(c), (i, c), ha="center", va="bottom")
    fig.tight_layout()
    yield fig

    yield _decisions_page(d)

    for profile, vols in d.volumes_cm3.items():
        fig = Figure(figsize=A4_LANDSCAPE_IN)
        ax = fig.subplots()
        ax.hist(vols, bins=40, color="#78909c")
        ax.set_title(f"Volume distribution vs target · {profile} · {len(vols)} trays")
        ax.set_xlabel("volume (cm³)")
        ax.set_ylabel("trays")
        target = d.targets.get(profile)
        if target is not None:
            # TNE of 76/211/EEC, in volume through the profile's mass model (docs/domain.md §2)
            for mass, label, color in (
                (target.qn_g, "Qn", "green"),
                (target.qn_g - target.tne_g, "Qn − TNE", "orange"),
                (target.qn_g - 2 * target.tne_g, "Qn − 2·TNE", "red"),
            ):
                v = target.volume_cm3(mass)
                ax.axvline(v, color=color, linestyle="--")
                ax.annotate(
                    f"{label} {v:.0f} cm³",
                    (v, 0.95),
                    xycoords=("data", "axes fraction"),
                    rotation=90,
                    ha="right",
                    va="top",
                    color=color,
                )
        yield fig

    fig = Figure(figsize=A4_LANDSCAPE_IN)
    fig.suptitle(f"Devices and dead letters · line {d.line_id}", fontsize=14, x=0.05, ha="left")
    ax = fig.add_axes((0.05, 0.45, 0.9, 0.45))
    ax.axis("off")
    ax.set_title("Per device")
    rows = [
        [
            r.device_id,
            str(r.trays),
            *map(str, r.grades),
            _pct(r.grades[3] / r.trays if r.trays else None),
            "–" if r.mean_score is None else f"{r.mean_score:.3f}",
            str(r.missing_frames),
            r.state,
        ]
        for r in d.devices
    ]
    head = [
        "device",
        "trays",
        "A",
        "B",
        "C",
        "REJECT",
        "reject rate",
        "mean score",
        "missing ToF frames",
        "status at end",
    ]
    if rows:
        _table(ax, rows, head)
    ax = fig.add_axes((0.05, 0.05, 0.9, 0.3))
    ax.axis("off")
    ax.set_title("Dead letters")
    if d.dead_letters:
        _table(ax, [[s, r, str(n)] for s, r, n in d.dead_letters], ["stage", "reason", "messages"])
    else:
        ax.text(0.5, 0.8, "None.", ha="center")
    yield fig


def _decisions_page(d: ShiftData) -> Figure:
    """Decisions of the reject gate and why trays were held."""
    fig = Figure(figsize=A4_LANDSCAPE_IN)
    fig.suptitle(f"Decisions and HOLD reasons · line {d.line_id}", fontsize=14, x=0.05, ha="left")
    ax = fig.add_axes((0.06, 0.3, 0.4, 0.55))
    names = [*DECISIONS, NO_DECISION]
    counts = [d.decisions[x] for x in names]
    ax.bar(names, counts, color=[DECISION_COLORS[x] for x in names])
    for i, c in enumerate(counts):
        ax.annotate(str(c), (i, c), ha="center", va="bottom")
    ax.set_title("Decisions")
    ax.set_ylabel("trays")
    rates = ", ".join(f"{x} {_pct(d.decision_rate(x))}" for x in DECISIONS)
    fig.text(
        0.06,
        0.2,
        f"Of {d.decided} trays with a decision: {rates}.\n"
        f"{NO_DECISION}: {d.decisions[NO_DECISION]} trays scored by analyzers before 2026-12, "
        "which published no decision;\nthey count in the grades and trays, apart from the "
        "decision rates, and are not dropped.",
        va="top",
        fontsize=10,
        linespacing=1.6,
    )
    ax = fig.add_axes((0.55, 0.1, 0.4, 0.75))
    ax.axis("off")
    ax.set_title("HOLD reasons (the defect code of largest probability)")
    holds = d.decisions["HOLD"]
    if d.hold_reasons:
        rows = [[r, str(n), _pct(n / holds if holds else None)] for r, n in d.hold_reasons]
        _table(ax, rows, ["reason", "held trays", "of HOLDs"])
        ax.text(
            0.5,
            0.0,
            "A tray whose top codes tie counts under each.\n"
            f"{NO_DEFECT_REASON}: no defect code reached 0.01; the score came near REJECT.",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    else:
        ax.text(0.5, 0.8, "No HOLD.", ha="center")
    return fig


def _table(ax: Axes, rows: list[list[str]], head: list[str]) -> None:
    t = ax.table(cellText=rows, colLabels=head, loc="upper center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(10)
    t.scale(1, 1.6)


def render_pdf(d: ShiftData, path: Path) -> None:
    """Write the report as a multi-page PDF."""
    with PdfPages(path, metadata={"Title": f"SQAL shift report, line {d.line_id}"}) as pdf:
        for fig in _figures(d):
            pdf.savefig(fig)


def render_html(d: ShiftData, path: Path) -> None:
    """Write the report as one self-contained HTML page (figures inlined as SVG data)."""
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>SQAL shift report, line "
        f"{html.escape(d.line_id)}</title><body style='font-family:sans-serif'>"
    ]
    for fig in _figures(d):
        buf = io.BytesIO()
        fig.savefig(buf, format="svg")
        data = base64.b64encode(buf.getvalue()).decode()
        parts.append(f"<img style='width:100%' src='data:image/svg+xml;base64,{data}'>")
    parts.append("</body>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_report(d: ShiftData, out: Path, as_html: bool) -> list[Path]:
    """The PDF at ``out``, and the HTML beside it when asked; the paths written."""
    try:
        render_pdf(d, out)
        written = [out]
        if as_html:
            render_html(d, out.with_suffix(".html"))
            written.append(out.with_suffix(".html"))
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write ({exc.strerror})") from None
    return written
