"""One catalogue of hostile payloads, and the checks that run it against a running stage.

Every entry of :data:`CATALOGUE` is a message no stage may use: a topic and payload built for a
line and device, the dead-letter reason both stages must give, and what ``sqal.wire.decode``
says of it. Where a stage treats an entry differently *on purpose* (it never receives the topic,
or the topic means something else to it) the entry says so with the reason why; where the two
stages disagree without such a reason the entry names the known inconsistency, and the test of
that stage is a strict xfail (:meth:`Hostile.marks`).

The checks (:func:`check`, :func:`check_dead_letter`, :func:`check_not_delivered`) publish one
message to a running stage (:class:`AnalyzerStage`, :class:`IngestStage`: the service in a
thread of this process, on the real broker and database), then a *sentinel* (bad JSON on a
topic of its own) whose dead letter proves the stage is past the hostile message, and assert:
one dead letter with the expected reason and the original payload, nothing else produced, the
dead-letter counter moved by one, and every message acknowledged.

Users: tests/test_hostile_input.py (the whole catalogue against both stages), the codec test
(``decode``'s verdicts), the analyzer and ingest service tests, and the chaos fuzz suite.
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import math
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest
from psycopg import sql
from pydantic import BaseModel, ValidationError

from analyzer.service import AnalyzerConfig, AnalyzerService
from ingest.service import IngestConfig, IngestService
from sqal.mqtt import client_id, paho_client
from sqal.wire import (
    MAX_PAYLOAD_BYTES,
    DeadLetter,
    DeadReason,
    Kind,
    dead_letter_topic,
    encode,
)
from sqal.wire.codec import MAX_DEAD_PAYLOAD_BYTES
from storage.tables import DEAD_LETTERS, TABLES
from tests.frames import spectral_frame, tof_frame, weight
from tests.test_ingest_frames import drop_session

ANALYZER = "analyzer"
INGEST = "ingest"
STAGES = (ANALYZER, INGEST)

Build = Callable[[str, str], tuple[str, bytes]]
"""``(line, device) -> (topic, payload)``: an entry's message for one line and device."""


@dataclass(frozen=True, eq=False)
class Hostile:
    """One hostile message and what every stage must make of it.

    Attributes:
        id: the test id.
        build: the message for a line and device (tests give each check a line of its own).
        reason: the dead-letter reason every stage that receives the message must give.
        detail: a substring the dead letter's ``detail`` must contain.
        wire: what :func:`sqal.wire.decode` raises for it; ``None`` when it decodes (the
            stages refuse it on other grounds). ``...`` (the default): ``reason``.
        not_delivered: stage -> why it never receives the topic (not subscribed).
        known: stage -> a known inconsistency between the stages: that stage's check is a
            strict xfail until a later issue settles it (``reason`` is the proposed verdict).
    """

    id: str
    build: Build
    reason: DeadReason
    detail: str | None = None
    wire: DeadReason | EllipsisType | None = ...
    not_delivered: Mapping[str, str] = field(default_factory=dict)
    known: Mapping[str, str] = field(default_factory=dict)

    def expected(self, stage: str) -> DeadReason | None:
        """The reason ``stage`` must dead-letter the message with; ``None``: never received."""
        if stage in self.not_delivered:
            return None
        return self.reason

    @property
    def decode_reason(self) -> DeadReason | None:
        """What ``sqal.wire.decode`` raises; ``None`` when it returns a model."""
        return self.reason if isinstance(self.wire, EllipsisType) else self.wire

    @property
    def dead_lettered_by_both(self) -> bool:
        """Both stages receive it and dead-letter it alike, with no known inconsistency."""
        return not self.known and all(self.expected(s) is self.reason for s in STAGES)

    def marks(self, stage: str) -> list[pytest.MarkDecorator]:
        if stage not in self.known:
            return []
        return [pytest.mark.xfail(strict=True, reason=self.known[stage])]


# --- payload builders ------------------------------------------------------------------------


def frame_doc(kind: Kind, device: str) -> dict[str, Any]:
    """A valid frame of ``kind`` (ToF 8x8, spectral or weight) for ``device``, as a JSON object."""
    makers: dict[Kind, Callable[[str], BaseModel]] = {
        Kind.TOF: tof_frame,
        Kind.SPECTRAL: spectral_frame,
        Kind.WEIGHT: weight,
    }
    model = makers[kind](device)
    doc: dict[str, Any] = json.loads(encode(model))
    return doc


def dumps(doc: object) -> bytes:
    return json.dumps(doc).encode()


def on(kind: Kind, payload: bytes | Callable[[str], bytes]) -> Build:
    """The payload (fixed, or made for the device) on the device's ``kind`` topic."""

    def build(line: str, device: str) -> tuple[str, bytes]:
        body = payload(device) if callable(payload) else payload
        return f"sqal/v1/{line}/{device}/{kind.value}", body

    return build


def at(topic: Callable[[str, str], str], payload: Callable[[str], bytes]) -> Build:
    """The payload on a topic of its own making (bad topics)."""
    return lambda line, device: (topic(line, device), payload(device))


def changed(kind: Kind, **fields: object) -> Callable[[str], bytes]:
    """A valid frame with ``fields`` replaced (or added)."""
    return lambda device: dumps({**frame_doc(kind, device), **fields})


def calibrated(**fields: object) -> Callable[[str], bytes]:
    """A config whose calibration block holds ``fields`` (besides its id and time)."""
    cal = {"id": "c1", "ts": "2026-12-01T08:00:00Z", **fields}
    return lambda device: dumps(
        {"device_id": device, "profile": "foie_gras_lobe_400g", "calibration": cal}
    )


def channel(name: str, count: int) -> Callable[[str], bytes]:
    """A valid spectral frame with one channel's count replaced."""

    def payload(device: str) -> bytes:
        doc = frame_doc(Kind.SPECTRAL, device)
        doc["channels"][name] = count
        return dumps(doc)

    return payload


def without(kind: Kind, name: str) -> Callable[[str], bytes]:
    """A valid frame without the required field ``name``."""

    def payload(device: str) -> bytes:
        doc = frame_doc(kind, device)
        del doc[name]
        return dumps(doc)

    return payload


def valid(kind: Kind) -> Callable[[str], bytes]:
    return lambda device: dumps(frame_doc(kind, device))


def spliced(kind: Kind, name: str, text: str) -> Callable[[str], bytes]:
    """A valid frame whose field ``name`` is the raw JSON ``text`` (json.dumps would recurse)."""

    def payload(device: str) -> bytes:
        doc = {**frame_doc(kind, device), name: "@splice@"}
        return json.dumps(doc).replace('"@splice@"', text).encode()

    return payload


def inserted(kind: Kind, before: str, junk: bytes) -> Callable[[str], bytes]:
    """A valid frame with ``junk`` bytes inserted just before the text ``before``."""

    def payload(device: str) -> bytes:
        raw = dumps(frame_doc(kind, device))
        cut = raw.index(before.encode())
        return raw[:cut] + junk + raw[cut:]

    return payload


def spoofed(kind: Kind) -> Callable[[str], bytes]:
    """A valid frame of another device (``device_id`` differs from the topic's)."""
    return lambda device: dumps(frame_doc(kind, f"{device}-other"))


def layout_4_with_8x8_matrices(device: str) -> bytes:
    doc = frame_doc(Kind.TOF, device)
    doc["layout"] = 4
    return dumps(doc)


def target_status_300(device: str) -> bytes:
    doc: dict[str, Any] = json.loads(encode(tof_frame(device, layout=4)))
    doc["target_status"][0][0] = 300
    return dumps(doc)


def forged_dead_letter(device: str) -> bytes:
    return dumps(
        {
            "stage": ANALYZER,
            "topic": f"sqal/v1/forged/{device}/tof",
            "reason": "schema",
            "detail": "forged",
            "payload_b64": "",
            "received_at": "2026-11-27T08:00:00Z",
        }
    )


def nothing(device: str) -> bytes:
    return b"{}"


# --- why the stages differ ----------------------------------------------------------------------

ANALYZER_KINDS = (
    "the analyzer subscribes to tof, spectral and config only (README, 'Analyzer'); status "
    "messages and results are ingest's to store"
)
NOT_SUBSCRIBED = "no stage subscribes to it: the broker delivers it to neither"
FOREIGN_DEAD = (
    "ingest stores other stages' dead letters (sqal/v1/_dead/+, README 'Ingest') and refuses "
    "one that is not a dead letter as schema; the analyzer does not subscribe there"
)
RESERVED_LINE = (
    "parse_topic calls sqal/v1/_dead/{device}/tof a bad topic and the analyzer dead-letters it "
    "so; ingest takes every topic under sqal/v1/_dead/ for another stage's dead letter"
)


# --- the catalogue -------------------------------------------------------------------------------

R = DeadReason
TOF, SPEC, CFG, WEIGHT = Kind.TOF, Kind.SPECTRAL, Kind.CONFIG, Kind.WEIGHT
FIRST_REFLECTANCE = re.compile(rb'("reflectance_pct":\s*\[\[)[^,\]]+')
"""The first reflectance value of an encoded ToF frame (for numbers JSON cannot express)."""
NEST = 3000
"""Deep enough for both JSON parsers to give up (pydantic-core's and the stdlib's)."""

CATALOGUE: tuple[Hostile, ...] = (
    # Not JSON
    Hostile("bad_json", on(TOF, b"{not json"), R.BAD_JSON),
    Hostile(
        "truncated_json",
        on(TOF, lambda d: b'{"v": 1, "device_id": "' + d.encode() + b'", "sample_id": '),
        R.BAD_JSON,
    ),
    Hostile("empty", on(TOF, b""), R.BAD_JSON),
    Hostile("trailing_garbage", on(TOF, lambda d: valid(TOF)(d) + b" x"), R.BAD_JSON),
    Hostile("utf8_bom", on(TOF, lambda d: b"\xef\xbb\xbf" + valid(TOF)(d)), R.BAD_JSON),
    Hostile("spectral_bad_json", on(SPEC, b"{not json"), R.BAD_JSON),
    # NUL bytes
    Hostile("nul_byte", on(TOF, b"\x00garbage"), R.BAD_JSON),
    Hostile("nul_in_a_string", on(TOF, inserted(TOF, "-abc123", b"\x00")), R.BAD_JSON),
    Hostile("nul_escaped_in_device_id", on(TOF, changed(TOF, device_id="d\u0000")), R.SCHEMA),
    Hostile("nul_escaped_in_an_unknown_field", on(TOF, changed(TOF, note="a\u0000b")), R.SCHEMA),
    Hostile(
        "nul_escaped_in_an_unknown_key",
        on(SPEC, lambda d: dumps({**frame_doc(SPEC, d), "a\u0000": 1})),
        R.SCHEMA,
    ),
    Hostile("nan_in_an_unknown_field", on(TOF, changed(TOF, note=math.nan)), R.SCHEMA),
    Hostile(
        "nul_escaped_in_status_firmware",
        on(
            Kind.STATUS,
            lambda d: dumps({"v": 1, "device_id": d, "state": "online", "firmware": "1.0\u0000"}),
        ),
        R.SCHEMA,
        not_delivered={ANALYZER: ANALYZER_KINDS},
    ),
    # Not UTF-8
    Hostile("not_utf8", on(TOF, b"\xff\xfe\x00garbage"), R.NOT_UTF8),
    Hostile("not_utf8_object", on(TOF, b"\xff\xfe{}"), R.NOT_UTF8),
    Hostile("not_utf8_in_a_frame", on(TOF, inserted(TOF, '"sample_id"', b"\xc3\x28")), R.NOT_UTF8),
    Hostile(
        "surrogate_in_a_frame", on(SPEC, inserted(SPEC, '"gain"', b"\xed\xa0\x80")), R.NOT_UTF8
    ),
    Hostile(
        "utf16_frame", on(TOF, lambda d: json.dumps(frame_doc(TOF, d)).encode("utf-16")), R.NOT_UTF8
    ),
    # Not an object
    Hostile("list", on(TOF, b"[1, 2, 3]"), R.NOT_OBJECT),
    Hostile("string", on(TOF, b'"text"'), R.NOT_OBJECT),
    Hostile("null", on(SPEC, b"null"), R.NOT_OBJECT),
    # Deep nesting
    Hostile("open_brackets", on(TOF, b"[" * 60_000), R.BAD_JSON),
    Hostile("nested_objects", on(TOF, b'{"a":' * 10_000 + b"1" + b"}" * 10_000), R.BAD_JSON),
    Hostile("nested_lists", on(TOF, b"[" * 200 + b"]" * 200), R.NOT_OBJECT),
    Hostile(
        "nested_in_a_field",
        on(TOF, spliced(TOF, "distance_mm", "[" * NEST + "1" + "]" * NEST)),
        R.BAD_JSON,
    ),
    Hostile(
        "nested_in_an_unknown_field",
        on(SPEC, spliced(SPEC, "pad", "[" * NEST + "1" + "]" * NEST)),
        R.BAD_JSON,
    ),
    # Versions
    Hostile(
        "newer_version_other_shape",
        on(TOF, b'{"v": 2, "totally": "different"}'),
        R.UNSUPPORTED_VERSION,
    ),
    Hostile("newer_version_frame", on(TOF, changed(TOF, v=7)), R.UNSUPPORTED_VERSION),
    Hostile(
        "newer_version_sparse",
        on(TOF, lambda d: b'{"v": 9, "device_id": "' + d.encode() + b'"}'),
        R.UNSUPPORTED_VERSION,
    ),
    # No coercion: text is not a number, a number is not a time, true is not 1
    Hostile("version_as_text", on(SPEC, changed(SPEC, v="2")), R.SCHEMA),
    Hostile("version_true", on(TOF, changed(TOF, v=True)), R.SCHEMA),
    Hostile("ts_as_a_number", on(TOF, changed(TOF, ts=0)), R.SCHEMA),
    Hostile("ts_as_digits", on(TOF, changed(TOF, ts="1700000000")), R.SCHEMA),
    Hostile("seq_as_text", on(TOF, changed(TOF, seq="240")), R.SCHEMA),
    Hostile("layout_as_text", on(TOF, changed(TOF, layout="8")), R.SCHEMA),
    Hostile("distance_as_text", on(TOF, changed(TOF, distance_mm=[["240"] * 8] * 8)), R.SCHEMA),
    # Finite numbers only (JSON has none of these; Python's parser takes them)
    Hostile("nan_per_spad", on(TOF, changed(TOF, signal_per_spad=[[math.nan] * 8] * 8)), R.SCHEMA),
    Hostile(
        "infinity_in_sigma", on(TOF, changed(TOF, range_sigma_mm=[[math.inf] * 8] * 8)), R.SCHEMA
    ),
    Hostile(
        "1e400_in_reflectance",
        on(TOF, lambda d: FIRST_REFLECTANCE.sub(rb"\g<1>1e400", valid(TOF)(d), count=1)),
        R.SCHEMA,
    ),
    Hostile(
        "status_temperature_1e39",
        on(
            Kind.STATUS,
            lambda d: dumps({"v": 1, "device_id": d, "state": "online", "temperature_c": 1e39}),
        ),
        R.SCHEMA,
        not_delivered={ANALYZER: ANALYZER_KINDS},
    ),
    Hostile(
        "status_temperature_nan",
        on(
            Kind.STATUS,
            lambda d: dumps({"v": 1, "device_id": d, "state": "online", "temperature_c": math.nan}),
        ),
        R.SCHEMA,
        not_delivered={ANALYZER: ANALYZER_KINDS},
    ),
    Hostile("version_zero", on(TOF, changed(TOF, v=0)), R.SCHEMA),
    # Schema: missing fields, wrong types, values out of range
    Hostile("empty_object", on(TOF, b"{}"), R.SCHEMA),
    Hostile("spectral_version_only", on(SPEC, b'{"v": 1}'), R.SCHEMA),
    Hostile("missing_sample_id", on(TOF, without(TOF, "sample_id")), R.SCHEMA),
    Hostile("missing_distance", on(TOF, without(TOF, "distance_mm")), R.SCHEMA),
    Hostile("missing_channels", on(SPEC, without(SPEC, "channels")), R.SCHEMA),
    Hostile("seq_is_an_object", on(TOF, changed(TOF, seq={"a": 1})), R.SCHEMA),
    Hostile("ts_is_an_object", on(SPEC, changed(SPEC, ts={"a": 1})), R.SCHEMA),
    Hostile("channels_is_a_list", on(SPEC, changed(SPEC, channels=[1, 2, 3])), R.SCHEMA),
    Hostile("ts_without_timezone", on(TOF, changed(TOF, ts="2026-11-27T08:00:00")), R.SCHEMA),
    Hostile("negative_seq", on(TOF, changed(TOF, seq=-1)), R.SCHEMA),
    Hostile("layout_5", on(TOF, changed(TOF, layout=5)), R.SCHEMA),
    Hostile("layout_4_with_8x8_matrices", on(TOF, layout_4_with_8x8_matrices), R.SCHEMA, "4x4"),
    Hostile("target_status_300", on(TOF, target_status_300), R.SCHEMA),
    Hostile("gain_3", on(SPEC, changed(SPEC, gain=3)), R.SCHEMA),
    Hostile(
        "channel_over_16_bits",
        on(SPEC, channel("Clear", 70_000)),
        R.SCHEMA,
    ),
    Hostile(
        "distance_beyond_smallint",
        on(TOF, changed(TOF, distance_mm=[[40_000] * 8] * 8)),
        R.SCHEMA,
    ),
    Hostile(
        "seq_beyond_bigint",
        on(TOF, changed(TOF, seq=2**63)),
        R.SCHEMA,
    ),
    Hostile(
        "float_beyond_real",
        on(TOF, changed(TOF, signal_per_spad=[[1e39] * 8] * 8)),
        R.SCHEMA,
    ),
    Hostile(
        "layout_4_on_an_8x8_profile",
        on(TOF, lambda d: encode(tof_frame(d, layout=4))),
        R.SCHEMA,
        "layout 4",
        wire=None,
        known={
            INGEST: "a valid 4x4 frame from a device scored with an 8x8 profile: the analyzer "
            "dead-letters it as schema, ingest stores it (decide whether ingest should refuse "
            "it too or this is a legitimate difference)"
        },
    ),
    # Time: a frame stamped years away would open database chunks far from every other
    Hostile(
        "ts_a_century_ahead",
        on(TOF, changed(TOF, ts="2090-01-01T00:00:00Z")),
        R.TS_OUT_OF_RANGE,
        wire=None,
    ),
    Hostile(
        "ts_in_1990",
        on(SPEC, changed(SPEC, ts="1990-01-01T00:00:00Z")),
        R.TS_OUT_OF_RANGE,
        wire=None,
    ),
    Hostile(
        "status_ts_a_century_ahead",
        on(
            Kind.STATUS,
            lambda d: dumps(
                {"v": 1, "device_id": d, "state": "online", "ts": "2090-01-01T00:00:00Z"}
            ),
        ),
        R.TS_OUT_OF_RANGE,
        wire=None,
        not_delivered={ANALYZER: ANALYZER_KINDS},
    ),
    # Identity
    Hostile("spoofed_device", on(TOF, spoofed(TOF)), R.DEVICE_MISMATCH),
    Hostile("spoofed_spectral_device", on(SPEC, spoofed(SPEC)), R.DEVICE_MISMATCH),
    # Size
    Hostile("too_large_spaces", on(TOF, b" " * (MAX_PAYLOAD_BYTES + 1)), R.TOO_LARGE),
    Hostile(
        "too_large_frame",
        on(TOF, changed(TOF, pad="x" * (MAX_PAYLOAD_BYTES + 6 * 1024))),
        R.TOO_LARGE,
    ),
    Hostile(
        # Over MAX_DEAD_PAYLOAD_BYTES: the published dead letter carries a cut copy.
        "too_large_beyond_a_dead_letter",
        on(SPEC, b"x" * (200 * 1024)),
        R.TOO_LARGE,
    ),
    # Topics
    Hostile(
        "line_with_a_space", at(lambda ln, d: f"sqal/v1/{ln} bad/{d}/tof", valid(TOF)), R.BAD_TOPIC
    ),
    Hostile(
        "line_with_a_dot", at(lambda ln, d: f"sqal/v1/{ln}.dot/{d}/tof", valid(TOF)), R.BAD_TOPIC
    ),
    Hostile(
        "line_too_long",
        at(lambda ln, d: f"sqal/v1/{ln}{'x' * 64}/{d}/spectral", valid(SPEC)),
        R.BAD_TOPIC,
    ),
    Hostile("line_not_ascii", at(lambda ln, d: f"sqal/v1/{ln}é/{d}/tof", valid(TOF)), R.BAD_TOPIC),
    Hostile("empty_line", at(lambda ln, d: f"sqal/v1//{d}/tof", valid(TOF)), R.BAD_TOPIC),
    Hostile(
        "device_with_a_dot", at(lambda ln, d: f"sqal/v1/{ln}/{d}.x/tof", valid(TOF)), R.BAD_TOPIC
    ),
    Hostile(
        "unknown_kind",
        at(lambda ln, d: f"sqal/v1/{ln}/{d}/nonsense", nothing),
        R.BAD_TOPIC,
        not_delivered={ANALYZER: NOT_SUBSCRIBED, INGEST: NOT_SUBSCRIBED},
    ),
    Hostile(
        "other_version_root",
        at(lambda ln, d: f"sqal/v2/{ln}/{d}/tof", nothing),
        R.BAD_TOPIC,
        not_delivered={ANALYZER: NOT_SUBSCRIBED, INGEST: NOT_SUBSCRIBED},
    ),
    Hostile(
        "reserved_line",
        at(lambda ln, d: f"sqal/v1/_dead/{d}/tof", nothing),
        R.BAD_TOPIC,
        known={INGEST: RESERVED_LINE + ", and answers schema for this one"},
    ),
    Hostile(
        "reserved_line_forged_dead_letter",
        at(lambda ln, d: f"sqal/v1/_dead/{d}/tof", forged_dead_letter),
        R.BAD_TOPIC,
        known={
            INGEST: RESERVED_LINE + ": it stores this forged one as the analyzer's dead letter "
            "and dead-letters nothing"
        },
    ),
    Hostile(
        "not_a_dead_letter",
        at(lambda ln, d: dead_letter_topic(ANALYZER), nothing),
        R.SCHEMA,
        wire=R.BAD_TOPIC,
        not_delivered={ANALYZER: FOREIGN_DEAD},
    ),
    # Other kinds
    Hostile(
        "status_bad_json",
        on(Kind.STATUS, b"{not json"),
        R.BAD_JSON,
        not_delivered={ANALYZER: ANALYZER_KINDS},
    ),
    Hostile(
        "status_unknown_state",
        on(Kind.STATUS, lambda d: dumps({"device_id": d, "state": "exploded"})),
        R.SCHEMA,
        not_delivered={ANALYZER: ANALYZER_KINDS},
    ),
    Hostile(
        "result_without_sections",
        on(Kind.RESULT, lambda d: dumps({"v": 1, "device_id": d})),
        R.SCHEMA,
        not_delivered={ANALYZER: ANALYZER_KINDS},
    ),
    Hostile(
        "result_not_utf8",
        on(Kind.RESULT, b"\xff{}"),
        R.NOT_UTF8,
        not_delivered={ANALYZER: ANALYZER_KINDS},
    ),
    # Weights (the checkweigher's): ingest stores them, the analyzer decides fill on them
    *(
        Hostile(f"weight_{name}", on(WEIGHT, build), reason)
        for name, build, reason in (
            ("bad_json", b"{not json", R.BAD_JSON),
            ("mass_nan", changed(WEIGHT, mass_g=math.nan), R.SCHEMA),
            ("mass_infinity", changed(WEIGHT, mass_g=math.inf), R.SCHEMA),
            ("mass_negative", changed(WEIGHT, mass_g=-402.7), R.SCHEMA),
            ("mass_zero", changed(WEIGHT, mass_g=0), R.SCHEMA),
            ("mass_beyond_100_kg", changed(WEIGHT, mass_g=100_000.1), R.SCHEMA),
            ("mass_as_text", changed(WEIGHT, mass_g="402.7"), R.SCHEMA),
            ("mass_true", changed(WEIGHT, mass_g=True), R.SCHEMA),
            ("mass_missing", without(WEIGHT, "mass_g"), R.SCHEMA),
            ("sigma_zero", changed(WEIGHT, sigma_g=0), R.SCHEMA),
            ("sigma_nan", changed(WEIGHT, sigma_g=math.nan), R.SCHEMA),
            ("sigma_as_text", changed(WEIGHT, sigma_g="0.5"), R.SCHEMA),
            ("missing_sample_id", without(WEIGHT, "sample_id"), R.SCHEMA),
            ("sample_id_as_a_number", changed(WEIGHT, sample_id=17), R.SCHEMA),
            ("seq_as_text", changed(WEIGHT, seq="1"), R.SCHEMA),
            ("ts_as_a_number", changed(WEIGHT, ts=1700000000), R.SCHEMA),
            ("newer_version", changed(WEIGHT, v=2), R.UNSUPPORTED_VERSION),
            ("spoofed_device", spoofed(WEIGHT), R.DEVICE_MISMATCH),
        )
    ),
    Hostile(
        "weight_ts_a_century_ahead",
        on(WEIGHT, changed(WEIGHT, ts="2090-01-01T00:00:00Z")),
        R.TS_OUT_OF_RANGE,
        wire=None,
    ),
    Hostile("config_bad_json", on(CFG, b"{not json"), R.BAD_JSON),
    Hostile(
        "config_checkweigher_sigma_zero",
        on(
            CFG,
            lambda d: dumps(
                {"device_id": d, "profile": "foie_gras_lobe_400g", "checkweigher": {"sigma_g": 0}}
            ),
        ),
        R.BAD_CONFIG,
    ),
    Hostile("config_without_profile", on(CFG, lambda d: dumps({"device_id": d})), R.BAD_CONFIG),
    Hostile("config_nan_in_calibration", on(CFG, calibrated(d0_mm="NaN")), R.BAD_CONFIG),
    Hostile(
        "config_white_reference_of_zero", on(CFG, calibrated(rho_white=[0] * 10)), R.BAD_CONFIG
    ),
    Hostile(
        "config_dark_reference_of_minus_1e308",
        on(CFG, calibrated(dark_bc=[-1e308] * 10)),
        R.BAD_CONFIG,
    ),
    Hostile(
        "config_spoofed_device",
        on(CFG, lambda d: dumps({"device_id": f"{d}-other", "profile": "foie_gras_lobe_400g"})),
        R.DEVICE_MISMATCH,
    ),
    Hostile(
        "config_unknown_profile",
        on(CFG, lambda d: dumps({"device_id": d, "profile": "no_such_profile"})),
        R.UNKNOWN_PROFILE,
        "no_such_profile",
        wire=None,
        known={
            INGEST: "a config naming a profile that does not exist: the analyzer dead-letters "
            "it as unknown_profile, ingest stores it in device_config"
        },
    ),
)

HOSTILE: dict[str, Hostile] = {h.id: h for h in CATALOGUE}
assert len(HOSTILE) == len(CATALOGUE), "catalogue ids must be unique"


# --- running stages ------------------------------------------------------------------------------

SENTINEL = b"{sentinel"
"""Bad JSON on a topic of its own: its dead letter proves the stage is past what came before."""


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return check()


class Watch:
    """Everything a stage publishes: its dead letters, and results (the analyzer's)."""

    def __init__(self, url: str, stage: str) -> None:
        self.dead: list[DeadLetter] = []
        self.results: list[tuple[str, bytes]] = []
        self.other: list[bytes] = []
        self._cond = threading.Condition()
        self.client = paho_client(
            url, client_id("hostile-watch"), persistent=False, on_message=self._on_message
        )
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.subscribe([(dead_letter_topic(stage), 1), ("sqal/v1/+/+/result", 1)])
        assert subscribed.wait(5)

    def _on_message(self, c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        with self._cond:
            if msg.topic.endswith("/result"):
                self.results.append((msg.topic, bytes(msg.payload)))
            else:
                try:
                    self.dead.append(DeadLetter.model_validate_json(msg.payload))
                except ValidationError:  # a hostile message on the stage's own topic
                    self.other.append(bytes(msg.payload))
            self._cond.notify_all()

    def mark(self) -> tuple[int, int]:
        with self._cond:
            return len(self.dead), len(self.results)

    def dead_since(self, mark: tuple[int, int], topic: str) -> list[DeadLetter]:
        with self._cond:
            return [d for d in self.dead[mark[0] :] if d.topic == topic]

    def count_since(self, mark: tuple[int, int]) -> int:
        with self._cond:
            return len(self.dead) - mark[0]

    def results_since(
        self, mark: tuple[int, int], lines: set[str], sent: tuple[str, bytes]
    ) -> list[str]:
        """Results on ``lines`` since ``mark``, but for ``sent`` (a hostile message that was
        itself published on a result topic)."""
        with self._cond:
            got = [r for r in self.results[mark[1] :] if r[0].split("/")[2] in lines]
        if sent in got:
            got.remove(sent)
        return [t for t, _ in got]

    def wait_dead(self, mark: tuple[int, int], topic: str, timeout_s: float = 15.0) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: any(d.topic == topic for d in self.dead[mark[0] :]), timeout_s
            )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class Before:
    """A stage's counters before a check."""

    dead: dict[str, float]
    done: float
    """Analyzer: results scored; ingest: rows written."""
    acked: float
    stats: float = 0.0
    """Ingest: broker ``$SYS`` readings (QoS 1, every 10 s while counters move), acked too."""


class Stage(ABC):
    """A service running in this process, its dead letters watched, one line per check."""

    name: str

    def __init__(self, url: str, cid: str) -> None:
        self.url = url
        self.cid = cid
        self.prefix = f"hz{uuid.uuid4().hex[:6]}"
        self._n = itertools.count()
        self.publisher = paho_client(url, client_id("hostile-pub"), persistent=False)
        self.watch = Watch(url, self.name)

    def target(self) -> tuple[str, str]:
        """A fresh (line, device) for one check."""
        n = next(self._n)
        return f"{self.prefix}-{n}", f"dev{n}"

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.publisher.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published(), topic

    def exchange(self, topic: str, payload: bytes) -> tuple[Before, tuple[int, int]]:
        """Publish the message, then a sentinel, and wait for the sentinel's dead letter."""
        self.settle()
        before = self.before()
        mark = self.watch.mark()
        sentinel = f"sqal/v1/{self.prefix}-sentinel/s{next(self._n)}/tof"
        self.publish(topic, payload)
        self.publish(sentinel, SENTINEL)
        assert self.watch.wait_dead(mark, sentinel), f"{self.name}: the sentinel got no dead letter"
        # The sentinel's dead letter may overtake one decided later in the same batch (ingest
        # publishes the database's refusals last): wait for every dead letter counted so far.
        counted = sum(before.dead.values())

        def published() -> bool:
            return self.watch.count_since(mark) >= self.dead_total() - counted

        assert wait_for(published, 10), f"{self.name}: dead letters counted, never published"
        return before, mark

    def dead_total(self) -> float:
        return sum(self.dead_count(r.value) for r in DeadReason)

    @contextmanager
    def recovering(self) -> Iterator[None]:
        """On a failed check (a known inconsistency's xfail among them), let the stage finish
        what is in flight, so the next check starts from a quiet stage."""
        try:
            yield
        except BaseException:
            self.recover()
            raise

    def recover(self) -> None:
        self.settle()

    def counted(self, before: Before, expected: collections.Counter[str]) -> None:
        moved = {r.value: self.dead_count(r.value) - before.dead[r.value] for r in DeadReason}
        assert {k: v for k, v in moved.items() if v} == dict(expected), self.name

    @abstractmethod
    def settle(self) -> None:
        """Wait until everything received so far is finished and acknowledged."""

    @abstractmethod
    def before(self) -> Before: ...

    @abstractmethod
    def dead_count(self, reason: str) -> float: ...

    @abstractmethod
    def check_stored(
        self, topic: str, payload: bytes, reason: DeadReason | None, detail: str | None = None
    ) -> None:
        """The stage's own record of the dead letter (ingest's ``dead_letters`` row)."""

    @abstractmethod
    def check_nothing_else(
        self, before: Before, mark: tuple[int, int], lines: set[str], sent: tuple[str, bytes]
    ) -> None:
        """No result, no stored row, nothing waiting (``sent``: the message published)."""

    @abstractmethod
    def check_acked(self, before: Before, delivered: int, dead: int) -> None:
        """Every message acknowledged: ``delivered`` hostile ones, the sentinel, and (ingest)
        the echoes of its ``dead`` own dead letters."""


class AnalyzerStage(Stage):
    name = ANALYZER

    def __init__(self, url: str, service: AnalyzerService) -> None:
        super().__init__(url, service.cfg.client_id)
        self.service = service

    def _idle(self) -> bool:
        s = self.service
        return s.inbox.depth() == 0 and s.sub.unacked == 0 and len(s.joiner) == 0

    def settle(self) -> None:
        # A half the analyzer wrongly accepted (a known inconsistency) waits for its join
        # timeout, and in-order acks hold everything after it meanwhile.
        assert wait_for(self._idle, 10), "analyzer: messages left unfinished"

    def dead_count(self, reason: str) -> float:
        return self.service.metrics.dead.value(reason)

    def before(self) -> Before:
        dead = {r.value: self.dead_count(r.value) for r in DeadReason}
        return Before(dead, self.service.metrics.scored.total(), 0.0)

    def check_stored(
        self, topic: str, payload: bytes, reason: DeadReason | None, detail: str | None = None
    ) -> None:
        pass  # the analyzer keeps nothing: its published dead letter is the record

    def check_nothing_else(
        self, before: Before, mark: tuple[int, int], lines: set[str], sent: tuple[str, bytes]
    ) -> None:
        assert self.watch.results_since(mark, lines, sent) == []
        assert len(self.service.joiner) == 0, "analyzer: a refused frame waits for its half"
        assert self.service.metrics.scored.total() == before.done

    def check_acked(self, before: Before, delivered: int, dead: int) -> None:
        assert wait_for(self._idle, 10), (
            f"analyzer: {self.service.sub.unacked} messages unacknowledged"
        )


class IngestStage(Stage):
    name = INGEST

    def __init__(self, url: str, service: IngestService, dsn: str) -> None:
        super().__init__(url, service.cfg.client_id)
        self.service = service
        self.db = psycopg.connect(dsn, autocommit=True)

    def settle(self) -> None:
        assert wait_for(lambda: self.service.inbox.depth() == 0, 10), "ingest: inbox not drained"

    def quiesce(self, quiet_s: float = 0.2) -> None:
        """Wait until nothing has been acknowledged for ``quiet_s`` (the start: retained
        messages of the session broker, echoes of the warm-up's dead letter)."""
        acked = self.service.metrics.acked
        last, since = acked.total(), time.monotonic()
        while time.monotonic() - since < quiet_s:
            time.sleep(0.02)
            if acked.total() != last:
                last, since = acked.total(), time.monotonic()

    def recover(self) -> None:
        self.settle()
        self.quiesce()

    def dead_count(self, reason: str) -> float:
        return self.service.metrics.dead_letters.value(reason)

    def before(self) -> Before:
        m = self.service.metrics
        dead = {r.value: self.dead_count(r.value) for r in DeadReason}
        return Before(dead, m.rows_written.total(), m.acked.total(), m.broker_stats.total())

    def check_stored(
        self, topic: str, payload: bytes, reason: DeadReason | None, detail: str | None = None
    ) -> None:
        rows = self.db.execute(
            "SELECT stage, reason, detail, payload FROM dead_letters WHERE topic = %s", (topic,)
        ).fetchall()
        if reason is None:
            assert rows == []
            return
        assert len(rows) == 1, rows
        stage, got, text, stored = rows[0]
        assert (stage, got) == (INGEST, reason.value)
        assert detail is None or detail in text, text
        assert bytes(stored) == payload, "ingest: dead_letters must keep the whole payload"

    def check_nothing_else(
        self, before: Before, mark: tuple[int, int], lines: set[str], sent: tuple[str, bytes]
    ) -> None:
        assert self.service.metrics.rows_written.total() == before.done
        counts = [
            sql.SQL("(SELECT count(*) FROM {} WHERE line_id = ANY(%(lines)s))").format(
                sql.Identifier(name)
            )
            for name in TABLES
            if name != DEAD_LETTERS.name
        ]
        query = sql.SQL("SELECT {}").format(sql.SQL(" + ").join(counts))
        row = self.db.execute(query, {"lines": sorted(lines)}).fetchone()
        assert row is not None
        assert row[0] == 0, f"ingest stored {row[0]} rows for {sorted(lines)}"

    def check_acked(self, before: Before, delivered: int, dead: int) -> None:
        # Ingest also receives its own dead letters (sqal/v1/_dead/+) and acks them unread.
        m = self.service.metrics

        def want() -> float:
            return delivered + 1 + dead + m.broker_stats.total() - before.stats

        wait_for(lambda: m.acked.total() - before.acked == want(), 10)
        got = m.acked.total() - before.acked
        assert got == want(), f"ingest acknowledged {got} messages, want {want()}"

    def close_db(self) -> None:
        self.db.close()


def check_not_redelivered(url: str, cid: str) -> None:
    """Reconnect to a stopped stage's session: the broker must have nothing to send again."""
    got: list[str] = []
    c = paho_client(url, cid, persistent=True, on_message=lambda cl, u, m: got.append(m.topic))
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    drop_session(url, cid)
    assert [t for t in got if t.startswith("sqal/")] == [], f"{cid}: redelivered {got}"


@contextmanager
def running_analyzer(url: str) -> Iterator[AnalyzerStage]:
    """The analyzer in a thread (default profile, 8x8), watched; its session checked after."""
    service = AnalyzerService(
        AnalyzerConfig(url, client_id=f"hostile-an-{uuid.uuid4().hex[:8]}", join_timeout_s=0.3)
    )
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    assert service.ready.wait(10)
    stage = AnalyzerStage(url, service)
    try:
        yield stage
        stage.settle()
    finally:
        service.stop()
        worker.join(10)
        stage.watch.close()
        stage.publisher.disconnect()
        stage.publisher.loop_stop()
    check_not_redelivered(url, stage.cid)


@contextmanager
def running_ingest(url: str, dsn: str) -> Iterator[IngestStage]:
    """Ingest in a thread on a migrated database (dead topics on, as by default), watched."""
    cfg = IngestConfig(
        broker=url,
        dsn=dsn,
        batch_rows=100,
        flush_s=0.02,
        client_id=f"hostile-ingest-{uuid.uuid4().hex[:8]}",
    )
    service = IngestService(cfg)
    stop = threading.Event()
    worker = threading.Thread(target=service.run, args=(stop,), daemon=True)
    worker.start()
    assert wait_for(lambda: service.link.connected, 10)
    stage = IngestStage(url, service, dsn)
    try:
        stage.exchange(f"sqal/v1/{stage.prefix}-warmup/w/tof", SENTINEL)
        stage.quiesce()
        yield stage
        stage.settle()
        stage.quiesce()
    finally:
        stop.set()
        worker.join(10)
        stage.watch.close()
        stage.publisher.disconnect()
        stage.publisher.loop_stop()
        stage.close_db()
    check_not_redelivered(url, stage.cid)


# --- the checks ----------------------------------------------------------------------------------


def _lines(line: str | None, topic: str) -> set[str]:
    """The check's line and the line level of the topic (which may be a bad one)."""
    parts = topic.split("/")
    return {parts[2]} | ({line} if line else set())


def check_dead_letter(
    stage: Stage,
    topic: str,
    payload: bytes,
    reason: DeadReason,
    detail: str | None = None,
    line: str | None = None,
) -> None:
    """Publish one message to ``stage``: it must come back as exactly one dead letter with
    ``reason``, the topic and the original payload (cut only past MAX_DEAD_PAYLOAD_BYTES),
    count once, produce nothing else, and be acknowledged."""
    before, mark = stage.exchange(topic, payload)
    with stage.recovering():
        letters = stage.watch.dead_since(mark, topic)
        assert len(letters) == 1, (
            f"{stage.name}: {len(letters)} dead letters for {topic!r}, want one ({reason.value}): "
            f"{[(d.reason.value, d.detail) for d in letters]}"
        )
        dl = letters[0]
        assert dl.stage == stage.name
        assert dl.reason is reason, (dl.reason, dl.detail)
        if detail is not None:
            assert detail in dl.detail, dl.detail
        assert base64.b64decode(dl.payload_b64) == payload[:MAX_DEAD_PAYLOAD_BYTES]
        assert dl.payload_bytes == len(payload)
        stage.check_stored(topic, payload, reason, detail)
        stage.check_nothing_else(before, mark, _lines(line, topic), (topic, payload))
        expected = collections.Counter({reason.value: 1})
        expected[DeadReason.BAD_JSON.value] += 1  # the sentinel
        stage.counted(before, expected)
        stage.check_acked(before, delivered=1, dead=2)


def check_not_delivered(stage: Stage, topic: str, payload: bytes, line: str | None = None) -> None:
    """Publish one message outside ``stage``'s subscriptions: nothing at all may happen."""
    before, mark = stage.exchange(topic, payload)
    with stage.recovering():
        assert stage.watch.dead_since(mark, topic) == []
        stage.check_stored(topic, payload, None)
        stage.check_nothing_else(before, mark, _lines(line, topic), (topic, payload))
        stage.counted(before, collections.Counter({DeadReason.BAD_JSON.value: 1}))
        stage.check_acked(before, delivered=0, dead=1)


def check(stage: Stage, entry: Hostile) -> None:
    """Run one catalogue entry against ``stage`` on a fresh line, as the entry expects."""
    line, device = stage.target()
    topic, payload = entry.build(line, device)
    reason = entry.expected(stage.name)
    if reason is None:
        check_not_delivered(stage, topic, payload, line)
    else:
        check_dead_letter(stage, topic, payload, reason, entry.detail, line)
