"""Ingest's MQTT connection: manual acks, a persistent session, acks only to the live connection.

The client is :func:`sqal.mqtt.new_paho`'s (MQTT 5, the URL's credentials and TLS), connected
like :func:`sqal.mqtt.paho_client` (QoS 1, ``clean_start=False`` with a session expiry, the
Receive Maximum announced, callbacks set before CONNECT) but kept by this class for its whole
life: it subscribes again in ``on_connect`` after every reconnect, reports refused
subscriptions, and numbers connections so that an ack never goes to a connection other than
the one that delivered the message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.inbox import Inbound, Inbox
from sqal.errors import BrokerError
from sqal.mqtt import KEEPALIVE_S, SESSION_EXPIRY_S, connect_properties, new_paho
from sqal.settings import parse_broker_url

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 10


class Link:
    """A connected subscriber feeding an :class:`~ingest.inbox.Inbox`.

    Args:
        url: the broker URL.
        client_id: stable across restarts, so the broker finds the persistent session again.
        filters: subscription filters (already ``$share/…`` when sharing).
        receive_maximum: announced to the broker; the most unacked messages it sends us.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        filters: Sequence[str],
        inbox: Inbox,
        receive_maximum: int,
    ) -> None:
        self._broker = parse_broker_url(url)
        self._filters = list(filters)
        self._inbox = inbox
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self.broker_receive_maximum: int | None = None
        self.reconnects = 0
        self._client = new_paho(self._broker, client_id, manual_ack=True)
        self._props = connect_properties(SESSION_EXPIRY_S, receive_maximum)
        self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect, subscribe, and run paho's network loop (which reconnects by itself).

        Raises:
            BrokerError: unreachable, refused, or a subscription was refused.
        """
        try:
            self._client.connect(
                self._broker.host,
                self._broker.port,
                keepalive=KEEPALIVE_S,
                clean_start=False,
                properties=self._props,
            )
        except OSError as exc:
            raise BrokerError(
                f"cannot reach broker {self._broker} ({exc.strerror or exc}); is mosquitto running?"
            ) from None
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s) or self._refused:
            self._client.loop_stop()
            why = self._refused or f"no CONNACK/SUBACK within {timeout_s:g} s"
            raise BrokerError(f"broker {self._broker}: {why}")

    def restart(self, timeout_s: float = 10.0) -> None:
        """Disconnect and connect again, so the broker resends what is unacknowledged.

        The cure for messages the inbox had to drop: they stay in flight at the broker, which
        resends them only on a new connection (MQTT 5 §4.4).

        Raises:
            BrokerError: the broker did not take us back.
        """
        self._subscribed.clear()
        self._client.disconnect()
        self._client.loop_stop()
        try:
            self._client.reconnect()
        except OSError as exc:
            raise BrokerError(f"cannot reach broker {self._broker} ({exc})") from None
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s) or self._refused:
            raise BrokerError(f"broker {self._broker}: {self._refused or 'no SUBACK'}")

    def stop(self) -> None:
        """Disconnect; the broker keeps the session and queues for it."""
        self._client.disconnect()
        self._client.loop_stop()

    def ack(self, items: Sequence[Inbound]) -> int:
        """Acknowledge ``items`` in order (MQTT 5 §4.6), skipping other connections' copies.

        Returns:
            how many were acknowledged.
        """
        current = self.generation
        n = 0
        for it in items:
            if it.qos > 0 and it.generation == current:
                self._client.ack(it.mid, it.qos)
                n += 1
        return n

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 without waiting (paho queues it while disconnected)."""
        self._client.publish(topic, payload, qos=1)

    # paho's network thread: record, hand off, never block.
    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        if rc.is_failure:
            self._refused = f"connection refused: {rc}"
            self._subscribed.set()
            return
        with self._lock:
            self._generation += 1
            if self._generation > 1:
                self.reconnects += 1
        value = getattr(props, "ReceiveMaximum", None) if props is not None else None
        self.broker_receive_maximum = int(value) if value is not None else None
        self._connected.set()
        # retainHandling=1: retained messages only for a new subscription, so a reconnect
        # does not replay every device's retained status (MQTT 5 §3.8.3.1).
        opts = SubscribeOptions(qos=1, retainHandling=1)
        client.subscribe([(f, opts) for f in self._filters])
        log.info("connected to %s (session present: %s)", self._broker, flags.session_present)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        codes: list[ReasonCode],
        props: Properties | None,
    ) -> None:
        bad = []
        for f, c in zip(self._filters, codes, strict=False):
            if c.is_failure and f.startswith("$SYS/"):
                # Broker statistics are optional: an ACL without `$SYS` read costs only them.
                log.warning("broker statistics %s not readable (%s); not stored", f, c)
            elif c.is_failure:
                bad.append(f"{f}: {c}")
        if bad:
            self._refused = f"subscription refused ({'; '.join(bad)})"
        self._subscribed.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        self._connected.clear()
        if rc.is_failure:
            log.warning("lost broker %s (%s); reconnecting", self._broker, rc)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        item = Inbound(
            msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._generation, time.monotonic()
        )
        self._inbox.offer(item)
