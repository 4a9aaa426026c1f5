"""What the three boards share: profile targets, SQL fragments, the line/device variables.

Every panel reads the schema of ``storage/migrations`` through the read-only ``sqal_reader``
role. Counts come from the per-minute roll-ups (``results_1m``, ``defects_1m``) where they can;
distributions, indices and latencies from ``results`` and the frame tables. Grafana expands
``$__timeFilter(col)``, ``$__timeGroupAlias(col, $__interval)`` (``time_bucket`` with the data
source's TimescaleDB option) and ``$__timeFrom()``/``$__timeTo()``; ``$line`` is one value,
``$device`` several (Grafana quotes each, hence ``IN ($device)``).

Profile targets (Qn, TNE, nominal d0) are baked into the SQL at build time from ``profiles/``,
so ``sqal grafana build`` must run again when a profile changes (the sync test says so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqal.profiles import load_profile, tne_g
from storage.queries import HOLD_REASON, HOLD_TOP_JOIN
from views.dashboards import Variable, stat_panel, thresholds
from views.packers import verdict_sql


@dataclass(frozen=True, slots=True)
class ProfileTarget:
    """What a profile promises: nominal mass Qn, its TNE, the volume of Qn, the nominal d0, and
    the giveaway allowance ``overfill_minor`` (a fill above Qn·(1 + it) is overfill)."""

    name: str
    qn_g: float
    tne_g: float
    qn_cm3: float
    d0_mm: float
    a_g: float = 0.0
    b_g_per_cm3: float = 1.0
    overfill_minor: float = 0.0

    @classmethod
    def load(cls, name: str) -> ProfileTarget:
        p = load_profile(name)
        mm = p.product.mass_model
        qn = p.product.nominal_mass_g
        return cls(
            name,
            qn,
            tne_g(qn),
            (qn - mm.a_g) / mm.b_g_per_cm3,
            p.tof.mount_distance_mm,
            mm.a_g,
            mm.b_g_per_cm3,
            p.tof.overfill_minor,
        )

    def volume_cm3(self, mass_g: float) -> float:
        """The volume whose estimated mass is ``mass_g``: m = a + b·V (docs/domain.md §2)."""
        return (mass_g - self.a_g) / self.b_g_per_cm3


_NAME = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")


def targets_cte(targets: list[ProfileTarget]) -> str:
    """``WITH target(profile, qn_g, tne_g, qn_cm3, d0_mm, overfill_minor) AS (VALUES ...)`` for
    the SQL.

    Safe to inline: names match the profile-name pattern (no quote can occur) and the rest are
    floats formatted by Python.
    """
    rows = []
    for t in targets:
        if not _NAME.match(t.name):
            raise ValueError(f"profile name {t.name!r} cannot be inlined in SQL")
        rows.append(
            f"('{t.name}', {t.qn_g:.3f}, {t.tne_g:.3f}, {t.qn_cm3:.3f}, {t.d0_mm:.1f}, "
            f"{t.overfill_minor:.4f})"
        )
    values = ",\n    ".join(rows) or "(NULL, NULL, NULL, NULL, NULL, NULL)"
    return (
        "WITH target(profile, qn_g, tne_g, qn_cm3, d0_mm, overfill_minor) AS (VALUES\n"
        f"    {values})"
    )


def with_targets(cte: str, rest: str) -> str:
    return cte + "\n" + rest


# SQL fragments shared by the panels, substituted by :func:`sql`. They are literals: nothing
# from outside reaches the SQL text except the targets CTE (see :func:`targets_cte`).
_FRAGMENTS = {
    # one line's results (or frames, status) of the chosen devices in the time range
    "RES": "line_id = '$line' AND device_id IN ($device) AND $__timeFilter(ts)",
    # the same over the per-minute roll-ups
    "ROLL": "FROM results_1m WHERE line_id = '$line' AND device_id IN ($device)"
    " AND $__timeFilter(bucket)",
    "DEFECTS": "FROM defects_1m WHERE line_id = '$line' AND device_id IN ($device)"
    " AND $__timeFilter(bucket)",
    # The boot id inside sample_id = {device}-{boot}-{seq:08d}: seq restarts at each boot.
    "BOOT": r"substring(sample_id FROM '-([0-9a-f]{6})-[0-9]+$')",
    # Each chosen device's latest status at the end of the range (a last will is an 'offline'
    # row): one probe per device of the unique index (line_id, device_id, sample_id, ts), newest
    # chunk first, instead of sorting the whole history (issue 18). sample_id is 'status' on
    # every status row (migration 0001), which lets the index serve ORDER BY ts DESC.
    "LATEST": "SELECT d.device_id, s.ts, s.state, s.firmware, s.temperature_c, s.humidity_pct,\n"
    "    s.uptime_s FROM unnest(ARRAY[$device]::text[]) AS d(device_id)\n"
    "  CROSS JOIN LATERAL (SELECT * FROM device_status WHERE line_id = '$line'\n"
    "    AND device_id = d.device_id AND sample_id = 'status' AND ts <= $__timeTo()\n"
    "    ORDER BY ts DESC LIMIT 1) AS s",
    # the same at the start of the range, for the presence timeline's first point
    "BEFORE": "SELECT d.device_id, s.ts, s.state\n"
    "  FROM unnest(ARRAY[$device]::text[]) AS d(device_id)\n"
    "  CROSS JOIN LATERAL (SELECT * FROM device_status WHERE line_id = '$line'\n"
    "    AND device_id = d.device_id AND sample_id = 'status' AND ts < $__timeFrom()\n"
    "    ORDER BY ts DESC LIMIT 1) AS s",
    # the sample chosen on the Quality board, looked up in the range and among the chosen
    # devices (as the sample variable offers it), not through the line's whole history
    "SAMPLE": "line_id = '$line' AND device_id IN ($device) AND sample_id = '$sample'\n"
    "  AND $__timeFilter(ts)",
    # Dead letters without a line (bad topic, unparsable payload) show on every line.
    "DEAD": "FROM dead_letters\n"
    "WHERE $__timeFilter(received_at) AND (line_id = '$line' OR line_id IS NULL)",
    "MASS": "FROM results r JOIN target t USING (profile)\n"
    "WHERE r.line_id = '$line' AND r.device_id IN ($device) AND r.profile = '$profile'\n"
    "  AND $__timeFilter(r.ts) AND r.tof_mass_g IS NOT NULL\n"
    "  AND r.mode = 'production' AND ('$lot' = '(any)' OR r.lot_id = '$lot')",
    # Production trays only (issue #19): calibration and maintenance trays count apart.
    "PROD": "mode = 'production'",
    # the lot chosen in the Quality board's $lot ('(any)': every tray, with a lot or not)
    "LOT": "('$lot' = '(any)' OR lot_id = '$lot')",
}
# The share of a decision among the trays that carry one (``count(decision)`` skips the NULL
# of analyzers before 2026-12, which the panels count apart as "no decision").
_FRAGMENTS.update(
    (f"{d}RATE", f"count(*) FILTER (WHERE decision = '{d}')::float8 / nullif(count(decision), 0)")
    for d in ("PASS", "HOLD", "REJECT")
)
# A held tray's reasons, shared with the shift report (storage.queries): ``results r`` joined to
# the p_defects codes of largest probability, and the reason's text.
_FRAGMENTS["HOLDTOP"] = HOLD_TOP_JOIN
_FRAGMENTS["HOLDREASON"] = HOLD_REASON
# one column per zone row, the heatmap's y buckets (8x8 is the largest layout)
_FRAGMENTS["HROWS"] = ",\n".join(
    f'  max(h) FILTER (WHERE zone_row = {r}) AS "row {r}"' for r in range(8)
)
# The packers' rules' verdict and its deciding rule over a query's figures (views.packers).
_FRAGMENTS["VERDICT"], _FRAGMENTS["VERDICTRULE"] = verdict_sql()
_TOKEN = re.compile(r"\{([A-Z]+)\}")


def sql(text: str) -> str:
    """``text`` with each ``{NAME}`` replaced by its fragment; other braces stay as they are."""
    return _TOKEN.sub(lambda m: _FRAGMENTS[m[1]], text)


# The lines and devices: every device known by its status (device_last_status, one row per
# device, kept by ingest), and any with results in the range, not the whole history (issue 18).
LINE = Variable(
    "line",
    "Line",
    "SELECT line_id FROM device_last_status\n"
    "UNION SELECT line_id FROM results_1m WHERE $__timeFilter(bucket) ORDER BY 1",
    on_time_change=True,
)
DEVICE = Variable(
    "device",
    "Device",
    "SELECT device_id FROM device_last_status WHERE line_id = '$line'\n"
    "UNION SELECT device_id FROM results_1m WHERE line_id = '$line' AND $__timeFilter(bucket)\n"
    "ORDER BY 1",
    multi=True,
    on_time_change=True,
)
PROFILE = Variable(
    "profile",
    "Profile",
    "SELECT DISTINCT profile FROM results WHERE line_id = '$line' AND $__timeFilter(ts) ORDER BY 1",
    on_time_change=True,
)
ANY_LOT = "(any)"
"""The ``$lot`` option that selects every tray by time alone (no lot id has parentheses)."""
LOT = Variable(
    "lot",
    "Lot",
    "SELECT '(any)' AS lot_id\n"
    "UNION ALL (SELECT lot_id FROM lots WHERE line_id = '$line'\n"
    "  AND started <= $__timeTo() AND coalesce(ended, 'infinity') >= $__timeFrom()\n"
    "  ORDER BY started DESC)",
    on_time_change=True,
)
"""The lots of the line that ran in the time range, newest first, after '(any)'."""
SAMPLE = Variable(
    "sample",
    "Sample",
    "SELECT sample_id FROM results WHERE line_id = '$line' AND device_id IN ($device)\n"
    "  AND profile = '$profile' AND tof_present AND $__timeFilter(ts)\n"
    "  AND ('$lot' = '(any)' OR lot_id = '$lot')\n"
    "ORDER BY ts DESC LIMIT 200",
    on_time_change=True,
)


NOT_COUNTED_SQL = sql(
    "SELECT count(*) FILTER (WHERE mode = 'calibration') AS calibration,\n"
    "  count(*) FILTER (WHERE mode = 'maintenance') AS maintenance\n"
    "FROM results WHERE {RES} AND mode <> 'production'"
)
"""Trays scored while their device was in calibration or maintenance mode."""


def not_counted_panel() -> Any:
    """A stat of the trays that are no product, which no other panel counts."""
    return stat_panel(
        "Not counted: calibration and maintenance trays",
        "short",
        thresholds((None, "text")),
    ).description(
        "Trays scored while their device's config said calibration (sqal calibrate capturing a "
        "fixture) or maintenance. They are stored, but no other panel, roll-up, report figure "
        "or packers' rule counts them."
    )
