"""Page-update latency of the station: a result's MQTT publish → its SSE event at a browser.

A private Mosquitto and PostgreSQL (embedded), ``sqal station`` as its own process, a signed-in
client reading ``/events`` like a line view does, and results published at QoS 1 at a steady
rate (200 samples/s by default) from this process. Each result's latency is from just before
its publish to the moment its ``tray`` event is read by the client (one clock, this process).

    python -m bench.station [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import http.cookiejar
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg

from bench.common import header
from embedded import free_port, start_mosquitto, start_postgres
from sqal.mqtt import client_id, paho_client
from sqal.wire import Kind, device_topic, encode
from storage.migrate import migrate
from tests.station_kit import PASSWORD, USERS, result, station_db

LINE = "bench-L1"


def sign_in(base: str) -> str:
    """The session cookie of a signed-in viewer."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    body = opener.open(f"{base}/login", timeout=10).read().decode()
    m = re.search(r'name="csrf_token" value="([^"]+)"', body)
    assert m
    form = {"csrf_token": m.group(1), "username": "eye", "password": PASSWORD}
    opener.open(f"{base}/login", urllib.parse.urlencode(form).encode(), timeout=10).read()
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def read_events(port: int, cookie: str, seen: dict[str, float], ready: threading.Event) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", f"/events?line={LINE}", headers={"Cookie": cookie})
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    event = ""
    while True:
        line = resp.fp.readline()
        if not line:
            return
        text = line.decode().rstrip("\n")
        if text.startswith("event: "):
            event = text[7:]
            if event == "snapshot":
                ready.set()
        elif text.startswith("data: ") and event == "tray":
            seen[json.loads(text[6:])["sample_id"]] = time.monotonic()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200.0, help="results per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to publish")
    args = ap.parse_args()
    print(header("station"))
    folder = Path(tempfile.mkdtemp(prefix="sqal-bench-station-"))
    folder.chmod(0o755)
    mq = start_mosquitto(folder / "mqtt", free_port())
    pg = start_postgres(folder / "pg", free_port())
    station: subprocess.Popen[bytes] | None = None
    try:
        dsn = pg.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
        station_db(dsn)
        assert "eye" in USERS
        port = free_port()
        station = subprocess.Popen(
            [sys.executable, "-m", "app", "station", "--broker", mq.url, "--db", dsn,
             "--port", str(port), "--data-dir", str(folder), "--client-id", "bench-station"],
            env={**os.environ, "SQAL_LOG_LEVEL": "WARNING"},
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the station did not come up"
                time.sleep(0.2)
        seen: dict[str, float] = {}
        ready = threading.Event()
        threading.Thread(target=read_events, args=(port, sign_in(base), seen, ready),
                         daemon=True).start()  # fmt: skip
        assert ready.wait(10)
        n = int(args.rate * args.seconds)
        now = datetime.now(UTC)
        payloads = [
            (f"b-{i:06d}", encode(result(f"n{i % 4}", f"b-{i:06d}", now))) for i in range(n)
        ]
        topics = [device_topic(LINE, f"n{i % 4}", Kind.RESULT) for i in range(n)]
        client = paho_client(mq.url, client_id("bench-pub"), persistent=False, max_inflight=1000)
        sent: dict[str, float] = {}
        period = 1.0 / args.rate
        start = time.monotonic()
        for i, (sample, payload) in enumerate(payloads):
            due = start + i * period
            while (left := due - time.monotonic()) > 0:
                time.sleep(min(left, 0.002))
            sent[sample] = time.monotonic()
            client.publish(topics[i], payload, qos=1)
        achieved = n / (time.monotonic() - start)
        deadline = time.monotonic() + 10
        while len(seen) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        client.disconnect()
        client.loop_stop()
        lat_ms = np.array([1000 * (seen[s] - sent[s]) for s in sent if s in seen])
        p50, p99 = np.percentile(lat_ms, [50, 99])
        print(
            f"station page update  {args.rate:g} samples/s (achieved {achieved:.0f}) n={n}  "
            f"p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {lat_ms.max():.1f} ms  "
            f"mean {statistics.fmean(lat_ms):.1f} ms  lost {n - len(lat_ms)}"
        )
    finally:
        if station is not None:
            station.terminate()
            station.wait(timeout=15)
        mq.stop()
        pg.stop()


if __name__ == "__main__":
    main()
