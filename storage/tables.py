"""The columns written into each table, in COPY order, with their PostgreSQL types.

The DDL lives in ``storage/migrations/``; these lists name the subset the writer fills
(defaults such as ``received_at`` are left to the server). ``tests/test_storage_schema.py``
checks every column here exists in the migrated schema with this type. Code that reads a row
finds a column by name (:meth:`Table.index`, :meth:`Table.value`, :meth:`Table.key`), never by
its position; :mod:`storage.rows` builds the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg import sql

_INT_BITS = {"int2": 16, "int4": 32, "int8": 64}

KEY = ("line_id", "device_id", "sample_id", "ts")
"""The unique index of every keyed table (``storage/migrations``), in its column order: a device
id is unique within its line only."""


@dataclass(frozen=True, slots=True)
class Table:
    """A table the writer fills.

    Attributes:
        name: the table's name.
        columns: ``(column, type)`` in COPY order; the type names what binary COPY sends.
        keyed: True when a unique :data:`KEY` index makes writes idempotent.
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    keyed: bool = True

    positions: dict[str, int] = field(init=False, repr=False, compare=False)
    """Each column's position in a row."""

    int_ranges: tuple[tuple[int, str, int, int, bool], ...] = field(init=False)
    """``(index, column, low, high, is_array)`` of every integer column.

    psycopg's binary dumpers wrap an int that overflows its declared type (40000 sent as
    ``int2`` arrives as -25536), so the writer checks ranges before COPY.
    """

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", {c: i for i, (c, _) in enumerate(self.columns)})
        if self.keyed and not set(KEY) <= self.positions.keys():
            raise ValueError(f"keyed table {self.name} lacks a key column of {KEY}")
        out = []
        for i, (name, typ) in enumerate(self.columns):
            base = typ.removesuffix("[]")
            if base in _INT_BITS:
                bits = _INT_BITS[base]
                lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
                out.append((i, name, lo, hi, typ.endswith("[]")))
        object.__setattr__(self, "int_ranges", tuple(out))

    def index(self, column: str) -> int:
        """The position of ``column`` in this table's rows.

        Raises:
            KeyError: no such column.
        """
        return self.positions[column]

    def value(self, row: Sequence[object], column: str) -> object:
        """``column``'s value in ``row`` (a row in this table's COPY order)."""
        return row[self.positions[column]]

    def key(self, row: Sequence[object]) -> tuple[object, ...]:
        """``row``'s unique key, in :data:`KEY` order."""
        return tuple(row[self.positions[c]] for c in KEY)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    @property
    def copy_types(self) -> list[str]:
        return [t for _, t in self.columns]

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.name)

    @property
    def column_list(self) -> sql.Composed:
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.column_names)


_IDENTITY = (
    ("ts", "timestamptz"),
    ("line_id", "text"),
    ("device_id", "text"),
    ("sample_id", "text"),
)
"""The columns every keyed table starts with: the :data:`KEY` and the line."""

TOF = Table(
    "tof_frames",
    (
        *_IDENTITY,
        ("seq", "int8"),
        ("v", "int2"),
        ("layout", "int2"),
        ("distance_mm", "int2[]"),
        ("target_status", "int2[]"),
        ("signal_per_spad", "float4[]"),
        ("ambient_per_spad", "float4[]"),
        ("range_sigma_mm", "float4[]"),
        ("reflectance_pct", "float4[]"),
        ("ranging_hz", "float4"),
        ("integration_ms", "float4"),
        ("sensor_temp_c", "float4"),
        ("hist_start_bin", "int4"),
        ("hist_sub_sample", "int4"),
        ("hist_bin_width_mm", "float4"),
        ("hist_agg_map", "int4[]"),
        ("hist_bin_count", "int4"),
        ("hist_bins", "float4[]"),
        ("hist_ambient", "float4[]"),
        ("extra", "jsonb"),
    ),
)

SPECTRAL = Table(
    "spectral_frames",
    (
        *_IDENTITY,
        ("seq", "int8"),
        ("v", "int2"),
        ("f1_415nm", "int4"),
        ("f2_445nm", "int4"),
        ("f3_480nm", "int4"),
        ("f4_515nm", "int4"),
        ("f5_555nm", "int4"),
        ("f6_590nm", "int4"),
        ("f7_630nm", "int4"),
        ("f8_680nm", "int4"),
        ("clear", "int4"),
        ("nir_910nm", "int4"),
        ("flicker", "int4"),
        ("gain", "float4"),
        ("atime", "int2"),
        ("astep", "int4"),
        ("integration_ms", "float4"),
        ("led_ma", "int2"),
        ("saturated", "text[]"),
        ("flicker_hz", "int2"),
        ("extra", "jsonb"),
    ),
)

WEIGHTS = Table(
    "weights",
    (
        *_IDENTITY,
        ("seq", "int8"),
        ("v", "int2"),
        ("mass_g", "float8"),
        ("sigma_g", "float8"),
        ("extra", "jsonb"),
    ),
)

RESULTS = Table(
    "results",
    (
        *_IDENTITY,
        ("v", "int2"),
        ("profile", "text"),
        ("calibration_id", "text"),
        ("final_score", "float4"),
        ("final_grade", "text"),
        ("confidence", "float4"),
        ("defects", "text[]"),
        ("tof_present", "bool"),
        ("tof_volume_mm3", "float4"),
        ("tof_mass_g", "float4"),
        ("tof_avg_height_mm", "float4"),
        ("tof_max_height_mm", "float4"),
        ("tof_height_variation_mm", "float4"),
        ("tof_surface_uniformity", "float4"),
        ("tof_tilt_deg", "float4"),
        ("tof_fill_ratio", "float4"),
        ("tof_valid_zones", "int2"),
        ("tof_quality_score", "float4"),
        ("tof_grade", "text"),
        ("tof_defects", "text[]"),
        ("spectral_present", "bool"),
        ("spectral_freshness_index", "float4"),
        ("spectral_fat_quality_index", "float4"),
        ("spectral_oxidation_index", "float4"),
        ("spectral_color_uniformity", "float4"),
        ("spectral_lab_l", "float4"),
        ("spectral_lab_a", "float4"),
        ("spectral_lab_b", "float4"),
        ("spectral_quality_score", "float4"),
        ("spectral_grade", "text"),
        ("spectral_defects", "text[]"),
        ("analyzer_version", "text"),
        ("processing_ms", "float4"),
        ("decision", "text"),
        ("data_quality", "float4"),
        ("p_reject", "float4"),
        ("p_defects", "jsonb"),
        ("weight_mass_g", "float8"),
        ("mode", "text"),
        ("lot_id", "text"),
        ("tof_sigma_mass_g", "float4"),
        ("weight_sigma_g", "float8"),
    ),
)

STATUS = Table(
    "device_status",
    (
        *_IDENTITY,
        ("v", "int2"),
        ("state", "text"),
        ("firmware", "text"),
        ("temperature_c", "float4"),
        ("humidity_pct", "float4"),
        ("uptime_s", "float8"),
        ("extra", "jsonb"),
    ),
)

CONFIG = Table(
    "device_config",
    (
        *_IDENTITY,
        ("v", "int2"),
        ("profile", "text"),
        ("calibration_id", "text"),
        ("calibration_ts", "timestamptz"),
        ("tof", "jsonb"),
        ("spectral", "jsonb"),
        ("calibration", "jsonb"),
        ("checkweigher", "jsonb"),
        ("mode", "text"),
    ),
)

RECHECKS = Table(
    "rechecks",
    (
        *_IDENTITY,
        ("v", "int2"),
        ("result_ts", "timestamptz"),
        ("decision", "text"),
        ("answer", "text"),
        ("mass_g", "float8"),
        ("note", "text"),
        ("user_name", "text"),
    ),
)

DEAD_LETTERS = Table(
    "dead_letters",
    (
        ("received_at", "timestamptz"),
        ("stage", "text"),
        ("topic", "text"),
        ("line_id", "text"),
        ("device_id", "text"),
        ("reason", "text"),
        ("detail", "text"),
        ("payload", "bytea"),
    ),
    keyed=False,
)

LOTS = Table(
    "lots",
    (
        ("line_id", "text"),
        ("lot_id", "text"),
        ("product", "text"),
        ("qn_g", "float8"),
        ("tne_g", "float8"),
        ("started", "timestamptz"),
        ("ended", "timestamptz"),
        ("note", "text"),
    ),
    keyed=False,
)
"""A line's lots (migration 0011): upserted by the writer on (``line_id``, ``lot_id``), not
COPied: a lot arrives once when opened and again when ended."""

TABLES: dict[str, Table] = {
    t.name: t for t in (TOF, SPECTRAL, WEIGHTS, RESULTS, STATUS, CONFIG, RECHECKS, DEAD_LETTERS)
}
"""Every table ingest writes, by name."""

ROLLUP_TABLES = ("results_1m", "defects_1m")
"""Per-minute roll-ups of ``results``, maintained in the writer's transaction."""
