"""``sqal demo`` leaves a clear next step (#18 item 8): the commands it prints work as printed."""

from __future__ import annotations

import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.demo import GRAFANA_IMAGE, NextSteps
from embedded import free_port

SQAL = [sys.executable, "-m", "app"]


def run(command: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """A printed ``sqal …`` command, run as printed (its ``# comment`` dropped)."""
    argv = shlex.split(command, comments=True)
    assert argv[0] == "sqal", command
    return subprocess.run([*SQAL, *argv[1:]], capture_output=True, text=True, check=False,
                          timeout=timeout_s)  # fmt: skip


def next_steps(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = lines.index("next:") + 1
    end = lines.index("queries (in psql):")
    return [ln.strip() for ln in lines[start:end]]


@pytest.mark.slow
def test_the_printed_next_steps_bring_the_run_back_and_report_on_its_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    mqtt_port, pg_port = free_port(), free_port()
    demo = subprocess.run(
        [*SQAL, "demo", "--data-dir", str(data), "--duration", "4", "--lines", "2",
         "--devices", "1", "--rate", "120", "--seed", "3", "--faults", "none",
         "--mqtt-port", str(mqtt_port), "--pg-port", str(pg_port)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    steps = next_steps(demo.stdout)
    up, report = steps[0], steps[1]
    assert up.startswith(
        f"sqal services up --data-dir {data} --mqtt-port {mqtt_port} --pg-port {pg_port}"
    )
    assert "--line line1 " in report
    assert f"127.0.0.1:{pg_port}/" in report
    assert steps[2] == "# the other lines: --line line2"
    assert any(f"PG_HOST=127.0.0.1:{pg_port}" in s and GRAFANA_IMAGE in s for s in steps)
    assert steps[-1] == f"sqal services down --data-dir {data}"
    # The demo stopped what it started: the printed commands start it again and report.
    try:
        started = run(up)
        assert started.returncode == 0, started.stderr
        done = run(report)
        assert done.returncode == 0, done.stderr
        trays = int(done.stdout.split(": ", 1)[1].split(" trays")[0])
        assert trays > 0, done.stdout
        pdf = Path(shlex.split(report)[-1])
        assert pdf.is_file()
        assert pdf.read_bytes().startswith(b"%PDF")
    finally:
        stopped = run(steps[-1])
    assert stopped.returncode == 0, stopped.stderr


def test_without_a_checkout_or_with_one_line_the_steps_say_only_what_works(tmp_path: Path) -> None:
    t = datetime(2026, 3, 2, 14, 0, 7, 250_000, tzinfo=UTC)
    steps = NextSteps(tmp_path / "my data", tmp_path / "run", mqtt_port=18830, pg_port=54320,
                      dsn="postgresql://sqal@127.0.0.1:54320/sqal", lines=["line1"], since=t,
                      until=t, grafana_dir=None, stop_after=False).commands()  # fmt: skip
    data = shlex.quote(str(tmp_path / "my data"))
    assert steps == [
        f"sqal services up --data-dir {data} --mqtt-port 18830 --pg-port 54320    # the broker "
        "and the database, still running: the demo found them up",
        "sqal report --line line1 --db postgresql://sqal@127.0.0.1:54320/sqal "
        "--since 2026-03-02T14:00:07+00:00 --until 2026-03-02T14:00:08+00:00 "
        f"--out {tmp_path / 'run' / 'shift-line1.pdf'}",
        "sqal station --broker mqtt://127.0.0.1:18830 --db postgresql://sqal@127.0.0.1:54320/sqal "
        f"--data-dir {data}    # the web station again, http://127.0.0.1:8080 (user demo)",
        "psql postgresql://sqal@127.0.0.1:54320/sqal",
        f"sqal services down --data-dir {data}",
    ]
