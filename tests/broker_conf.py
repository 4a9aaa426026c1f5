"""Run a repository Mosquitto config (production.conf, compose.conf) on loopback test ports.

Only the paths and listeners are rewritten, so what the tests exercise is what the plant or the
compose stack runs.
"""

from __future__ import annotations

import getpass
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from embedded.mosquitto import mosquitto_binary
from embedded.ports import wait_for_port
from embedded.process import ServiceProcess
from sqal.mqtt import paho_client

NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87, in CONNACK and PUBACK
ACCEPTED = (0, 16)  # PUBACK "Success" and "No matching subscribers" (MQTT 5 section 3.4.2.1)


def localize(conf: str, folder: Path, port: int, tls_port: int) -> str:
    """``conf`` with its files in ``folder`` (``passwd``, ``acl``, ``certs/``) and its two
    listeners (8883 TLS, 1883 plain) on loopback ``tls_port`` and ``port``.

    Each rewritten directive must appear exactly once.
    """
    rewrite = {
        r"password_file \S+": f"password_file {folder / 'passwd'}",
        r"acl_file \S+": f"acl_file {folder / 'acl'}",
        r"listener 8883( \S+)?": f"listener {tls_port} 127.0.0.1",
        r"cafile \S+": f"cafile {folder / 'certs/ca.crt'}",
        r"certfile \S+": f"certfile {folder / 'certs/server.crt'}",
        r"keyfile \S+": f"keyfile {folder / 'certs/server.key'}",
        r"listener 1883( \S+)?": f"listener {port} 127.0.0.1",
        r"persistence_location \S+": f"persistence_location {folder}/",
        r"log_dest \S+": f"log_dest file {folder / 'mosquitto.log'}",
    }
    seen: set[str] = set()
    out = []
    for line in conf.splitlines():
        for pattern, new in rewrite.items():
            if re.fullmatch(pattern, line):
                assert pattern not in seen, f"{pattern} twice"
                seen.add(pattern)
                line = new
                break
        out.append(line)
    assert seen == set(rewrite), f"config lacks {set(rewrite) - seen}"
    # Started as root, Mosquitto would drop to the `mosquitto` user, who cannot read the folder.
    return "\n".join([*out, f"user {getpass.getuser()}", ""])


@contextmanager
def running(conf: Path, folder: Path, port: int, tls_port: int) -> Iterator[ServiceProcess]:
    """Mosquitto on ``conf`` (localized into ``folder``) until the block ends; stopped by PID."""
    local = folder / "mosquitto.conf"
    local.write_text(localize(conf.read_text(encoding="utf-8"), folder, port, tls_port))
    popen = subprocess.Popen(
        [mosquitto_binary(), "-c", str(local)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    proc = ServiceProcess("mosquitto", popen.pid, signal.SIGTERM, popen)
    try:
        for p in (port, tls_port):
            if not wait_for_port(p, timeout_s=10, alive=proc.alive):
                log = folder / "mosquitto.log"
                raise AssertionError(log.read_text() if log.exists() else "mosquitto did not start")
        yield proc
    finally:
        proc.stop()


@dataclass
class Peer:
    """A connected client with what it received and the PUBACK reason codes it got."""

    client: paho.Client
    received: list[tuple[str, bytes]] = field(default_factory=list)
    pubacks: dict[int, int] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, topic: str, payload: bytes, timeout_s: float = 5.0) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: (topic, payload) in self.received, timeout_s)
        assert ok, f"{topic} {payload!r} never arrived; got {self.received}"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        with self.cond:
            assert self.cond.wait_for(lambda: info.mid in self.pubacks, 5)
            return self.pubacks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for p in made:
        p.close()


def connect(peers: list[Peer], url: str, *subscriptions: str) -> Peer:
    """A client on ``url`` subscribed at QoS 1; closed by the ``peers`` fixture."""
    peer = Peer(paho.Client(CallbackAPIVersion.VERSION2))

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        with peer.cond:
            peer.received.append((msg.topic, bytes(msg.payload)))
            peer.cond.notify_all()

    def on_publish(c: paho.Client, u: object, mid: int, rc: ReasonCode, p: object) -> None:
        with peer.cond:
            peer.pubacks[mid] = rc.value
            peer.cond.notify_all()

    peer.client = paho_client(
        url, f"t{len(peers)}-{time.monotonic_ns()}", persistent=False,
        on_message=on_message, on_publish=on_publish,
    )  # fmt: skip
    peers.append(peer)
    for sub in subscriptions:
        peer.client.subscribe(sub, qos=1)
    return peer
