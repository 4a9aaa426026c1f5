"""Ingest under faults: killed mid-stream, PostgreSQL stopped mid-stream, limits that disagree."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from psycopg.conninfo import conninfo_to_dict

from embedded import Mosquitto, Postgres, free_port, start_mosquitto, start_postgres
from embedded.process import ServiceProcess
from ingest.service import IngestConfig, IngestService
from sqal.errors import ConfigError, StorageError
from sqal.wire import Kind, device_topic, encode
from storage.connection import DEAD_PEER, connect
from tests.fix_pg import FAST
from tests.test_ingest_frames import (
    count,
    drop_session,
    migrated,
    publish_all,
    tof_frame,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]


def _frames(line: str, n: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(11)
    out = []
    for seq in range(n):
        dev = f"dev-{seq % 4}"
        out.append((device_topic(line, dev, Kind.TOF), encode(tof_frame(dev, seq, rng))))
    return out


def _publish_paced(url: str, msgs: list[tuple[str, bytes]], chunk: int, pause_s: float) -> None:
    for i in range(0, len(msgs), chunk):
        publish_all(url, msgs[i : i + chunk])
        time.sleep(pause_s)


class _Ingest:
    """``python -m ingest`` as a child process, so it can be killed by PID."""

    def __init__(self, broker: str, dsn: str, cid: str, log: Path) -> None:
        self.port = free_port()
        self.args = [
            sys.executable, "-m", "ingest", "--broker", broker, "--db", dsn,
            "--client-id", cid, "--batch-rows", "200", "--flush-ms", "50",
            "--metrics-port", str(self.port), "--no-dead-topics",
        ]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        assert wait_until(self._healthy, 20), self.log.read_text()[-2000:]

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            ServiceProcess("ingest", self.proc.pid, signal.SIGTERM, self.proc).stop(15)


def test_kill_9_mid_stream_then_restart_stores_every_frame_once(
    broker: Mosquitto, fresh_db: str, tmp_path: Path
) -> None:
    dsn = migrated(fresh_db)
    n, line, cid = 3000, "crash", "test-ingest-crash"
    msgs = _frames(line, n)
    worker = _Ingest(broker.url, dsn, cid, tmp_path / "ingest.log")
    worker.start()
    pub = threading.Thread(target=_publish_paced, args=(broker.url, msgs, 250, 0.05))
    try:
        pub.start()
        assert wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") >= 500, 30)
        worker.kill()
        killed_at = count(dsn, "SELECT count(*) FROM tof_frames")
        pub.join(60)
        worker.start()
        stored = wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") >= n, 30)
        assert stored, (
            count(dsn, "SELECT count(*) FROM tof_frames"),
            killed_at,
            worker.log.read_text()[-3000:],
        )
        assert killed_at < n, "the kill came after the stream ended"
        assert count(dsn, "SELECT count(*) FROM tof_frames") == n
        assert count(dsn, "SELECT count(DISTINCT (device_id, sample_id)) FROM tof_frames") == n
    finally:
        worker.stop()
        pub.join(60)
        drop_session(broker.url, cid)


@pytest.fixture
def own_pg() -> Iterator[tuple[Postgres, Path]]:
    """A PostgreSQL of this test's own, which it may stop and start again."""
    folder = Path(tempfile.mkdtemp(prefix="sqal-pgdown-"))
    folder.chmod(0o755)
    server = start_postgres(folder, free_port(), extra_settings=FAST)
    box = [server]
    try:
        yield server, folder
    finally:
        with contextlib.suppress(Exception):
            box[0].stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_stopped_mid_stream_then_back_loses_nothing(
    broker: Mosquitto, own_pg: tuple[Postgres, Path]
) -> None:
    pg, folder = own_pg
    dsn = migrated(pg.dsn())
    n, line = 2000, "pgdown"
    cfg = IngestConfig(
        broker=broker.url, dsn=dsn, batch_rows=200, flush_s=0.05, client_id="test-ingest-pgdown"
    )
    svc = IngestService(cfg)
    svc.backoff = type(svc.backoff)(base_s=0.1, cap_s=1.0)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    t.start()
    assert wait_until(lambda: svc.link.connected, 10)
    msgs = _frames(line, n)
    pub = threading.Thread(target=_publish_paced, args=(broker.url, msgs, 100, 0.05))
    restarted: Postgres | None = None
    try:
        pub.start()
        assert wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") >= 200, 30)
        pg.stop()
        time.sleep(5.0)  # down for 5 s while frames keep coming
        assert svc.metrics.db_retries.total() > 0
        assert svc.metrics.registry.healthy() == (False, "database unavailable")
        restarted = _restart_pg(folder, pg.port)
        pub.join(60)
        assert wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") >= n, 60)
        assert count(dsn, "SELECT count(*) FROM tof_frames") == n
        assert svc.metrics.db_ok.value() == 1.0
    finally:
        stop.set()
        t.join(15)
        pub.join(60)
        drop_session(broker.url, cfg.client_id)
        if restarted is not None:
            restarted.stop()


def freeze_cluster(postmaster: int) -> list[int]:
    """SIGSTOP the postmaster (so it forks no more), then each of its children: every backend
    is its own session, so killpg would not reach them. Returns the PIDs stopped."""
    os.kill(postmaster, signal.SIGSTOP)
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
    signal_all(children, signal.SIGSTOP)
    return [postmaster, *children]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def test_a_frozen_database_fails_the_health_check_and_loses_nothing(
    broker: Mosquitto, own_pg: tuple[Postgres, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP on every process of the PostgreSQL cluster: its kernel still acknowledges, so the
    write waits rather than fails; /healthz says so, and nothing is lost once it thaws."""
    pg, _ = own_pg
    dsn = migrated(pg.dsn())
    monkeypatch.setattr("ingest.service.WRITE_STALL_S", 1.0)
    n, line = 1000, "pgfrozen"
    cfg = IngestConfig(
        broker=broker.url, dsn=dsn, batch_rows=200, flush_s=0.05, client_id="test-ingest-frozen"
    )
    svc = IngestService(cfg)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    t.start()
    assert wait_until(lambda: svc.link.connected, 10)
    msgs = _frames(line, n)  # 200 frames/s for 5 s: the freeze comes mid-stream
    pub = threading.Thread(target=_publish_paced, args=(broker.url, msgs, 10, 0.05))
    cluster: list[int] = []
    try:
        pub.start()
        assert wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") >= 100, 30)
        cluster = freeze_cluster(pg.process.pid)
        assert wait_until(lambda: not svc.metrics.registry.healthy()[0], 10)
        why = svc.metrics.registry.healthy()[1]
        assert why.startswith("database write stalled for"), why
        time.sleep(2.0)
        signal_all(cluster, signal.SIGCONT)
        cluster = []
        pub.join(60)
        assert wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") >= n, 60)
        assert count(dsn, "SELECT count(*) FROM tof_frames") == n
        assert wait_until(lambda: svc.metrics.registry.healthy() == (True, "ok"), 10)
    finally:
        signal_all(cluster, signal.SIGCONT)
        stop.set()
        t.join(15)
        pub.join(60)
        drop_session(broker.url, cfg.client_id)


def test_connections_detect_a_silent_database_host_unless_the_dsn_says_otherwise(
    pg: Postgres,
) -> None:
    with connect(pg.url) as conn:
        params = conninfo_to_dict(conn.info.dsn)
    assert {k: int(params[k]) for k in DEAD_PEER} == DEAD_PEER  # type: ignore[arg-type]
    with connect(pg.url + "?keepalives_idle=3") as conn:
        assert conninfo_to_dict(conn.info.dsn)["keepalives_idle"] == "3"
    with pytest.raises(StorageError) as bad:
        connect("postgresql://sqal:s3cret-pw@[broken/sqal")
    assert "s3cret" not in str(bad.value)
    assert "malformed" in str(bad.value)


def _restart_pg(folder: Path, port: int) -> Postgres:
    """Start the stopped cluster on its old port; a short-lived client socket may hold the
    port as its ephemeral local port for a moment, so retry for a few seconds."""
    from sqal.errors import ServiceError

    deadline = time.monotonic() + 10
    while True:
        try:
            return start_postgres(folder, port, extra_settings=FAST)
        except ServiceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_batch_larger_than_the_brokers_inflight_limit_is_refused(
    fresh_db: str, tmp_path: Path
) -> None:
    """A broker with Mosquitto's default max_inflight_messages 20 cannot feed 100-row batches."""
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 20\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _listening(port), 10)
        cfg = IngestConfig(
            broker=f"mqtt://127.0.0.1:{port}",
            dsn=migrated(fresh_db),
            batch_rows=100,
            flush_s=0.05,
            client_id="test-ingest-limit",
        )
        with pytest.raises(ConfigError, match=r"--batch-rows 100 exceeds the broker's .* 20"):
            IngestService(cfg).run(threading.Event())
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def test_broker_restart_reconnects_and_the_session_delivers_what_was_queued(
    private_broker: Mosquitto, fresh_db: str
) -> None:
    dsn = migrated(fresh_db)
    cfg = IngestConfig(
        broker=private_broker.url,
        dsn=dsn,
        batch_rows=100,
        flush_s=0.05,
        client_id="test-ingest-brokerdown",
    )
    svc = IngestService(cfg)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    t.start()
    msgs = _frames("brokerdown", 600)
    restarted: Mosquitto | None = None
    try:
        assert wait_until(lambda: svc.link.connected, 10)
        publish_all(private_broker.url, msgs[:300])
        assert wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") == 300)
        private_broker.stop()  # persists the session (SIGTERM saves mosquitto.db)
        assert wait_until(lambda: not svc.link.connected, 10)
        restarted = start_mosquitto(private_broker.data_dir, private_broker.port)
        publish_all(restarted.url, msgs[300:])  # may land before ingest is back: queued
        assert wait_until(lambda: count(dsn, "SELECT count(*) FROM tof_frames") == 600, 30)
        assert svc.link.reconnects >= 1
    finally:
        stop.set()
        t.join(15)
        if restarted is not None:
            restarted.stop()
