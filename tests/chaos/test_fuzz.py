"""Hostile input through the real broker: every message dead-lettered with a reason, both
services still up, their memory flat.

Hypothesis draws malformed, oversized, wrong-type, deeply nested, non-UTF-8, newer-version,
bad-topic and spoofed-device payloads (a valid frame whose ``device_id`` is another device's),
and entries of the shared catalogue (tests/hostile.py) that both stages dead-letter, and
publishes each at QoS 1 on a topic of line ``fuzz``. The analyzer and ingest
both subscribe there, so each message must come back twice: one dead letter per stage, stored
in ``dead_letters`` and seen on ``sqal/v1/_dead/+``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sqal.mqtt import client_id, paho_client
from sqal.wire import DeadReason, Kind, SpectralFrame, TofFrame, encode
from tests.chaos.plugin import NOTES
from tests.chaos.stack import Stack, rss_kib, wait_for
from tests.frames import spectral_frame, tof_frame
from tests.hostile import CATALOGUE

pytestmark = pytest.mark.chaos

LINE = "fuzz"
DEVICES = [f"fz-{i:02d}" for i in range(4)]
OVER_LIMIT = 64 * 1024
"""The services' payload cap (sqal.wire.codec.MAX_PAYLOAD_BYTES); past it: ``too_large``."""
FAMILIES = (
    "bytes", "not_utf8", "not_object", "wrong_type", "missing", "nested", "nested_top",
    "oversized", "spoofed", "newer", "bad_topic", "catalogue",
)  # fmt: skip
SHARED = [
    e for e in CATALOGUE
    if e.dead_lettered_by_both and e.build(LINE, DEVICES[0])[0].startswith(f"sqal/v1/{LINE}")
]  # fmt: skip
"""Catalogue entries both stages dead-letter, on a topic the dead-letter query below counts."""
RSS_SANITY_KIB = 200 * 1024
"""A generous bound on RSS growth; the figure is printed, not tuned."""


def _frame(kind: Kind, device: str, seq: int) -> dict[str, Any]:
    model = tof_frame(device, seq=seq) if kind is Kind.TOF else spectral_frame(device, seq=seq)
    doc: dict[str, Any] = json.loads(encode(model))
    return doc


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(topic, payload, family): one message no stage may accept."""
    kind = draw(st.sampled_from([Kind.TOF, Kind.SPECTRAL]))
    device = draw(st.sampled_from(DEVICES))
    topic = f"sqal/v1/{LINE}/{device}/{kind.value}"
    doc = _frame(kind, device, draw(st.integers(0, 2**31)))
    model = TofFrame if kind is Kind.TOF else SpectralFrame
    # Only fields without a default: dropping ``v`` or ``saturated`` leaves a valid frame.
    required = [k for k, f in model.model_fields.items() if f.is_required()]
    family = draw(st.sampled_from(FAMILIES))
    if family == "bytes":
        # Random bytes are never a frame: not UTF-8, not JSON, or JSON that is not an object.
        payload = draw(st.binary(max_size=512))
    elif family == "not_utf8":
        raw = json.dumps(doc).encode()
        cut = draw(st.integers(0, len(raw)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]))
        payload = raw[:cut] + bad + raw[cut:]
    elif family == "not_object":
        value = draw(
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                lambda inner: st.lists(inner, max_size=4),
                max_leaves=10,
            )
        )
        payload = json.dumps(value).encode()
    elif family in ("wrong_type", "missing"):
        field = draw(st.sampled_from(required))
        if family == "missing":
            del doc[field]
        elif field == "channels":
            doc[field] = draw(st.lists(st.integers(), max_size=3))
        else:
            # An object is the wrong type for every other field (ids, numbers, ts, matrices).
            doc[field] = draw(st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
        payload = json.dumps(doc).encode()
    elif family == "nested":
        field = draw(st.sampled_from([k for k in required if k not in ("v",)]))
        depth = draw(st.integers(300, 3000))
        doc[field] = "@nest@"  # spliced as text: json.dumps itself would recurse too deep
        nest = "[" * depth + "1" + "]" * depth
        payload = json.dumps(doc).replace('"@nest@"', nest).encode()
    elif family == "nested_top":
        depth = draw(st.integers(2, 100_000))
        payload = b"[" * depth + b"]" * draw(st.integers(0, depth))
    elif family == "oversized":
        doc["pad"] = "x" * (OVER_LIMIT + draw(st.integers(1, 64 * 1024)))
        payload = json.dumps(doc).encode()
    elif family == "spoofed":
        doc["device_id"] = draw(st.sampled_from([d for d in DEVICES if d != device]))
        payload = json.dumps(doc).encode()
    elif family == "newer":
        doc["v"] = draw(st.integers(2, 10_000))
        payload = json.dumps(doc).encode()
    elif family == "catalogue":
        topic, payload = draw(st.sampled_from(SHARED)).build(LINE, device)
    else:  # bad_topic: a valid frame under a line id outside [A-Za-z0-9_-]{1,64}
        line = draw(st.sampled_from(["fuzz bad", "fuzz.dot", "fuzz" + "x" * 61, "fuzzé"]))
        topic = f"sqal/v1/{line}/{device}/{kind.value}"
        payload = json.dumps(doc).encode()
    return topic, payload, family


class DeadWatcher:
    """Counts dead letters on ``sqal/v1/_dead/+`` per stage."""

    def __init__(self, url: str) -> None:
        self.by_topic: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.client = paho_client(url, client_id("chaos-dead"), on_message=self._on_message)
        self.client.subscribe("sqal/v1/_dead/+", qos=1)

    def _on_message(self, c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.by_topic[msg.topic] += 1

    def count(self, stage: str) -> int:
        with self._lock:
            return self.by_topic[f"sqal/v1/_dead/{stage}"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


_DEAD_ROWS = """
SELECT stage, reason, count(*)
FROM dead_letters
WHERE topic LIKE 'sqal/v1/fuzz%%'
GROUP BY 1, 2 ORDER BY 1, 2
"""
"""Dead letters per stage and reason. Each hostile message gives one row per stage: ingest's
own, and the analyzer's (published on sqal/v1/_dead/analyzer, with an oversized payload cut
to MAX_DEAD_PAYLOAD_BYTES, and stored by ingest)."""


def _rows(stack: Stack) -> dict[tuple[str, str], int]:
    return {(str(s), str(r)): int(n) for s, r, n in stack.query(_DEAD_ROWS)}


def _stored(stack: Stack, stage: str) -> int:
    return sum(v for (s, _), v in _rows(stack).items() if s == stage)


def test_hostile_payloads_are_all_dead_lettered_and_services_stay_up(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    assert stack.analyzer is not None
    assert stack.ingest is not None
    wanted = int(request.config.getoption("--fuzz-count"))
    services = {"analyzer": stack.analyzer, "ingest": stack.ingest}
    rss_before = {name: rss_kib(s.pid) for name, s in services.items()}
    watcher = DeadWatcher(stack.url)
    pub = paho_client(stack.url, client_id("chaos-fuzz"), persistent=False)
    sent: Counter[str] = Counter()
    infos: list[paho.MQTTMessageInfo] = []

    @settings(
        max_examples=wanted,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile())
    def publish_one(msg: tuple[str, bytes, str]) -> None:
        topic, payload, family = msg
        infos.append(pub.publish(topic, payload, qos=1))
        sent[family] += 1

    t0 = time.monotonic()
    try:
        publish_one()
        for info in infos:
            info.wait_for_publish(30)
        n = sum(sent.values())
        done = wait_for(
            lambda: _stored(stack, "analyzer") >= n and _stored(stack, "ingest") >= n, 120, 0.5
        )
        # Ingest publishes its dead letters after the commit: they may trail the rows.
        wait_for(lambda: min(watcher.count("analyzer"), watcher.count("ingest")) >= n, 30, 0.1)
        took_s = time.monotonic() - t0
        rows = _rows(stack)
        rss_after = {name: rss_kib(s.pid) for name, s in services.items()}
        healthy = {name: s.healthy() for name, s in services.items()}
        mix = ", ".join(f"{k} {v}" for k, v in sorted(sent.items()))
        NOTES.append(f"fuzz: {n} hostile messages, all dead-lettered in {took_s:.1f} s ({mix})")
        NOTES.append(
            "fuzz: dead_letters rows " + ", ".join(f"{s}/{r} {v}" for (s, r), v in rows.items())
        )
        NOTES.append(
            f"fuzz: on sqal/v1/_dead/+: analyzer {watcher.count('analyzer')}, "
            f"ingest {watcher.count('ingest')}"
        )
        for name in services:
            NOTES.append(
                f"fuzz: {name} RSS {rss_before[name] / 1024:.1f} MiB before, "
                f"{rss_after[name] / 1024:.1f} MiB after"
            )
        assert n >= wanted * 0.95, sent  # hypothesis may skip a few repeated draws
        assert done, rows
        valid = {r.value for r in DeadReason}
        assert all(reason in valid for _, reason in rows), rows
        assert (_stored(stack, "analyzer"), _stored(stack, "ingest")) == (n, n), rows
        assert watcher.count("analyzer") == n
        assert watcher.count("ingest") == n
        assert healthy == {"analyzer": True, "ingest": True}
        for name in services:
            assert rss_after[name] - rss_before[name] < RSS_SANITY_KIB, (rss_before, rss_after)
    finally:
        pub.disconnect()
        pub.loop_stop()
        watcher.close()
