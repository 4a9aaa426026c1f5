"""A plant Mosquitto bridged to the chaos stack's broker, which plays the central one.

The bridge section is ``mosquitto/bridge.conf.example`` itself, with only its ``address``
rewritten to the central broker's loopback port, appended to the embedded broker's config
(persistence on, SQAL's limits). The bridge lives in the plant broker's process: restarting that
process by its PID restarts the bridge.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import paho.mqtt.client as paho

from embedded import Mosquitto, free_port, start_mosquitto
from sqal.errors import BrokerError
from sqal.mqtt import client_id, paho_client
from tests.chaos.stack import REPO, retry_start, wait_for

EXAMPLE = REPO / "mosquitto" / "bridge.conf.example"
_ADDRESS = re.compile(r"(?m)^address \S+$")
_NOTIFY = re.compile(r"(?m)^notification_topic (\S+)$")


def render_bridge(example: str, central_port: int) -> str:
    """``example`` with its one ``address`` line pointing at ``127.0.0.1:central_port``."""
    rendered, n = _ADDRESS.subn(f"address 127.0.0.1:{central_port}", example)
    assert n == 1, "bridge.conf.example must have exactly one active address line"
    return rendered


def notification_topic(example: str) -> str:
    """Where the bridge publishes its state (retained; ``1`` connected, ``0`` not)."""
    m = _NOTIFY.search(example)
    assert m is not None, "bridge.conf.example must set notification_topic"
    return m.group(1)


class Plant:
    """The plant broker with the bridge, restartable on its port and folder."""

    def __init__(self, folder: Path, central_port: int) -> None:
        self.folder = folder
        self.port = free_port()
        example = EXAMPLE.read_text(encoding="utf-8")
        self.conf = render_bridge(example, central_port)
        self.state_topic = notification_topic(example)
        self.broker: Mosquitto | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.broker = retry_start(
            lambda: start_mosquitto(self.folder, self.port, extra_conf=self.conf)
        )

    def stop(self) -> None:
        """A clean stop by PID (SIGTERM): Mosquitto writes the bridge's queue to mosquitto.db."""
        if self.broker is not None:
            self.broker.stop()

    def kill(self) -> None:
        """SIGKILL by PID: what was not autosaved is gone."""
        if self.broker is not None:
            self.broker.process.kill()

    def bridge_state(self) -> bytes | None:
        """The bridge's retained state on the plant broker (``b"1"`` once connected), or None.

        The plant broker publishes ``0`` locally when the bridge starts or loses its link and
        ``1`` at its CONNACK, so this answers for the link as it is now; the central broker's
        copy is stale after a restart of the central broker (it keeps the retained ``1``).
        """
        got: list[bytes] = []
        cond = threading.Condition()

        def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
            with cond:
                got.append(bytes(msg.payload))
                cond.notify_all()

        try:
            client = paho_client(
                self.url, client_id("bridge-state"), persistent=False, on_message=on_message
            )
        except BrokerError:  # the plant broker is still starting: no state yet
            return None
        try:
            client.subscribe(self.state_topic, qos=1)
            with cond:
                cond.wait_for(lambda: bool(got), 1.0)
        finally:
            client.disconnect()
            client.loop_stop()
        return got[-1] if got else None

    def wait_connected(self, timeout_s: float = 30.0) -> bool:
        """Wait until the bridge reports its link up."""
        return wait_for(lambda: self.bridge_state() == b"1", timeout_s, every_s=0.2)
