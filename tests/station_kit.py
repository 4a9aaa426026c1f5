"""Helpers of the station's tests: a running station, its users, stored trays, an HTTP client."""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn

from embedded import free_port
from sqal.mqtt import client_id, paho_client
from sqal.wire import (
    AnalyzerInfo,
    Calibration,
    Decision,
    DefectCode,
    DeviceConfig,
    Frame,
    Fusion,
    Grade,
    Kind,
    Lab,
    Result,
    SpectralResult,
    TofFrame,
    TofResult,
    device_topic,
    encode,
    parse_topic,
)
from station import StationConfig, create_app
from station.auth import hash_password
from station.base import stop_streams
from storage import station as db
from storage.rows import pending_row
from storage.writer import BatchWriter
from tests.test_ingest_frames import migrated

PROFILE = "foie_gras_lobe_400g"
PASSWORD = "correct horse battery"
USERS = {"op": "operator", "qa": "quality", "eye": "viewer"}
PASSWORD_HASH = hash_password(PASSWORD)


def station_db(dsn: str) -> str:
    """``dsn`` migrated, with an operator ``op``, a quality user ``qa`` and a viewer ``eye``."""
    migrated(dsn)
    with db.session(dsn, "test users") as conn:
        for name, role in USERS.items():
            db.put_user(conn, name, role, PASSWORD_HASH)
    return dsn


def now_ts(offset_s: float = 0.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=offset_s)


def result(
    device: str,
    sample_id: str,
    ts: datetime,
    decision: Decision = Decision.PASS,
    grade: Grade = Grade.A,
    defects: Sequence[DefectCode] = (),
    mass_g: float = 401.5,
) -> Result:
    """A scored tray with both sections, a decision and its probabilities."""
    codes = list(defects)
    return Result(
        device_id=device,
        sample_id=sample_id,
        ts=ts,
        profile=PROFILE,
        tof=TofResult(
            volume_mm3=mass_g * 1000 / 1.04, mass_g=mass_g, avg_height_mm=24.0,
            max_height_mm=31.0, height_variation_mm=2.5, surface_uniformity=0.9, tilt_deg=1.0,
            fill_ratio=0.8, valid_zones=60, quality_score=0.8, grade=grade, defects=codes,
        ),
        spectral=SpectralResult(
            freshness_index=0.8, fat_quality_index=0.7, oxidation_index=0.2,
            color_uniformity=0.9, lab=Lab(L=62.0, a=14.0, b=24.0), quality_score=0.8,
            grade=grade, defects=[],
        ),
        fusion=Fusion(
            final_score=0.7, final_grade=grade, confidence=0.6, defects=codes, decision=decision,
            data_quality=0.9, p_reject=0.35 if decision is Decision.HOLD else 0.01,
            p_defects={c: 0.42 for c in codes},
        ),
        analyzer=AnalyzerInfo(version="test", processing_ms=1.0),
    )  # fmt: skip


def tof(device: str, sample_id: str, ts: datetime) -> TofFrame:
    """An 8×8 frame of a lobe: the middle zones 30 mm nearer than the tray's base."""
    dist = [[224 - (30 if 2 <= r <= 5 and 2 <= c <= 5 else 0) for c in range(8)] for r in range(8)]
    status = [[5] * 8 for _ in range(8)]
    status[0][0] = 255  # one zone without a target: shown as unknown
    return TofFrame.model_validate({
        "device_id": device, "sample_id": sample_id, "seq": 1, "ts": ts, "layout": 8,
        "distance_mm": dist, "target_status": status,
        "signal_per_spad": [[1800.0] * 8] * 8, "ambient_per_spad": [[1.0] * 8] * 8,
        "range_sigma_mm": [[1.5] * 8] * 8, "reflectance_pct": [[40.0] * 8] * 8,
    })  # fmt: skip


def config(device: str, ts: datetime) -> DeviceConfig:
    return DeviceConfig(device_id=device, profile=PROFILE, ts=ts,
                        calibration=Calibration(id="cal-1", ts=ts, d0_mm=224.0))  # fmt: skip


def store(dsn: str, line: str, items: Sequence[tuple[Kind, Frame]]) -> None:
    """Write payloads as ingest would."""
    rows = []
    for i, (kind, frame) in enumerate(items):
        topic = parse_topic(device_topic(line, frame.device_id, kind))
        row = pending_row(topic, frame, datetime.now(UTC), b"", i)
        assert row is not None
        rows.append(row)
    w = BatchWriter(dsn)
    try:
        w.write(rows, [])
    finally:
        w.close()


def publish(broker_url: str, line: str, items: Sequence[tuple[Kind, Frame]]) -> None:
    """Publish at QoS 1 and wait for the PUBACKs (paho: Playwright's sync API holds an event
    loop in this thread, so no asyncio here)."""
    client = paho_client(broker_url, client_id("test-pub"), persistent=False)
    try:
        for kind, frame in items:
            topic = device_topic(line, frame.device_id, kind)
            retain = kind is Kind.STATUS
            client.publish(topic, encode(frame), qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@contextlib.contextmanager
def listening(broker_url: str, topic_filter: str) -> Iterator[list[bytes]]:
    """Payloads arriving on ``topic_filter`` while the block runs (and a second after)."""
    got: list[bytes] = []
    subscribed = threading.Event()
    client = paho_client(
        broker_url, client_id("test-sub"), persistent=False,
        on_message=lambda c, u, msg: got.append(bytes(msg.payload)),
    )  # fmt: skip
    client.on_subscribe = lambda *a: subscribed.set()
    client.subscribe(topic_filter, qos=1)
    assert subscribed.wait(5)
    try:
        yield got
        time.sleep(1.0)  # a duplicate would come within this
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class RunningStation:
    url: str
    cfg: StationConfig
    server: uvicorn.Server
    app: Any


@contextlib.contextmanager
def running_station(broker_url: str, dsn: str, **over: Any) -> Iterator[RunningStation]:
    """A station in a thread of this process, on a free loopback port, stopped after."""
    port = free_port()
    fields: dict[str, Any] = {
        "broker": broker_url, "dsn": dsn, "secret_key": "k" * 40, "port": port,
        "secure_cookies": False, "client_id": f"station-test-{port}",
    }  # fmt: skip
    fields.update(over)
    cfg = StationConfig(**fields)
    app = create_app(cfg)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            log_config=None,
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the station did not start"
        time.sleep(0.05)
    try:
        yield RunningStation(cfg.url, cfg, server, app)
    finally:
        stop_streams(app)
        server.should_exit = True
        thread.join(timeout=15)


def wait_for(check: Any, timeout_s: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Http:
    """A cookie-keeping HTTP client of the station (urllib: no redirects followed)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, dict[str, str]]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=headers or {})  # fmt: skip
        try:
            with self.opener.open(req, timeout=10) as resp:
                return resp.status, resp.read().decode(errors="replace"), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), dict(err.headers)

    def get(self, path: str, **kw: Any) -> tuple[int, str, dict[str, str]]:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, str]) -> tuple[int, str, dict[str, str]]:
        return self.request("POST", path, form=form)

    def csrf(self, path: str = "/login") -> str:
        _, body, _ = self.get(path)
        m = re.search(r'name="csrf_token" value="([^"]+)"', body)
        assert m, body[:500]
        return m.group(1)

    def sign_in(self, user: str, password: str = PASSWORD) -> int:
        status, _, _ = self.post(
            "/login", {"csrf_token": self.csrf(), "username": user, "password": password}
        )
        return status

    def api(self, path: str, token: str | None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, body, _ = self.get(path, headers=headers)
        return status, json.loads(body)
