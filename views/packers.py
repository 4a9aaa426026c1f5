"""The packers' rules of Directive 76/211/EEC Annex II (WELMEC 6.4) on one group of packs (pure).

A group is a lot, or a lot's share of a shift. Each pack's mass is the checkweigher's where the
result has one (``weight``), else the analyzer's estimate m̂ (``tof.mass_g``) with its σ
(``tof.sigma_mass_g``). With Qn the nominal quantity and TNE its tolerable negative error
(Annex I), T1 = Qn − TNE and T2 = Qn − 2·TNE. The Directive asks, of every batch: the mean is
not below Qn, at most 2.5 % of packs are below T1, none below T2.

The verdict, rule by rule in this order (docs/operations.md, "Lots and the packers' rules"):

fails when
  ``mean_below_qn``  the mean's 95 % interval lies wholly below Qn (upper bound < Qn);
  ``t1_share``       more than 2.5 % of the packs measured below T1;
  ``below_t2``       any pack measured below T2;
at risk when none of those, but
  ``few_packs``      fewer than 2 packs (the mean's interval is undefined);
  ``mean_unproven``  the interval reaches below Qn (lower bound < Qn);
  ``t1_near``        2.0 % or more of the packs below T1, measured or expected (within 0.5
                     percentage points of the limit);
  ``t2_expected``    0.5 packs or more expected below T2;
complies otherwise.

"Expected" counts what the measurement error hides: Σᵢ Φ((T − mᵢ)/σᵢ), the normal model of
each pack's true mass around its reading; a pack without σ counts as measured (0 or 1). The
mean's interval is x̄ ± t(0.975, n − 1)·s/√n (Student). The Quality dashboard computes the
same figures in SQL (``sqal_norm_cdf``, ``sqal_t975``: migration 0011) with
:func:`verdict_sql`'s rules; ``tests/test_packers_rules.py`` holds both to hand-computed lots.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr
from scipy.stats import t as student_t

from sqal.profiles import load_profile, profile_names, tne_g
from storage.queries import PackGroup

F64 = NDArray[np.float64]

T1_SHARE_MAX = 0.025
"""Directive 76/211/EEC Annex II 2.2: at most 2.5 % of the packs below Qn − TNE."""
T1_MARGIN = 0.005
"""At risk within 0.5 percentage points of the 2.5 % limit [D]."""
T2_EXPECTED_MAX = 0.5
"""At risk when half a pack or more is expected below T2: more likely one than none [D]."""
CONFIDENCE = 0.95


class Verdict(StrEnum):
    """A group's standing under the packers' rules, worst last."""

    COMPLIES = "complies"
    AT_RISK = "at risk"
    FAILS = "fails"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule that decides a verdict: its code, the verdict it gives, what it says."""

    code: str
    verdict: Verdict
    text: str


RULES: tuple[Rule, ...] = (
    Rule("mean_below_qn", Verdict.FAILS, "the mean is below Qn (95 % upper bound < Qn)"),
    Rule("t1_share", Verdict.FAILS, "more than 2.5 % of packs below T1 = Qn − TNE"),
    Rule("below_t2", Verdict.FAILS, "a pack below T2 = Qn − 2·TNE"),
    Rule("few_packs", Verdict.AT_RISK, "fewer than 2 packs: the mean's interval is undefined"),
    Rule("mean_unproven", Verdict.AT_RISK, "the mean may be below Qn (95 % lower bound < Qn)"),
    Rule("t1_near", Verdict.AT_RISK, "2.0 % or more of packs below T1, measured or expected"),
    Rule("t2_expected", Verdict.AT_RISK, "0.5 packs or more expected below T2"),
)
"""The rules in the order they are checked; the first broken one decides."""
COMPLIES_TEXT = "every rule met"
_BY_CODE = {r.code: r for r in RULES}


def t975(df: int) -> float:
    """Student's t quantile t(0.975, df), the 95 % interval's factor (NaN for df < 1)."""
    return float(student_t.ppf(0.975, df)) if df >= 1 else math.nan


@dataclass(frozen=True, slots=True)
class PackersRules:
    """The packers' rules' figures of one group of packs, masses in g, shares in [0, 1].

    Attributes:
        weighed: packs whose mass is the checkweigher's (the others are m̂).
        ci_low_g, ci_high_g: the mean's 95 % interval (NaN below 2 packs).
        below_t1, below_t2: packs measured below T1, T2.
        expected_below_t1, expected_below_t2: Σ P(true mass < T) from each pack's σ.
        giveaway_g, giveaway_pct: mean − Qn, and as a share of Qn in %.
        broken: the codes of every rule broken, in :data:`RULES` order.
        rule: the code of the rule that decides the verdict (``None``: complies).
    """

    qn_g: float
    tne_g: float
    n: int
    weighed: int
    mean_g: float
    sd_g: float
    ci_low_g: float
    ci_high_g: float
    below_t1: int
    expected_below_t1: float
    below_t2: int
    expected_below_t2: float
    verdict: Verdict
    rule: str | None
    broken: tuple[str, ...]

    @property
    def t1_g(self) -> float:
        return self.qn_g - self.tne_g

    @property
    def t2_g(self) -> float:
        return self.qn_g - 2 * self.tne_g

    @property
    def below_t1_share(self) -> float:
        return self.below_t1 / self.n

    @property
    def expected_below_t1_share(self) -> float:
        return self.expected_below_t1 / self.n

    @property
    def giveaway_g(self) -> float:
        return self.mean_g - self.qn_g

    @property
    def giveaway_pct(self) -> float:
        return 100 * self.giveaway_g / self.qn_g

    @property
    def rule_text(self) -> str:
        """The deciding rule in words."""
        return COMPLIES_TEXT if self.rule is None else _BY_CODE[self.rule].text

    def as_dict(self) -> dict[str, Any]:
        """The figures for ``--json``: NaN becomes ``None``, derived figures included."""
        doc: dict[str, Any] = asdict(self)
        doc |= {
            "t1_g": self.t1_g,
            "t2_g": self.t2_g,
            "below_t1_share": self.below_t1_share,
            "expected_below_t1_share": self.expected_below_t1_share,
            "giveaway_g": self.giveaway_g,
            "giveaway_pct": self.giveaway_pct,
            "verdict": self.verdict.value,
            "rule_text": self.rule_text,
            "broken": list(self.broken),
        }
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in doc.items()}  # fmt: skip


def expected_below(mass_g: F64, sigma_g: F64, limit_g: float) -> float:
    """Σᵢ P(true massᵢ < limit): Φ((limit − mᵢ)/σᵢ), or the reading's own 0/1 without a σ.

    Args:
        mass_g, sigma_g: (n,) readings and their σ (NaN or 0: unknown, taken as exact).
    """
    known = np.isfinite(sigma_g) & (sigma_g > 0)
    safe = np.where(known, sigma_g, 1.0)
    p = np.where(known, ndtr((limit_g - mass_g) / safe), (mass_g < limit_g).astype(np.float64))
    return float(p.sum())


def packers_rules(
    mass_g: F64, sigma_g: F64, qn_g: float, tne_g: float, weighed: int = 0
) -> PackersRules:
    """Judge one group of packs.

    Args:
        mass_g: (n,) each pack's mass, n ≥ 1: the checkweigher's, else m̂.
        sigma_g: (n,) its σ; NaN where unknown.
        qn_g, tne_g: the nominal quantity and its TNE.
        weighed: how many of the masses are the checkweigher's (reported, not used).

    Raises:
        ValueError: no pack, or arrays of different shapes.
    """
    m = np.asarray(mass_g, dtype=np.float64)
    s = np.asarray(sigma_g, dtype=np.float64)
    if m.ndim != 1 or m.shape != s.shape or m.size == 0:
        raise ValueError("packers_rules needs (n,) masses and σ, n ≥ 1")
    n = int(m.size)
    t1, t2 = qn_g - tne_g, qn_g - 2 * tne_g
    mean = float(m.mean())
    sd = float(m.std(ddof=1)) if n >= 2 else math.nan
    half = t975(n - 1) * sd / math.sqrt(n) if n >= 2 else math.nan
    below_t1, below_t2 = int((m < t1).sum()), int((m < t2).sum())
    exp_t1, exp_t2 = expected_below(m, s, t1), expected_below(m, s, t2)
    broken = {
        "mean_below_qn": n >= 2 and mean + half < qn_g,
        "t1_share": below_t1 > T1_SHARE_MAX * n,
        "below_t2": below_t2 > 0,
        "few_packs": n < 2,
        "mean_unproven": n >= 2 and mean - half < qn_g,
        "t1_near": max(below_t1, exp_t1) >= (T1_SHARE_MAX - T1_MARGIN) * n,
        "t2_expected": exp_t2 >= T2_EXPECTED_MAX,
    }
    codes = tuple(r.code for r in RULES if broken[r.code])
    rule = codes[0] if codes else None
    return PackersRules(
        qn_g=qn_g, tne_g=tne_g, n=n, weighed=weighed, mean_g=mean, sd_g=sd,
        ci_low_g=mean - half, ci_high_g=mean + half,
        below_t1=below_t1, expected_below_t1=exp_t1, below_t2=below_t2, expected_below_t2=exp_t2,
        verdict=Verdict.COMPLIES if rule is None else _BY_CODE[rule].verdict,
        rule=rule, broken=codes,
    )  # fmt: skip


def verdict_sql(
    n: str = "n",
    mean: str = "mean_g",
    half: str = "half_g",
    qn: str = "qn_g",
    below_t1: str = "below_t1",
    below_t2: str = "below_t2",
    exp_t1: str = "expected_below_t1",
    exp_t2: str = "expected_below_t2",
) -> tuple[str, str]:
    """SQL ``CASE`` expressions of the verdict and its deciding rule's text, over columns of
    the figures named by the arguments: :data:`RULES` in order, as :func:`packers_rules`."""
    cond = {
        "mean_below_qn": f"{n} >= 2 AND {mean} + {half} < {qn}",
        "t1_share": f"{below_t1} > {T1_SHARE_MAX} * {n}",
        "below_t2": f"{below_t2} > 0",
        "few_packs": f"{n} < 2",
        "mean_unproven": f"{n} >= 2 AND {mean} - {half} < {qn}",
        "t1_near": f"greatest({below_t1}, {exp_t1}) >= {T1_SHARE_MAX - T1_MARGIN:.3f} * {n}",
        "t2_expected": f"{exp_t2} >= {T2_EXPECTED_MAX}",
    }
    verdict = "CASE " + " ".join(f"WHEN {cond[r.code]} THEN '{r.verdict.value}'" for r in RULES)
    rule = "CASE " + " ".join(f"WHEN {cond[r.code]} THEN {_literal(r.text)}" for r in RULES)
    return (
        f"{verdict} ELSE '{Verdict.COMPLIES.value}' END",
        f"{rule} ELSE {_literal(COMPLIES_TEXT)} END",
    )


def _literal(text: str) -> str:
    """A SQL string literal of one of this module's own texts."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class GroupRules:
    """The packers' rules of one lot (``lot_id`` ``None``: packs without an open lot)."""

    lot_id: str | None
    rules: PackersRules

    def as_dict(self) -> dict[str, Any]:
        return {"lot": self.lot_id, **self.rules.as_dict()}


def profile_targets() -> dict[str, tuple[float, float]]:
    """Every profile's (Qn, TNE): the rules of packs scored without an open lot."""
    out = {}
    for name in profile_names():
        qn = load_profile(name).product.nominal_mass_g
        out[name] = (qn, tne_g(qn))
    return out


def rules_of(groups: list[PackGroup]) -> list[GroupRules]:
    """:func:`packers_rules` of each group read by :func:`storage.queries.pack_groups`."""
    out = []
    for g in groups:
        sigma = np.array([np.nan if s is None else s for s in g.sigma_g], dtype=np.float64)
        rules = packers_rules(np.asarray(g.mass_g), sigma, g.qn_g, g.tne_g, g.weighed)
        out.append(GroupRules(g.lot_id, rules))
    return out


def format_rules(groups: list[GroupRules]) -> str:
    """The rules as text, one block per group (``sqal lot rules``)."""
    blocks = []
    for g in groups:
        r = g.rules
        src = f"{r.weighed} weighed, {r.n - r.weighed} estimated (m̂)"
        blocks.append(
            "\n".join([
                f"lot {g.lot_id or '(none open)'}: {r.verdict.value.upper()} — {r.rule_text}",
                f"  packs {r.n} ({src}); Qn {r.qn_g:g} g, TNE {r.tne_g:g} g, "
                f"T1 {r.t1_g:g} g, T2 {r.t2_g:g} g",
                f"  mean {r.mean_g:.2f} g, 95 % interval {_g(r.ci_low_g)} – {_g(r.ci_high_g)} g, "
                f"sd {_g(r.sd_g)} g",
                f"  below T1: {r.below_t1} measured ({100 * r.below_t1_share:.2f} %), "
                f"{r.expected_below_t1:.2f} expected ({100 * r.expected_below_t1_share:.2f} %); "
                "limit 2.5 %",
                f"  below T2: {r.below_t2} measured, {r.expected_below_t2:.3f} expected; limit 0",
                f"  giveaway {r.giveaway_g:+.2f} g ({r.giveaway_pct:+.2f} %)",
            ])
        )  # fmt: skip
    return "\n".join(blocks)


def _g(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.2f}"
