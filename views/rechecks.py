"""The verdict against the operators' re-checks: the plant's own truth (issue #20), pure.

A re-check says what a person found when looking at a tray by hand: ``accept`` (ship it) or
``reject`` (bin it). Set against the decision the analyzer published for the same tray, and
its grade, the re-checks give the confusion table ``sqal eval --rechecks`` prints and the
station's quality page shows. Only the latest answer per tray counts (a correction replaces
an earlier answer). Rates carry Wilson 95 % intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqal.stats import wilson

DECISIONS = ("PASS", "HOLD", "REJECT")
ANSWERS = ("accept", "reject")


@dataclass(frozen=True)
class Share:
    k: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def ci(self) -> tuple[float, float] | None:
        return wilson(self.k, self.n)

    def doc(self) -> dict[str, Any]:
        return {"k": self.k, "n": self.n, "rate": self.rate, "ci95": self.ci}


@dataclass(frozen=True)
class RecheckReport:
    """Attributes:
    table: decision → answer → trays (the latest answer of each tray).
    rejected_on_recheck: per decision, the share of its trays the operators binned.
    agreement: trays whose grade said REJECT exactly when the operator rejected.
    mass: re-checks with a measured mass and a published one: their mean and σ of difference.
    """

    trays: int
    table: dict[str, dict[str, int]]
    rejected_on_recheck: dict[str, Share]
    agreement: Share
    mass_n: int = 0
    mass_bias_g: float | None = None
    mass_sd_g: float | None = None
    lines: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "trays": self.trays,
            "table": self.table,
            "rejected_on_recheck": {d: s.doc() for d, s in self.rejected_on_recheck.items()},
            "agreement": self.agreement.doc(),
            "mass": {"n": self.mass_n, "bias_g": self.mass_bias_g, "sd_g": self.mass_sd_g},
            "lines": self.lines,
        }


def evaluate_rechecks(rows: Iterable[Mapping[str, Any]]) -> RecheckReport:
    """The report of re-check rows.

    Args:
        rows: each with ``line_id``, ``device_id``, ``sample_id``, ``result_ts``, ``ts`` (when
            answered), ``decision`` (the result's), ``answer``, optionally ``final_grade``,
            ``mass_g`` (measured) and ``tof_mass_g`` (published).
    """
    latest: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for r in rows:
        key = (r["line_id"], r["device_id"], r["sample_id"], r["result_ts"])
        if key not in latest or r["ts"] > latest[key]["ts"]:
            latest[key] = r
    table = {d: dict.fromkeys(ANSWERS, 0) for d in DECISIONS}
    agree = graded = 0
    diffs: list[float] = []
    for r in latest.values():
        if r["decision"] in table and r["answer"] in ANSWERS:
            table[r["decision"]][r["answer"]] += 1
        grade = r.get("final_grade")
        if grade is not None:
            graded += 1
            agree += (grade == "REJECT") == (r["answer"] == "reject")
        measured, published = r.get("mass_g"), r.get("tof_mass_g")
        if measured is not None and published is not None:
            diffs.append(float(published) - float(measured))
    rejected = {d: Share(t["reject"], t["accept"] + t["reject"]) for d, t in table.items()}
    bias = sum(diffs) / len(diffs) if diffs else None
    sd = (
        math.sqrt(sum((x - bias) ** 2 for x in diffs) / (len(diffs) - 1))
        if bias is not None and len(diffs) > 1
        else None
    )
    return RecheckReport(
        trays=len(latest),
        table=table,
        rejected_on_recheck=rejected,
        agreement=Share(agree, graded),
        mass_n=len(diffs),
        mass_bias_g=bias,
        mass_sd_g=sd,
        lines=sorted({str(k[0]) for k in latest}),
    )


def _pct(s: Share) -> str:
    if s.rate is None:
        return "—"
    lo, hi = s.ci or (0.0, 0.0)
    return f"{100 * s.rate:5.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def format_recheck_report(rep: RecheckReport) -> str:
    """The report as ``sqal eval --rechecks`` prints it."""
    if rep.trays == 0:
        return "no re-checked tray in the database (the station's HOLD queue records them)"
    lines = [
        f"re-checked trays: {rep.trays} (lines {', '.join(rep.lines)}; the latest answer each)",
        "",
        f"{'decision':<10}{'accept':>8}{'reject':>8}   binned on re-check (Wilson 95 %)",
    ]
    for d in DECISIONS:
        t = rep.table[d]
        lines.append(
            f"{d:<10}{t['accept']:>8}{t['reject']:>8}   {_pct(rep.rejected_on_recheck[d])}"
        )
    lines += ["", f"grade agrees with the re-check (REJECT ⇔ rejected): {_pct(rep.agreement)}"]
    if rep.mass_n:
        sd = f", σ {rep.mass_sd_g:.1f} g" if rep.mass_sd_g is not None else ""
        lines.append(
            f"published mass − measured: mean {rep.mass_bias_g:+.1f} g{sd} ({rep.mass_n} trays)"
        )
    return "\n".join(lines)
