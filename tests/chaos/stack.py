"""The chaos harness: a private broker and database, the analyzer and ingest as child processes.

Everything here is started by this process and stopped by PID (embedded.ServiceProcess for
the servers, Popen handles for the services). The services run exactly as in production
(``python -m app analyzer|ingest``) with fixed client ids, so their persistent sessions
survive a kill and the broker queues for them while they are down (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from embedded import Mosquitto, Postgres, free_port, start_mosquitto, start_postgres
from embedded.process import ServiceProcess
from sqal.errors import ServiceError
from storage.migrate import migrate

REPO = Path(__file__).resolve().parents[2]
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
"""A thrown-away cluster trades durability for speed (as tests/fix_pg.py does)."""
ANALYZER_ID = "chaos-analyzer"
INGEST_ID = "chaos-ingest"
T = TypeVar("T")


def wait_for(pred: Callable[[], bool], timeout_s: float, every_s: float = 0.05) -> bool:
    """Poll ``pred`` until it is true or ``timeout_s`` passed; returns its last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every_s)
    return pred()


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of ``http://127.0.0.1:port/path``; (0, reason) when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError as exc:
        return 0, str(exc)


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


CHAOS_TS_WINDOW_H = 24 * 365 * 10
"""Scenarios stamp their frames on days of their own in 2030-2031 (see the tests)."""


class Service:
    """``python -m app NAME …`` as a child process with a /healthz port."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.metrics_port = free_port()
        self.args = [
            sys.executable, "-m", "app", name, *args, "--metrics-port", str(self.metrics_port),
            # Each scenario writes a day of its own, years ahead, so no two share rows.
            "--ts-window-hours", str(CHAOS_TS_WINDOW_H),
        ]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQAL_")}
        env["PYTHONPATH"] = str(REPO)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if not wait_for(self.healthy, timeout_s):
            tail = self.log.read_text(errors="replace")[-2000:]
            raise ServiceError(f"{self.name} did not become healthy:\n{tail}")

    def healthy(self) -> bool:
        return http_get(self.metrics_port, "/healthz")[0] == 200

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {series with labels: value}."""
        code, body = http_get(self.metrics_port, "/metrics")
        out: dict[str, float] = {}
        if code != 200:
            return out
        for line in body.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def kill(self) -> None:
        """SIGKILL by PID, as a crash would."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            ServiceProcess(self.name, self.proc.pid, signal.SIGTERM, self.proc).stop(15)


class Stack:
    """Broker + database + analyzer + ingest, each restartable on its own ports and folders."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sqal-chaos-"))
        # PostgreSQL runs as `postgres` when we are root: it must reach the folder.
        self.folder.chmod(0o755)
        self.mqtt_port = free_port()
        self.pg_port = free_port()
        self.broker: Mosquitto | None = None
        self.pg: Postgres | None = None
        self.analyzer: Service | None = None
        self.ingest: Service | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def dsn(self) -> str:
        return f"postgresql://sqal@127.0.0.1:{self.pg_port}/sqal"

    def start(self) -> None:
        self.start_broker()
        self.start_pg()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            migrate(conn)
        self.analyzer = Service(
            "analyzer",
            ["--broker", self.url, "--client-id", ANALYZER_ID],
            self.folder / "analyzer.log",
        )
        self.ingest = Service(
            "ingest",
            ["--broker", self.url, "--db", self.dsn, "--client-id", INGEST_ID],
            self.folder / "ingest.log",
        )
        self.analyzer.start()
        self.ingest.start()

    def start_broker(self) -> None:
        self.broker = retry_start(lambda: start_mosquitto(self.folder / "mqtt", self.mqtt_port))

    def start_pg(self) -> None:
        self.pg = retry_start(
            lambda: start_postgres(self.folder, self.pg_port, extra_settings=FAST), timeout_s=30
        )

    def close(self) -> None:
        for svc in (self.analyzer, self.ingest):
            if svc is not None:
                svc.stop()
        for server in (self.broker, self.pg):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.process.stop()
        if not os.environ.get("SQAL_KEEP_CHAOS"):  # set: the services' logs stay to read
            shutil.rmtree(self.folder, ignore_errors=True)

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return list(conn.execute(sql.encode(), params).fetchall())

    def scalar(self, sql: str, *params: object) -> int:
        rows = self.query(sql, *params)
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def retry_start(start: Callable[[], T], timeout_s: float = 10.0) -> T:
    """Start a server on its old port: a client socket of the previous run may hold the port
    for a moment (TIME_WAIT as an ephemeral local port), so retry for a few seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return start()
        except ServiceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
