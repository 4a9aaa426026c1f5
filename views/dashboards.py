"""Grafana dashboards as code: three boards built with grafana-foundation-sdk.

The SDK gives typed builders for dashboards, panels, variables and field config, but no model
for the PostgreSQL data source's query (``rawSql``/``format``), so :class:`PanelQuery` is that
query as an SDK ``Dataquery`` variant. Every panel has exactly one query and names the columns it
reads, so ``tests/test_views_dashboards.py`` can run each one against a filled database and check
them. The boards themselves (panels and their SQL) live in :mod:`views.boards`.

``sqal grafana build`` writes ``grafana/dashboards/*.json`` (committed; a test keeps it in sync);
Grafana's file provider loads them; ``sqal grafana push`` uploads them over the HTTP API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import (
    barchart,
    heatmap,
    histogram,
    piechart,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as gdb
from grafana_foundation_sdk.builders.common import ReduceDataOptions, StackingConfig
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as gcommon
from grafana_foundation_sdk.models import dashboard as gmodel
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models import piechart as piechart_model

DATASOURCE_UID = "sqal-timescaledb"
"""The uid ``grafana/provisioning/datasources/sqal.yaml`` gives the TimescaleDB data source."""
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE = gmodel.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)
GRID_COLUMNS = 24
"""Grafana's dashboard grid is 24 columns wide."""
GRADE_COLORS = {"A": "green", "B": "blue", "C": "orange", "REJECT": "red"}
DECISION_COLORS = {"PASS": "green", "HOLD": "yellow", "REJECT": "red"}
VERDICT_COLORS = {"complies": "green", "at risk": "orange", "fails": "red"}
"""The packers' rules' verdicts (views.packers.Verdict)."""
"""What the reject gate did with a tray; HOLD (the re-check lane) is kept apart from grade C's
orange so the two coloured columns of a table do not read alike."""

Format = Literal["time_series", "table"]


@dataclass(frozen=True, slots=True)
class PanelQuery(cogvariants.Dataquery):
    """One raw SQL query of a panel, as Grafana's PostgreSQL data source stores it.

    Attributes:
        sql: the query, with Grafana macros (``$__timeFilter(ts)``) and variables (``$line``).
        fmt: ``time_series`` (a ``time`` column, numeric values, optional ``metric``) or ``table``.
        columns: the columns the panel reads; the query must return at least these.
    """

    sql: str
    fmt: Format
    columns: tuple[str, ...]
    ref_id: str = "A"

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "editorMode": "code",
            "format": self.fmt,
            "rawQuery": True,
            "rawSql": self.sql,
            "refId": self.ref_id,
        }


class _Target(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, query: PanelQuery) -> None:
        self._query = query

    def build(self) -> cogvariants.Dataquery:
        return self._query


class _PanelBuilder(Protocol):
    """What every SDK panel builder offers (they share no base class)."""

    def with_target(self, target: cogbuilder.Builder[cogvariants.Dataquery]) -> Self: ...
    def datasource(self, datasource: gmodel.DataSourceRef) -> Self: ...
    def grid_pos(self, grid_pos: gmodel.GridPos) -> Self: ...
    def description(self, description: str) -> Self: ...
    def build(self) -> gmodel.Panel: ...


class _Overridable(Protocol):
    def override_by_name(self, name: str, properties: list[gmodel.DynamicConfigValue]) -> Self: ...


_O = TypeVar("_O", bound=_Overridable)


@dataclass(frozen=True, slots=True)
class Variable:
    """A dashboard variable: a SQL query (``sql``) or, without one, a fixed ``default``."""

    name: str
    label: str
    sql: str | None = None
    multi: bool = False
    on_time_change: bool = False
    default: str | None = None


@dataclass
class Board:
    """A dashboard being built: panels are laid out left to right in rows of 24 columns."""

    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    panels: list[tuple[str, PanelQuery]] = field(default_factory=list)
    _dash: gdb.Dashboard | None = None
    _x: int = 0
    _y: int = 0
    _row_h: int = 0

    def __post_init__(self) -> None:
        dash = (
            gdb.Dashboard(self.title)
            .uid(self.uid)
            .description(self.description)
            .tags(["sqal"])
            .editable()
            .refresh("30s")
            .time("now-8h", "now")
            .timezone("browser")
        )
        for var in self.variables:
            dash = dash.with_variable(_variable(var))
        self._dash = dash

    def add(self, panel: _PanelBuilder, query: PanelQuery, w: int, h: int) -> None:
        """Place ``panel`` with its one query, ``w`` x ``h`` grid cells, after the last one."""
        if self._x + w > GRID_COLUMNS:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        placed = (
            panel.datasource(DATASOURCE)
            .with_target(_Target(query))
            .grid_pos(gmodel.GridPos(h=h, w=w, x=self._x, y=self._y))
        )
        assert self._dash is not None
        self._dash = self._dash.with_panel(_Built(placed))
        self.panels.append((placed.build().title or "", query))
        self._x += w
        self._row_h = max(self._row_h, h)

    def to_dict(self) -> dict[str, Any]:
        """The dashboard model as Grafana's JSON (what provisioning and the API take)."""
        assert self._dash is not None
        doc: dict[str, Any] = json.loads(json.dumps(self._dash.build(), cls=JSONEncoder))
        return doc

    def to_json(self) -> str:
        """Stable text for the committed file: sorted keys, two-space indent, final newline."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class _Built(cogbuilder.Builder[gmodel.Panel]):
    def __init__(self, panel: _PanelBuilder) -> None:
        self._panel = panel

    def build(self) -> gmodel.Panel:
        return self._panel.build()


def _variable(var: Variable) -> cogbuilder.Builder[gmodel.VariableModel]:
    if var.sql is None:
        return (
            gdb.TextBoxVariable(var.name)
            .label(var.label)
            .default_value(var.default or "")
            .current(gmodel.VariableOption(text=var.default or "", value=var.default or ""))
        )
    v = (
        gdb.QueryVariable(var.name)
        .label(var.label)
        .datasource(DATASOURCE)
        .query(var.sql)
        .refresh(
            gmodel.VariableRefresh.ON_TIME_RANGE_CHANGED
            if var.on_time_change
            else gmodel.VariableRefresh.ON_DASHBOARD_LOAD
        )
        .sort(gmodel.VariableSort.DISABLED)
    )
    if var.multi:
        v = (
            v.multi(True)
            .include_all(True)
            .current(gmodel.VariableOption(text=["All"], value=["$__all"]))
        )
    return v


# --- panel factories: the few shapes the boards use ------------------------------------------


def thresholds(*steps: tuple[float | None, str]) -> gdb.ThresholdsConfig:
    """Absolute thresholds; the first step's value is ``None`` (minus infinity)."""
    return (
        gdb.ThresholdsConfig()
        .mode(gmodel.ThresholdsMode.ABSOLUTE)
        .steps([gmodel.Threshold(value=v, color=c) for v, c in steps])
    )


def prop(id_: str, value: object) -> gmodel.DynamicConfigValue:
    """One field-config property of an override, e.g. ``prop("unit", "ms")``."""
    return gmodel.DynamicConfigValue(id_val=id_, value=value)


def fixed_color(color: str) -> list[gmodel.DynamicConfigValue]:
    return [prop("color", {"mode": "fixed", "fixedColor": color})]


def display_name(name: str) -> list[gmodel.DynamicConfigValue]:
    return [prop("displayName", name)]


def _colored_cells(colors: dict[str, str]) -> list[gmodel.DynamicConfigValue]:
    """Table cells whose background takes the colour mapped to their text value."""
    mapping = {
        "type": "value",
        "options": {v: {"color": c, "index": i} for i, (v, c) in enumerate(colors.items())},
    }
    return [prop("mappings", [mapping]), prop("custom.cellOptions", {"type": "color-background"})]


def grade_cells() -> list[gmodel.DynamicConfigValue]:
    return _colored_cells(GRADE_COLORS)


def decision_cells() -> list[gmodel.DynamicConfigValue]:
    return _colored_cells(DECISION_COLORS)


def verdict_cells() -> list[gmodel.DynamicConfigValue]:
    return _colored_cells(VERDICT_COLORS)


def state_cells() -> list[gmodel.DynamicConfigValue]:
    return _colored_cells({"online": "green", "offline": "red", "unknown": "gray"})


def stat_panel(title: str, unit: str, steps: gdb.ThresholdsConfig | None = None) -> stat.Panel:
    p = (
        stat.Panel()
        .title(title)
        .unit(unit)
        .graph_mode(gcommon.BigValueGraphMode.NONE)
        .color_mode(gcommon.BigValueColorMode.VALUE)
        .reduce_options(ReduceDataOptions().values(False).calcs(["lastNotNull"]))
    )
    return p.thresholds(steps) if steps is not None else p


def series_panel(
    title: str, unit: str, *, bars: bool = False, stacked: bool = False, min_interval: str = "1m"
) -> timeseries.Panel:
    p = timeseries.Panel().title(title).unit(unit).interval(min_interval).span_nulls(False)
    if bars:
        p = p.draw_style(gcommon.GraphDrawStyle.BARS).fill_opacity(80)
    if stacked:
        p = p.stacking(StackingConfig().mode(gcommon.StackingMode.NORMAL))
    return p


def grade_colors(p: timeseries.Panel) -> timeseries.Panel:
    for grade, color in GRADE_COLORS.items():
        p = p.override_by_name(grade, fixed_color(color))
    return p


def decision_colors(p: _O) -> _O:
    """Fields named PASS, HOLD, REJECT take their decision's colour (stat or time series)."""
    for decision, color in DECISION_COLORS.items():
        p = p.override_by_name(decision, fixed_color(color))
    return p


def table_panel(title: str) -> table.Panel:
    return table.Panel().title(title)


def pie_panel(title: str) -> piechart.Panel:
    p = (
        piechart.Panel()
        .title(title)
        .pie_type(piechart_model.PieChartType.DONUT)
        .reduce_options(ReduceDataOptions().values(False).calcs(["sum"]))
        .display_labels([piechart_model.PieChartLabels.PERCENT])
    )
    for grade, color in GRADE_COLORS.items():
        p = p.override_by_name(grade, fixed_color(color))
    return p


def bar_panel(title: str, x_field: str, *, stacked: bool = False) -> barchart.Panel:
    p = barchart.Panel().title(title).x_field(x_field).show_value(gcommon.VisibilityMode.AUTO)
    if stacked:
        p = p.stacking(gcommon.StackingMode.NORMAL)
    return p


def histogram_panel(title: str, unit: str) -> histogram.Panel:
    return histogram.Panel().title(title).unit(unit).fill_opacity(60)


def heatmap_panel(title: str, unit: str) -> heatmap.Panel:
    """A heatmap of pre-bucketed rows: first column x, every other column one y bucket.

    Grafana draws non-time x since 9.4 (grafana/grafana#60929), so a zone map needs no fake
    time axis.
    """
    return (
        heatmap.Panel()
        .title(title)
        .calculate(False)
        .rows_frame(heatmap.RowsHeatmapOptions().layout(gcommon.HeatmapCellLayout.UNKNOWN))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_model.HeatmapColorMode.SCHEME)
            .scheme("Viridis")
        )
        .cell_values(heatmap.CellValues().unit(unit).decimals(0))
        .show_value(gcommon.VisibilityMode.ALWAYS)
    )


def state_panel(title: str) -> statetimeline.Panel:
    on_off = gmodel.ValueMap(
        options={
            "1": gmodel.ValueMappingResult(text="online", color="green", index=0),
            "0": gmodel.ValueMappingResult(text="offline", color="red", index=1),
        }
    )
    return statetimeline.Panel().title(title).mappings([on_off]).merge_values(True)


def write_dashboards(boards: list[Board], out: Path) -> list[Path]:
    """Write one ``<uid>.json`` per board into ``out`` (created if missing)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for board in boards:
        path = out / f"{board.uid}.json"
        path.write_text(board.to_json(), encoding="utf-8")
        paths.append(path)
    return paths
