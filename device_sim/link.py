"""One simulated node's MQTT 5 connection: paho's network thread, asyncio's waits, checked PUBACKs.

The simulator was an aiomqtt client, whose ``publish`` waits for the PUBACK and throws its
reason code away (:mod:`sqal.publisher`): a fleet run as a user the ACL refuses published
nothing and said nothing. Here each QoS 1 publish waits for its PUBACK, as aiomqtt's did (one
round trip per message, the rate it had), and a reason code of 0x80 or above (MQTT 5 section
3.4.2.1) raises :class:`~sqal.errors.PublishError` naming it, which ends the run with one
``Error:`` line. paho's callbacks only hand over to the event loop
(``call_soon_threadsafe``); nothing waits in paho's thread.

A lost connection raises :class:`LinkLost`: the caller backs off and opens a new link (the
node's queue keeps producing meanwhile); paho's own reconnecting is stopped with the link.
"""

from __future__ import annotations

import asyncio
import contextlib

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from sqal.errors import PublishError
from sqal.mqtt import paho_client
from sqal.publisher import reason_text
from sqal.settings import BrokerUrl, parse_broker_url


class LinkLost(Exception):  # noqa: N818 - an event the caller recovers from, not a failure
    """The connection dropped: open a new :class:`NodeLink` after a backoff."""


class NodeLink:
    """A connected node: :meth:`publish` at QoS 1 with its PUBACK checked, :attr:`messages`
    of its subscriptions, a last will set at connect. Use :meth:`open` and :meth:`close`."""

    def __init__(self, broker: BrokerUrl, loop: asyncio.AbstractEventLoop) -> None:
        self.broker = broker
        self.messages: asyncio.Queue[paho.MQTTMessage] = asyncio.Queue()
        self._loop = loop
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        self._lost: asyncio.Future[None] = loop.create_future()
        self._client: paho.Client | None = None

    @classmethod
    async def open(
        cls, url: str, cid: str, will: tuple[str, bytes], max_inflight: int = 20
    ) -> NodeLink:
        """Connect with ``will`` (topic, payload; QoS 1, retained) as the last will.

        Raises:
            BrokerError: the broker is unreachable or refused the connection.
        """
        link = cls(parse_broker_url(url), asyncio.get_running_loop())
        link._client = await asyncio.to_thread(
            paho_client, link.broker, cid, persistent=False, max_inflight=max_inflight,
            will=will, on_message=link._on_message, on_publish=link._on_publish,
        )  # fmt: skip
        link._client.on_disconnect = link._on_disconnect
        return link

    async def close(self) -> None:
        """Disconnect cleanly (no last will) and stop paho's thread."""
        client, self._client = self._client, None
        if client is not None:
            client.on_disconnect = None
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
        self._fail(LinkLost("closed"))

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1; messages arrive on :attr:`messages` (SUBACK not awaited)."""
        assert self._client is not None
        self._client.subscribe(topic, qos=1)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and return once the broker accepted it.

        Raises:
            PublishError: the broker refused it (its PUBACK's reason code).
            LinkLost: the connection dropped before the PUBACK.
        """
        if self._client is None or self._lost.done():
            raise LinkLost("not connected")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise LinkLost(paho.error_string(info.rc))
        # Registered before the loop runs again: _acked, scheduled from paho's thread, runs
        # after this coroutine yields, so no PUBACK can come before its future.
        ack = self._acks[info.mid] = self._loop.create_future()
        try:
            await asyncio.wait((ack, self._lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._acks.pop(info.mid, None)
        if not ack.done():
            raise LinkLost("connection lost before the PUBACK")
        rc = ack.result()
        if rc.is_failure:
            who = f"; user {self.broker.username} may not publish there" if rc.value == 0x87 else ""
            raise PublishError(
                f"broker {self.broker} refused the publish on {topic}: "
                f"{reason_text(rc.value)}{who}",
                topic,
                rc.value,
            )

    def _fail(self, exc: LinkLost) -> None:
        if not self._lost.done():
            self._lost.set_exception(exc)
            self._lost.exception()  # retrieved: nobody need await it

    # paho's network thread: hand over to the event loop, never block.

    def _on_message(self, c: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while paho was delivering
            self._loop.call_soon_threadsafe(self.messages.put_nowait, msg)

    def _on_publish(
        self, c: paho.Client, userdata: object, mid: int, rc: ReasonCode, props: object
    ) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._acked, mid, rc)

    def _on_disconnect(
        self, c: paho.Client, userdata: object, flags: object, rc: ReasonCode, props: object
    ) -> None:
        c.disconnect()  # no reconnecting on paho's side: the caller opens a new link
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._fail, LinkLost(str(rc)))

    def _acked(self, mid: int, rc: ReasonCode) -> None:
        ack = self._acks.get(mid)
        if ack is not None and not ack.done():
            ack.set_result(rc)
