"""The chaos suite's stack: its own broker, database, analyzer and ingest for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.stack import Stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    s = Stack()
    try:
        s.start()
        yield s
    finally:
        s.close()
