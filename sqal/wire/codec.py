"""One codec for every SQAL payload: ``bytes → model`` or a :class:`PayloadError`.

The fast path hands the bytes straight to pydantic-core's JSON parser and validator (one pass
in Rust, no intermediate Python dict). Only when that fails does the codec parse again with
:mod:`json` to name the reason precisely: a newer ``v`` is ``unsupported_version`` even when its
shape changed, a list is ``not_object``, and so on. Bad input is the rare path; it may be slow.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar, overload

from pydantic import BaseModel, ValidationError

from sqal.errors import ConfigError, PayloadError
from sqal.wire.enums import DeadReason, Kind
from sqal.wire.models import (
    MODEL_BY_KIND,
    SCHEMA_VERSION,
    DeadLetter,
    DeviceConfig,
    DeviceStatus,
    Frame,
    Lot,
    Recheck,
    Result,
    SpectralFrame,
    TofFrame,
    Weight,
)
from sqal.wire.topics import DeviceTopic, kind_of, parse_lot_topic, parse_topic

MAX_PAYLOAD_BYTES = 64 * 1024
"""Largest payload accepted. An 8x8 ToF frame with its CNH histogram is about 12 KiB."""

MAX_MESSAGE_BYTES = 256 * 1024
"""The brokers' ``message_size_limit`` (``mosquitto/*.conf``, the embedded broker): anything
larger never reaches a service."""

MAX_PACKET_BYTES = MAX_MESSAGE_BYTES + 8 * 1024
"""The brokers' ``max_packet_size``: a whole PUBLISH packet, the payload's limit plus 8 KiB for
the topic and properties. Mosquitto announces it in CONNACK (MQTT 5 section 3.2.2.3.6), so
SQAL's publishers refuse a larger message before sending it (``sqal.publisher``). Between the
two limits the broker answers PUBACK 0x95, which paho 2.x reads as a malformed packet and
drops the connection over; the publisher then fails naming the packet."""

MAX_DEAD_LETTER_BYTES = 512 * 1024
"""Largest dead letter accepted (context plus the refused message in base64)."""

MAX_DEAD_PAYLOAD_BYTES = 128 * 1024
"""A published dead letter carries at most this much of the refused message (171 KiB in
base64), so it stays under the broker's ``message_size_limit``: a bigger one would be refused
and get its publisher disconnected. Nothing is lost by the cut: ingest receives the original
message too and stores it whole in ``dead_letters``."""

M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    """Compact UTF-8 JSON of a payload.

    ``None`` fields are left out (a frame's optional extras), except in results: their ``null``
    sections and indices are part of the contract ("a sensor section is null when its frame
    never came"), and the reject gate reads them as such.
    """
    return model.model_dump_json(exclude_none=not isinstance(model, Result)).encode()


def _explain(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "payload"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


def _diagnose(payload: bytes, exc: ValidationError, topic: str | None) -> PayloadError:
    """Name the reason a payload failed validation, checking ``v`` before the schema."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        return PayloadError(DeadReason.NOT_UTF8, f"byte {err.start} is not UTF-8", topic)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as err:
        return PayloadError(DeadReason.BAD_JSON, str(err)[:200], topic)
    if not isinstance(doc, dict):
        return PayloadError(
            DeadReason.NOT_OBJECT, f"top level is {type(doc).__name__}, not an object", topic
        )
    v = doc.get("v", SCHEMA_VERSION)
    if isinstance(v, int) and not isinstance(v, bool) and v > SCHEMA_VERSION:
        return PayloadError(
            DeadReason.UNSUPPORTED_VERSION, f"v={v}, newest supported is {SCHEMA_VERSION}", topic
        )
    return PayloadError(DeadReason.SCHEMA, _explain(exc), topic)


def decode_as(model: type[M], payload: bytes, topic: str | None = None) -> M:
    """Validate ``payload`` as ``model``.

    Raises:
        PayloadError: ``too_large``, ``not_utf8``, ``bad_json``, ``not_object``,
            ``unsupported_version`` or ``schema``.
    """
    limit = MAX_DEAD_LETTER_BYTES if model is DeadLetter else MAX_PAYLOAD_BYTES
    if len(payload) > limit:
        raise PayloadError(DeadReason.TOO_LARGE, f"{len(payload)} bytes > {limit}", topic)
    try:
        obj = model.model_validate_json(payload, strict=True)  # sqal.wire.models: no coercion
    except ValidationError as exc:
        raise _diagnose(payload, exc, topic) from None
    except RecursionError:
        raise PayloadError(DeadReason.BAD_JSON, "nested too deeply", topic) from None
    v = getattr(obj, "v", SCHEMA_VERSION)
    if v > SCHEMA_VERSION:
        raise PayloadError(
            DeadReason.UNSUPPORTED_VERSION, f"v={v}, newest supported is {SCHEMA_VERSION}", topic
        )
    return obj


MAX_TS_WINDOW_HOURS = 87_600.0
"""Widest ``--ts-window-hours``: ten years."""


@dataclass(frozen=True, slots=True)
class TsWindow:
    """How far a payload's ``ts`` may lie from the time it arrived (``--ts-window-hours``).

    A device clock resync moves ``ts`` by seconds to hours; a frame stamped years away would
    make the database open a chunk for it (thousands of them ran the server out of shared
    memory, for every device). Ahead: the window. Behind: the window plus the seven days a
    broker keeps a service's session (``sqal.mqtt.SESSION_EXPIRY_S``), since frames queued
    through a long outage arrive late but are real.
    """

    ahead: timedelta = timedelta(hours=24)
    behind: timedelta = timedelta(hours=24) + timedelta(days=7)

    @classmethod
    def hours(cls, h: float, flag: str = "--ts-window-hours") -> TsWindow:
        """The window of ``h`` hours ahead (and ``h`` hours plus seven days behind).

        Raises:
            ConfigError: ``h`` is not a number of hours from 0 to :data:`MAX_TS_WINDOW_HOURS`
                (``nan`` passes a range check; past ten years ``now ± window`` soon leaves
                ``datetime``'s range).
        """
        if not (math.isfinite(h) and 0.0 <= h <= MAX_TS_WINDOW_HOURS):
            raise ConfigError(f"{flag} {h!r}: give 0 to {MAX_TS_WINDOW_HOURS:g} hours (ten years)")
        return cls(timedelta(hours=h), timedelta(hours=h) + timedelta(days=7))

    def check(
        self, obj: Frame, arrived: datetime, topic: str | None = None, retained: bool = False
    ) -> None:
        """Raise ``ts_out_of_range`` unless ``obj.ts`` (when it has one) is inside the window.

        A device config is state, set whenever an operator set it, so its ``ts`` may be any age
        (and only the config and calibrate users may publish one). A retained status sent on
        subscribing is the device's last word, however old; when it was published live it
        passed this check. Frames, weights, results and live statuses are events: they are checked.

        Raises:
            PayloadError: ``ts_out_of_range``.
        """
        if isinstance(obj, DeviceConfig) or (retained and isinstance(obj, DeviceStatus)):
            return
        ts = getattr(obj, "ts", None)
        if ts is None or arrived - self.behind <= ts <= arrived + self.ahead:
            return
        raise PayloadError(
            DeadReason.TS_OUT_OF_RANGE,
            f"ts {ts.isoformat()} is outside {arrived.isoformat()} -{self.behind} / +{self.ahead}",
            topic,
        )


DEFAULT_TS_WINDOW = TsWindow()


@overload
def decode(topic: str, payload: bytes) -> Frame: ...
@overload
def decode(topic: DeviceTopic, payload: bytes) -> Frame: ...
def decode(topic: str | DeviceTopic, payload: bytes) -> Frame:
    """Decode a payload that arrived on a device topic into the model of its kind.

    Args:
        topic: the MQTT topic (parsed or not); its kind picks the model and its device must
            match the payload's ``device_id``.
        payload: the raw message bytes.

    Raises:
        PayloadError: with a :class:`~sqal.wire.enums.DeadReason`; never another exception.
    """
    parsed = topic if isinstance(topic, DeviceTopic) else parse_topic(topic)
    name = str(parsed)
    model = MODEL_BY_KIND[parsed.kind]
    try:
        obj = decode_as(model, payload, name)
    except PayloadError as exc:
        if model is DeviceConfig and exc.reason is DeadReason.SCHEMA:
            # A config that does not validate (NaN, a negative dark reference, a reflectance
            # of 0, …) is refused whole: the device keeps scoring with its last good one.
            raise PayloadError(DeadReason.BAD_CONFIG, exc.detail, name) from None
        raise
    if obj.device_id != parsed.device:
        raise PayloadError(
            DeadReason.DEVICE_MISMATCH,
            f"device_id {obj.device_id!r} differs from the topic's {parsed.device!r}",
            name,
        )
    assert isinstance(
        obj, TofFrame | SpectralFrame | Weight | DeviceStatus | DeviceConfig | Result | Recheck
    )
    return obj


def decode_lot(topic: str, payload: bytes) -> tuple[str, Lot]:
    """Decode a lot retained on ``sqal/v1/{line}/lot``: the line and its lot.

    Raises:
        PayloadError: ``bad_topic``, or any reason of :func:`decode_as`.
    """
    line = parse_lot_topic(topic)
    return line, decode_as(Lot, payload, topic)


def decode_tof(payload: bytes, topic: str | None = None) -> TofFrame:
    """Validate a ToF frame without a topic (captures, tests)."""
    return decode_as(TofFrame, payload, topic)


def decode_spectral(payload: bytes, topic: str | None = None) -> SpectralFrame:
    """Validate a spectral frame without a topic (captures, tests)."""
    return decode_as(SpectralFrame, payload, topic)


SAMPLE_KINDS = frozenset({Kind.TOF, Kind.SPECTRAL, Kind.WEIGHT, Kind.RESULT})
"""Kinds whose payload belongs to one tray: they carry its ``sample_id``."""


def rename_sample(topic: str, payload: bytes, rename: Callable[[str], str]) -> bytes | None:
    """The payload with its ``sample_id`` replaced by ``rename(sample_id)``, nothing else changed.

    For ``sqal replay --fresh-ids``: give the same ``rename`` to every message of a tray and its
    frames, weight and result still meet under the new id. Numbers survive the JSON round trip
    exactly (Python's ``repr`` of a float reads back as the same float).

    Returns:
        None when ``topic`` is not a sample's kind (config, status, dead letters...) or the
        payload has no string ``sample_id`` (bad input is replayed as it was recorded).
    """
    if kind_of(topic) not in SAMPLE_KINDS:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("sample_id"), str):
        return None
    doc["sample_id"] = rename(doc["sample_id"])
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def is_config_deleted(topic: DeviceTopic, payload: bytes) -> bool:
    """A device's retained config was deleted: an empty payload on its config topic.

    ``sqal config delete`` publishes it, retained; the broker drops what it retained and, as
    for any publish, delivers the empty message to the subscribers of the topic (MQTT 5 section
    3.3.1.3). It is no config to decode: the device is back to having none.
    """
    return topic.kind is Kind.CONFIG and not payload


def dead_letter(
    stage: str, topic: str, payload: bytes, error: PayloadError, now: datetime | None = None
) -> DeadLetter:
    """Wrap an unusable message for ``sqal/v1/_dead/{stage}``; the payload travels as base64.

    A payload over :data:`MAX_DEAD_PAYLOAD_BYTES` is cut to that size; ``payload_bytes`` keeps
    its real size.
    """
    return DeadLetter(
        stage=stage,
        topic=topic,
        reason=error.reason,
        detail=error.detail,
        payload_b64=base64.b64encode(payload[:MAX_DEAD_PAYLOAD_BYTES]).decode("ascii"),
        payload_bytes=len(payload),
        received_at=now or datetime.now(UTC),
    )


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "SAMPLE_KINDS",
    "Kind",
    "dead_letter",
    "decode",
    "decode_as",
    "decode_lot",
    "decode_spectral",
    "decode_tof",
    "encode",
    "is_config_deleted",
    "rename_sample",
]
