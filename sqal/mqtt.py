"""MQTT clients as SQAL's services use them: MQTT 5, QoS 1, persistent sessions.

Two flavours (STYLE.md, "Async, threads and acks"):

- :func:`paho_client` for services that must not lose a message when they die between
  receiving and storing it (ingest, the analyzer): ``manual_ack=True`` and a persistent
  session, so unacknowledged messages are redelivered after a restart.
- :func:`aiomqtt_client` for the rest (record, demo, tests). Publishers whose publish must be
  known to have landed use paho too, to read the PUBACK's reason code (:mod:`sqal.publisher`,
  the simulator's :mod:`device_sim.link`).
"""

from __future__ import annotations

import socket
import ssl
import threading
import uuid
from collections.abc import Callable

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sqal.errors import BrokerError
from sqal.settings import BrokerUrl, parse_broker_url

SESSION_EXPIRY_S = 7 * 24 * 3600
"""How long the broker keeps a persistent session (and queues for it) while its client is away."""

KEEPALIVE_S = 30

INFLIGHT_WINDOW = 1000
"""SQAL's one inflight window: unacknowledged QoS 1 messages between the broker and a service.

Both services announce it as their MQTT 5 Receive Maximum, and every broker configuration SQAL
ships sets ``max_inflight_messages`` to it (``mosquitto/*.conf``, the embedded broker; a test
checks they agree), which Mosquitto also announces back in its CONNACK. Ingest acks a message
only after its batch committed, so ``--batch-rows`` must stay within it; the analyzer holds a
frame's ack until its sample's result is out. Mosquitto's default is 20.
"""


def client_id(prefix: str) -> str:
    """A client id unique to this process: ``prefix-host-random``."""
    return f"{prefix}-{socket.gethostname()[:20]}-{uuid.uuid4().hex[:8]}"


def connect_properties(session_expiry_s: int, receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return props


def new_paho(broker: BrokerUrl, cid: str, *, manual_ack: bool = False) -> paho.Client:
    """An unconnected MQTT 5 paho client with the URL's credentials and TLS (server verified)."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=cid,
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    return client


def paho_client(
    url: str | BrokerUrl,
    cid: str,
    *,
    manual_ack: bool = False,
    persistent: bool = True,
    receive_maximum: int | None = None,
    max_inflight: int | None = None,
    on_message: Callable[..., None] | None = None,
    on_publish: Callable[..., None] | None = None,
    on_connack: Callable[[Properties | None], None] | None = None,
    will: tuple[str, bytes] | None = None,
    connect_timeout_s: float = 10.0,
) -> paho.Client:
    """A connected paho client running its network loop in a background thread.

    Args:
        cid: the client id; a persistent session is found again by it after a restart.
        manual_ack: acknowledge QoS 1 messages only when :meth:`paho.Client.ack` is called.
        persistent: ``clean_start=False`` with a session expiry, so the broker queues while away.
        receive_maximum: the MQTT 5 Receive Maximum announced to the broker (unacked limit).
        max_inflight: unacknowledged QoS 1/2 publishes this client may have out (paho's default
            is 20, which caps a publisher at 20 round trips' worth).
        on_message, on_publish: installed *before* CONNECT. A persistent session's queued
            messages arrive right after the CONNACK; with manual acks, one that arrived before
            ``on_message`` was set would be dropped by paho and never acknowledged.
        on_connack: called in paho's thread with the properties of every accepted CONNACK,
            reconnections included: the broker's limits (Maximum Packet Size, Receive Maximum).
        will: the last will, (topic, payload), published by the broker at QoS 1, retained,
            when the connection ends without a DISCONNECT (a simulated node's ``offline``).

    Raises:
        BrokerError: the broker is unreachable or refused the connection.
    """
    broker = url if isinstance(url, BrokerUrl) else parse_broker_url(url)
    client = new_paho(broker, cid, manual_ack=manual_ack)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    if max_inflight is not None:
        client.max_inflight_messages_set(max_inflight)
    client.on_message = on_message
    client.on_publish = on_publish
    connected = threading.Event()
    result: dict[str, object] = {}

    def on_connect(
        c: paho.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        result["rc"] = rc
        if on_connack is not None and not getattr(rc, "is_failure", False):
            on_connack(props if isinstance(props, Properties) else None)
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(
            broker.host,
            broker.port,
            keepalive=KEEPALIVE_S,
            clean_start=not persistent,
            properties=connect_properties(SESSION_EXPIRY_S if persistent else 0, receive_maximum),
        )
    except OSError as exc:
        raise BrokerError(f"cannot reach broker {broker} ({exc.strerror or exc})") from None
    client.loop_start()
    if not connected.wait(connect_timeout_s):
        client.loop_stop()
        raise BrokerError(f"broker {broker} did not answer CONNECT in {connect_timeout_s:g} s")
    rc = result["rc"]
    if getattr(rc, "is_failure", False):
        client.loop_stop()
        raise BrokerError(
            f"broker {broker} refused the connection: {rc}", getattr(rc, "value", None)
        )
    if on_connack is None:
        client.on_connect = None
    return client


def aiomqtt_client(
    url: str | BrokerUrl,
    cid: str | None = None,
    *,
    will: aiomqtt.Will | None = None,
    persistent: bool = False,
) -> aiomqtt.Client:
    """An (unconnected) aiomqtt client for ``async with``; MQTT 5."""
    broker = url if isinstance(url, BrokerUrl) else parse_broker_url(url)
    return aiomqtt.Client(
        hostname=broker.host,
        port=broker.port,
        identifier=cid,
        username=broker.username,
        password=broker.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        clean_start=not persistent,
        properties=connect_properties(SESSION_EXPIRY_S) if persistent else None,
        tls_params=aiomqtt.TLSParameters() if broker.tls else None,
        keepalive=KEEPALIVE_S,
    )
