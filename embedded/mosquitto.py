"""A private Mosquitto broker on a loopback port, with persistence and deliberate limits."""

from __future__ import annotations

import getpass
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from embedded.ports import LOOPBACK, port_is_free, wait_for_port
from embedded.process import ServiceProcess
from sqal.errors import ServiceError
from sqal.mqtt import INFLIGHT_WINDOW
from sqal.wire.codec import MAX_MESSAGE_BYTES, MAX_PACKET_BYTES

MAX_QUEUED_MESSAGES = 500_000
"""QoS 1 messages queued for one offline client with a persistent session.

Mosquitto's default of 1,000 silently drops the rest: an analyzer restarting for ten seconds
behind a 2,000 samples/s plant would lose most of them. 500,000 messages of ~1.3 KB is about
650 MB of broker memory at worst, which a 24 GB box can hold.
"""

AUTOSAVE_INTERVAL_S = 10
"""How often the in-memory state is written to ``mosquitto.db`` besides a clean shutdown."""

PERSISTENT_CLIENT_EXPIRATION = "7d"
"""A persistent session with no client for this long is dropped (MQTT 3.1.1 clients)."""


def mosquitto_binary() -> str:
    """Path of the ``mosquitto`` executable.

    Raises:
        ServiceError: it is not installed.
    """
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise ServiceError("mosquitto is not installed; run scripts/setup.sh (or make test)")


def mosquitto_version() -> str:
    """Mosquitto's version, e.g. ``2.0.11``."""
    out = subprocess.run(
        [mosquitto_binary(), "-h"], capture_output=True, text=True, check=False
    ).stdout
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else "unknown"


def render_config(port: int, data_dir: Path, host: str = LOOPBACK, extra: str = "") -> str:
    """The broker configuration SQAL runs with (development and tests: anonymous, loopback).

    Args:
        extra: appended as is, e.g. a bridge section (mosquitto/bridge.conf.example), which
            Mosquitto requires after the general settings.
    """
    general = "\n".join(
        [
            "# Written by sqal; edits are overwritten at the next start.",
            f"listener {port} {host}",
            "allow_anonymous true",
            f"user {getpass.getuser()}",
            "persistence true",
            f"persistence_location {data_dir}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {AUTOSAVE_INTERVAL_S}",
            f"persistent_client_expiration {PERSISTENT_CLIENT_EXPIRATION}",
            f"max_inflight_messages {INFLIGHT_WINDOW}",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            "max_queued_bytes 0",
            f"message_size_limit {MAX_MESSAGE_BYTES}",
            f"max_packet_size {MAX_PACKET_BYTES}",
            "set_tcp_nodelay true",
            f"log_dest file {data_dir}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "",
        ]
    )
    return general + extra


@dataclass
class Mosquitto:
    """A running broker."""

    host: str
    port: int
    data_dir: Path
    process: ServiceProcess

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def stop(self) -> None:
        self.process.stop()


def start_mosquitto(
    data_dir: Path, port: int, host: str = LOOPBACK, extra_conf: str = ""
) -> Mosquitto:
    """Start a broker writing its config, log and persistence file under ``data_dir``.

    Args:
        extra_conf: appended to the config (:func:`render_config`), e.g. a bridge.

    Raises:
        ServiceError: the port is taken, or the broker exited or did not listen within 10 s.
    """
    binary = mosquitto_binary()
    if not port_is_free(port, host):
        raise ServiceError(f"port {host}:{port} is taken; choose another with --mqtt-port")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "mosquitto.conf"
    conf.write_text(render_config(port, data_dir, host, extra_conf))
    log = (data_dir / "mosquitto.stderr").open("ab")
    popen = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    proc = ServiceProcess("mosquitto", popen.pid, signal.SIGTERM, popen)
    if not wait_for_port(port, host, timeout_s=10, alive=proc.alive):
        proc.stop()
        tail = _tail(data_dir / "mosquitto.log") or _tail(data_dir / "mosquitto.stderr")
        raise ServiceError(f"mosquitto did not start on {host}:{port}: {tail or 'no log'}")
    return Mosquitto(host, port, data_dir, proc)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
