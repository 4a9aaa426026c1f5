"""``sqal ingest --workers N``: N processes on one shared group, run as the command is run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from embedded import Mosquitto, free_port
from ingest.command import worker_client_ids
from sqal.wire import Kind, device_topic, encode
from tests.test_ingest_frames import count, drop_session, migrated, publish_all, tof_frame

REPO = Path(__file__).resolve().parents[1]
WORKERS = 2


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def wait_for(pred: object, timeout_s: float = 20.0) -> bool:
    assert callable(pred)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            return True
    except OSError:
        return False


def rows_written(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("sqal_ingest_rows_written_total") and 'table="tof_frames"' in line:
            return float(line.split()[-1])
    return 0.0


@dataclass
class Command:
    """``python -m ingest --workers 2`` with its client id and its first metrics port."""

    broker: str
    dsn: str
    client_id: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        args = [
            sys.executable, "-m", "ingest", "--broker", self.broker, "--db", self.dsn,
            "--client-id", self.client_id, "--workers", str(WORKERS), "--batch-rows", "50",
            "--flush-ms", "50", "--metrics-port", str(self.port), "--no-dead-topics",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=out)
        ports = [self.port + i for i in range(WORKERS)]
        assert wait_for(lambda: all(healthy(p) for p in ports)), self.log.read_text()
        return self.proc

    def end(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for pid in children(self.proc.pid):
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def command(broker: Mosquitto, fresh_db: str, tmp_path: Path) -> Iterator[Command]:
    port = free_port()
    while not all(free_port_is(port + i) for i in range(WORKERS)):
        port = free_port()
    c = Command(broker.url, migrated(fresh_db), f"test-workers-{port}", port, tmp_path / "log")
    try:
        yield c
    finally:
        c.end()
        for cid in worker_client_ids(c.client_id, WORKERS):
            drop_session(broker.url, cid)


def free_port_is(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def frames(first: int, n: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(first)
    return [
        (device_topic("wk", f"d{s % 4}", Kind.TOF), encode(tof_frame(f"d{s % 4}", s, rng)))
        for s in range(first, first + n)
    ]


def tof_rows(dsn: str) -> int:
    return count(dsn, "SELECT count(*) FROM tof_frames")


def test_two_workers_split_the_messages_store_each_once_and_stop_on_sigterm(
    command: Command, broker: Mosquitto
) -> None:
    proc = command.start()
    workers = children(proc.pid)
    assert len(workers) == WORKERS
    publish_all(broker.url, frames(0, 400))
    assert wait_for(lambda: tof_rows(command.dsn) == 400)
    shares = [rows_written(command.port + i) for i in range(WORKERS)]
    assert sum(shares) == 400
    assert all(s > 0 for s in shares), shares
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert all(gone(pid) for pid in workers)
    assert "Error" not in command.log.read_text()


def test_a_killed_command_takes_its_workers_along_and_a_restart_loses_nothing(
    command: Command, broker: Mosquitto
) -> None:
    proc = command.start()
    workers = children(proc.pid)
    proc.kill()  # SIGKILL: no handler runs; the kernel tells the workers (PR_SET_PDEATHSIG)
    proc.wait(10)
    assert wait_for(lambda: all(gone(pid) for pid in workers), 20)
    publish_all(broker.url, frames(1000, 300))  # queued in the workers' sessions meanwhile
    command.start()
    assert wait_for(lambda: tof_rows(command.dsn) == 300, 30)


def test_a_worker_that_dies_ends_the_command_with_one_error_line(command: Command) -> None:
    proc = command.start()
    said = [line for line in command.log.read_text().splitlines() if "workers, pids" in line]
    first, second = (int(p) for p in said[-1].rsplit("pids ", 1)[1].split(", "))
    os.kill(second, signal.SIGKILL)
    assert proc.wait(30) == 1
    assert gone(first)
    errors = [line for line in command.log.read_text().splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: ingest worker 2 of {WORKERS}: stopped (exit code -9)"], errors


def test_workers_that_cannot_start_end_the_command_with_one_error_line(
    fresh_db: str, tmp_path: Path
) -> None:
    closed = free_port()  # nothing listens there
    args = [
        sys.executable, "-m", "ingest", "--broker", f"mqtt://127.0.0.1:{closed}",
        "--db", migrated(fresh_db), "--client-id", "test-workers-nobroker", "--workers", "2",
        "--metrics-port", "0",
    ]  # fmt: skip
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("Error: ingest worker "), errors
    assert str(closed) in errors[0]
    assert "Traceback" not in done.stderr
