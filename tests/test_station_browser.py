"""The station in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Checks of issue #20: sign in; a result published on MQTT shows on the line view within 2 s;
a HOLD re-checked through the form lands in ``rechecks`` and on MQTT exactly once; the page
says "stale" while the broker is stopped and recovers when it returns. Screenshots of the line
view and the HOLD queue go to the test's temporary folder for a human look.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from embedded import Mosquitto, Postgres, start_mosquitto
from sqal.wire import Decision, DefectCode, DeviceState, DeviceStatus, Grade, Kind, subscription
from storage import station as db
from tests.fix_pg import new_database
from tests.station_kit import (
    PASSWORD,
    PASSWORD_HASH,
    RunningStation,
    config,
    listening,
    now_ts,
    publish,
    result,
    running_station,
    station_db,
    store,
    tof,
    wait_for,
)

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (scripts/setup.sh installs it: make test)",
)
LINE = "web-L1"

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def dsn(pg: Postgres) -> Iterator[str]:
    with new_database(pg) as d:
        yield station_db(d)


ZONE = "Asia/Kolkata"
"""The plant's zone (UTC+05:30): a tray's time on the page is in it, not the browser's."""


@pytest.fixture(scope="module")
def station(broker: Mosquitto, dsn: str) -> Iterator[RunningStation]:
    with running_station(broker.url, dsn, tz=ZONE) as st:
        yield st


def signed_in(browser: Any, station: RunningStation, user: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{station.url}/lines/{LINE}")
    assert page.url.endswith(f"/login?next=/lines/{LINE}")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{station.url}/lines/{LINE}")
    return page


def wait_stream(page: Any) -> None:
    page.wait_for_selector("body[data-stream=open]", timeout=5000)


def test_a_result_on_mqtt_shows_on_the_line_view_within_2_s(
    browser: Any, station: RunningStation, broker: Mosquitto, dsn: str, tmp_path: Path
) -> None:
    page = signed_in(browser, station, "op")
    wait_stream(page)
    assert page.text_content("#live") == "stale"  # no result yet on this line
    t0 = now_ts(-5)
    # A tray whose frames are stored (ingest's work), so its evidence can be shown.
    stored = result("n1", "web-s1", t0, Decision.REJECT, Grade.REJECT, [DefectCode.UNDERFILL])
    store(dsn, LINE, [(Kind.CONFIG, config("n1", t0 - timedelta(hours=1))),
                      (Kind.TOF, tof("n1", "web-s1", t0)), (Kind.RESULT, stored)])  # fmt: skip
    online = DeviceStatus(device_id="n1", state=DeviceState.ONLINE, ts=t0)
    publish(broker.url, LINE, [(Kind.STATUS, online), (Kind.RESULT, stored)])
    page.wait_for_selector('#trays tr[data-key="n1/web-s1"]', timeout=2000)
    row = page.text_content('#trays tr[data-key="n1/web-s1"]') or ""
    assert "REJECT" in row
    assert "too little product in the tray" in row
    assert "bin" in row
    page.wait_for_function("document.querySelector('#live').textContent === 'live'",
                           timeout=2000)  # fmt: skip
    assert "online" in (page.text_content("#devices") or "")

    # The selected tray: its 8×8 height map (d0 224 mm − distance) and colour.
    page.click('#trays tr[data-key="n1/web-s1"]')
    page.wait_for_selector("#selected table.heightmap", timeout=3000)
    cells = page.locator("#selected table.heightmap td").all_text_contents()
    assert len(cells) == 64
    assert cells[0] == "·"  # no target in that zone
    assert cells[8 * 3 + 3] == "30"
    assert cells[8 * 1 + 1] == "0"
    assert page.locator("#selected .swatch").count() == 1

    # Then one published live only, timed from the publish.
    live = result("n2", "web-s2", now_ts())
    start = time.monotonic()
    publish(broker.url, LINE, [(Kind.RESULT, live)])
    page.wait_for_selector('#trays tr[data-key="n2/web-s2"]', timeout=2000)
    assert time.monotonic() - start < 2.5
    assert page.locator("#trays tbody tr").first.get_attribute("data-key") == "n2/web-s2"
    page.screenshot(path=str(tmp_path / "line-view.png"), full_page=True)
    assert (tmp_path / "line-view.png").stat().st_size > 10_000


def test_a_hold_rechecked_through_the_form_lands_once_in_the_table_and_on_mqtt(
    browser: Any, station: RunningStation, broker: Mosquitto, dsn: str, tmp_path: Path
) -> None:
    t0 = now_ts(-60)
    held = result("n3", "web-hold1", t0, Decision.HOLD, Grade.C, [DefectCode.OXIDATION])
    store(dsn, LINE, [(Kind.CONFIG, config("n3", t0 - timedelta(hours=1))),
                      (Kind.TOF, tof("n3", "web-hold1", t0)), (Kind.RESULT, held)])  # fmt: skip
    page = signed_in(browser, station, "op")
    page.goto(f"{station.url}/hold?line={LINE}")
    article = page.locator("#held-web-hold1")
    assert article.count() == 1
    assert article.locator("table.heightmap td").count() == 64
    assert "oxidation 0.42" in (article.text_content() or "")
    assert re.search(r"402 g ± \d+ g \(σ\)", article.text_content() or "")
    page.screenshot(path=str(tmp_path / "hold-queue.png"), full_page=True)

    with listening(broker.url, subscription(Kind.RECHECK, LINE)) as got:
        article.locator("input[value=reject]").check()
        article.locator("input[name=mass_g]").fill("395.5")
        article.locator("input[name=note]").fill("brown spot under the film")
        article.locator("button[type=submit]").click()
        page.wait_for_selector("p.ok", timeout=5000)
    assert "Re-check of web-hold1 recorded: reject." in (page.text_content("p.ok") or "")
    assert page.locator("#held-web-hold1").count() == 0
    assert len(got) == 1, got
    msg = json.loads(got[0])
    assert msg["sample_id"] == "web-hold1"
    assert msg["answer"] == "reject"
    assert msg["user"] == "op"
    assert msg["mass_g"] == 395.5
    assert msg["decision"] == "HOLD"
    with db.session(dsn, "count") as conn:
        rows = conn.execute("SELECT answer, mass_g, note, user_name, decision FROM rechecks"
                            " WHERE sample_id = 'web-hold1'").fetchall()  # fmt: skip
    assert rows == [("reject", 395.5, "brown spot under the film", "op", "HOLD")]


def test_the_live_view_speaks_french_with_times_in_the_plant_zone(
    browser: Any, station: RunningStation, broker: Mosquitto, dsn: str
) -> None:
    with db.session(dsn, "a French operator") as conn:
        db.put_user(conn, "marie", "operator", PASSWORD_HASH, "fr")
    page = signed_in(browser, station, "marie")
    wait_stream(page)
    ts = now_ts().replace(microsecond=0)
    tray = result("n5", "web-fr1", ts, Decision.REJECT, Grade.REJECT, [DefectCode.UNDERFILL])
    publish(broker.url, LINE, [(Kind.RESULT, tray)])
    page.wait_for_selector('#trays tr[data-key="n5/web-fr1"]', timeout=2000)
    cells = page.locator('#trays tr[data-key="n5/web-fr1"] td').all_text_contents()
    assert cells[0] == ts.astimezone(ZoneInfo(ZONE)).strftime("%H:%M:%S")
    assert cells[4] == "REJECT (jeter)"
    assert cells[5].startswith("sous-remplissage")
    page.wait_for_function("document.querySelector('#live').textContent === 'en direct'",
                           timeout=2000)  # fmt: skip
    assert "Taux de rejet" in (page.text_content(".rates") or "")


def test_the_page_says_stale_while_the_broker_is_stopped_and_recovers(
    browser: Any, dsn: str, tmp_path: Path
) -> None:
    folder = tmp_path / "mqtt"
    from embedded import free_port

    port = free_port()
    mq = start_mosquitto(folder, port)
    try:
        with running_station(mq.url, dsn, stale_after_s=60.0) as st:
            wait_for(lambda: st.app.state.station.feed.sub.connected, 10, "the broker")
            page = signed_in(browser, st, "eye")
            wait_stream(page)
            publish(mq.url, LINE, [(Kind.RESULT, result("n4", "web-s4", now_ts()))])
            page.wait_for_function("document.querySelector('#live').textContent === 'live'",
                                   timeout=3000)  # fmt: skip
            mq.stop()
            page.wait_for_function("document.querySelector('#live').textContent === 'stale'",
                                   timeout=5000)  # fmt: skip
            assert "no connection to the broker" in (page.text_content("#live-why") or "")
            mq = start_mosquitto(folder, port)
            page.wait_for_function("document.querySelector('#live').textContent === 'live'",
                                   timeout=15000)  # fmt: skip
            publish(mq.url, LINE, [(Kind.RESULT, result("n4", "web-s5", now_ts()))])
            page.wait_for_selector('#trays tr[data-key="n4/web-s5"]', timeout=3000)
    finally:
        mq.stop()
