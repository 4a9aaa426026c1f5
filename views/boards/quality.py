"""The Quality board: fill against Qn and TNE, defects, HOLD reasons, spectral indices, a height
map."""

from __future__ import annotations

from storage.queries import NO_DEFECT_REASON
from views.boards.common import (
    DEVICE,
    LINE,
    LOT,
    NOT_COUNTED_SQL,
    PROFILE,
    SAMPLE,
    ProfileTarget,
    not_counted_panel,
    sql,
    targets_cte,
    with_targets,
)
from views.boards.spc import add_spc_panels
from views.dashboards import (
    Board,
    PanelQuery,
    Variable,
    bar_panel,
    decision_cells,
    display_name,
    fixed_color,
    grade_cells,
    heatmap_panel,
    histogram_panel,
    prop,
    series_panel,
    table_panel,
    verdict_cells,
)
from views.packers import T1_SHARE_MAX


def quality(targets: list[ProfileTarget]) -> Board:
    """Mass and volume against Qn and TNE, defects, HOLD reasons, spectral indices, a height map."""
    cte = targets_cte(targets)
    d0 = Variable(
        "d0_mm",
        "Nominal d0 (mm)",
        with_targets(cte, "SELECT d0_mm FROM target WHERE profile = '$profile'"),
    )
    b = Board(
        "sqal-quality",
        "SQAL · Quality",
        "The packers' rules per lot (76/211/EEC), fill against the nominal quantity Qn and its "
        "tolerable negative error TNE, defects, spectral indices, and the ToF height map of one "
        "sample. Production trays of the chosen lot ('(any)': all) in the time range.",
        (LINE, DEVICE, LOT, PROFILE, SAMPLE, d0),
    )
    q = PanelQuery
    b.add(
        table_panel("Packers' rules per lot (76/211/EEC)")
        .override_by_name("verdict", verdict_cells())
        .override_by_name("below_t1_share", [prop("unit", "percentunit")])
        .override_by_name("expected_below_t1_share", [prop("unit", "percentunit")])
        .description(
            "Per lot: packs (the checkweigher's mass where weighed, else the estimate m̂), the "
            "mean and its 95 % interval against Qn, packs below T1 = Qn − TNE (limit "
            f"{100 * T1_SHARE_MAX:g} %) and T2 = Qn − 2·TNE (limit 0), measured and expected "
            "from m̂'s σ, the giveaway, and the verdict with the rule that decides it "
            "(docs/operations.md, 'Lots and the packers' rules')."
        ),
        q(packers_sql(cte), "table", PACKERS_COLUMNS),
        18,
        7,
    )
    b.add(not_counted_panel(), q(NOT_COUNTED_SQL, "table", ("calibration", "maintenance")), 6, 7)
    # Bins of TNE/2 anchored at Qn, so Qn − TNE and Qn − 2·TNE fall on bin edges.
    b.add(
        bar_panel("Mass distribution vs Qn and TNE", "bin_g", stacked=True)
        .override_by_name("below_2tne", [*fixed_color("red"), *display_name("< Qn − 2·TNE")])
        .override_by_name("below_tne", [*fixed_color("orange"), *display_name("< Qn − TNE")])
        .override_by_name("within_tne", [*fixed_color("green"), *display_name("≥ Qn − TNE")]),
        q(
            with_targets(
                cte,
                sql(
                    ", m AS (SELECT floor((r.tof_mass_g - t.qn_g) / (t.tne_g / 2))::int AS k,\n"
                    "  r.tof_mass_g AS mass_g, t.qn_g, t.tne_g\n{MASS})\n"
                    "SELECT round((max(qn_g) + k * max(tne_g) / 2)::numeric, 1)::text AS bin_g,\n"
                    "  count(*) FILTER (WHERE mass_g < qn_g - 2 * tne_g) AS below_2tne,\n"
                    "  count(*) FILTER (WHERE mass_g >= qn_g - 2 * tne_g\n"
                    "    AND mass_g < qn_g - tne_g) AS below_tne,\n"
                    "  count(*) FILTER (WHERE mass_g >= qn_g - tne_g) AS within_tne\n"
                    "FROM m GROUP BY k ORDER BY k"
                ),
            ),
            "table",
            ("bin_g", "below_2tne", "below_tne", "within_tne"),
        ),
        12,
        9,
    )
    b.add(
        series_panel("Mass against Qn and TNE limits", "massg")
        .override_by_name("qn_minus_2tne_g", fixed_color("red"))
        .override_by_name("qn_minus_tne_g", fixed_color("orange"))
        .override_by_name("qn_g", fixed_color("green")),
        q(
            with_targets(
                cte,
                sql(
                    "SELECT $__timeGroupAlias(r.ts, $__interval),\n"
                    "  avg(r.tof_mass_g) AS mean_mass_g, min(r.tof_mass_g) AS min_mass_g,\n"
                    "  max(t.qn_g) AS qn_g, max(t.qn_g - t.tne_g) AS qn_minus_tne_g,\n"
                    "  max(t.qn_g - 2 * t.tne_g) AS qn_minus_2tne_g\n"
                    "{MASS}\nGROUP BY 1 ORDER BY 1"
                ),
            ),
            "time_series",
            ("time", "mean_mass_g", "min_mass_g", "qn_g", "qn_minus_tne_g", "qn_minus_2tne_g"),
        ),
        12,
        9,
    )
    b.add(
        table_panel("Fill per device against target")
        .override_by_name("share_below_tne", [prop("unit", "percentunit")])
        .override_by_name("share_below_2tne", [prop("unit", "percentunit")]),
        q(
            with_targets(
                cte,
                sql(
                    "SELECT r.device_id, count(*) AS trays,\n"
                    "  round(avg(r.tof_mass_g)::numeric, 1) AS mean_mass_g,\n"
                    "  round(stddev_samp(r.tof_mass_g)::numeric, 2) AS sd_mass_g,\n"
                    "  round((avg(r.tof_volume_mm3) / 1000)::numeric, 1) AS mean_volume_cm3,\n"
                    "  max(t.qn_g) AS qn_g,\n"
                    "  round(max(t.qn_cm3)::numeric, 1) AS target_volume_cm3,\n"
                    "  avg((r.tof_mass_g < t.qn_g - t.tne_g)::int) AS share_below_tne,\n"
                    "  avg((r.tof_mass_g < t.qn_g - 2 * t.tne_g)::int) AS share_below_2tne,\n"
                    "  round((avg(r.tof_mass_g) - max(t.qn_g))::numeric, 1) AS mean_giveaway_g\n"
                    "{MASS}\nGROUP BY r.device_id ORDER BY r.device_id"
                ),
            ),
            "table",
            (
                "device_id",
                "trays",
                "mean_mass_g",
                "mean_volume_cm3",
                "target_volume_cm3",
                "share_below_tne",
                "share_below_2tne",
                "mean_giveaway_g",
            ),
        ),
        14,
        7,
    )
    b.add(
        histogram_panel("Volume distribution", "cm³"),
        q(
            sql(
                "SELECT tof_volume_mm3 / 1000.0 AS volume_cm3 FROM results\n"
                "WHERE {RES} AND {PROD} AND {LOT} AND profile = '$profile'\n"
                "  AND tof_volume_mm3 IS NOT NULL"
            ),
            "table",
            ("volume_cm3",),
        ),
        10,
        7,
    )
    b.add(
        bar_panel("Defect Pareto", "defect").override_by_name(
            "cumulative_pct",
            [prop("custom.hideFrom", {"viz": True, "legend": False, "tooltip": False})],
        ),
        q(
            sql(
                "WITH d AS (SELECT defect, count(*) AS trays\n"
                "  FROM results, unnest(defects) AS defect\n"
                "  WHERE {RES} AND {PROD} AND {LOT} GROUP BY defect)\n"
                "SELECT defect, trays,\n"
                "  100.0 * sum(trays) OVER (ORDER BY trays DESC, defect ROWS UNBOUNDED PRECEDING)\n"
                "    / sum(trays) OVER () AS cumulative_pct\n"
                "FROM d ORDER BY trays DESC, defect"
            ),
            "table",
            ("defect", "trays", "cumulative_pct"),
        ),
        12,
        8,
    )
    b.add(
        series_panel("Defects over time", "short", bars=True, stacked=True),
        q(
            sql(
                "SELECT $__timeGroupAlias(ts, $__interval), defect AS metric, count(*) AS trays\n"
                "FROM results, unnest(defects) AS defect\n"
                "WHERE {RES} AND {PROD} AND {LOT}\nGROUP BY 1, 2 ORDER BY 1"
            ),
            "time_series",
            ("time", "metric", "trays"),
        ),
        12,
        8,
    )
    # What a quality manager re-checks: why trays were held, and the latest held trays.
    b.add(
        bar_panel("HOLD reasons", "reason").description(
            "Held trays by the defect code with the largest probability in p_defects (a tray "
            f"whose top codes tie counts under each); '{NO_DEFECT_REASON}': no code reached "
            "0.01, the score alone came near REJECT."
        ),
        q(
            sql(
                "SELECT {HOLDREASON} AS reason, count(*) AS trays\n"
                "FROM results r {HOLDTOP}\n"
                "WHERE {RES} AND {PROD} AND {LOT} AND r.decision = 'HOLD'\n"
                "GROUP BY 1 ORDER BY 2 DESC, 1"
            ),
            "table",
            ("reason", "trays"),
        ),
        12,
        8,
    )
    b.add(
        table_panel("HOLD trays to re-check")
        .override_by_name("final_grade", grade_cells())
        .override_by_name("decision", decision_cells())
        .description(
            "The latest held trays, with P(REJECT) and each defect code's probability, largest "
            "first."
        ),
        q(
            sql(
                'SELECT ts AS "time", device_id, sample_id, final_grade, decision,\n'
                "  round(p_reject::numeric, 3) AS p_reject,\n"
                "  (SELECT string_agg(e.key || ' ' || round(e.value::numeric, 2), ', '\n"
                "    ORDER BY e.value::float8 DESC, e.key) FROM jsonb_each(p_defects) AS e)\n"
                "    AS p_defects,\n"
                "  round(data_quality::numeric, 2) AS data_quality,\n"
                "  round(coalesce(weight_mass_g, tof_mass_g)::numeric, 1) AS mass_g\n"
                "FROM results WHERE {RES} AND {PROD} AND {LOT} AND decision = 'HOLD'\n"
                "ORDER BY ts DESC LIMIT 50"
            ),
            "table",
            ("time", "device_id", "sample_id", "p_reject", "p_defects"),
        ),
        12,
        8,
    )
    b.add(
        series_panel("Spectral indices", "percentunit"),
        q(
            sql(
                "SELECT $__timeGroupAlias(ts, $__interval),\n"
                "  avg(spectral_freshness_index) AS freshness_index,\n"
                "  avg(spectral_fat_quality_index) AS fat_quality_index,\n"
                "  avg(spectral_oxidation_index) AS oxidation_index,\n"
                "  avg(spectral_color_uniformity) AS color_uniformity\n"
                "FROM results WHERE {RES} AND {PROD} AND {LOT} AND profile = '$profile'\n"
                "  AND spectral_present\n"
                "GROUP BY 1 ORDER BY 1"
            ),
            "time_series",
            ("time", "freshness_index", "fat_quality_index", "oxidation_index", "color_uniformity"),
        ),
        12,
        8,
    )
    b.add(
        series_panel("Colour L*a*b*", "none"),
        q(
            sql(
                "SELECT $__timeGroupAlias(ts, $__interval), avg(spectral_lab_l) AS lab_l,\n"
                "  avg(spectral_lab_a) AS lab_a, avg(spectral_lab_b) AS lab_b\n"
                "FROM results WHERE {RES} AND {PROD} AND {LOT} AND profile = '$profile'\n"
                "  AND spectral_present\n"
                "GROUP BY 1 ORDER BY 1"
            ),
            "time_series",
            ("time", "lab_l", "lab_a", "lab_b"),
        ),
        12,
        8,
    )
    b.add(
        heatmap_panel("Height map of the selected sample", "lengthmm"),
        q(
            # h = d0 − distance (docs/domain.md §2) with the profile's nominal d0; zones whose
            # target_status is not 5, 6 or 9 (docs/domain.md §1) stay blank. A 4x4 frame fills rows
            # 0-3 only.
            sql(
                # The sample variable offers results of the chosen devices in the range: the
                # frame lies there too, and the unique index finds it in the range's chunks.
                "WITH f AS (SELECT layout, distance_mm, target_status FROM tof_frames\n"
                "  WHERE {SAMPLE} ORDER BY ts DESC LIMIT 1),\n"
                "z AS (SELECT (u.i - 1) / f.layout AS zone_row, (u.i - 1) % f.layout AS zone_col,\n"
                "  CASE WHEN u.s IN (5, 6, 9) THEN $d0_mm - u.d END AS h\n"
                "  FROM f, unnest(f.distance_mm, f.target_status) WITH ORDINALITY AS u(d, s, i))\n"
                "SELECT zone_col,\n{HROWS}\nFROM z GROUP BY zone_col ORDER BY zone_col"
            ),
            "table",
            ("zone_col", "row 0", "row 1", "row 2", "row 3"),
        ),
        12,
        10,
    )
    b.add(
        table_panel("Selected sample").override_by_name("final_grade", grade_cells()),
        q(
            sql(
                'SELECT ts AS "time", device_id, sample_id, final_grade,\n'
                "  round(final_score::numeric, 3) AS final_score,\n"
                "  array_to_string(defects, ', ') AS defects,\n"
                "  round(tof_mass_g::numeric, 1) AS mass_g,\n"
                "  round((tof_volume_mm3 / 1000)::numeric, 1) AS volume_cm3,\n"
                "  round(tof_avg_height_mm::numeric, 1) AS avg_height_mm,\n"
                "  round(tof_max_height_mm::numeric, 1) AS max_height_mm,\n"
                "  round(tof_tilt_deg::numeric, 1) AS tilt_deg, tof_valid_zones AS valid_zones\n"
                "FROM results WHERE {SAMPLE}"
            ),
            "table",
            ("time", "sample_id", "final_grade", "defects", "mass_g", "volume_cm3"),
        ),
        12,
        10,
    )
    add_spc_panels(b, cte)
    return b


PACKERS_COLUMNS = (
    "lot", "packs", "weighed", "mean_g", "ci_low_g", "ci_high_g", "sd_g", "qn_g", "t1_g", "t2_g",
    "below_t1", "below_t1_share", "expected_below_t1_share", "below_t2", "expected_below_t2",
    "giveaway_g", "giveaway_pct", "verdict", "rule",
)  # fmt: skip


def packers_sql(cte: str) -> str:
    """The packers' rules of each lot in the range, computed in the database as
    :func:`views.packers.packers_rules` computes them (``tests/test_packers_rules.py``).

    Qn and TNE are the lot's (``lots``), for trays without a lot the profile's (``target``).
    """
    return with_targets(
        cte,
        sql(
            ",\np AS (SELECT coalesce(r.lot_id, '(no lot)') AS lot,\n"
            "  coalesce(l.qn_g, t.qn_g) AS qn_g, coalesce(l.tne_g, t.tne_g) AS tne_g,\n"
            "  coalesce(r.weight_mass_g, r.tof_mass_g) AS m,\n"
            "  CASE WHEN r.weight_mass_g IS NOT NULL THEN r.weight_sigma_g\n"
            "    ELSE r.tof_sigma_mass_g END AS s,\n"
            "  (r.weight_mass_g IS NOT NULL)::int AS w\n"
            "  FROM results r\n"
            "  LEFT JOIN lots l ON l.line_id = r.line_id AND l.lot_id = r.lot_id\n"
            "  LEFT JOIN target t ON t.profile = r.profile\n"
            "  WHERE r.line_id = '$line' AND r.device_id IN ($device) AND $__timeFilter(r.ts)\n"
            "    AND r.mode = 'production' AND ('$lot' = '(any)' OR r.lot_id = '$lot')\n"
            "    AND coalesce(r.weight_mass_g, r.tof_mass_g) IS NOT NULL),\n"
            "a AS (SELECT lot, qn_g, tne_g, count(*) AS n, sum(w) AS weighed,\n"
            "  avg(m) AS mean_g, stddev_samp(m) AS sd_g,\n"
            "  count(*) FILTER (WHERE m < qn_g - tne_g) AS below_t1,\n"
            "  count(*) FILTER (WHERE m < qn_g - 2 * tne_g) AS below_t2,\n"
            "  sum(CASE WHEN s > 0 THEN sqal_norm_cdf((qn_g - tne_g - m) / s)\n"
            "    ELSE (m < qn_g - tne_g)::int END) AS expected_below_t1,\n"
            "  sum(CASE WHEN s > 0 THEN sqal_norm_cdf((qn_g - 2 * tne_g - m) / s)\n"
            "    ELSE (m < qn_g - 2 * tne_g)::int END) AS expected_below_t2\n"
            "  FROM p WHERE qn_g IS NOT NULL GROUP BY 1, 2, 3),\n"
            "b AS (SELECT *, sqal_t975((n - 1)::int) * sd_g / sqrt(n) AS half_g FROM a)\n"
            "SELECT lot, n AS packs, weighed, round(mean_g::numeric, 3) AS mean_g,\n"
            "  round((mean_g - half_g)::numeric, 3) AS ci_low_g,\n"
            "  round((mean_g + half_g)::numeric, 3) AS ci_high_g,\n"
            "  round(sd_g::numeric, 3) AS sd_g, qn_g, qn_g - tne_g AS t1_g,\n"
            "  qn_g - 2 * tne_g AS t2_g, below_t1, below_t1::float8 / n AS below_t1_share,\n"
            "  expected_below_t1 / n AS expected_below_t1_share, below_t2,\n"
            "  round(expected_below_t2::numeric, 4) AS expected_below_t2,\n"
            "  round((mean_g - qn_g)::numeric, 3) AS giveaway_g,\n"
            "  round((100 * (mean_g - qn_g) / qn_g)::numeric, 3) AS giveaway_pct,\n"
            "  {VERDICT} AS verdict,\n  {VERDICTRULE} AS rule\n"
            "FROM b ORDER BY lot"
        ),
    )
