"""SQAL's own MQTT 5 client (sqal.link): its parser on closed-form bytes, and on a real broker."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from embedded import Mosquitto
from sqal.link import (
    PUBLISH,
    Link,
    ProtocolError,
    packet,
    read_properties,
    read_varint,
    utf8,
    varint,
)
from sqal.mqtt import client_id, paho_client
from sqal.settings import parse_broker_url
from tests.test_ingest_frames import wait_until

TIMEOUT_S = 10.0


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455])
def test_variable_byte_integers_round_trip_at_their_boundaries(n: int) -> None:
    raw = varint(n)
    assert len(raw) == 1 + (n > 127) + (n > 16_383) + (n > 2_097_151)
    assert read_varint(raw + b"tail", 0) == (n, len(raw))
    assert read_varint(raw[:-1], 0) == (-1, 0)  # cut short: wait for more bytes


def test_a_five_byte_length_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        read_varint(b"\xff\xff\xff\xff\x01", 0)


def test_properties_of_every_shape_are_read_and_skipped() -> None:
    body = (
        b"\x21\x03\xe8"  # Receive Maximum 1000 (two bytes)
        b"\x27\x00\x01\x00\x00"  # Maximum Packet Size 65536 (four bytes)
        b"\x12" + utf8("assigned-id")  # a string
        + b"\x26" + utf8("k") + utf8("v")  # a user property (string pair)
        + b"\x0b\x80\x01"  # Subscription Identifier 128 (varint)
        + b"\x24\x01"  # Maximum QoS 1 (byte)
    )  # fmt: skip
    data = varint(len(body)) + body + b"after"
    props, pos = read_properties(data, 0, len(data))
    assert props[0x21] == 1000
    assert props[0x27] == 65536
    assert props[0x12] == b"assigned-id"
    assert props[0x0B] == 128
    assert props[0x24] == 1
    assert data[pos:] == b"after"
    with pytest.raises(ProtocolError):
        read_properties(b"\x02\x7f\x00", 0, 3)  # an unknown identifier


def unconnected_link() -> Link:
    """A link never connected: its parser, fed bytes by the test."""
    return Link(
        parse_broker_url("mqtt://127.0.0.1:1"),
        "t",
        keepalive_s=30,
        session_expiry_s=0,
        receive_maximum=10,
    )


def _publish(topic: str, payload: bytes, mid: int | None, retain: bool = False) -> bytes:
    qos = 0 if mid is None else 1
    head = utf8(topic) + (b"" if mid is None else mid.to_bytes(2, "big"))
    props = b"\x01\x01"  # Payload Format Indicator: skipped
    return packet(PUBLISH | qos << 1 | retain, head + varint(len(props)) + props + payload)


def test_packets_split_anywhere_parse_to_the_same_messages() -> None:
    """Chunks from recv cut packets at any byte, the length's bytes included."""
    big = bytes(range(256)) * 9  # a 2,304-byte payload: a two-byte remaining length
    stream = (
        _publish("sqal/v1/L1/d1/tof", big, 7)
        + _publish("sqal/v1/L1/d1/spectral", b"{}", None, retain=True)
        + b"\xd0\x00"  # PINGRESP
        + _publish("sqal/v1/L1/d2/tof", b"", 65535)
    )
    want = [
        ("sqal/v1/L1/d1/tof", big, 7, 1, False),
        ("sqal/v1/L1/d1/spectral", b"{}", 0, 0, True),
        ("sqal/v1/L1/d2/tof", b"", 65535, 1, False),
    ]
    for cut in [*range(0, 8), *range(len(stream) - 8, len(stream) + 1), 1200, 2310]:
        link = unconnected_link()
        got: list[tuple[str, bytes, int, int, bool]] = []
        link.on_message = lambda *m, got=got: got.append(m)
        rest = link._parse(stream[:cut])
        assert link._parse(rest + stream[cut:]) == b""
        assert got == want, cut


def test_a_qos_2_publish_ends_the_connection() -> None:
    with pytest.raises(ProtocolError):
        unconnected_link()._parse(packet(PUBLISH | 2 << 1, utf8("t") + b"\x00\x01\x00"))


# --- on a real broker ----------------------------------------------------------------------


class Events:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connacks: list[bool] = []
        self.disconnects: list[int] = []
        self.pubacks: list[int] = []
        self.messages: list[tuple[str, bytes, int, int, bool]] = []

    def attach(self, link: Link) -> None:
        link.on_connect = lambda present, rc, props: self._add(self.connacks, present)
        link.on_disconnect = lambda rc: self._add(self.disconnects, rc.value)
        link.on_puback = lambda mid, reason: self._add(self.pubacks, mid)
        link.on_message = lambda *m: self._add(self.messages, m)

    def _add(self, where: list, item: object) -> None:  # type: ignore[type-arg]
        with self.lock:
            where.append(item)


def new_link(broker: Mosquitto, cid: str, **kw: int) -> tuple[Link, Events]:
    link = Link(
        parse_broker_url(broker.url),
        cid,
        keepalive_s=kw.get("keepalive_s", 30),
        session_expiry_s=kw.get("session_expiry_s", 300),
        receive_maximum=kw.get("receive_maximum", 1000),
        reconnect_min_s=0.2,
    )
    events = Events()
    events.attach(link)
    link.connect()
    link.start()
    assert wait_until(lambda: bool(events.connacks), TIMEOUT_S)
    return link, events


def test_publishes_made_while_the_link_is_down_all_land_once_it_is_back(
    broker: Mosquitto,
) -> None:
    topic = f"sqal/v1/T{uuid.uuid4().hex[:8]}/dev/result"
    seen: list[bytes] = []
    listener = paho_client(
        broker.url,
        client_id("test-listen"),
        persistent=False,
        on_message=lambda c, u, m: seen.append(bytes(m.payload)),
    )
    listener.subscribe(topic, qos=1)
    time.sleep(0.2)
    link, events = new_link(broker, f"link-{uuid.uuid4().hex[:8]}", receive_maximum=5)
    link.max_inflight = 5  # a window smaller than the burst: the rest waits its turn
    try:
        mids = [link.publish(topic, b"a%d" % i) for i in range(20)]
        link.drop()  # the connection breaks with publishes in flight and queued
        mids += [link.publish(topic, b"b%d" % i) for i in range(20)]
        assert wait_until(lambda: len(events.pubacks) >= 40, TIMEOUT_S), len(events.pubacks)
        assert sorted(events.pubacks) == sorted(mids)
        assert wait_until(lambda: len(set(seen)) == 40, TIMEOUT_S)
        assert len(events.connacks) >= 2
        assert events.disconnects[0] != 0  # broken, not closed by us
    finally:
        link.close()
        listener.disconnect()
        listener.loop_stop()
    assert events.disconnects[-1] == 0


def test_an_idle_link_pings_and_stays_up(broker: Mosquitto) -> None:
    link, events = new_link(broker, f"link-{uuid.uuid4().hex[:8]}", keepalive_s=1)
    try:
        time.sleep(3.5)  # the broker drops a client silent for 1.5 keepalives
        assert events.disconnects == []
        assert len(events.connacks) == 1
        assert link._last_sent > time.monotonic() - 1.5  # it sent PINGREQs
    finally:
        link.close()


def test_acks_of_a_connection_that_is_gone_are_dropped(broker: Mosquitto) -> None:
    """A message delivered before a reconnect is sent again by the broker; the old packet id
    must not be acked on the new connection, where it may name another message."""
    topic = f"sqal/v1/T{uuid.uuid4().hex[:8]}/dev/tof"
    link, events = new_link(broker, f"link-{uuid.uuid4().hex[:8]}")
    try:
        link.subscribe([(topic, 1, 1)])
        time.sleep(0.2)
        pub = paho_client(broker.url, client_id("test-pub"), persistent=False)
        pub.publish(topic, b"once", qos=1).wait_for_publish(TIMEOUT_S)
        assert wait_until(lambda: len(events.messages) == 1, TIMEOUT_S)
        first = link.connection
        link.drop()
        assert wait_until(lambda: link.connection == first + 1, TIMEOUT_S)
        assert link.ack([events.messages[0][2]], first) == 0
        assert wait_until(lambda: len(events.messages) == 2, TIMEOUT_S)  # sent again
        assert link.ack([events.messages[1][2]], link.connection) == 1
        pub.disconnect()
        pub.loop_stop()
    finally:
        link.close()


def test_writes_in_a_corked_block_leave_together_when_it_ends(broker: Mosquitto) -> None:
    link, events = new_link(broker, f"link-{uuid.uuid4().hex[:8]}")
    try:
        with link.corked():
            mids = [link.publish("sqal/v1/Tcork/dev/result", b"r%d" % i) for i in range(5)]
            time.sleep(0.3)
            assert events.pubacks == []  # held back: nothing was sent
        assert wait_until(lambda: sorted(events.pubacks) == sorted(mids), TIMEOUT_S)
    finally:
        link.close()
