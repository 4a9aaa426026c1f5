"""One strict codec decides for both services: what ``sqal.wire.decode`` accepts, the database
stores (#15: a distance of 70,000 or a seq of 2**70 got a result from the analyzer while ingest
refused the frame, so a result existed with no raw frame).

Hypothesis mutates valid frames, weights and statuses with values on the edges of every column
type (smallint, int, bigint, real, double precision, text, jsonb); each payload the codec accepts
is written through the real writer into a migrated database and must be stored, not refused.
"""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqal.errors import PayloadError
from sqal.wire import Kind, decode, device_topic, parse_topic
from storage.rows import pending_row
from storage.writer import BatchWriter
from tests.hostile import frame_doc
from tests.test_ingest_frames import migrated

LINE, DEVICE = "Lh", "dh"
_KEYS = itertools.count()
INTS = [-(2**70), -(2**63) - 1, -(2**63), -(2**31) - 1, -(2**31), -32769, -32768, -1, 0, 1, 255,
        256, 32767, 32768, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**70]  # fmt: skip
FLOATS = [-1e308, -3.5e38, -3.4028234663852886e38, -1.0, -0.0, 0.0, 5e-324, 1e-45, 0.5, 42.5,
          3.4028234663852886e38, 3.41e38, 1e39, 1e308, math.inf, math.nan]  # fmt: skip
TEXTS = ["", "x", "\u0000", "a\u0000b", "é", "\U0001d11e", "240", "2026-12-05T08:00:00Z", "x" * 300]
EDGE = st.one_of(
    st.sampled_from(INTS),
    st.sampled_from(FLOATS),
    st.sampled_from(TEXTS),
    st.booleans(),
    st.none(),
    st.integers(),
    st.floats(width=64),
    st.text(max_size=20),
)


def _status_doc(device: str) -> dict[str, Any]:
    return {"v": 1, "device_id": device, "state": "online", "ts": "2026-12-04T08:00:00Z",
            "firmware": "1.2.3", "temperature_c": 41.5, "humidity_pct": 40.0,
            "uptime_s": 12.0}  # fmt: skip


@st.composite
def payloads(draw: st.DrawFn) -> tuple[Kind, bytes]:
    kind = draw(st.sampled_from([Kind.TOF, Kind.SPECTRAL, Kind.WEIGHT, Kind.STATUS]))
    doc = _status_doc(DEVICE) if kind is Kind.STATUS else frame_doc(kind, DEVICE)
    # A key of its own (a repeated key with other content is a conflict, not the point here),
    # and a time inside the ts window: the values are the test.
    n = next(_KEYS)
    doc["ts"] = (datetime.now(UTC) + timedelta(microseconds=n)).isoformat()
    if kind is not Kind.STATUS:
        doc["sample_id"] = f"{DEVICE}-hyp-{n:08d}"
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*sorted(doc), "unknown_field"]))
        value = draw(EDGE)
        old = doc.get(key)
        if isinstance(old, list) and old and isinstance(old[0], list):  # a matrix: one cell
            row, col = draw(st.integers(0, len(old) - 1)), draw(st.integers(0, len(old[0]) - 1))
            old[row][col] = value
        elif isinstance(old, dict) and old:  # channels: one of them
            old[draw(st.sampled_from(sorted(old)))] = value
        elif key not in ("device_id", "ts", "sample_id"):
            doc[key] = value
    return kind, json.dumps(doc).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads(), min_size=1, max_size=8))
def _every_accepted_payload_is_stored(writer: BatchWriter, batch: list[tuple[Kind, bytes]]) -> None:
    rows = []
    for i, (kind, payload) in enumerate(batch):
        topic = parse_topic(device_topic(LINE, DEVICE, kind))
        try:
            frame = decode(topic, payload)
        except PayloadError:
            continue
        row = pending_row(topic, frame, datetime.now(UTC), payload, i)
        if row is not None:
            rows.append(row)
    report = writer.write(rows, [])
    assert not report.refused, [(r.reason, r.detail) for r in report.refused]


def test_no_payload_the_codec_accepts_is_refused_by_the_database(fresh_db: str) -> None:
    writer = BatchWriter(migrated(fresh_db))
    try:
        _every_accepted_payload_is_stored(writer)
    finally:
        writer.close()
