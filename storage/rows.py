"""Payload models → table rows, in the COPY column order of :mod:`storage.tables`, and frame rows
back to models (pure).

A :class:`PendingRow` is what :class:`storage.writer.BatchWriter` takes: the row and the
message it came from, so a row the database refuses becomes its own :class:`DeadRow`.

Matrices stay the nested ``layout × layout`` lists of the wire; the writer's numpy dumpers
(:mod:`storage.arrays`) flatten them row-major (zone i = r·N + c, docs/domain.md §1) into one-
dimensional ``smallint[]`` / ``real[]``, and the ``layout`` column says how to fold them back.
Fields beyond the v1 contract (the models keep them, docs/contract.md) go to ``extra``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from sqal.wire import (
    CHANNELS,
    DeviceConfig,
    DeviceStatus,
    DeviceTopic,
    Frame,
    Lot,
    Recheck,
    Result,
    SpectralFrame,
    TofFrame,
    Weight,
)
from storage.tables import (
    CONFIG,
    DEAD_LETTERS,
    RECHECKS,
    RESULTS,
    SPECTRAL,
    STATUS,
    TOF,
    WEIGHTS,
    Table,
)

STATUS_SAMPLE_ID = "status"
CONFIG_SAMPLE_ID = "config"
"""``sample_id`` of ``device_status`` rows: a status message belongs to no sample."""


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A row for one of :data:`~storage.tables.TABLES`, with the message it came from.

    Attributes:
        table: the table's name.
        values: in the table's COPY column order.
        topic: the MQTT topic the message arrived on.
        payload: the message as received; the dead letter of a refused row keeps it.
        tag: the caller's handle (ingest: the message's position in its batch), given back in
            a :class:`~storage.writer.Refusal`.
    """

    table: str
    values: tuple[object, ...]
    topic: str
    payload: bytes
    tag: int


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL; a dead letter must never be refused itself.
    return text.replace("\x00", "\\0")


@dataclass(frozen=True, slots=True)
class DeadRow:
    """A ``dead_letters`` row; NUL in ``stage``, ``topic`` and ``detail`` is written ``\\0``."""

    received_at: datetime
    stage: str
    topic: str
    line_id: str | None
    device_id: str | None
    reason: str
    detail: str
    payload: bytes

    def __post_init__(self) -> None:
        for name in ("stage", "topic", "detail"):
            object.__setattr__(self, name, _clean(getattr(self, name)))

    def values(self) -> tuple[object, ...]:
        """The row in :data:`~storage.tables.DEAD_LETTERS` column order."""
        return tuple(getattr(self, c) for c in DEAD_LETTERS.column_names)


def _extra(extra: dict[str, Any] | None, more: dict[str, Any] | None = None) -> Jsonb | None:
    doc = {**(extra or {}), **(more or {})}
    return Jsonb(doc) if doc else None


def _fields(section: object | None, *names: str) -> tuple[object, ...]:
    """A section's fields in order; NULLs when the section is missing."""
    if section is None:
        return (None,) * len(names)
    return tuple(getattr(section, n) for n in names)


def _frame_head(topic: DeviceTopic, f: TofFrame | SpectralFrame | Weight) -> tuple[object, ...]:
    """The columns a frame row starts with: ``ts, line_id, device_id, sample_id, seq, v``."""
    return (f.ts, topic.line, f.device_id, f.sample_id, f.seq, f.v)


def tof_row(topic: DeviceTopic, f: TofFrame) -> tuple[object, ...]:
    """A ``tof_frames`` row."""
    h = f.histogram
    hist_extra = {"histogram": h.model_extra} if h is not None and h.model_extra else None
    return (
        *_frame_head(topic, f),
        f.layout,
        f.distance_mm,
        f.target_status,
        f.signal_per_spad,
        f.ambient_per_spad,
        f.range_sigma_mm,
        f.reflectance_pct,
        f.ranging_hz,
        f.integration_ms,
        f.sensor_temp_c,
        h.start_bin if h else None,
        h.sub_sample if h else None,
        h.bin_width_mm if h else None,
        h.agg_map if h else None,
        (len(h.bins[0]) if h.bins else 0) if h else None,
        h.bins if h else None,
        h.ambient if h else None,
        _extra(f.model_extra, hist_extra),
    )


def spectral_row(topic: DeviceTopic, f: SpectralFrame) -> tuple[object, ...]:
    """A ``spectral_frames`` row; channels as columns in wire order (docs/domain.md §3)."""
    return (
        *_frame_head(topic, f),
        *f.channels.as_tuple(),
        f.gain,
        f.atime,
        f.astep,
        f.integration_ms,
        f.led_ma,
        [c.value for c in f.saturated],
        f.flicker_hz,
        _extra(f.model_extra),
    )


def weight_row(topic: DeviceTopic, w: Weight) -> tuple[object, ...]:
    """A ``weights`` row."""
    return (*_frame_head(topic, w), w.mass_g, w.sigma_g, _extra(w.model_extra))


def result_row(topic: DeviceTopic, r: Result) -> tuple[object, ...]:
    """A ``results`` row; a missing sensor section leaves its columns NULL."""
    t, s = r.tof, r.spectral
    lab = s.lab if s is not None else None
    return (
        r.ts,
        topic.line,
        r.device_id,
        r.sample_id,
        r.v,
        r.profile,
        r.calibration_id,
        r.fusion.final_score,
        r.fusion.final_grade.value,
        r.fusion.confidence,
        [d.value for d in r.fusion.defects],
        t is not None,
        *_fields(
            t,
            "volume_mm3",
            "mass_g",
            "avg_height_mm",
            "max_height_mm",
            "height_variation_mm",
            "surface_uniformity",
            "tilt_deg",
            "fill_ratio",
            "valid_zones",
            "quality_score",
        ),
        t.grade.value if t else None,
        [d.value for d in t.defects] if t else None,
        s is not None,
        *_fields(s, "freshness_index", "fat_quality_index", "oxidation_index", "color_uniformity"),
        *_fields(lab, "L", "a", "b"),
        s.quality_score if s else None,
        s.grade.value if s else None,
        [d.value for d in s.defects] if s else None,
        r.analyzer.version,
        r.analyzer.processing_ms,
        r.fusion.decision.value if r.fusion.decision is not None else None,
        r.fusion.data_quality,
        r.fusion.p_reject,
        Jsonb({k.value: v for k, v in r.fusion.p_defects.items()}) if r.fusion.decision else None,
        r.weight.mass_g if r.weight is not None else None,
        r.mode.value,
        r.lot,
        t.sigma_mass_g if t else None,
        r.weight.sigma_g if r.weight is not None else None,
    )


def status_row(topic: DeviceTopic, st: DeviceStatus, received_at: datetime) -> tuple[object, ...]:
    """A ``device_status`` row; a last will without ``ts`` is stamped with its arrival time."""
    return (
        st.ts or received_at,
        topic.line,
        st.device_id,
        STATUS_SAMPLE_ID,
        st.v,
        st.state.value,
        st.firmware,
        st.temperature_c,
        st.humidity_pct,
        st.uptime_s,
        _extra(st.model_extra),
    )


def config_row(topic: DeviceTopic, cfg: DeviceConfig, received_at: datetime) -> tuple[object, ...]:
    """A ``device_config`` row: settings, the calibration and checkweigher blocks kept whole
    (audits)."""
    cal = cfg.calibration
    return (
        cfg.ts or received_at,
        topic.line,
        cfg.device_id,
        CONFIG_SAMPLE_ID,
        cfg.v,
        cfg.profile,
        cal.id if cal else None,
        cal.ts if cal else None,
        Jsonb(cfg.tof.model_dump(mode="json")),
        Jsonb(cfg.spectral.model_dump(mode="json")),
        Jsonb(cal.model_dump(mode="json", exclude_none=True)) if cal else None,
        Jsonb(cfg.checkweigher.model_dump(mode="json")) if cfg.checkweigher else None,
        cfg.mode.value,
    )


@dataclass(frozen=True, slots=True)
class LotRow:
    """A ``lots`` row (:data:`~storage.tables.LOTS`), with the message it came from.

    Attributes:
        tag: the caller's handle, given back in a :class:`~storage.writer.Refusal` when the lot
            conflicts with a stored one.
    """

    line_id: str
    lot: Lot
    topic: str
    payload: bytes
    tag: int

    def values(self) -> tuple[object, ...]:
        """The row in :data:`~storage.tables.LOTS` column order."""
        x = self.lot
        return (self.line_id, x.lot, x.product, x.qn_g, x.tne_g, x.started, x.ended, x.note)


def recheck_row(topic: DeviceTopic, r: Recheck) -> tuple[object, ...]:
    """A ``rechecks`` row: the same for the station's own insert and ingest's, so whichever
    comes second finds its key stored with the same content and inserts nothing."""
    return (
        r.ts,
        topic.line,
        r.device_id,
        r.sample_id,
        r.v,
        r.result_ts,
        r.decision.value,
        r.answer.value,
        r.mass_g,
        r.note,
        r.user,
    )


def to_row(
    topic: DeviceTopic, frame: Frame, received_at: datetime
) -> tuple[str, tuple[object, ...]] | None:
    """``(table, values)`` for a decoded payload; ``None`` for kinds that are not stored."""
    if isinstance(frame, TofFrame):
        return TOF.name, tof_row(topic, frame)
    if isinstance(frame, SpectralFrame):
        return SPECTRAL.name, spectral_row(topic, frame)
    if isinstance(frame, Weight):
        return WEIGHTS.name, weight_row(topic, frame)
    if isinstance(frame, Result):
        return RESULTS.name, result_row(topic, frame)
    if isinstance(frame, DeviceStatus):
        return STATUS.name, status_row(topic, frame, received_at)
    if isinstance(frame, DeviceConfig):
        return CONFIG.name, config_row(topic, frame, received_at)
    if isinstance(frame, Recheck):
        return RECHECKS.name, recheck_row(topic, frame)
    return None


def pending_row(
    topic: DeviceTopic, frame: Frame, received_at: datetime, payload: bytes, tag: int
) -> PendingRow | None:
    """The :class:`PendingRow` of a decoded message; ``None`` for kinds that are not stored.

    Args:
        topic: the topic it arrived on, parsed.
        frame: its payload, decoded.
        received_at: its arrival (stamps a status or config without ``ts``).
        payload: the raw message.
        tag: the caller's handle, given back in a :class:`~storage.writer.Refusal`.
    """
    row = to_row(topic, frame, received_at)
    if row is None:
        return None
    return PendingRow(row[0], row[1], str(topic), payload, tag)


# Rows → models: the inverse of tof_row, spectral_row and weight_row, for code that re-reads
# stored frames (sqal calibrate --reference re-scores them). A row is in its table's COPY order.


def _folded(flat: Any, layout: int) -> list[list[Any]]:
    """A row-major one-dimensional array column folded back into ``layout × layout``."""
    values = list(flat)
    return [values[r * layout : (r + 1) * layout] for r in range(layout)]


def _frame_fields(table: Table, row: Sequence[object]) -> dict[str, Any]:
    """The fields every frame row starts with (``_frame_head``), and its ``extra`` merged in."""
    extra = table.value(row, "extra")
    fields: dict[str, Any] = dict(extra) if isinstance(extra, dict) else {}
    fields.update({c: table.value(row, c) for c in ("ts", "device_id", "sample_id", "seq", "v")})
    return fields


def tof_frame(row: Sequence[object]) -> TofFrame:
    """The :class:`TofFrame` of a ``tof_frames`` row (the inverse of :func:`tof_row`).

    Raises:
        pydantic.ValidationError: the row holds what no valid frame has.
    """
    t = TOF
    fields = _frame_fields(t, row)
    hist_extra = fields.pop("histogram", None)
    layout = int(t.value(row, "layout"))  # type: ignore[call-overload]
    fields["layout"] = layout
    for name in (
        "distance_mm",
        "target_status",
        "signal_per_spad",
        "ambient_per_spad",
        "range_sigma_mm",
        "reflectance_pct",
    ):
        fields[name] = _folded(t.value(row, name), layout)
    for name in ("ranging_hz", "integration_ms", "sensor_temp_c"):
        fields[name] = t.value(row, name)
    if t.value(row, "hist_start_bin") is not None:
        count = int(t.value(row, "hist_bin_count") or 0)  # type: ignore[call-overload]
        flat = list(t.value(row, "hist_bins") or [])  # type: ignore[call-overload]
        fields["histogram"] = {
            **(hist_extra if isinstance(hist_extra, dict) else {}),
            "start_bin": t.value(row, "hist_start_bin"),
            "sub_sample": t.value(row, "hist_sub_sample"),
            "bin_width_mm": t.value(row, "hist_bin_width_mm"),
            "agg_map": t.value(row, "hist_agg_map"),
            "bins": [flat[i : i + count] for i in range(0, len(flat), count)] if count else [],
            "ambient": t.value(row, "hist_ambient"),
        }
    return TofFrame.model_validate(fields)


_CHANNEL_COLUMNS = tuple(c.value.lower() for c in CHANNELS)
"""``spectral_frames``' count columns, in wire order (``f1_415nm`` … ``flicker``)."""


def spectral_frame(row: Sequence[object]) -> SpectralFrame:
    """The :class:`SpectralFrame` of a ``spectral_frames`` row (the inverse of
    :func:`spectral_row`).

    Raises:
        pydantic.ValidationError: the row holds what no valid frame has.
    """
    s = SPECTRAL
    fields = _frame_fields(s, row)
    fields["channels"] = {
        c.value: s.value(row, col) for c, col in zip(CHANNELS, _CHANNEL_COLUMNS, strict=True)
    }
    for name in ("gain", "atime", "astep", "integration_ms", "led_ma", "saturated", "flicker_hz"):
        fields[name] = s.value(row, name)
    return SpectralFrame.model_validate(fields)


def weight_frame(row: Sequence[object]) -> Weight:
    """The :class:`Weight` of a ``weights`` row (the inverse of :func:`weight_row`).

    Raises:
        pydantic.ValidationError: the row holds what no valid weight has.
    """
    fields = _frame_fields(WEIGHTS, row)
    fields["mass_g"] = WEIGHTS.value(row, "mass_g")
    fields["sigma_g"] = WEIGHTS.value(row, "sigma_g")
    return Weight.model_validate(fields)
