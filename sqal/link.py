"""SQAL's own MQTT 5 client for its services' subscriber: QoS 0/1, manual acks, no per-byte reads.

paho reaches a third of what the broker carries (``bench.onehop``: 8.3k against Mosquitto's C
clients' 25k messages/s on one box) and was 35 % of ``sqal ingest``'s time draining a backlog:
it reads each packet's header one byte per ``recv`` call, builds an MQTT 5 ``Properties``
object and a ``MQTTMessage`` for every PUBLISH, and sends each PUBACK on its own. libmosquitto
(the C clients' library) would be the well-kept alternative, but its 2.0 line acknowledges a
QoS 1 message itself when the callback returns: it cannot hold an ack until a row committed,
which is the whole of SQAL's no-loss contract. So the services use this one small client,
written for exactly what :class:`sqal.subscriber.Subscriber` needs, and paho stays for every
publisher (:mod:`sqal.publisher`, the simulator), where a publish's PUBACK reason code matters
and rates are low.

What it does, and what it leaves out:

- **Reads in large chunks**: up to :data:`READ_BYTES` per ``recv``, then parses every whole
  packet in the chunk; a PUBLISH becomes ``(topic, payload, mid, qos, retain)`` and its
  properties are skipped (SQAL's services use none; Topic Alias Maximum stays 0, so the broker
  sends full topics).
- **Acks in one write**: :meth:`Link.ack` sends a batch's PUBACKs as one buffer, and only on the
  connection that delivered them.
- **QoS 1 publishes** kept in flight within :attr:`Link.max_inflight` (set from the broker's
  Receive Maximum), queued while disconnected, and sent again with DUP on every reconnect until
  their PUBACK comes (MQTT 5 §4.4): nothing in flight is lost.
- **One network thread** owns reading, keepalive (PINGREQ after :attr:`keepalive_s` without
  sending; the link counts as lost when no PINGRESP comes within another keepalive) and
  reconnecting (1 s, doubling to 10 s). On a plain TCP connection other threads write straight
  to the socket (without blocking) and the thread sends what did not fit; with TLS only the
  thread touches the socket (an OpenSSL connection must not be used by two threads at once).
- Not here: QoS 2 (the services subscribe at QoS 1 at most, so the broker never sends it: one
  arriving ends the connection as a protocol error), wills, AUTH, topic aliases, retained
  publishes. A packet it cannot parse ends the connection; it reconnects and the broker resends.

Every callback runs in the link's thread, in the order the packets came, like paho's.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from sqal.settings import BrokerUrl

log = logging.getLogger(__name__)

READ_BYTES = 256 * 1024
"""The most one ``recv`` takes: about 180 ToF frames."""
CONNECT_TIMEOUT_S = 10.0
UNSPECIFIED_ERROR = 0x80
PROTOCOL_ERROR = 0x82
KEEPALIVE_TIMEOUT = 0x8D

# Fixed header bytes (MQTT 5 §2.1.2).
CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 0x82, 0x90, 0xA2, 0xB0
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0

# Property identifiers this client writes or reads (MQTT 5 §2.2.2.2).
SESSION_EXPIRY_INTERVAL = 0x11
RECEIVE_MAXIMUM = 0x21

_BYTE, _TWO, _FOUR, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _FOUR, 0x03: _STRING, 0x08: _STRING, 0x09: _BINARY, 0x0B: _VARINT,
    0x11: _FOUR, 0x12: _STRING, 0x13: _TWO, 0x15: _STRING, 0x16: _BINARY, 0x17: _BYTE,
    0x18: _FOUR, 0x19: _BYTE, 0x1A: _STRING, 0x1C: _STRING, 0x1F: _STRING, 0x21: _TWO,
    0x22: _TWO, 0x23: _TWO, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _FOUR, 0x28: _BYTE,
    0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class ProtocolError(Exception):
    """The broker sent something this client does not take; the connection is dropped."""


def varint(n: int) -> bytes:
    """MQTT's Variable Byte Integer (§1.5.5)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: str) -> bytes:
    raw = s.encode()
    return _U16.pack(len(raw)) + raw


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A Variable Byte Integer at ``pos``: (value, position after it); (-1, pos) if cut short.

    Raises:
        ProtocolError: longer than four bytes.
    """
    value = shift = 0
    for i in range(4):
        if pos + i >= len(data):
            return -1, pos
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise ProtocolError("a variable byte integer longer than four bytes")


def read_properties(data: bytes, pos: int, end: int) -> tuple[dict[int, object], int]:
    """The properties at ``pos`` (their length first): ({identifier: value}, position after).

    Raises:
        ProtocolError: malformed.
    """
    length, pos = read_varint(data, pos)
    stop = pos + length
    if length < 0 or stop > end:
        raise ProtocolError("properties run past their packet")
    props: dict[int, object] = {}
    while pos < stop:
        ident = data[pos]
        kind = _PROPERTY_TYPES.get(ident)
        pos += 1
        value: object
        if kind == _BYTE:
            value, pos = data[pos], pos + 1
        elif kind == _TWO:
            value, pos = _U16.unpack_from(data, pos)[0], pos + 2
        elif kind == _FOUR:
            value, pos = _U32.unpack_from(data, pos)[0], pos + 4
        elif kind == _VARINT:
            value, pos = read_varint(data, pos)
        elif kind in (_STRING, _BINARY):
            n = _U16.unpack_from(data, pos)[0]
            value, pos = bytes(data[pos + 2 : pos + 2 + n]), pos + 2 + n
        elif kind == _PAIR:
            n = _U16.unpack_from(data, pos)[0]
            pos += 2 + n
            n = _U16.unpack_from(data, pos)[0]
            value, pos = None, pos + 2 + n
        else:
            raise ProtocolError(f"unknown property 0x{ident:02X}")
        props[ident] = value
    if pos != stop:
        raise ProtocolError("properties run past their length")
    return props, stop


class Link:
    """One MQTT 5 connection that reconnects by itself (see the module's docstring).

    Set the callbacks, then :meth:`connect` (raises when the broker is unreachable) and
    :meth:`start`. Callbacks, in the link's thread:

    - ``on_connect(session_present, reason, properties)`` for every CONNACK, refusals too;
    - ``on_disconnect(reason)`` when a connection ends: the broker's DISCONNECT reason, or
      "Unspecified error" for a connection that broke, or "Success" after :meth:`close`;
    - ``on_message(topic, payload, mid, qos, retain)``;
    - ``on_suback(mid, reasons)``, ``on_unsuback(mid)``, ``on_puback(mid, reason_value)``.

    Args:
        clean_start: False keeps the broker's session across connections (with
            ``session_expiry_s``); the services always pass False.
        receive_maximum: the Receive Maximum announced: the most unacknowledged QoS 1 messages
            the broker may send us.
    """

    def __init__(
        self,
        broker: BrokerUrl,
        client_id: str,
        *,
        keepalive_s: int,
        session_expiry_s: int,
        receive_maximum: int,
        clean_start: bool = False,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 10.0,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.max_inflight = receive_maximum
        """Our QoS 1 publishes awaiting a PUBACK at most; the owner lowers it to the broker's
        Receive Maximum from its CONNACK."""
        self.on_connect: Callable[[bool, ReasonCode, dict[int, object]], None] | None = None
        self.on_disconnect: Callable[[ReasonCode], None] | None = None
        self.on_message: Callable[[str, bytes, int, int, bool], None] | None = None
        self.on_suback: Callable[[int, list[ReasonCode]], None] | None = None
        self.on_unsuback: Callable[[int], None] | None = None
        self.on_puback: Callable[[int, int], None] | None = None
        self._connect_packet = self._build_connect(clean_start, session_expiry_s, receive_maximum)
        self._tls = ssl.create_default_context() if broker.tls else None
        self._sock: socket.socket | None = None
        self._direct = False
        """Other threads may write to the socket themselves (plain TCP, not TLS)."""
        self._corked = 0
        """Depth of :meth:`corked` blocks: the owner's writes wait for the outermost one's end."""
        self._wlock = threading.Lock()
        self._wbuf = bytearray()
        self._plock = threading.Lock()
        self._inflight: dict[int, bytes] = {}
        """Our QoS 1 PUBLISH packets awaiting their PUBACK, by packet id, in sending order."""
        self._queued: deque[tuple[int, bytes]] = deque()
        """QoS 1 PUBLISH packets waiting for room in flight (or for a connection)."""
        self._ids: set[int] = set()
        """Packet ids in use by our publishes (in flight or queued)."""
        self._last_id = 0
        self._connection = 0
        """Connections accepted so far: acks go only to the one that delivered a message."""
        self._accepted = False
        self._disconnect_reason: int | None = None
        self._closing = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        """A socket pair that interrupts the thread's ``select`` (made by :meth:`connect`)."""
        self._thread: threading.Thread | None = None
        self._last_sent = 0.0
        self._last_received = 0.0
        self._ping_sent: float | None = None
        self._publishing = False
        """Publishes may go out: the CONNACK came and the unacknowledged ones were resent."""

    def _build_connect(self, clean_start: bool, expiry_s: int, receive_maximum: int) -> bytes:
        flags = 0x02 if clean_start else 0x00
        body = bytearray(utf8("MQTT") + bytes((5,)))
        props = bytes((SESSION_EXPIRY_INTERVAL,)) + _U32.pack(expiry_s)
        props += bytes((RECEIVE_MAXIMUM,)) + _U16.pack(receive_maximum)
        payload = utf8(self.client_id)
        if self.broker.username:
            flags |= 0x80
            payload += utf8(self.broker.username)
            if self.broker.password is not None:
                flags |= 0x40
                payload += utf8(self.broker.password)
        body += bytes((flags,)) + _U16.pack(self.keepalive_s) + varint(len(props)) + props
        return packet(CONNECT, bytes(body + payload))

    # --- the owner's side --------------------------------------------------------------
    def connect(self) -> None:
        """Open the first connection and send CONNECT (its CONNACK comes once started).

        Raises:
            OSError: the broker is unreachable (or its TLS certificate was refused).
        """
        if self._wake_r is None:
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
        try:
            self._open()
        except OSError:
            self._close_wake()
            raise

    def start(self) -> None:
        """Run the network thread (reading, keepalive, reconnecting)."""
        self._thread = threading.Thread(
            target=self._run, name=f"mqtt-{self.client_id}", daemon=True
        )
        self._thread.start()

    def close(self, *, disconnect: bool = True) -> None:
        """End the connection for good, sending DISCONNECT first when ``disconnect``.

        From the link's own thread (a callback) it only stops the reconnecting; from another
        it also waits for the thread. ``disconnect=False`` is a process dying: the broker sees
        the socket close without a DISCONNECT (and publishes a will, keeps the session).
        """
        if disconnect and self._accepted:
            self._send(packet(DISCONNECT, b"\x00\x00"))
        self._closing.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(CONNECT_TIMEOUT_S)
        if thread is None:
            self._close_socket()
            self._close_wake()

    def drop(self) -> None:
        """Break the connection without a DISCONNECT; the thread reconnects after its delay."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Hold the calling thread's writes (publishes, acks) until the block ends, then send
        them in one write: a round of the analyzer publishes a result and acks two frames per
        sample, and a ``send`` each was 8 % of its time at 1,000 samples/s. Not for the
        link's own thread (its callbacks)."""
        self._corked += 1
        try:
            yield
        finally:
            self._corked -= 1
            if not self._corked:
                with self._wlock:
                    if self._sock is not None and self._direct:
                        with contextlib.suppress(OSError):
                            self._flush_locked()
                    pending = bool(self._wbuf)
                if pending:
                    self._wake()

    def socket(self) -> socket.socket | None:
        return self._sock

    @property
    def connection(self) -> int:
        """How many connections the broker accepted so far (1 for the first)."""
        return self._connection

    def ack(self, mids: Iterable[int], connection: int) -> int:
        """PUBACK these packet ids in one write, if ``connection`` is still the current one.

        Returns:
            how many went out (0 when the connection that delivered them is gone).
        """
        if connection != self._connection or not self._accepted:
            return 0
        data = b"".join(b"\x40\x02" + _U16.pack(mid) for mid in mids)
        if data:
            self._send(data)
        return len(data) // 4

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1, now or once there is room in flight and a connection.

        Returns:
            the packet id that ``on_puback`` will be called with.
        """
        with self._plock:
            mid = self._new_id()
            self._ids.add(mid)
            body = utf8(topic) + _U16.pack(mid) + b"\x00" + payload
            self._queued.append((mid, packet(PUBLISH | 0x02, body)))
            out = self._fill_inflight()
        if out:
            self._send(out)
        return mid

    def subscribe(self, filters: Sequence[tuple[str, int, int]]) -> int | None:
        """SUBSCRIBE to ``(filter, qos, retain_handling)`` triples; the packet id, or ``None``
        when not connected."""
        body = bytearray()
        for f, qos, retain_handling in filters:
            body += utf8(f) + bytes((qos | retain_handling << 4,))
        return self._request(SUBSCRIBE, bytes(body))

    def unsubscribe(self, topic_filter: str) -> int | None:
        """UNSUBSCRIBE; the packet id, or ``None`` when not connected."""
        return self._request(UNSUBSCRIBE, utf8(topic_filter))

    def _request(self, first: int, payload: bytes) -> int | None:
        if not self._accepted:
            return None
        with self._plock:
            mid = self._new_id()
        self._send(packet(first, _U16.pack(mid) + b"\x00" + payload))
        return mid

    def _new_id(self) -> int:
        """A packet id (1–65535) none of our publishes holds; under ``_plock``."""
        for _ in range(65536):
            self._last_id = self._last_id % 65535 + 1
            if self._last_id not in self._ids:
                return self._last_id
        raise RuntimeError("65,535 publishes await their PUBACK: no packet id is free")

    def _fill_inflight(self) -> bytes:
        """Move queued publishes into flight while there is room; their bytes; under ``_plock``."""
        if not self._publishing:
            return b""
        out = []
        while self._queued and len(self._inflight) < self.max_inflight:
            mid, data = self._queued.popleft()
            self._inflight[mid] = data
            out.append(data)
        return b"".join(out)

    # --- writing -----------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        """Queue bytes for the socket; on plain TCP send what the socket takes right away."""
        with self._wlock:
            if self._sock is None:
                return  # the connection is gone; its packets go again on the next one
            self._wbuf += data
            owner = threading.current_thread() is not self._thread
            if owner and self._corked:
                return  # sent when the corked block ends
            if owner and self._direct:
                with contextlib.suppress(OSError):  # the thread notices a dead socket itself
                    self._flush_locked()
            pending = bool(self._wbuf)
        if pending and owner:
            self._wake()

    def _flush_locked(self) -> None:
        assert self._sock is not None
        while self._wbuf:
            try:
                n = self._sock.send(self._wbuf)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            del self._wbuf[:n]
            self._last_sent = time.monotonic()

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_w.send(b"\x00")

    def _close_wake(self) -> None:
        pair, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), None, None
        for sock in pair:
            if sock is not None:
                sock.close()

    # --- the network thread ------------------------------------------------------------
    def _open(self) -> None:
        sock = socket.create_connection(
            (self.broker.host, self.broker.port), timeout=CONNECT_TIMEOUT_S
        )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.broker.host)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        with self._wlock:
            self._sock = sock
            self._direct = self._tls is None
            self._wbuf = bytearray(self._connect_packet)
            self._last_sent = time.monotonic()
        self._ping_sent = None
        self._accepted = False
        self._disconnect_reason = None
        self._wake()

    def _close_socket(self) -> None:
        with self._wlock:
            sock, self._sock = self._sock, None
            self._wbuf.clear()
        self._accepted = False
        with self._plock:
            self._publishing = False
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _run(self) -> None:
        delay = self.reconnect_min_s
        while not self._closing.is_set():
            if self._sock is None:
                try:
                    self._open()
                except OSError as exc:
                    log.debug("connecting to %s failed: %s", self.broker, exc)
                    self._closing.wait(delay)
                    delay = min(delay * 2, self.reconnect_max_s)
                    continue
            code: int | None = 0
            try:
                self._serve()
            except OSError:  # ConnectionError included
                code = self._disconnect_reason
                if code is None:  # no reason given: broken, unless we were closing it
                    code = 0 if self._closing.is_set() else UNSPECIFIED_ERROR
            except (ProtocolError, struct.error, IndexError, UnicodeDecodeError) as exc:
                log.warning(
                    "broker %s sent a malformed packet (%s); reconnecting", self.broker, exc
                )
                code = PROTOCOL_ERROR
            except Exception:  # a callback's bug must not end the link silently
                log.exception("MQTT link to %s: unexpected error; reconnecting", self.broker)
                code = UNSPECIFIED_ERROR
            accepted = self._accepted
            self._close_socket()
            if accepted and self.on_disconnect is not None:
                self.on_disconnect(_disconnect_reason(code or 0))
            if accepted:
                delay = self.reconnect_min_s
            if not self._closing.is_set():
                self._closing.wait(delay)
                delay = min(delay * 2, self.reconnect_max_s)
        self._close_socket()
        self._close_wake()

    def _serve(self) -> None:
        """Serve one connection until it ends (returns after :meth:`close`, else raises)."""
        sock, wake = self._sock, self._wake_r
        assert sock is not None
        assert wake is not None
        rest = b""
        while True:
            if self._closing.is_set():
                with self._wlock, contextlib.suppress(OSError):
                    self._flush_locked()  # the DISCONNECT
                return
            timeout = self._keepalive()
            with self._wlock:
                want_write = bool(self._wbuf)
            pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
            readable, writable, _ = select.select(
                [sock, wake], [sock] if want_write else [], [], 0 if pending else timeout
            )
            if wake in readable:
                with contextlib.suppress(BlockingIOError):
                    wake.recv(4096)
            if writable:
                with self._wlock:
                    self._flush_locked()
            if sock in readable or pending:
                try:
                    chunk = sock.recv(READ_BYTES)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                if not chunk:
                    raise ConnectionError("the broker closed the connection")
                self._last_received = time.monotonic()
                rest = self._parse(rest + chunk if rest else chunk)

    def _keepalive(self) -> float:
        """Send PINGREQ when due; the seconds until the next check.

        Raises:
            ConnectionError: the last PINGREQ got no PINGRESP within a keepalive.
        """
        now = time.monotonic()
        heard = max(self._ping_sent or 0.0, self._last_received)
        if self._ping_sent is not None and now - heard > self.keepalive_s:
            self._disconnect_reason = KEEPALIVE_TIMEOUT
            raise ConnectionError("no PINGRESP")
        if self._accepted and self._ping_sent is None and now - self._last_sent >= self.keepalive_s:
            self._ping_sent = now
            self._send(b"\xc0\x00")
        return max(0.05, min(1.0, self.keepalive_s - (now - self._last_sent)))

    def _parse(self, data: bytes) -> bytes:
        """Handle every whole packet in ``data``; the bytes of an unfinished one."""
        pos = 0
        end = len(data)
        while pos < end:
            length, body = read_varint(data, pos + 1)
            if length < 0 or body + length > end:
                break
            first = data[pos]
            stop = body + length
            kind = first & 0xF0
            if kind == PUBLISH:
                self._publish_in(first, data, body, stop)
            elif kind == PUBACK:
                self._puback_in(data, body, stop)
            else:
                self._control_in(first, data, body, stop)
            pos = stop
        return data[pos:]

    def _publish_in(self, first: int, data: bytes, pos: int, stop: int) -> None:
        qos = (first >> 1) & 0x03
        if qos > 1:
            raise ProtocolError(f"a QoS {qos} PUBLISH (subscribed at QoS 1 at most)")
        n = _U16.unpack_from(data, pos)[0]
        topic = data[pos + 2 : pos + 2 + n].decode()  # UnicodeDecodeError: malformed
        pos += 2 + n
        mid = 0
        if qos:
            mid = _U16.unpack_from(data, pos)[0]
            pos += 2
        plen, pos = read_varint(data, pos)
        if plen < 0:
            raise ProtocolError("a PUBLISH cut short")
        pos += plen
        if pos > stop:
            raise ProtocolError("a PUBLISH's properties run past it")
        if self.on_message is not None:
            self.on_message(topic, data[pos:stop], mid, qos, bool(first & 0x01))

    def _puback_in(self, data: bytes, pos: int, stop: int) -> None:
        mid = _U16.unpack_from(data, pos)[0]
        reason = data[pos + 2] if stop > pos + 2 else 0
        with self._plock:
            known = self._inflight.pop(mid, None) is not None
            if known:
                self._ids.discard(mid)
            out = self._fill_inflight()
        if out:
            self._send(out)
        if known and self.on_puback is not None:
            self.on_puback(mid, reason)

    def _control_in(self, first: int, data: bytes, pos: int, stop: int) -> None:
        if first == CONNACK:
            self._connack_in(data, pos, stop)
        elif first == SUBACK:
            mid = _U16.unpack_from(data, pos)[0]
            _, pos = read_properties(data, pos + 2, stop)
            reasons = [ReasonCode(PacketTypes.SUBACK, identifier=c) for c in data[pos:stop]]
            if self.on_suback is not None:
                self.on_suback(mid, reasons)
        elif first == UNSUBACK:
            if self.on_unsuback is not None:
                self.on_unsuback(_U16.unpack_from(data, pos)[0])
        elif first == PINGRESP:
            self._ping_sent = None
        elif first == DISCONNECT:
            self._disconnect_reason = data[pos] if stop > pos else 0
            raise ConnectionError("the broker sent DISCONNECT")
        else:
            raise ProtocolError(f"unexpected packet 0x{first:02X}")

    def _connack_in(self, data: bytes, pos: int, stop: int) -> None:
        session_present = bool(data[pos] & 0x01)
        reason = ReasonCode(PacketTypes.CONNACK, identifier=data[pos + 1])
        props, _ = read_properties(data, pos + 2, stop) if stop > pos + 2 else ({}, stop)
        if reason.is_failure:
            if self.on_connect is not None:
                self.on_connect(False, reason, props)
            raise ConnectionError(f"connection refused: {reason}")
        self._connection += 1
        self._accepted = True
        if self.on_connect is not None:
            self.on_connect(session_present, reason, props)
        with self._plock:
            # MQTT 5 §4.4: unacknowledged publishes go again, with DUP, in their order.
            again = b"".join(bytes((d[0] | 0x08,)) + d[1:] for d in self._inflight.values())
            self._publishing = True
            out = again + self._fill_inflight()
        if out:
            self._send(out)


def _disconnect_reason(code: int) -> ReasonCode:
    """A DISCONNECT reason code by value; one the broker may not send reads as unspecified."""
    try:
        return ReasonCode(PacketTypes.DISCONNECT, identifier=code)
    except (KeyError, ValueError):
        return ReasonCode(PacketTypes.DISCONNECT, identifier=UNSPECIFIED_ERROR)
