"""Ingest throughput and memory (issue 5 benchmark).

Figures, all in one run against a private Mosquitto and PostgreSQL+TimescaleDB:

1. ``raw COPY``: the rows a backlog turns into, binary COPY straight into the hypertables in
   transactions of ``--batch-rows`` rows: the ceiling, no idempotency, no decoding.
2. ``writer (same rows)``: those rows through :class:`storage.writer.BatchWriter` (key probe +
   COPY for frames, staging + ``ON CONFLICT DO NOTHING`` + roll-ups for results).
3. ``writer (decode+…)``: the same messages decoded (``sqal.wire.decode``) and written by
   :class:`storage.writer.BatchWriter` (staging COPY + ``INSERT … ON CONFLICT DO NOTHING`` +
   roll-ups), in-process, no broker.
4. ``worker``: ``python -m ingest`` draining a backlog of N messages queued at the broker for
   its persistent session (receive, decode, write, ack). Peak RSS is read from the worker's
   ``/proc/PID/status`` (VmHWM) once drained. Target: worker/raw ratio >= 0.7, RSS <= 200 MB.

``python -m bench.ingest [N]`` (default 100,000 messages: ToF, spectral and result per tray).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql

from bench.common import header
from embedded import free_port, start_mosquitto, start_postgres
from ingest.batching import DEFAULT_BATCH_ROWS
from sqal.wire import Grade, Kind, decode, device_topic, encode, parse_topic
from storage.arrays import register_array_dumpers
from storage.migrate import migrate
from storage.rows import PendingRow, pending_row
from storage.tables import TABLES
from storage.writer import BatchWriter, copy_rows
from tests.test_ingest_frames import T0, result, spectral_frame, tof_frame

REPO = Path(__file__).resolve().parents[1]
SERVER = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
GRADES = (Grade.A, Grade.A, Grade.B, Grade.C, Grade.REJECT)


def messages(n: int) -> list[tuple[str, bytes]]:
    """n messages of 16 devices on 2 lines: ToF, spectral and result of each tray."""
    rng = np.random.default_rng(5)
    out: list[tuple[str, bytes]] = []
    seq = 0
    while len(out) < n:
        dev = f"dev-{seq % 16:02d}"
        line = f"line-{seq % 2}"
        out.append((device_topic(line, dev, Kind.TOF), encode(tof_frame(dev, seq, rng))))
        out.append((device_topic(line, dev, Kind.SPECTRAL), encode(spectral_frame(dev, seq, rng))))
        r = result(dev, seq, GRADES[seq % 5], 0.4 + 0.1 * (seq % 5), ["underfill"] * (seq % 2))
        out.append((device_topic(line, dev, Kind.RESULT), encode(r)))
        seq += 1
    return out[:n]


def new_db(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    return dsn


def _write(w: BatchWriter, rows: list[PendingRow]) -> None:
    report = w.write(rows, [])
    assert not report.refused, f"bench rows must not be refused: {report.refused}"


def decode_rows(msgs: list[tuple[str, bytes]]) -> list[PendingRow]:
    out = []
    for i, (t, p) in enumerate(msgs):
        topic = parse_topic(t)
        row = pending_row(topic, decode(topic, p), T0, p, i)
        assert row is not None
        out.append(row)
    return out


def raw_copy(dsn: str, rows: list[PendingRow], batch: int) -> float:
    """Seconds to binary-COPY ``rows`` straight into their tables, ``batch`` rows a commit."""
    start = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_array_dumpers(conn)  # the same encoding the writer uses
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            with conn.transaction(), conn.cursor() as cur:
                for name in sorted({r.table for r in chunk}):
                    copy_rows(cur, TABLES[name], [r.values for r in chunk if r.table == name])
    return time.perf_counter() - start


def writer_path(dsn: str, msgs: list[tuple[str, bytes]], batch: int) -> float:
    """Seconds to decode and write ``msgs`` through :class:`BatchWriter`."""
    w = BatchWriter(dsn)
    start = time.perf_counter()
    for i in range(0, len(msgs), batch):
        _write(w, decode_rows(msgs[i : i + batch]))
    elapsed = time.perf_counter() - start
    w.close()
    return elapsed


def writer_rows(dsn: str, rows: list[PendingRow], batch: int) -> float:
    """Seconds to write already-decoded ``rows`` through :class:`BatchWriter`."""
    w = BatchWriter(dsn)
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        _write(w, rows[i : i + batch])
    elapsed = time.perf_counter() - start
    w.close()
    return elapsed


def publish(url_port: int, msgs: list[tuple[str, bytes]]) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=paho.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    infos = []
    for i, (t, p) in enumerate(msgs):
        infos.append(c.publish(t, p, qos=1))
        if i >= 5000:  # bound paho's own queue
            infos[i - 5000].wait_for_publish(120)
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def count_rows(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM tof_frames) + (SELECT count(*) FROM spectral_frames)"
            " + (SELECT count(*) FROM results)"
        ).fetchone()
    return int(row[0]) if row else 0


class Worker:
    def __init__(self, broker: str, dsn: str, log: Path) -> None:
        self.port = free_port()
        args = [
            sys.executable, "-m", "ingest", "--broker", broker, "--db", dsn,
            "--client-id", "bench-ingest", "--metrics-port", str(self.port), "--no-dead-topics",
        ]  # fmt: skip
        with log.open("ab") as out:
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"ingest did not come up; see {log}")

    def rss_mb(self, key: str = "VmHWM") -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(header("ingest"))
    folder = Path(tempfile.mkdtemp(prefix="sqal-bench-ingest-"))
    folder.chmod(0o755)
    pg = start_postgres(folder / "pg", free_port(), extra_settings=SERVER)
    mq = start_mosquitto(folder / "mqtt", free_port())
    try:
        msgs = messages(n)
        batch = DEFAULT_BATCH_ROWS
        print(f"backlog            {n} messages (ToF 8x8, spectral, result), batch {batch} rows")
        rows = decode_rows(msgs)
        raw_s = raw_copy(new_db(pg.dsn("postgres"), "b_raw"), rows, batch)
        raw = n / raw_s
        print(f"raw COPY           {raw:9.0f} rows/s   ({raw_s:.2f} s)")
        rw_s = writer_rows(new_db(pg.dsn("postgres"), "b_rows"), rows, batch)
        print(f"writer (same rows, idempotent)   {n / rw_s:9.0f} rows/s   ratio {raw_s / rw_s:.2f}")
        wr_s = writer_path(new_db(pg.dsn("postgres"), "b_writer"), msgs, batch)
        print(f"writer (decode+idempotent write) {n / wr_s:9.0f} rows/s   ratio {raw_s / wr_s:.2f}")

        dsn = new_db(pg.dsn("postgres"), "b_worker")
        log = folder / "ingest.log"
        w = Worker(mq.url, dsn, log)  # creates the persistent session and subscriptions
        w.stop()
        publish(mq.port, msgs)  # queued at the broker for the absent worker
        start = time.perf_counter()
        w = Worker(mq.url, dsn, log)
        peak_now = 0.0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_now
            while not stop.wait(0.2):
                peak_now = max(peak_now, w.rss_mb("VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        while count_rows(dsn) < n:
            time.sleep(0.1)
        drain_s = time.perf_counter() - start
        stop.set()
        sampler.join()
        hwm = w.rss_mb("VmHWM")
        w.stop()
        print(
            f"worker (broker backlog drain)    {n / drain_s:9.0f} rows/s   "
            f"ratio {raw_s / drain_s:.2f} (target >= 0.7)"
        )
        print(
            f"worker peak RSS    {hwm:9.1f} MB (VmHWM; sampled VmRSS max {peak_now:.1f} MB) "
            "while draining (target <= 200 MB)"
        )
    finally:
        mq.stop()
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
