"""A server process SQAL started, known by its PID, stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def pid_runs(pid: int, program: str) -> bool:
    """True if ``pid`` is alive and its command line names ``program`` (guards PID reuse)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return program.encode() in cmdline


@dataclass
class ServiceProcess:
    """A started server.

    Attributes:
        name: ``mosquitto`` or ``postgres``, also what its command line must contain.
        pid: the server's PID.
        stop_signal: the signal for a clean shutdown (Mosquitto saves its persistence file on
            SIGTERM; PostgreSQL's "fast" shutdown is SIGINT).
        popen: the handle when this process started it, so it can be reaped.
    """

    name: str
    pid: int
    stop_signal: signal.Signals = signal.SIGTERM
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_runs(self.pid, self.name)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop cleanly by PID, then SIGKILL after ``timeout_s``; returns once it is gone."""
        if not self.alive():
            self._reap()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, self.stop_signal)
        if not self._wait(timeout_s):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._wait(5.0)
        self._reap()

    def kill(self) -> None:
        """SIGKILL by PID, as a crash would (chaos tests)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._wait(5.0)
        self._reap()

    def _wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen is not None:
                try:
                    self.popen.wait(timeout=0.05)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not pid_alive(self.pid):
                return True
            time.sleep(0.05)
        return False

    def _reap(self) -> None:
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=1)
