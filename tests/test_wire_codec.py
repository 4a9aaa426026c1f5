"""The wire contract: any bytes on a SQAL topic decode to a model or raise PayloadError."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sqal.errors import PayloadError
from sqal.wire import (
    MAX_PAYLOAD_BYTES,
    DeadReason,
    Decision,
    DefectCode,
    DeviceConfig,
    DeviceState,
    DeviceStatus,
    Grade,
    Kind,
    Result,
    SpectralFrame,
    TofFrame,
    Weight,
    dead_letter,
    decode,
    decode_as,
    device_topic,
    encode,
    parse_topic,
)
from sqal.wire.models import MODEL_BY_KIND
from tests.frames import TS, spectral_frame, tof_frame, weight
from tests.hostile import CATALOGUE, HOSTILE, Hostile

TOF_TOPIC = device_topic("L1", "d1", Kind.TOF)
SPEC_TOPIC = device_topic("L1", "d1", Kind.SPECTRAL)
WEIGHT_TOPIC = device_topic("L1", "d1", Kind.WEIGHT)


def reason_of(topic: str, payload: bytes) -> DeadReason:
    with pytest.raises(PayloadError) as info:
        decode(topic, payload)
    return info.value.reason


@pytest.mark.parametrize("layout", [4, 8])
def test_tof_frame_round_trips(layout: int) -> None:
    frame = tof_frame(layout=layout)
    assert decode(TOF_TOPIC, encode(frame)) == frame


def test_spectral_frame_round_trips() -> None:
    frame = spectral_frame(saturated=["F8_680nm"], flicker_hz=100)
    assert decode(SPEC_TOPIC, encode(frame)) == frame


def test_weight_round_trips_with_and_without_its_uncertainty() -> None:
    for w in (weight(), weight(sigma_g=None), weight(mass_g=100_000.0, sigma_g=0.01)):
        assert decode(WEIGHT_TOPIC, encode(w)) == w
    assert b"sigma_g" not in encode(weight(sigma_g=None))  # unknown: left out, as null reads


def test_weight_is_strict_like_the_frames() -> None:
    doc = json.loads(encode(weight()))
    assert doc["sample_id"] == "d1-abc123-00000001"
    ok = decode(WEIGHT_TOPIC, json.dumps({**doc, "mass_g": 403, "sigma_g": None}).encode())
    assert isinstance(ok, Weight)
    assert (ok.mass_g, ok.sigma_g) == (403.0, None)  # an integer is a number; null is unknown
    kept = decode(WEIGHT_TOPIC, json.dumps({**doc, "scale_id": "cw-3"}).encode())
    assert kept.model_extra == {"scale_id": "cw-3"}
    for field, value in (
        ("mass_g", "NaN"),
        ("mass_g", -0.1),
        ("mass_g", [402.7]),
        ("mass_g", None),
        ("sigma_g", -0.5),
        ("sigma_g", "unknown"),
        ("seq", 1.5),
        ("ts", "2026-11-27 08:00"),
    ):
        assert reason_of(WEIGHT_TOPIC, json.dumps({**doc, field: value}).encode()) is (
            DeadReason.SCHEMA
        ), (field, value)
    # NaN as JSON's non-standard literal, which Python's json module would take
    nan = json.dumps(doc).replace('"mass_g": 402.7', '"mass_g": NaN').encode()
    assert b"NaN" in nan
    assert reason_of(WEIGHT_TOPIC, nan) is DeadReason.SCHEMA


def test_a_weight_on_a_frame_topic_is_no_frame() -> None:
    assert reason_of(TOF_TOPIC, encode(weight())) is DeadReason.SCHEMA
    assert reason_of(WEIGHT_TOPIC, encode(tof_frame())) is DeadReason.SCHEMA


def test_config_announces_a_checkweigher_or_none() -> None:
    topic = device_topic("L1", "d1", Kind.CONFIG)
    base = {"device_id": "d1", "profile": "foie_gras_lobe_400g"}
    bare = decode(topic, json.dumps(base).encode())
    assert isinstance(bare, DeviceConfig)
    assert bare.checkweigher is None
    assert b"checkweigher" not in encode(bare)  # configs without one are unchanged on the wire
    cfg = decode(topic, json.dumps({**base, "checkweigher": {"sigma_g": 0.5}}).encode())
    assert isinstance(cfg, DeviceConfig)
    assert cfg.checkweigher is not None
    assert cfg.checkweigher.sigma_g == 0.5
    assert decode(topic, encode(cfg)) == cfg
    for bad in ({}, {"sigma_g": 0}, {"sigma_g": "0.5"}, {"sigma_g": 0.5, "unit": "g"}, 0.5):
        doc = json.dumps({**base, "checkweigher": bad}).encode()
        assert reason_of(topic, doc) is DeadReason.BAD_CONFIG, bad


def test_encoding_is_compact_json_with_utc_timestamps() -> None:
    raw = encode(tof_frame())
    assert b" " not in raw
    assert json.loads(raw)["ts"] == TS.strftime("%Y-%m-%dT%H:%M:%S.123000Z")


def test_unknown_frame_fields_are_kept() -> None:
    doc = json.loads(encode(tof_frame()))
    doc["firmware_build"] = "2026.11.3"
    frame = decode(TOF_TOPIC, json.dumps(doc).encode())
    assert isinstance(frame, TofFrame)
    assert frame.model_extra == {"firmware_build": "2026.11.3"}


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.id)
def test_the_catalogue_says_what_decode_makes_of_each_hostile_payload(entry: Hostile) -> None:
    """Every shared hostile payload (tests/hostile.py) on line L1, device d1: ``decode`` names
    the catalogued reason (and detail), or returns a model when the stages refuse it on other
    grounds (a profile, the database, a subscription)."""
    topic, payload = entry.build("L1", "d1")
    if entry.decode_reason is None:
        assert isinstance(decode(topic, payload), MODEL_BY_KIND[parse_topic(topic).kind])
        return
    with pytest.raises(PayloadError) as info:
        decode(topic, payload)
    assert info.value.reason is entry.decode_reason, info.value.detail
    if entry.detail is not None and entry.decode_reason is entry.reason:
        assert entry.detail in info.value.detail


def test_the_catalogue_keeps_the_codec_cases() -> None:
    """The cases this file once listed itself, now catalogue entries (exact payloads)."""
    made = {HOSTILE[k].build("L1", "d1") for k in HOSTILE}
    assert (TOF_TOPIC, b"{}") in made
    assert (TOF_TOPIC, b"") in made
    assert (TOF_TOPIC, b" " * (MAX_PAYLOAD_BYTES + 1)) in made
    assert ("sqal/v1/L1/d1/nonsense", b"{}") in made
    assert ("sqal/v2/L1/d1/tof", b"{}") in made
    assert ("sqal/v1/_dead/d1/tof", b"{}") in made
    assert HOSTILE["reserved_line"].decode_reason is DeadReason.BAD_TOPIC
    assert HOSTILE["layout_4_with_8x8_matrices"].detail == "4x4"


def test_last_will_needs_only_state() -> None:
    topic = device_topic("L1", "d1", Kind.STATUS)
    status = decode(topic, b'{"v":1,"device_id":"d1","state":"offline"}')
    assert isinstance(status, DeviceStatus)
    assert status.state is DeviceState.OFFLINE


def test_config_defaults_follow_domain_line_settings() -> None:
    topic = device_topic("L1", "d1", Kind.CONFIG)
    config = decode(topic, b'{"device_id":"d1","profile":"foie_gras_lobe_400g"}')
    assert isinstance(config, DeviceConfig)
    assert (config.tof.layout, config.tof.ranging_hz, config.tof.integration_ms) == (8, 15, 20)
    assert (config.spectral.atime, config.spectral.astep) == (29, 199)


def test_dead_letter_carries_payload_and_reason() -> None:
    payload = b"\x00garbage"
    try:
        decode(TOF_TOPIC, payload)
    except PayloadError as err:
        letter = dead_letter("analyzer", TOF_TOPIC, payload, err)
    assert letter.reason is DeadReason.BAD_JSON or letter.reason is DeadReason.SCHEMA
    assert letter.payload_b64 == "AGdhcmJhZ2U="
    assert letter.topic == TOF_TOPIC


def assert_model_or_payload_error(topic: str, payload: bytes) -> None:
    """``decode`` returns the topic kind's model or raises PayloadError, nothing else."""
    try:
        obj = decode(topic, payload)
    except PayloadError as err:
        error: PayloadError | None = err
    else:
        error = None
        assert isinstance(obj, MODEL_BY_KIND[parse_topic(topic).kind])
    if error is not None:
        assert isinstance(error.reason, DeadReason)
        assert error.topic == topic


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300), kind=st.sampled_from(list(Kind)))
def test_random_bytes_never_escape_payload_error(payload: bytes, kind: Kind) -> None:
    assert_model_or_payload_error(device_topic("L1", "d1", kind), payload)


@settings(max_examples=300, deadline=None)
@given(doc=json_values, kind=st.sampled_from(list(Kind)))
def test_random_json_never_escapes_payload_error(doc: object, kind: Kind) -> None:
    assert_model_or_payload_error(device_topic("L1", "d1", kind), json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(
    layout=st.sampled_from([4, 8]),
    seq=st.integers(min_value=0, max_value=2**40),
    distance=st.integers(min_value=-32768, max_value=32767),
    status=st.integers(min_value=0, max_value=255),
    sigma=st.floats(min_value=0, max_value=1e3, allow_nan=False),
)
def test_tof_encode_decode_round_trip(
    layout: int, seq: int, distance: int, status: int, sigma: float
) -> None:
    n = layout
    frame = tof_frame(
        layout=layout,
        seq=seq,
        distance_mm=[[distance] * n for _ in range(n)],
        target_status=[[status] * n for _ in range(n)],
        range_sigma_mm=[[sigma] * n for _ in range(n)],
    )
    assert decode(TOF_TOPIC, encode(frame)) == frame


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=65535), min_size=11, max_size=11),
    gain=st.sampled_from([0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]),
    atime=st.integers(min_value=1, max_value=255),
)
def test_spectral_encode_decode_round_trip(counts: list[int], gain: float, atime: int) -> None:
    names = [
        "F1_415nm", "F2_445nm", "F3_480nm", "F4_515nm", "F5_555nm", "F6_590nm",
        "F7_630nm", "F8_680nm", "Clear", "NIR_910nm", "Flicker",
    ]  # fmt: skip
    frame = spectral_frame(channels=dict(zip(names, counts, strict=True)), gain=gain, atime=atime)
    decoded = decode(SPEC_TOPIC, encode(frame))
    assert isinstance(decoded, SpectralFrame)
    assert decoded == frame
    assert decoded.channels.as_tuple() == tuple(counts)


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    mass=st.floats(min_value=0, max_value=100_000, exclude_min=True, allow_nan=False),
    sigma=st.none() | st.floats(min_value=1e-6, max_value=100_000, allow_nan=False),
)
def test_weight_encode_decode_round_trip(seq: int, mass: float, sigma: float | None) -> None:
    w = weight(seq=seq, mass_g=mass, sigma_g=sigma)
    assert decode(WEIGHT_TOPIC, encode(w)) == w


def test_dead_letter_of_a_huge_message_stays_under_the_broker_limit() -> None:
    from sqal.wire.codec import MAX_DEAD_PAYLOAD_BYTES, MAX_MESSAGE_BYTES

    payload = b"x" * (MAX_MESSAGE_BYTES - 100)
    err = PayloadError(DeadReason.TOO_LARGE, "too big", TOF_TOPIC)
    letter = dead_letter("analyzer", TOF_TOPIC, payload, err)
    assert len(encode(letter)) < MAX_MESSAGE_BYTES
    assert letter.payload_bytes == len(payload)
    assert len(base64.b64decode(letter.payload_b64)) == MAX_DEAD_PAYLOAD_BYTES


def _result_doc(**fusion_extra: object) -> dict[str, object]:
    return {
        "v": 1,
        "device_id": "dev1",
        "sample_id": "dev1-abc123-00000001",
        "ts": "2026-12-04T08:00:00Z",
        "profile": "foie_gras_lobe_400g",
        "tof": None,
        "spectral": None,
        "fusion": {
            "final_score": 0.9,
            "final_grade": "A",
            "confidence": 0.97,
            "defects": [],
            **fusion_extra,
        },
        "analyzer": {"version": "0.1.0", "processing_ms": 1.0},
    }


def test_a_result_carries_its_decision_and_an_earlier_one_still_decodes() -> None:
    """The 2026-12 fields are additive within v1: a result of an earlier analyzer (no
    decision, no data_quality) decodes with them absent; a new one round-trips them."""
    old = Result.model_validate_json(json.dumps(_result_doc()))
    assert old.fusion.decision is None
    assert old.fusion.p_defects == {}
    assert old.weight is None
    new = Result.model_validate_json(
        json.dumps(
            _result_doc(
                decision="HOLD",
                data_quality=0.95,
                p_reject=0.031,
                p_defects={"underfill": 0.031, "oxidation": 0.2},
            )
            | {"weight": {"mass_g": 401.3, "sigma_g": 0.5}}
        )
    )
    assert new.fusion.decision is Decision.HOLD
    assert new.fusion.p_defects[DefectCode.OXIDATION] == 0.2
    assert new.weight is not None
    assert decode_as(Result, encode(new)) == new
    with pytest.raises(ValidationError):
        Result.model_validate_json(json.dumps(_result_doc(decision="MAYBE")))
    with pytest.raises(ValidationError):
        Result.model_validate_json(json.dumps(_result_doc(p_reject=1.5)))


def test_rename_sample_changes_the_sample_id_and_nothing_else() -> None:
    from capture.replay import MAX_SAMPLE_ID, FreshIds
    from sqal.wire import decode, encode, rename_sample

    for topic, frame in (("sqal/v1/L1/d1/tof", tof_frame()),
                         ("sqal/v1/L1/d1/spectral", spectral_frame()),
                         ("sqal/v1/L1/d1/weight", weight())):  # fmt: skip
        renamed = rename_sample(topic, encode(frame), lambda old: old + ".r1-0")
        assert renamed is not None
        assert decode(topic, renamed) == frame.model_copy(
            update={"sample_id": frame.sample_id + ".r1-0"}
        )
    config = b'{"device_id":"d1","sample_id":"s"}'
    assert rename_sample("sqal/v1/L1/d1/config", config, str.upper) is None
    assert rename_sample("sqal/v1/L1/d1/tof", b"[1]", str.upper) is None
    assert rename_sample("sqal/v1/L1/d1/tof", b"\xff", str.upper) is None
    assert rename_sample("sqal/v1/L1/d1/tof", b'{"sample_id":1}', str.upper) is None
    fresh = FreshIds("abc123")
    assert fresh.new_id("s-1", 2) == "s-1.rabc123-2"
    long = fresh.new_id("x" * MAX_SAMPLE_ID, 0)
    assert len(long) <= MAX_SAMPLE_ID
    assert long == fresh.new_id("x" * MAX_SAMPLE_ID, 0) != fresh.new_id("y" * MAX_SAMPLE_ID, 0)


def test_a_lot_decodes_from_its_line_topic_and_bad_ones_are_named() -> None:
    from sqal.wire import Lot, decode_lot, lot_topic

    lot = Lot(lot="2026-12-05-A", product="foie_gras_lobe_400g", qn_g=400, tne_g=12,
              started=datetime(2026, 12, 5, 6, tzinfo=UTC))  # fmt: skip
    assert decode_lot(lot_topic("L1"), encode(lot)) == ("L1", lot)
    cases = [
        ("sqal/v1/_dead/lot", encode(lot), DeadReason.BAD_TOPIC),
        ("sqal/v1/L1/n01/lot", encode(lot), DeadReason.BAD_TOPIC),
        (lot_topic("L1"), b"{oops", DeadReason.BAD_JSON),
        (lot_topic("L1"), encode(lot)[:-1] + b',"v":2}', DeadReason.UNSUPPORTED_VERSION),
        (
            lot_topic("L1"),
            encode(lot).replace(b'"tne_g":12.0', b'"tne_g":400.0'),
            DeadReason.SCHEMA,
        ),
        (
            lot_topic("L1"),
            encode(lot)[:-1] + b',"ended":"2026-12-05T05:00:00Z"}',
            DeadReason.SCHEMA,
        ),
        (lot_topic("L1"), encode(lot).replace(b"2026-12-05-A", b"a/b"), DeadReason.SCHEMA),
    ]
    for topic, payload, reason in cases:
        with pytest.raises(PayloadError) as err:
            decode_lot(topic, payload)
        assert err.value.reason is reason, (topic, payload)


@pytest.mark.parametrize("ts", ["1700000000", "1700000000.5"])
def test_a_result_s_ts_is_an_rfc3339_date_time_like_a_frame_s(ts: str) -> None:
    """contract.md: a string of digits is not a ``ts``. A result's took one as Unix seconds
    (2023-11-14) because it lacked the frames' check."""
    from tests.test_ingest_frames import result

    doc = json.loads(encode(result("d1", 1, Grade.A, 0.5, [])))
    doc["ts"] = ts
    with pytest.raises(PayloadError, match="RFC 3339") as info:
        decode_as(Result, json.dumps(doc).encode())
    assert info.value.reason is DeadReason.SCHEMA
