"""Publishing that reports the broker's refusals: every PUBACK's reason code is checked.

A broker that refuses a PUBLISH still acknowledges it. Over MQTT 5 the PUBACK carries a reason
code (section 3.4.2.1): 0x87 "not authorised" when the ACL denies the topic, 0x97 "quota
exceeded", and so on; a code of 0x80 or above means the message was dropped. (Over MQTT 3.1.1
Mosquitto acknowledges a denied publish as a success and drops it: SQAL's clients all speak
MQTT 5, :func:`sqal.mqtt.new_paho` and :func:`sqal.mqtt.aiomqtt_client`.) aiomqtt's
``publish`` waits for the PUBACK and throws its reason code away, so the commands whose publish
must be known to have landed (``sqal config set``, ``sqal calibrate``, ``sqal replay``) publish
through :class:`Publisher`, which raises :class:`PublishError` instead of letting them say
"published".

A message larger than the broker takes is not sent at all when the broker announced its limit
(the CONNACK's Maximum Packet Size, section 3.2.2.3.6; SQAL's brokers set ``max_packet_size``):
Mosquitto answers an oversized packet by dropping the connection, paho reconnects and sends it
again, and so on for as long as anyone waits. A connection lost while messages were
unacknowledged is likewise an error here, never a silent retry.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sqal.errors import BrokerError, PublishError
from sqal.mqtt import client_id, paho_client
from sqal.settings import BrokerUrl, parse_broker_url

ACK_WAIT_S = 30.0
"""How long :meth:`Publisher.wait` waits for the last PUBACK by default."""

MAX_INFLIGHT = 1000
"""Unacknowledged publishes out at once: :data:`sqal.mqtt.INFLIGHT_WINDOW`, the brokers'
``max_inflight_messages``."""

REASONS = {
    0x80: "unspecified error",
    0x83: "implementation specific error",
    0x87: "not authorised",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
}
"""PUBACK reason codes of a refused publish, MQTT 5 section 3.4.2.1 (0x95 from DISCONNECT,
section 3.14.2.1), in the spec's words."""


def reason_text(code: int) -> str:
    """``not authorised (0x87)``: a refusal's name and code, as an error line shows it."""
    return f"{REASONS.get(code, 'refused')} (0x{code:02X})"


def packet_bytes(topic: str, payload: bytes, qos: int, properties: Properties | None) -> int:
    """Size of the PUBLISH packet carrying ``payload`` (MQTT 5 sections 3.3.1-3.3.2)."""
    props = properties.pack() if properties is not None else b"\x00"  # type: ignore[no-untyped-call]
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + len(props) + len(payload)
    length_bytes = 1 + (remaining >= 128) + (remaining >= 16_384) + (remaining >= 2_097_152)
    return 1 + length_bytes + remaining


@dataclass
class _Sent:
    topic: str
    size: int


class Publisher:
    """A connected MQTT 5 client whose publishes fail loudly when the broker refuses them.

    Use as a context manager; :meth:`publish` queues (paho's network thread sends) and raises
    at once once any earlier message was refused; :meth:`wait` blocks until every message was
    acknowledged and raises on a refusal.

    Raises (from the constructor):
        BrokerError: the broker is unreachable or refused the connection.
    """

    def __init__(
        self, url: str | BrokerUrl, prefix: str = "sqal-publish", max_inflight: int = MAX_INFLIGHT
    ) -> None:
        self.broker = url if isinstance(url, BrokerUrl) else parse_broker_url(url)
        self.max_packet_bytes: int | None = None
        """The broker's Maximum Packet Size from its CONNACK, when it announced one."""
        self.acked = 0
        self._cond = threading.Condition()
        self._pending: dict[int, _Sent] = {}
        self._early: dict[int, ReasonCode] = {}  # PUBACKs that beat publish() returning
        self._failure: PublishError | None = None
        self._closing = False
        self._client = paho_client(
            self.broker, client_id(prefix), persistent=False, max_inflight=max_inflight,
            on_publish=self._on_publish, on_connack=self._on_connack,
        )  # fmt: skip
        self._client.on_disconnect = self._on_disconnect

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect; unacknowledged messages are abandoned (call :meth:`wait` first)."""
        with self._cond:
            self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Queue one message.

        Raises:
            PublishError: it is larger than the broker's Maximum Packet Size (nothing was
                sent), or an earlier message was refused or the connection was lost.
        """
        self._raise_failure()
        size = packet_bytes(topic, payload, qos, properties)
        if self.max_packet_bytes is not None and size > self.max_packet_bytes:
            raise PublishError(
                f"not sent to {self.broker}: the message on {topic} is a {size:,}-byte packet, "
                f"over the broker's maximum packet size of {self.max_packet_bytes:,} bytes",
                topic,
                0x95,
            )
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            # NO_CONN: queued while paho reconnects; the disconnect is reported on its own.
            raise PublishError(
                f"cannot publish on {topic} to {self.broker}: {paho.error_string(info.rc)}", topic
            )
        with self._cond:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = _Sent(topic, size)
            else:
                self._settle(_Sent(topic, size), early)

    def wait(self, timeout_s: float = ACK_WAIT_S) -> None:
        """Block until every message was acknowledged.

        Raises:
            PublishError: a message was refused or the connection was lost.
            BrokerError: no acknowledgement within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._failure is not None or not self._pending,
                max(deadline - time.monotonic(), 0.0),
            )
            left = len(self._pending)
        self._raise_failure()
        if not done:
            raise BrokerError(
                f"broker {self.broker} did not acknowledge {left:,} publish(es) within "
                f"{timeout_s:g} s"
            )

    def _raise_failure(self) -> None:
        with self._cond:
            failure = self._failure
        if failure is not None:
            raise failure

    # paho's network thread: record and notify, never block.

    def _on_connack(self, properties: Properties | None) -> None:
        size = getattr(properties, "MaximumPacketSize", None)
        with self._cond:
            self.max_packet_bytes = int(size) if size else None

    def _on_publish(
        self, c: paho.Client, userdata: object, mid: int, rc: ReasonCode, props: object
    ) -> None:
        with self._cond:
            sent = self._pending.pop(mid, None)
            if sent is None:
                self._early[mid] = rc
            else:
                self._settle(sent, rc)

    def _settle(self, sent: _Sent, rc: ReasonCode) -> None:
        """Count an acknowledgement (the caller holds the lock)."""
        self.acked += 1
        if rc.is_failure and self._failure is None:
            who = f"; user {self.broker.username} may not publish there" if rc.value == 0x87 else ""
            self._failure = PublishError(
                f"broker {self.broker} refused the publish on {sent.topic}: "
                f"{reason_text(rc.value)}{who}",
                sent.topic,
                rc.value,
            )
        self._cond.notify_all()

    def _on_disconnect(
        self, c: paho.Client, userdata: object, flags: object, rc: ReasonCode, props: object
    ) -> None:
        with self._cond:
            if self._closing or self._failure is not None:
                return
            largest = max(self._pending.values(), key=lambda s: s.size, default=None)
            what = (
                f" with {len(self._pending):,} publish(es) unacknowledged, the largest a "
                f"{largest.size:,}-byte packet on {largest.topic} (too large for it?)"
                if largest is not None
                else ""
            )
            self._failure = PublishError(
                f"broker {self.broker} closed the connection ({rc}){what}",
                largest.topic if largest is not None else "",
                rc.value if rc.is_failure else None,
            )
            self._cond.notify_all()


def publish_acked(
    url: str | BrokerUrl, topic: str, payload: bytes, *, retain: bool = False, prefix: str
) -> None:
    """Publish one message at QoS 1 and return once the broker accepted it.

    Raises:
        BrokerError: unreachable, refused the connection, or did not acknowledge in time.
        PublishError: the broker refused the message (PUBACK reason code, or too large).
    """
    with Publisher(url, prefix, max_inflight=1) as pub:
        pub.publish(topic, payload, qos=1, retain=retain)
        pub.wait()


__all__ = ["PublishError", "Publisher", "packet_bytes", "publish_acked", "reason_text"]
