"""Settings: flags outrank SQAL_* variables, which outrank one-machine defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqal.errors import ConfigError
from sqal.settings import BrokerUrl, load_settings, parse_broker_url


def test_defaults_work_on_one_machine() -> None:
    s = load_settings()
    assert s.broker == "mqtt://127.0.0.1:1883"
    assert s.db.get_secret_value() == "postgresql://sqal@127.0.0.1:5432/sqal"
    assert s.data_dir == Path(".sqal")


def test_flags_outrank_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQAL_BROKER", "mqtt://10.0.0.9:1884")
    assert load_settings().broker == "mqtt://10.0.0.9:1884"
    assert load_settings(broker="mqtt://127.0.0.1:2000").broker == "mqtt://127.0.0.1:2000"
    assert load_settings(broker=None).broker == "mqtt://10.0.0.9:1884"


def test_db_dsn_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQAL_DB", "postgresql://u:hunter2@127.0.0.1/sqal")
    assert "hunter2" not in repr(load_settings())


def test_unknown_flag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        load_settings(bogus=1)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", BrokerUrl("127.0.0.1", 1883)),
        ("127.0.0.1:1999", BrokerUrl("127.0.0.1", 1999)),
        ("mqtt://localhost", BrokerUrl("localhost", 1883)),
        (
            "mqtts://dev%40L1:p%3Ass@broker.local",
            BrokerUrl("broker.local", 8883, True, "dev@L1", "p:ss"),
        ),
    ],
)
def test_broker_urls(url: str, expected: BrokerUrl) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:1883", "scheme"),
        ("mqtt://127.0.0.1:99999", "port"),
        ("mqtt://:1883", "no host"),
    ],
)
def test_bad_broker_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_broker_url(url)


def test_times_need_a_utc_offset() -> None:
    from datetime import UTC, datetime

    from sqal.settings import parse_aware_time

    assert parse_aware_time("2026-11-27T08:00+00:00", "--since") == datetime(
        2026, 11, 27, 8, tzinfo=UTC
    )
    with pytest.raises(ConfigError, match="add a UTC offset"):
        parse_aware_time("2026-11-27T08:00", "--since")
    with pytest.raises(ConfigError, match="--until 'soon': expected an age"):
        parse_aware_time("soon", "--until", "an age like 8h")
