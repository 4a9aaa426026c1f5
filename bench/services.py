"""The services under test as subprocesses, and what the kernel says they cost (``/proc``).

CPU time is ``utime + stime`` from ``/proc/PID/stat`` (clock ticks); a process tree (the
PostgreSQL postmaster and its backends) adds its live children and the reaped ones'
``cutime + cstime``. RSS is ``VmRSS`` / ``VmHWM`` from ``/proc/PID/status``. psutil is not a
dependency of SQAL, and these two files say everything needed here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from embedded import free_port
from embedded.process import ServiceProcess
from sqal.mqtt import paho_client

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
_METRIC = re.compile(r'^(\w+)(?:\{\w+="([^"]*)"\})? (\S+)$')


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()  # the command name may hold spaces


def cpu_s(pid: int, with_reaped: bool = False) -> float:
    """CPU seconds (user + system) of one process."""
    try:
        f = _stat_fields(pid)
    except OSError:
        return 0.0
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if with_reaped else 0)
    return ticks / CLK_TCK


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``, its reaped children and its live children."""
    return cpu_s(pid, with_reaped=True) + sum(cpu_s(c) for c in children(pid))


def memory_mb(pid: int, key: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as ``{name or name:label: value}`` (counters summed over labels as ``name``)."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m is None:
            continue
        name, label, value = m.group(1), m.group(2), float(m.group(3))
        out[name] = out.get(name, 0.0) + value
        if label is not None:
            out[f"{name}:{label}"] = value
    return out


@dataclass
class Service:
    """One ``python -m app …`` (or bench shim) process with its metrics port and log."""

    name: str
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path
    client_id: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log}")
            try:
                url = f"http://127.0.0.1:{self.metrics_port}/healthz"
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become healthy; see {self.log}")

    def cpu_s(self) -> float:
        return cpu_s(self.pid)

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)

    def stop(self) -> None:
        ServiceProcess(self.name, self.proc.pid, signal.SIGTERM, self.proc).stop(20)


def start_service(name: str, argv: list[str], log_dir: Path, src: Path | None = None) -> Service:
    """Start ``python ARGV… --metrics-port P`` from the repository root, logging to a file.

    ``src``: a folder holding patched copies of some packages (say ``analyzer/``), imported
    before the repository's: the A/B switch for measuring a proposed patch (``--analyzer-src``).
    """
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    cwd = src or REPO  # ``python -m`` puts the working directory first on sys.path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (cwd, REPO))}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *argv, "--metrics-port", str(port)],
            cwd=cwd, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return Service(name, proc, port, log)


def analyzer(
    name: str, broker: str, log_dir: Path, lines: list[str] | None = None, src: Path | None = None
) -> Service:
    """``sqal analyzer``; with ``lines``, subscribed to those lines only (``--lines``)."""
    cid = f"bench-{name}-{os.getpid()}"
    argv = ["-m", "app", "analyzer", "--broker", broker]
    if lines:
        argv += ["--lines", ",".join(lines)]
    service = start_service(name, [*argv, "--client-id", cid], log_dir, src)
    service.client_id = cid
    return service


def ingest(
    name: str, broker: str, dsn: str, log_dir: Path, shared: str | None = None,
    src: Path | None = None, workers: int = 1,
) -> Service:  # fmt: skip
    """``sqal ingest``; with ``workers`` > 1, ``--workers`` (client ids ``CID-1`` … ``CID-N``)."""
    argv = ["-m", "app", "ingest", "--broker", broker, "--db", dsn]
    cid = f"bench-{name}-{os.getpid()}"
    argv += ["--client-id", cid]
    if shared:
        argv += ["--shared", shared]
    if workers > 1:
        argv += ["--workers", str(workers)]
    service = start_service(name, argv, log_dir, src)
    service.client_id = cid
    return service


def forget_session(broker: str, cid: str) -> None:
    """Drop a stopped service's persistent session, so the broker stops queueing for it."""
    client = paho_client(broker, cid, persistent=False)
    client.disconnect()
    client.loop_stop()
