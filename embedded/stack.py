"""``sqal services up|status|down``: the embedded broker and database under one data directory.

What runs is written to ``DATA_DIR/services.json`` (PIDs and ports), so a later ``status`` or
``down`` finds the processes by PID, checking their command line so a recycled PID is never hit.
"""

from __future__ import annotations

import json
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

from embedded.mosquitto import start_mosquitto
from embedded.ports import LOOPBACK
from embedded.postgres import DATABASE, SUPERUSER, start_postgres
from embedded.process import ServiceProcess, pid_runs
from sqal.errors import ServiceError

STATE_FILE = "services.json"
STOP_SIGNALS = {"mosquitto": signal.SIGTERM, "postgres": signal.SIGINT}


@dataclass(frozen=True)
class Running:
    """One embedded service as recorded in the state file."""

    name: str
    pid: int
    host: str
    port: int

    @property
    def url(self) -> str:
        if self.name == "mosquitto":
            return f"mqtt://{self.host}:{self.port}"
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{DATABASE}"

    def alive(self) -> bool:
        return pid_runs(self.pid, self.name)


def _read_state(data_dir: Path) -> dict[str, Running]:
    path = data_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ServiceError(f"cannot read {path}: {exc}") from None
    return {name: Running(**entry) for name, entry in raw.items()}


def _write_state(data_dir: Path, state: dict[str, Running]) -> None:
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in state.items()}, indent=2))
    tmp.replace(path)


def status(data_dir: Path) -> list[tuple[Running, bool]]:
    """Each recorded service and whether it still runs."""
    return [(r, r.alive()) for r in _read_state(data_dir).values()]


def up(data_dir: Path, mqtt_port: int, pg_port: int, host: str = LOOPBACK) -> list[Running]:
    """Start whichever of the two services is not already running under ``data_dir``.

    Raises:
        ServiceError: a port is taken or a server does not start; what started is stopped.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    state = {k: r for k, r in _read_state(data_dir).items() if r.alive()}
    started: list[ServiceProcess] = []
    try:
        if "mosquitto" not in state:
            broker = start_mosquitto(data_dir / "mosquitto", mqtt_port, host)
            started.append(broker.process)
            state["mosquitto"] = Running("mosquitto", broker.process.pid, host, mqtt_port)
        if "postgres" not in state:
            pg = start_postgres(data_dir, pg_port, host)
            started.append(pg.process)
            state["postgres"] = Running("postgres", pg.process.pid, host, pg_port)
    except ServiceError:
        for proc in started:
            proc.stop()
        raise
    for proc in started:
        proc.popen = None  # detached: they outlive this process and are stopped by PID
    _write_state(data_dir, state)
    return list(state.values())


def down(data_dir: Path) -> list[Running]:
    """Stop every recorded service by PID; returns those that were running."""
    data_dir = data_dir.resolve()
    stopped = []
    for r in _read_state(data_dir).values():
        if r.alive():
            ServiceProcess(r.name, r.pid, STOP_SIGNALS[r.name]).stop()
            stopped.append(r)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def forget(data_dir: Path, names: list[str]) -> None:
    """Drop stopped services from the state file (``sqal demo`` stops what it started)."""
    data_dir = data_dir.resolve()
    state = {k: r for k, r in _read_state(data_dir).items() if k not in names}
    if state:
        _write_state(data_dir, state)
    else:
        (data_dir / STATE_FILE).unlink(missing_ok=True)
