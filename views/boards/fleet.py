"""The Fleet and pipeline health board: presence, seq integrity, dead letters, lags."""

from __future__ import annotations

from views.boards.common import DEVICE, LINE, sql
from views.dashboards import (
    Board,
    PanelQuery,
    fixed_color,
    series_panel,
    stat_panel,
    state_cells,
    state_panel,
    table_panel,
    thresholds,
)


def fleet() -> Board:
    """Devices online/offline, seq gaps and duplicates, dead letters, ingest lag, latency."""
    b = Board(
        "sqal-fleet",
        "SQAL · Fleet and pipeline health",
        "Device presence (status and last will), per-device seq gaps and duplicates, dead "
        "letters, ingest lag (received_at − ts, device clock) and analyzer latency.",
        (LINE, DEVICE),
    )
    q = PanelQuery
    b.add(
        stat_panel("Devices online", "short", thresholds((None, "green"))).override_by_name(
            "offline", fixed_color("red")
        ),
        q(
            sql(
                "WITH s AS ({LATEST})\n"
                "SELECT count(*) FILTER (WHERE state = 'online') AS online,\n"
                "  count(*) FILTER (WHERE state = 'offline') AS offline FROM s"
            ),
            "table",
            ("online", "offline"),
        ),
        6,
        5,
    )
    b.add(
        stat_panel("Dead letters", "short", thresholds((None, "green"), (1, "orange"))),
        q(sql("SELECT count(*) AS dead_letters {DEAD}"), "table", ("dead_letters",)),
        6,
        5,
    )
    b.add(
        stat_panel(
            "Result lag p95", "ms", thresholds((None, "green"), (500, "orange"), (2000, "red"))
        ),
        q(
            sql(
                "SELECT percentile_cont(0.95) WITHIN GROUP\n"
                "  (ORDER BY extract(epoch FROM received_at - ts)) * 1000 AS lag_p95_ms\n"
                "FROM results WHERE {RES}"
            ),
            "table",
            ("lag_p95_ms",),
        ),
        6,
        5,
    )
    b.add(
        stat_panel("Analyzer latency p95", "ms", thresholds((None, "green"), (50, "orange"))),
        q(
            sql(
                "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_ms)\n"
                "  AS processing_p95_ms FROM results WHERE {RES}"
            ),
            "table",
            ("processing_p95_ms",),
        ),
        6,
        5,
    )
    b.add(
        table_panel("Devices").override_by_name("state", state_cells()),
        q(
            sql(
                "WITH s AS ({LATEST}),\n"
                "r AS (SELECT device_id, max(ts) AS last_result, count(*) AS trays FROM results\n"
                "  WHERE {RES} GROUP BY device_id)\n"
                "SELECT device_id, coalesce(s.state, 'unknown') AS state, s.ts AS last_status,\n"
                "  s.firmware, s.temperature_c, s.humidity_pct, s.uptime_s, r.last_result,\n"
                "  coalesce(r.trays, 0) AS trays\n"
                "FROM s FULL JOIN r USING (device_id) ORDER BY device_id"
            ),
            "table",
            ("device_id", "state", "last_status", "firmware", "last_result", "trays"),
        ),
        14,
        8,
    )
    b.add(
        state_panel("Presence"),
        q(
            # The state at the start of the range, then every status message in it.
            sql(
                'WITH b AS ({BEFORE})\nSELECT $__timeFrom()::timestamptz AS "time",\n'
                "  device_id AS metric, (state = 'online')::int AS online FROM b\n"
                "UNION ALL\n"
                "SELECT ts, device_id, (state = 'online')::int FROM device_status WHERE {RES}\n"
                "ORDER BY 1"
            ),
            "time_series",
            ("time", "metric", "online"),
        ),
        10,
        8,
    )
    b.add(
        series_panel("ToF seq gaps and duplicates", "short", bars=True),
        q(
            # A gap counts at the frame after it; the first frame of the range or of a boot has
            # no predecessor, so a gap across the range start is not counted.
            sql(
                "WITH f AS (SELECT ts, device_id, seq, {BOOT} AS boot FROM tof_frames\n"
                "  WHERE {RES}),\n"
                "s AS (SELECT ts, device_id, seq - lag(seq)\n"
                "  OVER (PARTITION BY device_id, boot ORDER BY seq, ts) AS step FROM f)\n"
                "SELECT $__timeGroupAlias(ts, $__interval), device_id AS metric,\n"
                "  coalesce(sum(greatest(step - 1, 0)), 0) AS missing,\n"
                "  count(*) FILTER (WHERE step = 0) AS duplicates\n"
                "FROM s GROUP BY 1, 2 ORDER BY 1"
            ),
            "time_series",
            ("time", "metric", "missing", "duplicates"),
        ),
        12,
        8,
    )
    b.add(
        table_panel("Seq integrity per device"),
        q(
            sql(
                "WITH f AS (\n"
                "  SELECT 'tof' AS sensor, device_id, seq, sample_id FROM tof_frames WHERE {RES}\n"
                "  UNION ALL SELECT 'spectral', device_id, seq, sample_id FROM spectral_frames\n"
                "  WHERE {RES}),\n"
                "b AS (SELECT sensor, device_id, {BOOT} AS boot, count(*) AS frames,\n"
                "  count(DISTINCT seq) AS seqs, max(seq) - min(seq) + 1 AS expected\n"
                "  FROM f GROUP BY 1, 2, 3)\n"
                "SELECT device_id, sensor, count(*) AS boots, sum(frames) AS frames,\n"
                "  sum(expected - seqs) AS missing, sum(frames - seqs) AS duplicates,\n"
                "  round(sum(expected - seqs)::numeric / sum(expected), 4) AS missing_share\n"
                "FROM b GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            "table",
            ("device_id", "sensor", "boots", "frames", "missing", "duplicates", "missing_share"),
        ),
        12,
        8,
    )
    b.add(
        # Issue 9, "loss made visible": what the broker itself discarded or held, from the
        # $SYS counters ingest stores (cumulative since the broker started).
        series_panel("Broker: dropped and stored messages ($SYS)", "short"),
        q(
            "SELECT $__timeGroupAlias(ts, $__interval), counter AS metric,\n"
            "  max(value) AS messages\nFROM broker_stats\n"
            "WHERE $__timeFilter(ts) AND counter IN ('publish_dropped', 'stored_messages')\n"
            "GROUP BY 1, 2 ORDER BY 1",
            "time_series",
            ("time", "metric", "messages"),
        ),
        12,
        8,
    )
    b.add(
        series_panel("Dead letters by reason", "short", bars=True, stacked=True),
        q(
            sql(
                "SELECT $__timeGroupAlias(received_at, $__interval), reason AS metric,\n"
                "  count(*) AS messages\n{DEAD}\nGROUP BY 1, 2 ORDER BY 1"
            ),
            "time_series",
            ("time", "metric", "messages"),
        ),
        12,
        8,
    )
    b.add(
        table_panel("Latest dead letters"),
        q(
            sql(
                'SELECT received_at AS "time", stage, reason, topic, device_id, detail\n'
                "{DEAD}\nORDER BY received_at DESC LIMIT 100"
            ),
            "table",
            ("time", "stage", "reason", "topic", "detail"),
        ),
        12,
        8,
    )
    b.add(
        series_panel("Ingest lag (received_at − ts)", "ms"),
        q(
            # ts is the device's clock (offset N(0, 30 ms), docs/domain.md §7): a small negative lag
            # is that offset, not time travel.
            sql(
                "WITH l AS (\n"
                "  SELECT ts, 'tof' AS stage, received_at - ts AS lag FROM tof_frames WHERE {RES}\n"
                "  UNION ALL SELECT ts, 'spectral', received_at - ts FROM spectral_frames\n"
                "  WHERE {RES}\n"
                "  UNION ALL SELECT ts, 'result', received_at - ts FROM results WHERE {RES})\n"
                "SELECT $__timeGroupAlias(ts, $__interval), stage AS metric,\n"
                "  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM lag)) * 1000\n"
                "    AS p50_ms,\n"
                "  percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM lag)) * 1000\n"
                "    AS p95_ms\n"
                "FROM l GROUP BY 1, 2 ORDER BY 1"
            ),
            "time_series",
            ("time", "metric", "p50_ms", "p95_ms"),
        ),
        12,
        8,
    )
    b.add(
        series_panel("Analyzer latency (processing_ms)", "ms"),
        q(
            sql(
                "SELECT $__timeGroupAlias(ts, $__interval),\n"
                "  percentile_cont(0.5) WITHIN GROUP (ORDER BY processing_ms) AS p50_ms,\n"
                "  percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_ms) AS p95_ms,\n"
                "  max(processing_ms) AS max_ms\n"
                "FROM results WHERE {RES}\nGROUP BY 1 ORDER BY 1"
            ),
            "time_series",
            ("time", "p50_ms", "p95_ms", "max_ms"),
        ),
        12,
        8,
    )
    b.add(
        series_panel("Device temperature", "celsius"),
        q(
            sql(
                "SELECT $__timeGroupAlias(ts, $__interval), device_id AS metric,\n"
                "  avg(temperature_c) AS temperature_c\n"
                "FROM device_status WHERE {RES} AND temperature_c IS NOT NULL\n"
                "GROUP BY 1, 2 ORDER BY 1"
            ),
            "time_series",
            ("time", "metric", "temperature_c"),
        ),
        12,
        8,
    )
    return b
