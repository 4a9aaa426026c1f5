"""The hostile-payload catalogue (tests/hostile.py) against both stages, one entry at a time.

Each stage runs once for the module, in a thread, on the session broker (and, for ingest, a
database of the module's own); pytest runs every analyzer case, stops the analyzer, then runs
every ingest case, so neither sees the other's traffic. A stage's teardown reconnects to its
persistent session and checks that the broker has nothing to send again: every hostile message
was acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from embedded import Mosquitto, Postgres
from tests.fix_pg import new_database
from tests.hostile import (
    ANALYZER,
    CATALOGUE,
    STAGES,
    Hostile,
    Stage,
    check,
    running_analyzer,
    running_ingest,
)
from tests.test_ingest_frames import migrated


@pytest.fixture(scope="module")
def stage(request: pytest.FixtureRequest, broker: Mosquitto) -> Iterator[Stage]:
    if request.param == ANALYZER:
        with running_analyzer(broker.url) as analyzer:
            yield analyzer
        return
    pg: Postgres = request.getfixturevalue("pg")
    with new_database(pg) as dsn, running_ingest(broker.url, migrated(dsn)) as ingest:
        yield ingest


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.id)
@pytest.mark.parametrize("stage", STAGES, indirect=True)
def test_hostile_payload(stage: Stage, entry: Hostile, request: pytest.FixtureRequest) -> None:
    for mark in entry.marks(stage.name):  # a known inconsistency: strict xfail
        request.applymarker(mark)
    check(stage, entry)


def test_the_catalogue_covers_both_stages_and_every_reason_they_give() -> None:
    for name in STAGES:
        assert sum(e.expected(name) is not None for e in CATALOGUE) >= 50, name
    assert {e.reason.value for e in CATALOGUE} >= {
        "bad_topic", "too_large", "not_utf8", "bad_json", "not_object", "unsupported_version",
        "schema", "device_mismatch", "unknown_profile",
    }  # fmt: skip
    for e in CATALOGUE:  # every difference between the stages names a stage and says why
        for why in (e.not_delivered, e.known):
            assert set(why) <= set(STAGES), e.id
            assert all(why.values()), e.id
