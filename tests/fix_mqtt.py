"""A real Mosquitto for the whole test session, on a free loopback port, stopped by PID."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedded import Mosquitto, free_port, start_mosquitto


@pytest.fixture(scope="session")
def broker() -> Iterator[Mosquitto]:
    """The session's broker (persistence on, SQAL's queue/inflight limits)."""
    folder = Path(tempfile.mkdtemp(prefix="sqal-mqtt-"))
    mq = start_mosquitto(folder, free_port())
    try:
        yield mq
    finally:
        mq.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of the test's own, for tests that stop or restart it."""
    mq = start_mosquitto(tmp_path / "mqtt", free_port())
    try:
        yield mq
    finally:
        mq.stop()
