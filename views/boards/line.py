"""The Line overview board: live grade mix, reject rate, decisions, score trend, throughput."""

from __future__ import annotations

from views.boards.common import DEVICE, LINE, NOT_COUNTED_SQL, not_counted_panel, sql
from views.dashboards import (
    Board,
    PanelQuery,
    decision_cells,
    decision_colors,
    fixed_color,
    grade_cells,
    grade_colors,
    pie_panel,
    series_panel,
    stat_panel,
    table_panel,
    thresholds,
)


def line_overview() -> Board:
    """Live grade mix, reject rate, decisions, score trend, throughput and the latest results."""
    b = Board(
        "sqal-line-overview",
        "SQAL · Line overview",
        "Grades, reject rate, scores and throughput of one line's production trays (per-minute "
        "roll-ups); trays of devices in calibration or maintenance mode are counted apart.",
        (LINE, DEVICE),
    )
    q = PanelQuery
    b.add(
        stat_panel("Trays", "short"),
        q(sql("SELECT coalesce(sum(n_total), 0) AS trays {ROLL}"), "table", ("trays",)),
        4,
        4,
    )
    b.add(
        stat_panel(
            "Reject rate",
            "percentunit",
            thresholds((None, "green"), (0.02, "orange"), (0.05, "red")),
        ),
        q(
            sql("SELECT sum(n_reject)::float8 / nullif(sum(n_total), 0) AS reject_rate {ROLL}"),
            "table",
            ("reject_rate",),
        ),
        4,
        4,
    )
    b.add(
        stat_panel(
            "Mean score", "percentunit", thresholds((None, "red"), (0.7, "orange"), (0.85, "green"))
        ),
        q(
            sql("SELECT sum(score_sum) / nullif(sum(score_count), 0) AS mean_score {ROLL}"),
            "table",
            ("mean_score",),
        ),
        4,
        4,
    )
    b.add(
        stat_panel("Throughput, last 5 min", "trays/min"),
        q(
            "SELECT coalesce(sum(n_total), 0) / 5.0 AS trays_per_min FROM results_1m\n"
            "WHERE line_id = '$line' AND device_id IN ($device)\n"
            "  AND bucket >= $__timeTo()::timestamptz - interval '5 minutes'\n"
            "  AND bucket < $__timeTo()::timestamptz",
            "table",
            ("trays_per_min",),
        ),
        4,
        4,
    )
    b.add(
        not_counted_panel(),
        q(NOT_COUNTED_SQL, "table", ("calibration", "maintenance")),
        8,
        4,
    )
    b.add(
        pie_panel("Grade mix"),
        q(
            sql(
                'SELECT coalesce(sum(n_a), 0) AS "A", coalesce(sum(n_b), 0) AS "B",\n'
                '  coalesce(sum(n_c), 0) AS "C", coalesce(sum(n_reject), 0) AS "REJECT" {ROLL}'
            ),
            "table",
            ("A", "B", "C", "REJECT"),
        ),
        8,
        8,
    )
    # Decisions: what the reject gate did (PASS, HOLD to the re-check lane, REJECT). The roll-ups
    # do not count them, so these read ``results`` (a window of a few thousand rows per device).
    # Rates are of the trays that carry a decision; results of analyzers before 2026-12 have none
    # and are counted apart as "no decision".
    b.add(
        decision_colors(stat_panel("Decisions", "short"))
        .override_by_name("no decision", fixed_color("gray"))
        .description(
            "Trays per decision of the reject gate. 'no decision': results of analyzers before "
            "2026-12, which did not publish one."
        ),
        q(
            sql(
                "SELECT count(*) FILTER (WHERE decision = 'PASS') AS \"PASS\",\n"
                "  count(*) FILTER (WHERE decision = 'HOLD') AS \"HOLD\",\n"
                "  count(*) FILTER (WHERE decision = 'REJECT') AS \"REJECT\",\n"
                '  count(*) FILTER (WHERE decision IS NULL) AS "no decision"\n'
                "FROM results WHERE {RES} AND {PROD}"
            ),
            "table",
            ("PASS", "HOLD", "REJECT", "no decision"),
        ),
        8,
        4,
    )
    b.add(
        decision_colors(stat_panel("Decision rates", "percentunit")).description(
            "Share of the trays with a decision; HOLD trays go to the re-check lane."
        ),
        q(
            sql(
                'SELECT {PASSRATE} AS "PASS",\n  {HOLDRATE} AS "HOLD",\n'
                '  {REJECTRATE} AS "REJECT"\nFROM results WHERE {RES} AND {PROD}'
            ),
            "table",
            ("PASS", "HOLD", "REJECT"),
        ),
        8,
        4,
    )
    b.add(
        decision_colors(series_panel("HOLD and REJECT rates", "percentunit")).description(
            "Share of the trays with a decision sent to HOLD and to REJECT."
        ),
        q(
            sql(
                "SELECT $__timeGroupAlias(ts, $__interval),\n"
                '  {HOLDRATE} AS "HOLD", {REJECTRATE} AS "REJECT"\n'
                "FROM results WHERE {RES} AND {PROD} AND decision IS NOT NULL\n"
                "GROUP BY 1 ORDER BY 1"
            ),
            "time_series",
            ("time", "HOLD", "REJECT"),
        ),
        8,
        8,
    )
    b.add(
        grade_colors(series_panel("Grades over time", "short", bars=True, stacked=True)),
        q(
            sql(
                "SELECT $__timeGroupAlias(bucket, $__interval),\n"
                '  sum(n_a) AS "A", sum(n_b) AS "B", sum(n_c) AS "C", sum(n_reject) AS "REJECT"\n'
                "{ROLL}\nGROUP BY 1 ORDER BY 1"
            ),
            "time_series",
            ("time", "A", "B", "C", "REJECT"),
        ),
        16,
        8,
    )
    b.add(
        series_panel("Reject rate per device", "percentunit"),
        q(
            sql(
                "SELECT $__timeGroupAlias(bucket, $__interval), device_id AS metric,\n"
                "  sum(n_reject)::float8 / nullif(sum(n_total), 0) AS reject_rate\n"
                "{ROLL}\nGROUP BY 1, 2 ORDER BY 1"
            ),
            "time_series",
            ("time", "metric", "reject_rate"),
        ),
        12,
        8,
    )
    b.add(
        series_panel("Score trend", "percentunit"),
        q(
            sql(
                "SELECT $__timeGroupAlias(ts, $__interval), avg(final_score) AS mean_score,\n"
                "  min(final_score) AS min_score, avg(confidence) AS mean_confidence\n"
                "FROM results WHERE {RES} AND {PROD}\nGROUP BY 1 ORDER BY 1"
            ),
            "time_series",
            ("time", "mean_score", "min_score", "mean_confidence"),
        ),
        12,
        8,
    )
    b.add(
        series_panel("Throughput", "trays/min", stacked=True),
        q(
            sql(
                "SELECT $__timeGroupAlias(bucket, $__interval), device_id AS metric,\n"
                "  sum(n_total) / ($__interval_ms / 60000.0) AS trays_per_min\n"
                "{ROLL}\nGROUP BY 1, 2 ORDER BY 1"
            ),
            "time_series",
            ("time", "metric", "trays_per_min"),
        ),
        8,
        8,
    )
    b.add(
        table_panel("Latest results")
        .override_by_name("final_grade", grade_cells())
        .override_by_name("decision", decision_cells()),
        q(
            sql(
                'SELECT ts AS "time", device_id, sample_id, profile, final_grade, decision,\n'
                "  round(p_reject::numeric, 3) AS p_reject,\n"
                "  round(final_score::numeric, 3) AS final_score,\n"
                "  round(confidence::numeric, 2) AS confidence,\n"
                "  array_to_string(defects, ', ') AS defects,\n"
                "  round(tof_mass_g::numeric, 1) AS mass_g\n"
                "FROM results WHERE {RES} AND {PROD}\nORDER BY ts DESC LIMIT 50"
            ),
            "table",
            (
                "time",
                "device_id",
                "sample_id",
                "final_grade",
                "decision",
                "p_reject",
                "final_score",
                "defects",
                "mass_g",
            ),
        ),
        16,
        8,
    )
    return b
