"""The Quality board's SPC panels (issue #19 item 4): X̄ and s charts of mass, capability, and
a p chart of the reject rate, computed in the database as :mod:`views.spc` computes them.

A subgroup is a time slot of :data:`SLOT` (``$__timeGroup``) holding the production trays of
the chosen devices, profile and lot (at least 2 of them); a tray's mass is the checkweigher's
where it has one, else m̂, as :func:`storage.queries.pack_groups` reads it.

The **baseline is the dashboard's time range**: σ̂ = mean of sᵢ/c₄(nᵢ) and X̄̄ (the trays'
mean) over the slots in range, so zooming moves the limits. The shift report takes its
limits from an earlier period instead (``views.report``). PostgreSQL has no ``lgamma``, so
c₄(n) is inlined: exact (from :func:`views.spc.c4`) for n ≤ :data:`C4_EXACT_MAX`, above it
the asymptotic series 1 − 1/4n − 7/32n² − 19/128n³, within 1.1·10⁻⁷ of c₄ there (and 1 − c₄²,
which sets the s chart's limits, within 1.1·10⁻⁵). The simpler 4(n − 1)/(4n − 3) is within
5·10⁻⁵ of c₄ for n > 25 (0.13 % at n = 5, 0.3 % at n = 3) but moves the s limits by 0.1 % at
n = 60, a 5-minute slot of three devices.
"""

from __future__ import annotations

import re
from typing import Any

from views.boards.common import sql, with_targets
from views.dashboards import (
    Board,
    PanelQuery,
    display_name,
    fixed_color,
    prop,
    series_panel,
    stat_panel,
    table_panel,
    thresholds,
)
from views.spc import c4

SLOT = "5m"
"""The subgroup: every tray of a 5-minute slot (about 20 per device at a tray every 15 s)."""
C4_EXACT_MAX = 25
"""Subgroup sizes up to this get c₄ from a table; above, the approximation (module doc)."""

_C4 = ", ".join(f"({n}, {float(c4(n)):.8f})" for n in range(2, C4_EXACT_MAX + 1))

_SUBGROUPS = (
    # the trays: mass, and the lot's Qn/TNE (the profile's for a tray without a lot)
    ",\nm AS (SELECT $__timeGroup(r.ts, {SLOT}) AS slot,\n"
    "  coalesce(r.weight_mass_g, r.tof_mass_g) AS m,\n"
    "  coalesce(l.qn_g, t.qn_g) AS qn_g, coalesce(l.tne_g, t.tne_g) AS tne_g,\n"
    "  t.overfill_minor\n"
    "  FROM results r JOIN target t USING (profile)\n"
    "  LEFT JOIN lots l ON l.line_id = r.line_id AND l.lot_id = r.lot_id\n"
    "  WHERE r.line_id = '$line' AND r.device_id IN ($device) AND r.profile = '$profile'\n"
    "    AND $__timeFilter(r.ts) AND r.mode = 'production'\n"
    "    AND ('$lot' = '(any)' OR r.lot_id = '$lot')\n"
    "    AND coalesce(r.weight_mass_g, r.tof_mass_g) IS NOT NULL),\n"
    "g AS (SELECT slot, count(*) AS n, avg(m) AS mean_g, stddev_samp(m) AS sd_g\n"
    "  FROM m GROUP BY slot HAVING count(*) >= 2),\n"
    "c4(n, c4) AS (VALUES {C4}),\n"
    "k AS (SELECT g.*, coalesce(c4.c4,\n"
    "    1 - 0.25 / g.n - 0.21875 / (g.n * g.n) - 0.1484375 / (g.n * g.n * g.n)) AS c4\n"
    "  FROM g LEFT JOIN c4 USING (n)),\n"
    # the baseline: the subgroups in range (X̄̄ weighted by size, σ̂ unbiased for unequal sizes)
    "base AS (SELECT sum(mean_g * n) / sum(n) AS centre_g, avg(sd_g / c4) AS sigma_g FROM k)"
)

# Each subgroup mean's z against the baseline, and the counts the Western Electric rules read
# over the last 3, 5 and 8 slots (views.spc.western_electric: the point completing a pattern).
_ZONES = (
    ",\nz AS (SELECT k.*, b.centre_g, b.sigma_g,\n"
    "  (k.mean_g - b.centre_g) / nullif(b.sigma_g / sqrt(k.n), 0) AS z FROM k, base b),\n"
    "w AS (SELECT z.*,\n"
    "  count(*) FILTER (WHERE z > 2) OVER w3 AS hi2,\n"
    "  count(*) FILTER (WHERE z < -2) OVER w3 AS lo2,\n"
    "  count(*) FILTER (WHERE z > 1) OVER w5 AS hi1,\n"
    "  count(*) FILTER (WHERE z < -1) OVER w5 AS lo1,\n"
    "  count(*) FILTER (WHERE z > 0) OVER w8 AS hi0,\n"
    "  count(*) FILTER (WHERE z < 0) OVER w8 AS lo0\n"
    "  FROM z WINDOW w3 AS (ORDER BY slot ROWS 2 PRECEDING),\n"
    "    w5 AS (ORDER BY slot ROWS 4 PRECEDING), w8 AS (ORDER BY slot ROWS 7 PRECEDING)),\n"
    "r AS (SELECT w.*, abs(z) > 3 AS r1,\n"
    "  (z > 2 AND hi2 >= 2) OR (z < -2 AND lo2 >= 2) AS r2,\n"
    "  (z > 1 AND hi1 >= 4) OR (z < -1 AND lo1 >= 4) AS r3,\n"
    "  hi0 = 8 OR lo0 = 8 AS r4 FROM w)"
)

_PARTS = {"SLOT": SLOT, "C4": _C4, "SUBGROUPS": _SUBGROUPS, "ZONES": _ZONES}
_PART = re.compile(r"\{(SUBGROUPS|ZONES)\}")


def _spc(text: str) -> str:
    """``text`` with ``{SUBGROUPS}`` and ``{ZONES}`` expanded, then ``{SLOT}``, ``{C4}`` and
    :func:`views.boards.common.sql`'s fragments. All are literals of this module."""
    text = _PART.sub(lambda m: _PARTS[m[1]], text)
    return sql(text.replace("{SLOT}", SLOT).replace("{C4}", _C4))


def xbar_sql(cte: str) -> str:
    """The X̄ chart: each slot's mean mass, the centre line, X̄̄ ± 3σ̂/√n, and the mean again
    (``flagged_g``) where a Western Electric rule fires."""
    return with_targets(
        cte,
        _spc(
            "{SUBGROUPS}{ZONES}\n"
            'SELECT slot AS "time", mean_g, centre_g,\n'
            "  centre_g - 3 * sigma_g / sqrt(n) AS lcl_g,\n"
            "  centre_g + 3 * sigma_g / sqrt(n) AS ucl_g,\n"
            "  CASE WHEN r1 OR r2 OR r3 OR r4 THEN mean_g END AS flagged_g\n"
            "FROM r ORDER BY 1"
        ),
    )


def subgroups_sql(cte: str) -> str:
    """Every slot of the X̄ chart, newest first: trays, mean, sd, z and the Western Electric rules
    (1-4) it breaks, blank where none."""
    return with_targets(
        cte,
        _spc(
            "{SUBGROUPS}{ZONES}\n"
            'SELECT slot AS "time", n AS trays, round(mean_g::numeric, 2) AS mean_g,\n'
            "  round(sd_g::numeric, 2) AS sd_g, round(z::numeric, 2) AS z,\n"
            "  concat_ws(', ', CASE WHEN r1 THEN '1: beyond 3σ' END,\n"
            "    CASE WHEN r2 THEN '2: two of three beyond 2σ' END,\n"
            "    CASE WHEN r3 THEN '3: four of five beyond 1σ' END,\n"
            "    CASE WHEN r4 THEN '4: eight on one side' END) AS rules\n"
            "FROM r ORDER BY 1 DESC"
        ),
    )


def s_sql(cte: str) -> str:
    """The s chart: each slot's sd, its expected value c₄(n)σ̂ and c₄(n)σ̂ ± 3σ̂√(1 − c₄(n)²)
    (the lower limit floored at 0)."""
    return with_targets(
        cte,
        _spc(
            "{SUBGROUPS}\n"
            'SELECT slot AS "time", sd_g, c4 * sigma_g AS centre_g,\n'
            "  greatest(c4 * sigma_g - 3 * sigma_g * sqrt(1 - c4 * c4), 0) AS lcl_g,\n"
            "  c4 * sigma_g + 3 * sigma_g * sqrt(1 - c4 * c4) AS ucl_g,\n"
            "  CASE WHEN sd_g > c4 * sigma_g + 3 * sigma_g * sqrt(1 - c4 * c4)\n"
            "    OR sd_g < c4 * sigma_g - 3 * sigma_g * sqrt(1 - c4 * c4) THEN sd_g END\n"
            "    AS flagged_g\n"
            "FROM k, base ORDER BY 1"
        ),
    )


def capability_sql(cte: str) -> str:
    """Cp/Cpk (σ̂ within slots) and Pp/Ppk (the trays' sd) against LSL = T1 = Qn − TNE and
    USL = Qn·(1 + the profile's ``overfill_minor``); no row when the trays mix nominal
    quantities (choose a lot)."""
    return with_targets(
        cte,
        _spc(
            "{SUBGROUPS},\n"
            "a AS (SELECT avg(m) AS mu, stddev_samp(m) AS sd_g, max(qn_g - tne_g) AS lsl,\n"
            "  max(qn_g * (1 + overfill_minor)) AS usl FROM m\n"
            "  HAVING count(*) >= 2 AND count(DISTINCT (qn_g, tne_g, overfill_minor)) = 1)\n"
            "SELECT (usl - lsl) / (6 * sigma_g) AS cp,\n"
            "  least(usl - mu, mu - lsl) / (3 * sigma_g) AS cpk,\n"
            "  (usl - lsl) / (6 * sd_g) AS pp, least(usl - mu, mu - lsl) / (3 * sd_g) AS ppk,\n"
            "  lsl AS lsl_g, usl AS usl_g, sigma_g\n"
            "FROM a, base WHERE sigma_g > 0 AND sd_g > 0"
        ),
    )


P_SQL = _spc(
    "WITH g AS (SELECT $__timeGroup(ts, {SLOT}) AS slot, count(*) AS n,\n"
    "  count(*) FILTER (WHERE final_grade = 'REJECT') AS rejects\n"
    "  FROM results WHERE {RES} AND {PROD} AND {LOT} GROUP BY 1),\n"
    "b AS (SELECT sum(rejects)::float8 / sum(n) AS p_bar FROM g),\n"
    "h AS (SELECT g.*, b.p_bar, rejects::float8 / n AS p,\n"
    "  3 * sqrt(b.p_bar * (1 - b.p_bar) / n) AS half FROM g, b)\n"
    'SELECT slot AS "time", p AS reject_rate, p_bar AS centre,\n'
    "  greatest(p_bar - half, 0) AS lcl, least(p_bar + half, 1) AS ucl,\n"
    "  CASE WHEN p > least(p_bar + half, 1) OR p < greatest(p_bar - half, 0) THEN p END\n"
    "    AS flagged\n"
    "FROM h ORDER BY 1"
)
"""The p chart: each slot's share of trays graded REJECT, p̄ over the range, p̄ ± 3√(p̄(1−p̄)/n)."""


def capability_panel() -> Any:
    """Cp, Cpk, Pp, Ppk: red below 1, orange below 1.33 (the usual "capable" bar), else green."""
    return (
        stat_panel(
            "Capability vs T1 and the giveaway limit",
            "none",
            thresholds((None, "red"), (1.0, "orange"), (1.33, "green")),
        )
        .decimals(2)
        .description(
            "Cp = (USL − LSL)/6σ̂ and Cpk = min(USL − μ, μ − LSL)/3σ̂ with σ̂ within the "
            f"{SLOT} slots (as the X̄ chart), Pp/Ppk with the trays' overall sd. LSL = T1 = "
            "Qn − TNE, USL = Qn·(1 + the profile's overfill_minor). Empty when the trays mix "
            "nominal quantities: choose a lot."
        )
    )


def _limit_lines(p: Any, centre: str, lcl: str, ucl: str, flagged: str) -> Any:
    """Limits dashed red, the centre line green, flagged points as red dots without a line."""
    dashed = prop("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})
    return (
        p.override_by_name(centre, [*fixed_color("green"), *display_name("centre")])
        .override_by_name(lcl, [*fixed_color("red"), dashed, *display_name("LCL")])
        .override_by_name(ucl, [*fixed_color("red"), dashed, *display_name("UCL")])
        .override_by_name(
            flagged,
            [
                *fixed_color("red"),
                *display_name("rule broken"),
                prop("custom.drawStyle", "points"),
                prop("custom.pointSize", 9),
            ],
        )
    )


def add_spc_panels(b: Board, cte: str) -> None:
    """The SPC row of the Quality board: X̄ and s charts, rule breaks, capability, p chart."""
    q = PanelQuery
    basis = (
        f"Subgroups: the trays of each {SLOT} slot (mass: the checkweigher's, else m̂). The "
        "limits' baseline is the dashboard's time range (σ̂ = mean of sᵢ/c₄(nᵢ)), not an "
        "earlier period as in the shift report: zooming in moves them."
    )
    b.add(
        _limit_lines(
            series_panel("X̄ chart: mean mass per slot", "massg", min_interval=SLOT),
            "centre_g", "lcl_g", "ucl_g", "flagged_g",
        ).description(
            "Each slot's mean mass against X̄̄ ± 3σ̂/√n; red dots where a Western Electric rule "
            "fires (1 beyond 3σ, 2 two of three beyond 2σ, 3 four of five beyond 1σ, 4 eight on "
            "one side). " + basis
        ),
        q(xbar_sql(cte), "time_series", ("time", "mean_g", "centre_g", "lcl_g", "ucl_g")),
        12,
        8,
    )  # fmt: skip
    b.add(
        _limit_lines(
            series_panel("s chart: mass sd per slot", "massg", min_interval=SLOT),
            "centre_g", "lcl_g", "ucl_g", "flagged_g",
        ).description(
            "Each slot's standard deviation against c₄(n)σ̂ ± 3σ̂·√(1 − c₄(n)²). " + basis
        ),
        q(s_sql(cte), "time_series", ("time", "sd_g", "centre_g", "lcl_g", "ucl_g")),
        12,
        8,
    )  # fmt: skip
    b.add(
        capability_panel(),
        q(capability_sql(cte), "table", ("cp", "cpk", "pp", "ppk")),
        6,
        8,
    )
    b.add(
        table_panel("SPC subgroups and rule breaks").description(
            "The slots of the X̄ and s charts, newest first, with z = (X̄ − X̄̄)/(σ̂/√n) and the "
            "Western Electric rules each breaks (blank: none)."
        ),
        q(subgroups_sql(cte), "table", ("time", "trays", "mean_g", "sd_g", "z", "rules")),
        6,
        8,
    )
    b.add(
        _limit_lines(
            series_panel("p chart: reject rate per slot", "percentunit", min_interval=SLOT),
            "centre", "lcl", "ucl", "flagged",
        ).description(
            f"The share of trays graded REJECT in each {SLOT} slot against p̄ ± 3√(p̄(1 − p̄)/n), "
            "p̄ over the dashboard's time range; red dots outside the limits."
        ),
        q(P_SQL, "time_series", ("time", "reject_rate", "centre", "lcl", "ucl")),
        12,
        8,
    )  # fmt: skip
