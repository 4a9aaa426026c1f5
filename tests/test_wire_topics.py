"""Topic builder and parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqal.errors import PayloadError
from sqal.wire import (
    DeadReason,
    DeviceTopic,
    Kind,
    dead_letter_topic,
    device_topic,
    parse_topic,
    subscription,
)

ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z").filter(lambda s: s != "_dead")


@given(line=ids, device=ids, kind=st.sampled_from(list(Kind)))
def test_build_then_parse_round_trips(line: str, device: str, kind: Kind) -> None:
    topic = device_topic(line, device, kind)
    assert parse_topic(topic) == DeviceTopic(line, device, kind)
    assert str(parse_topic(topic)) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "sqal/v1/L1/d1",
        "sqal/v1/L1/d1/tof/extra",
        "sqal/v1/L 1/d1/tof",
        "sqal/v1/L1/d+/tof",
        "sqal/v1/L1/" + "x" * 65 + "/tof",
        "sqal/v1/L1/d1/TOF",
        "other/v1/L1/d1/tof",
        "sqal/v1/_dead/d1/tof",
    ],
)
def test_parse_rejects_foreign_topics(topic: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_topic(topic)
    assert info.value.reason is DeadReason.BAD_TOPIC


@pytest.mark.parametrize(
    ("line", "device"), [("L 1", "d1"), ("L1", "d/1"), ("", "d1"), ("_dead", "d1")]
)
def test_build_rejects_bad_ids(line: str, device: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        device_topic(line, device, Kind.TOF)


def test_subscriptions_and_dead_letters() -> None:
    assert subscription(Kind.TOF) == "sqal/v1/+/+/tof"
    assert subscription("result", line="L2") == "sqal/v1/L2/+/result"
    assert dead_letter_topic("ingest") == "sqal/v1/_dead/ingest"
