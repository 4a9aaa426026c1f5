"""``sqal grafana push`` against a real Grafana when SQAL_TEST_GRAFANA_URL names one.

No Grafana runs on the test machines, so the round trip is skipped there; set
``SQAL_TEST_GRAFANA_URL`` (e.g. ``http://admin:admin@127.0.0.1:3000``) and optionally
``SQAL_TEST_GRAFANA_TOKEN`` to run it. The refusal path runs everywhere.
"""

from __future__ import annotations

import os

import pytest

from embedded import free_port
from views.boards import build_boards
from views.command import GrafanaPushError, push_dashboards

# Read at import: the autouse fixture in conftest.py clears SQAL_* before each test.
GRAFANA_URL = os.environ.get("SQAL_TEST_GRAFANA_URL", "")
GRAFANA_TOKEN = os.environ.get("SQAL_TEST_GRAFANA_TOKEN", "")


@pytest.mark.skipif(not GRAFANA_URL, reason="SQAL_TEST_GRAFANA_URL is not set: no Grafana here")
def test_push_uploads_every_dashboard_into_the_sqal_folder() -> None:
    from grafana_client.api import GrafanaApi

    boards = build_boards()
    pushed, _ = push_dashboards(GRAFANA_URL, GRAFANA_TOKEN, [b.to_dict() for b in boards])
    assert len(pushed) == len(boards)
    api = GrafanaApi.from_url(GRAFANA_URL, credential=GRAFANA_TOKEN or None)
    for board in boards:
        stored = api.dashboard.get_dashboard(board.uid)
        assert stored["meta"]["folderUid"] == "sqal"
        assert len(stored["dashboard"]["panels"]) == len(board.panels)
    # a second push replaces, it does not fail on the existing versions
    assert len(push_dashboards(GRAFANA_URL, GRAFANA_TOKEN, [boards[0].to_dict()])[0]) == 1


def test_push_to_nothing_listening_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(GrafanaPushError, match=f"cannot reach Grafana at {url}"):
        push_dashboards(url, "token", [build_boards()[0].to_dict()])
