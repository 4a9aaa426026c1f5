"""Pure decisions of ingest (batch cuts, backoff, limits) and the broker configs they assume."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embedded.mosquitto import MAX_QUEUED_MESSAGES, render_config
from ingest.batching import (
    DEFAULT_BATCH_ROWS,
    Backoff,
    batch_due,
    check_batch_fits,
    log_due,
)
from ingest.service import subscription_filters
from sqal.errors import ConfigError
from sqal.mqtt import INFLIGHT_WINDOW
from sqal.wire.codec import MAX_MESSAGE_BYTES, MAX_PACKET_BYTES

MOSQUITTO = Path(__file__).resolve().parents[1] / "mosquitto"


def test_backoff_doubles_then_stays_at_its_cap() -> None:
    b = Backoff(base_s=0.2, factor=2.0, cap_s=5.0)
    assert [b.delay_s(a) for a in range(6)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert b.delay_s(10_000) == 5.0
    assert b.retry_at(2, now=100.0) == pytest.approx(100.8)
    with pytest.raises(ValueError, match="attempt"):
        b.delay_s(-1)


def test_batch_is_cut_by_rows_or_by_age_never_empty() -> None:
    assert not batch_due(0, 99.0, 500, 0.2)
    assert not batch_due(10, 0.1, 500, 0.2)
    assert batch_due(10, 0.2, 500, 0.2)
    assert batch_due(500, 0.0, 500, 0.2)


def test_log_due_at_most_once_per_interval() -> None:
    assert log_due(None, 5.0, 10.0)
    assert not log_due(5.0, 14.9, 10.0)
    assert log_due(5.0, 15.0, 10.0)


def test_batch_must_fit_the_receive_maximum_and_the_broker() -> None:
    check_batch_fits(DEFAULT_BATCH_ROWS, INFLIGHT_WINDOW, INFLIGHT_WINDOW)
    with pytest.raises(ConfigError, match=r"^--batch-rows 1001 exceeds ingest's receive maximum"):
        check_batch_fits(1001, INFLIGHT_WINDOW)
    with pytest.raises(ConfigError, match=r"broker's max_inflight_messages 20"):
        check_batch_fits(500, INFLIGHT_WINDOW, 20)
    with pytest.raises(ConfigError, match="at least 1"):
        check_batch_fits(0, INFLIGHT_WINDOW)


def _setting(conf: Path, key: str) -> int:
    m = re.search(rf"^{key}\s+(\d+)\s*$", conf.read_text(), re.MULTILINE)
    assert m is not None, f"{conf.name} lacks {key}"
    return int(m.group(1))


@pytest.mark.parametrize("name", ["dev.conf", "test.conf", "production.conf"])
def test_broker_configs_match_ingest_and_the_embedded_broker(name: str) -> None:
    conf = MOSQUITTO / name
    assert _setting(conf, "max_inflight_messages") == INFLIGHT_WINDOW
    assert _setting(conf, "max_queued_messages") == MAX_QUEUED_MESSAGES
    assert _setting(conf, "max_inflight_messages") >= DEFAULT_BATCH_ROWS


@pytest.mark.parametrize("name", ["compose.conf", "dev.conf", "test.conf", "production.conf"])
def test_broker_configs_announce_the_packet_limit_publishers_check(name: str) -> None:
    conf = MOSQUITTO / name
    assert _setting(conf, "message_size_limit") == MAX_MESSAGE_BYTES
    assert _setting(conf, "max_packet_size") == MAX_PACKET_BYTES
    embedded = render_config(1883, Path("/data"))
    assert f"message_size_limit {MAX_MESSAGE_BYTES}\n" in embedded
    assert f"max_packet_size {MAX_PACKET_BYTES}\n" in embedded


def test_shared_workers_subscribe_through_share_groups() -> None:
    plain = subscription_filters(None, dead_topics=True)
    assert "sqal/v1/+/+/tof" in plain
    assert "sqal/v1/_dead/+" in plain
    shared = subscription_filters("ingest", dead_topics=False)
    assert shared == [
        f"$share/ingest/sqal/v1/+/+/{k}"
        for k in ("tof", "spectral", "weight", "result", "status", "config", "recheck")
    ] + ["$share/ingest/sqal/v1/+/lot"]
    with pytest.raises(ValueError, match="shared group"):
        subscription_filters("a/b", dead_topics=False)
