"""The bulk ToF path (sqal.wire.tofbulk) against pydantic's TofFrame, the contract.

Sound: every frame the bulk path takes, ``decode`` accepts, and both give the same row, byte for
byte after packing. Useful: plain frames (both layouts, ints where floats are allowed) all take
it. Everything else is left to ``decode``, whose refusal names the reason.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqal.errors import PayloadError
from sqal.wire import TOF_MATRICES, DeviceTopic, Kind, TofFrame, decode, decode_tof_bulk
from sqal.wire.models import FLOAT4_MAX
from storage.arrays import prepack
from storage.rows import tof_block_rows, tof_row
from storage.tables import TOF

TOPIC = DeviceTopic("line-1", "dev-1", Kind.TOF)


def frame(layout: int = 8, seq: int = 1, **over: Any) -> dict[str, Any]:
    """A frame as a JSON document, numbers in closed form (not the simulator's)."""
    n = layout
    doc: dict[str, Any] = {
        "v": 1,
        "device_id": "dev-1",
        "sample_id": f"dev-1-ab12-{seq:08d}",
        "seq": seq,
        "ts": "2026-12-05T08:00:00.250+01:00",
        "layout": layout,
        "distance_mm": [[200 + 3 * r + c for c in range(n)] for r in range(n)],
        "target_status": [[5 if (r + c) % 7 else 9 for c in range(n)] for r in range(n)],
        "signal_per_spad": [[1000.0 / (1 + r + c) for c in range(n)] for r in range(n)],
        "ambient_per_spad": [[0.1 * c for c in range(n)] for r in range(n)],
        "range_sigma_mm": [[1.5 + r for c in range(n)] for r in range(n)],
        "reflectance_pct": [[float(r * c) for c in range(n)] for r in range(n)],
        "ranging_hz": 15.0,
        "integration_ms": 20,
        "sensor_temp_c": -3.25,
    }
    doc.update(over)
    return doc


def payload(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def slow_row(p: bytes) -> tuple[object, ...] | None:
    """The row pydantic's path gives, packed; None when it refuses the frame."""
    try:
        f = decode(TOPIC, p)
    except PayloadError:
        return None
    assert isinstance(f, TofFrame)
    return prepack(TOF, [tof_row(TOPIC, f)])[0]


def bulk_rows(payloads: list[bytes]) -> dict[int, tuple[object, ...]]:
    """The bulk path's packed rows, by position."""
    out = {}
    for block in decode_tof_bulk([(TOPIC, p) for p in payloads]):
        n = len(block.positions)
        rows = tof_block_rows(
            block, [TOPIC] * n, [payloads[i] for i in block.positions], block.positions
        )
        for pos, row in zip(block.positions, prepack(TOF, [r.values for r in rows]), strict=True):
            out[pos] = row
    return out


def assert_sound(payloads: list[bytes]) -> dict[int, tuple[object, ...]]:
    fast = bulk_rows(payloads)
    for pos, row in fast.items():
        assert slow_row(payloads[pos]) == row, payloads[pos][:300]
    return fast


def test_plain_frames_of_both_layouts_take_the_bulk_path_with_the_same_rows() -> None:
    docs = [frame(8, 1), frame(4, 2), frame(8, 3, v=1), frame(4, 4, ranging_hz=None)]
    docs.append({k: v for k, v in frame(8, 5).items() if k not in ("v", "sensor_temp_c")})
    docs.append(frame(8, 6, signal_per_spad=[[7] * 8] * 8, ranging_hz=60))  # ints for floats
    docs.append(
        frame(8, 7, distance_mm=[[-32768, 32767] * 4] * 8, target_status=[[0, 255] * 4] * 8)
    )
    docs.append(frame(8, 8, reflectance_pct=[[FLOAT4_MAX, -FLOAT4_MAX, 1e-45, -0.0] * 2] * 8))
    docs.append(frame(8, 2**63 - 1, ts="2026-12-05T07:00:00Z"))
    payloads = [payload(d) for d in docs]
    fast = assert_sound(payloads)
    assert sorted(fast) == list(range(len(docs)))


ODD_VALUES: list[Any] = [
    True, False, None, "5", 1.5, 1.0, -1, 0, 256, 32768, -32769, 2**63, 2**64, 1e39, -1e39,
    FLOAT4_MAX * 1.0000001, [], [1], {}, {"a": 1}, 10**30,
]  # fmt: skip
FIELDS = [
    "v", "device_id", "sample_id", "seq", "ts", "layout", "ranging_hz", "integration_ms",
    "sensor_temp_c",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A frame with one to three things changed: a field's value, a matrix cell, a matrix's
    shape, a key added or removed, or the JSON text itself."""
    doc = frame(draw(st.sampled_from([4, 8])), draw(st.integers(0, 99)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 6))
        if kind == 0:
            doc[draw(st.sampled_from(FIELDS))] = draw(
                st.sampled_from([*ODD_VALUES, 2, 4, 8, 60, 0.5, 2.0, 1000.0, 1000.5, "x", "dev-2"])
            )
        elif kind == 1:
            m = doc.get(draw(st.sampled_from(TOF_MATRICES)))
            if not m or not isinstance(m[-1], list):
                continue  # removed or reshaped by an earlier change
            r = draw(st.integers(0, len(m) - 1))
            c = draw(st.integers(0, len(m[r]) - 1)) if m[r] else 0
            row = list(m[r])
            if row:
                row[c] = draw(
                    st.sampled_from(ODD_VALUES) | st.floats(allow_nan=False) | st.integers()
                )
            m[r] = row
        elif kind == 2:
            name = draw(st.sampled_from(TOF_MATRICES))
            if name not in doc or not all(isinstance(r, list) for r in doc[name]):
                continue
            m = [list(r) for r in doc[name]]
            what = draw(st.integers(0, 3))
            if what == 0 and m:
                m.pop()
            elif what == 1 and m and m[0]:
                m[0].pop()
            elif what == 2:
                m[-1].append(1)
            else:
                m = [m]
            doc[name] = m
        elif kind == 3:
            doc.pop(draw(st.sampled_from(sorted(doc))), None)
        elif kind == 4:
            doc[draw(st.sampled_from(["histogram", "extra", "note", "V"]))] = draw(
                st.sampled_from([1, "x", {"start_bin": 0}, None])
            )
        elif kind == 5:
            doc["ts"] = draw(
                st.sampled_from([
                    "2026-12-05T08:00:00", "2026-12-05 08:00:00+00:00", "1700000000",
                    1700000000, "2026-13-05T08:00:00Z", "2026-12-05t08:00:00z", "today",
                ])
            )  # fmt: skip
        else:
            doc["sample_id"] = draw(
                st.sampled_from(["", "a b", "x" * 128, "x" * 129, "ok\n", "é", "a:b.c-d_e"])
            )
    text = payload(doc)
    cut = draw(st.integers(0, 9))
    if cut == 0:
        return text[: draw(st.integers(0, len(text)))]  # truncated
    if cut == 1:
        return text[:-1] + b',"seq":' + draw(st.sampled_from([b"-1", b"7", b"true", b"1.0"])) + b"}"
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=12))
def test_a_frame_the_bulk_path_takes_is_one_pydantic_accepts_with_the_same_row(
    payloads: list[bytes],
) -> None:
    plain = payload(frame(8, 100))
    fast = assert_sound([plain, *payloads, plain])
    assert 0 in fast  # odd neighbours never spoil a plain frame
    assert len(payloads) + 1 in fast


@pytest.mark.parametrize(
    "text",
    [
        b'{"v":1,"seq":1,"seq":2}',
        b"[1,2]",
        b"null",
        b"\xff\xfe",
        b"{}",
        b'{"device_id":"dev-1"}',
    ],
)
def test_what_is_not_a_frame_is_left_to_decode(text: bytes) -> None:
    assert bulk_rows([text]) == {}


def test_a_json_true_anywhere_sends_the_frame_to_decode() -> None:
    # numpy would read a true among integers as 1; the bulk path never sees one.
    doc = frame(8, 1)
    doc["distance_mm"][2][3] = True
    p = payload(doc)
    assert bulk_rows([p]) == {}
    assert slow_row(p) is None


def test_duplicate_keys_give_the_same_answer_on_both_paths() -> None:
    p = payload(frame(8, 1))[:-1] + b',"seq":77}'
    fast = assert_sound([p])
    assert fast, "last key wins on both paths"
    assert fast[0][4] == 77


def test_non_finite_numbers_never_take_the_bulk_path() -> None:
    for bad in (math.inf, -math.inf, math.nan):
        doc = frame(8, 1)
        doc["signal_per_spad"][0][0] = bad
        assert bulk_rows([payload(doc)]) == {}
