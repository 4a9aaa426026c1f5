"""Test harness: real Mosquitto and TimescaleDB fixtures, a clean environment."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.fix_mqtt", "tests.fix_pg", "tests.broker_conf", "tests.chaos.plugin"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sqal", "SQAL test suite")
    group.addoption(
        "--cli-fuzz-count",
        type=int,
        default=300,
        help="Random argv cases tests/test_cli_fuzz.py runs (default 300; soak: 5000).",
    )
    group.addoption(
        "--cli-fuzz-seed", type=int, default=18, help="Seed of the CLI fuzz cases (default 18)."
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    from embedded import mosquitto_version, postgres_versions
    from sqal.errors import SqalError

    try:
        pg, ts = postgres_versions()
        mq = mosquitto_version()
    except SqalError as exc:
        return [f"sqal servers: {exc}"]
    return [f"sqal servers: Mosquitto {mq}, PostgreSQL {pg}, TimescaleDB {ts}"]


@pytest.fixture(autouse=True)
def _clean_sqal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's SQAL_* settings."""
    for key in list(os.environ):
        if key.startswith("SQAL_"):
            monkeypatch.delenv(key)
