"""The one subscriber of SQAL's services: manual acks in receive order on a persistent session.

The analyzer and ingest both take QoS 1 messages that must survive their own death between
receiving and finishing a message (storing it, or publishing the result it fed). Both use this
class:

- **Persistent session, manual acks.** ``clean_start=False`` with a session expiry, and
  acks held back (:mod:`sqal.link`, SQAL's own MQTT 5 client for this path): a message is
  acknowledged only when the service says it is done with it, so whatever was unfinished at a
  ``kill -9`` is sent again when the service comes back.
- **Acks in receive order** (MQTT 5 §4.6: a receiver sends PUBACKs in the order the PUBLISH
  packets arrived). A service may finish messages out of order (the analyzer holds a lone
  half for its join timeout while later samples complete); :class:`AckLedger` holds each ack
  until every earlier message is done too.
- **Reconnect generations.** Every successful CONNACK starts a generation. An ack goes only to
  the connection that delivered the message: after a reconnect the broker sends again whatever
  was unacknowledged (MQTT 5 §4.4), and on a session the broker lost, an old packet id may
  already name another message.
- **Subscribed on every connect.** With ``retainHandling=1`` a reconnect that finds its session
  gets no retained replay, and one whose session is gone (taken over, or a broker that lost
  its persistence file) subscribes again and goes on receiving.
- **State first.** Filters of retained state (the analyzer's device configs) are subscribed at
  QoS 0 with ``retainHandling=0``: the broker sends every retained value again on each connect,
  and QoS 0 does not wait for the inflight window that a queued backlog fills, so the state
  comes ahead of the backlog's remainder. An UNSUBSCRIBE sent right after the SUBSCRIBE is the
  fence: its UNSUBACK (``on_state``) comes after the last retained value, and a service holds
  the messages that came before it until then. One connection per service, so a broker that
  binds client ids to users (``use_username_as_clientid``) costs nothing.
- **One inflight window** (:data:`sqal.mqtt.INFLIGHT_WINDOW`) announced as the Receive Maximum,
  and our own publishes kept within the broker's Receive Maximum from its CONNACK.
- **One connection per client id.** A second process that connects with our client id takes
  the session over: the broker disconnects the older connection with reason 0x8E (MQTT 5
  §3.1.4-3, §4.13). Reconnecting would throw the other out in turn, once a second, for good;
  so the connection taken over stops and says so (:attr:`Subscriber.failure`), and its service
  exits with that one line. The newer process carries on with the session. Mosquitto before
  2.0.15 (Debian 12's 2.0.11) closes the socket without a reason: there the fight shows as
  connections the broker drops within :data:`SHORT_LIVED_S` of accepting them, and after
  :data:`TAKEOVER_DROPS` of them in a row the subscriber stops the same way (whichever of
  the two processes counts them first).
- **Backpressure, never loss.** A broker need not honour the Receive Maximum: Mosquitto 2.0.11,
  offered frames faster than a service stores them, keeps sending far past it (70,000
  unacknowledged messages against a Receive Maximum of 1,000, packet ids wrapping past 65,535,
  so that one PUBACK could name two messages). So a service hands messages to its worker
  through a :class:`Handoff`: when it is full, the link's thread waits there, reads nothing more,
  the TCP window closes and the broker has to stop sending. Nothing is dropped.

The link's network thread runs every callback: they record and hand off, never block. What a
service does with a message (batches, joins, liveness probes) stays in the service.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from paho.mqtt.reasoncodes import ReasonCode

from sqal.errors import BrokerError
from sqal.link import RECEIVE_MAXIMUM, Link
from sqal.mqtt import INFLIGHT_WINDOW, KEEPALIVE_S, SESSION_EXPIRY_S
from sqal.settings import BrokerUrl, parse_broker_url
from sqal.wire import PROBE_FILTER

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 10
WAIT_SLICE_S = 0.1
"""How often a waiting :meth:`Handoff.put` looks whether the hand-off was closed."""
SESSION_TAKEN_OVER = 0x8E
"""MQTT 5 reason code of a DISCONNECT sent because another connection took our client id."""
SHORT_LIVED_S = 5.0
"""A connection the broker drops sooner than this after its CONNACK counts toward a takeover
fight on a broker that sends no reason (two clients on one id reconnect within the link's
1 s reconnect delay of each other, so each connection lives about a second)."""
TAKEOVER_DROPS = 3
"""Short-lived connections in a row, each accepted and then dropped, taken as a client id fight."""
DRAINED_SHARE = 4
"""A full hand-off counts as caught up again once it holds less than 1/this of its capacity."""

T = TypeVar("T")


class Handoff(Generic[T]):
    """A FIFO from the link's network thread to a service's worker, with backpressure on messages.

    Two kinds of item share one queue, so the worker waits in one place and sees them in the
    order the link did:

    - **messages** (:meth:`put`) take one of ``capacity`` places; when none is free, the link's
      thread waits (see the module's docstring) and gives up only once :meth:`close` was called,
      at shutdown, so that it can be joined: a message not taken then stays unacknowledged and
      the broker sends it again to the next run;
    - **signals** (:meth:`signal`: our own PUBACKs, probe answers, link changes, wake-ups) never
      wait. A PUBACK that waited for room would stop the network thread while the worker
      waits for that PUBACK to finish a result: both would stop for good.

    A message's place is freed when the worker takes it (:meth:`get`). The worker must never
    wait for the link's thread, or the two would wait for each other.

    Attributes:
        waited_s: total time :meth:`put` waited for room (the backpressure applied).
    """

    def __init__(self, capacity: int, name: str = "inbox") -> None:
        self.capacity = capacity
        self.name = name
        self._q: queue.SimpleQueue[tuple[bool, T]] = queue.SimpleQueue()
        self._room = threading.BoundedSemaphore(capacity)
        self._closed = threading.Event()
        self.waited_s = 0.0
        self._held = 0
        """Messages in the queue (signals not counted), for the backlog log lines."""
        self._count_lock = threading.Lock()
        self._full_since: float | None = None

    def put(self, item: T) -> bool:
        """Enqueue a message, waiting for room; False only when closed before there was room."""
        if not self._room.acquire(blocking=False):
            start = time.monotonic()
            if self._full_since is None:
                self._full_since = start
                log.warning(
                    "backlog: %s full (%d messages); holding the broker back until the worker "
                    "catches up",
                    self.name,
                    self.capacity,
                )
            try:
                while not self._room.acquire(timeout=WAIT_SLICE_S):
                    if self._closed.is_set():
                        return False
            finally:
                self.waited_s += time.monotonic() - start
        with self._count_lock:
            self._held += 1
        self._q.put((True, item))
        return True

    def signal(self, item: T) -> None:
        """Enqueue an item that takes no place and never waits."""
        self._q.put((False, item))

    def get(self, timeout_s: float) -> T:
        """The next item, waiting at most ``timeout_s``.

        Raises:
            queue.Empty: nothing came in time.
        """
        return self._taken(self._q.get(timeout=timeout_s))

    def get_nowait(self) -> T:
        """The next item if one is waiting.

        Raises:
            queue.Empty: none is.
        """
        return self._taken(self._q.get_nowait())

    def _taken(self, entry: tuple[bool, T]) -> T:
        placed, item = entry
        if placed:
            with self._count_lock:
                self._held -= 1
                held = self._held
            self._room.release()
            since = self._full_since
            if since is not None and held < self.capacity // DRAINED_SHARE:
                self._full_since = None
                log.info(
                    "backlog cleared: %s down to %d messages after %.1f s (broker held back "
                    "%.1f s in all)",
                    self.name,
                    held,
                    time.monotonic() - since,
                    self.waited_s,
                )
        return item

    def depth(self) -> int:
        """Items waiting for the worker (messages and signals)."""
        return self._q.qsize()

    def close(self) -> None:
        """Stop waiting for room (shutdown): :meth:`put` returns False from now on when full."""
        self._closed.set()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received message.

    Attributes:
        seq: arrival number within its connection (0, 1, 2, …), the order acks go out in.
        generation: which connection delivered it (see the module's docstring).
        arrived_s: ``time.monotonic()`` at receipt, stamped in the link's network thread.
        retained: a retained message sent because we subscribed (state kept at the broker,
            possibly set long ago), not one published while we listened.
    """

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    seq: int
    arrived_s: float
    retained: bool = False


@dataclass
class AckLedger:
    """Arrival-ordered messages awaiting their acknowledgement (pure bookkeeping).

    Each message is registered with its arrival number, packet id and QoS; :meth:`finish` marks
    messages done and returns the ``(mid, qos)`` pairs that may be acknowledged now, in order.

    Messages finished in one call are one unit (the two halves of a sample, whose result went
    out): their acks go out together or not at all. In-order acks alone would split a unit whose
    members have an unfinished message between them (a tof half acked, its spectral half held
    back behind another device's lone half); a ``kill -9`` then left the spectral half alone at
    the broker, and the next analyzer scored it a second time, as a partial result.
    """

    _next: int = 0
    _entries: dict[int, tuple[int, int]] = field(default_factory=dict)
    _finished: set[int] = field(default_factory=set)
    _units: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Members of units of several messages, by arrival number: (first, last) of the unit."""

    def register(self, seq: int, mid: int, qos: int) -> None:
        self._entries[seq] = (mid, qos)

    def forget(self, seq: int) -> None:
        """A message the service refused to take: never acked here, it blocks nothing.

        It stays unacknowledged at the broker, which sends it again on a next connection.
        """
        self._entries.pop(seq, None)
        self.finish((seq,))

    def finish(self, seqs: Iterable[int]) -> list[tuple[int, int]]:
        """Mark messages done, as one unit; return the acks now due, in arrival order."""
        unit = sorted(set(seqs))
        if len(unit) > 1:
            for seq in unit:
                self._units[seq] = (unit[0], unit[-1])
        self._finished.update(unit)
        cut = self._next  # acks go out for arrival numbers below the cut
        while cut in self._finished:
            cut += 1
        cut = self._unsplit(cut)
        due = []
        while self._next < cut:
            self._finished.discard(self._next)
            self._units.pop(self._next, None)
            entry = self._entries.pop(self._next, None)
            if entry is not None:
                due.append(entry)
            self._next += 1
        return due

    def _unsplit(self, cut: int) -> int:
        """Move ``cut`` back until no unit has members on both sides of it."""
        seq = self._next
        while seq < cut:
            span = self._units.get(seq)
            if span is not None and span[1] >= cut:
                cut = span[0]
                seq = self._next  # an earlier unit may now straddle the new cut
                continue
            seq += 1
        return cut

    @property
    def unacked(self) -> int:
        """Messages registered and not yet acknowledged (the broker's inflight window use)."""
        return len(self._entries)

    @property
    def unacked_qos1(self) -> int:
        """Of those, the QoS 1 ones: what the broker's Receive Maximum bounds (O(n))."""
        return sum(1 for _, qos in self._entries.values() if qos > 0)


class Subscriber:
    """A connected MQTT 5 subscriber for one service (see the module's docstring).

    Args:
        url: the broker URL.
        client_id: stable across restarts, so the broker finds the persistent session again.
        filters: subscription filters (already ``$share/…`` when sharing); a refusal of any of
            them fails :meth:`start`.
        deliver: called in the link's thread with each message, usually :meth:`Handoff.put`; it
            may wait for room (backpressure) and returns False when the service did not take
            the message (shutting down): it then stays unacknowledged at the broker.
        state_filters: filters of retained state, sent again on every connect ahead of the
            backlog (see the module's docstring); a refusal fails :meth:`start`.
        optional_filters: filters whose refusal is only logged (e.g. ``$SYS`` statistics an ACL
            may not grant).
        receive_maximum: the Receive Maximum announced, and the most of our own QoS 1
            publishes in flight (lowered to the broker's own Receive Maximum).
        on_puback, on_unsuback: the packet id of a PUBACK / UNSUBACK, in the link's thread.
        on_state: called in the link's thread once the broker has sent every retained value of
            ``state_filters`` after a connect.
        on_link: ``True`` after each successful CONNACK (before any message of that
            connection), ``False`` when the connection is lost; in the link's thread.
        session_expiry_s: how long the broker keeps the session while we are away; a view
            of live data (the station) asks for minutes, not the services' week.
    """

    def __init__(
        self,
        url: str | BrokerUrl,
        client_id: str,
        filters: Sequence[str],
        deliver: Callable[[Delivery], bool],
        *,
        state_filters: Sequence[str] = (),
        optional_filters: Sequence[str] = (),
        receive_maximum: int = INFLIGHT_WINDOW,
        on_puback: Callable[[int], None] | None = None,
        on_unsuback: Callable[[int], None] | None = None,
        on_state: Callable[[], None] | None = None,
        on_link: Callable[[bool], None] | None = None,
        session_expiry_s: int = SESSION_EXPIRY_S,
    ) -> None:
        self._broker = url if isinstance(url, BrokerUrl) else parse_broker_url(url)
        self.client_id = client_id
        # (filter, QoS, retain handling): 1 = retained values only for a new subscription.
        self._filters = [
            *((f, 1, 1) for f in [*filters, *optional_filters]),
            *((f, 0, 0) for f in state_filters),
        ]
        self._optional = set(optional_filters)
        self._on_state = on_state
        self._fence: int | None = None
        self._listening = False
        self._deliver = deliver
        self._receive_maximum = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._on_puback = on_puback
        self._on_unsuback = on_unsuback
        self._on_link = on_link
        self._lock = threading.Lock()
        self._generation = 0
        self._seq = 0
        self._ledger = AckLedger()
        self._overrun_logged = False
        """The broker overran our Receive Maximum on this connection (logged once)."""
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._waiting = False
        """True while start() or reconnect() waits, and raises a refusal itself."""
        self._refused: str | None = None
        self.broker_receive_maximum: int | None = None
        """The Receive Maximum in the broker's last CONNACK (``None``: it announced none)."""
        self.session_present: bool | None = None
        self.reconnects = 0
        self.failure: str | None = None
        """Why this subscriber gave up for good (another connection took our client id), or
        ``None``; the service stops when it is set."""
        self._lost_at: float | None = None
        self._connected_at: float | None = None
        self._short_lived = 0
        self._dropping = False
        """:meth:`reconnect` cut the connection itself: not the broker's doing."""
        self._link = Link(
            self._broker,
            client_id,
            keepalive_s=KEEPALIVE_S,
            session_expiry_s=session_expiry_s,
            receive_maximum=receive_maximum,
            reconnect_min_s=RECONNECT_MIN_S,
            reconnect_max_s=RECONNECT_MAX_S,
        )
        self._link.on_connect = self._on_connect
        self._link.on_disconnect = self._on_disconnect
        self._link.on_suback = self._on_subscribe
        self._link.on_message = self._on_message
        self._link.on_puback = self._on_publish
        self._link.on_unsuback = self._on_unsubscribe

    @property
    def broker(self) -> BrokerUrl:
        """The broker's URL, without a password."""
        return self._broker

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def listening(self) -> bool:
        """Connected, and the broker granted every required subscription of this connection."""
        return self._connected.is_set() and self._listening

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    @property
    def unacked(self) -> int:
        """Messages of the current connection received and not yet acknowledged."""
        with self._lock:
            return self._ledger.unacked

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        """Connect, subscribe, and run the link's network thread (which reconnects by itself).

        Messages of a persistent session may be delivered before this returns.

        Raises:
            BrokerError: unreachable, refused, no CONNACK/SUBACK in time, or a required
                subscription was refused.
        """
        try:
            self._link.connect()
        except OSError as exc:
            raise BrokerError(
                f"cannot reach broker {self._broker} ({exc.strerror or exc}); is mosquitto running?"
            ) from None
        self._link.start()
        self._await_subscribed(timeout_s)

    def reconnect(self, timeout_s: float = 15.0) -> None:
        """Drop the connection and let the link connect again (after its reconnect delay).

        The broker then sends again whatever is unacknowledged (MQTT 5 §4.4), and the link
        resends our own unacknowledged publishes: nothing in flight is lost either way.

        Raises:
            BrokerError: the broker did not take us back in ``timeout_s``.
        """
        generation = self.generation
        self._subscribed.clear()
        self._dropping = True
        self._link.drop()
        deadline = time.monotonic() + timeout_s
        while self.generation == generation and time.monotonic() < deadline:
            time.sleep(0.02)
        self._await_subscribed(max(0.0, deadline - time.monotonic()), stop_on_failure=False)

    def _await_subscribed(self, timeout_s: float, *, stop_on_failure: bool = True) -> None:
        """Wait for the SUBACK, or only for the CONNACK when the broker kept our session.

        A kept session holds our subscriptions already, and the broker may resend the whole
        unacknowledged window (and more of the queue) ahead of the SUBACK: more than the
        service's inbox holds while its worker waits here. The network thread then waits for
        room and never reads the SUBACK; ``start()`` gave up and hung in ``loop_stop`` (an ingest
        restarted after kill -9 with a 20,000-frame backlog, bench.peer). So with the session
        present the worker goes to work at once; a refusal of its (unchanged) filters is still
        logged when the SUBACK comes.
        """
        deadline = time.monotonic() + timeout_s
        self._waiting = True
        try:
            while True:
                if self._subscribed.wait(0.02):
                    if not self._refused:
                        return
                    break
                if self._connected.is_set() and self.session_present and not self._refused:
                    return
                if time.monotonic() >= deadline:
                    break
        finally:
            self._waiting = False
        if stop_on_failure:
            self._link.close(disconnect=False)
        why = self._refused or f"no CONNACK/SUBACK within {timeout_s:g} s"
        raise BrokerError(f"broker {self._broker}: {why}")

    def stop(self) -> None:
        """Disconnect; the broker keeps the session and queues for it."""
        self._link.close()

    # --- the service's side ------------------------------------------------------------
    def done(self, deliveries: Iterable[Delivery]) -> int:
        """The service is finished with these messages: acknowledge, in receive order.

        A message's ack waits for every earlier message of its connection; a message of an
        earlier connection is never acknowledged (the broker sent it again).

        Returns:
            how many acknowledgements went out now.
        """
        with self._lock:
            gen = self._generation
            due = self._ledger.finish([d.seq for d in deliveries if d.generation == gen])
            # The link counts accepted connections as this counts generations: one PUBACK
            # write, dropped if the connection that delivered them has gone meanwhile.
            return self._link.ack([mid for mid, qos in due if qos > 0], gen)

    def corked(self) -> contextlib.AbstractContextManager[None]:
        """A block whose publishes and acks go out together when it ends (:meth:`Link.corked`)."""
        return self._link.corked()

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 without waiting (the link queues it while disconnected).

        Returns:
            the packet id :paramref:`on_puback` will be called with.
        """
        return self._link.publish(topic, payload)

    def unsubscribe(self, topic_filter: str) -> int | None:
        """Send an UNSUBSCRIBE; its packet id, or ``None`` when it could not go out."""
        return self._link.unsubscribe(topic_filter)

    # --- the link's network thread: record, hand off, never block -----------------------
    def _on_connect(self, session_present: bool, rc: ReasonCode, props: dict[int, object]) -> None:
        if rc.is_failure:
            self._refused = f"connection refused: {rc}"
            self._subscribed.set()
            return
        with self._lock:
            self._generation += 1
            first = self._generation == 1
            if not first:
                self.reconnects += 1
            self._seq = 0
            self._ledger = AckLedger()
            self._overrun_logged = False
        value = props.get(RECEIVE_MAXIMUM)
        self.broker_receive_maximum = value if isinstance(value, int) else None
        # Our QoS 1 publishes in flight stay within the broker's Receive Maximum (a broker that
        # gets more disconnects us, MQTT 5 §3.3.4).
        limit = min(self._receive_maximum, self.broker_receive_maximum or self._receive_maximum)
        self._link.max_inflight = limit
        self.session_present = session_present
        self._connected_at = time.monotonic()
        self._listening = False
        self._connected.set()
        if self._on_link is not None:
            self._on_link(True)
        self._link.subscribe(self._filters)
        if self._on_state is not None:
            # The broker answers in order: the retained state goes out before this UNSUBACK.
            self._fence = self._link.unsubscribe(PROBE_FILTER)
        self._log_connected(first)

    def _log_connected(self, first: bool) -> None:
        """Say whether the broker kept our session: whatever came while we were away is in it."""
        away = "" if self._lost_at is None else f" after {time.monotonic() - self._lost_at:.1f} s"
        self._lost_at = None
        extra = {"client_id": self.client_id, "session_present": self.session_present}
        if self.session_present:
            log.info(
                "%s to %s as %s%s: session found (session present), the broker sends what it "
                "queued meanwhile",
                "connected" if first else "reconnected",
                self._broker,
                self.client_id,
                away,
                extra=extra,
            )
        elif first:
            log.info(
                "connected to %s as %s: no session at the broker (first start, or it expired "
                "after %g days away); a new one starts",
                self._broker,
                self.client_id,
                SESSION_EXPIRY_S / 86400,
                extra=extra,
            )
        else:
            log.warning(
                "reconnected to %s as %s%s: session lost (the broker restarted without its "
                "persistence file, or the session expired); messages published meanwhile "
                "were not queued for us",
                self._broker,
                self.client_id,
                away,
                extra=extra,
            )

    def _on_subscribe(self, mid: int, codes: list[ReasonCode]) -> None:
        bad = []
        for (f, _, _), c in zip(self._filters, codes, strict=False):
            if c.is_failure and f in self._optional:
                log.warning("optional subscription %s refused (%s); going on without it", f, c)
            elif c.is_failure:
                bad.append(f"{f}: {c}")
        if bad:
            self._refused = f"subscription refused ({'; '.join(bad)})"
            if not self._waiting:  # nobody waits in start() to raise it
                log.error("%s: %s; receiving nothing on them", self.client_id, self._refused)
        self._listening = not bad
        self._subscribed.set()

    def _on_disconnect(self, rc: ReasonCode) -> None:
        self._connected.clear()
        self._listening = False
        now = time.monotonic()
        if self._lost_at is None:
            self._lost_at = now
        since, self._connected_at = self._connected_at, None
        dropping, self._dropping = self._dropping, False
        if rc.is_failure and not dropping and since is not None and now - since < SHORT_LIVED_S:
            self._short_lived += 1
        elif since is not None:
            self._short_lived = 0
        why = None
        if rc.value == SESSION_TAKEN_OVER:
            why = f"the broker handed our session to it: {rc}"
        elif self._short_lived >= TAKEOVER_DROPS:
            why = (
                f"the broker closed our connection {self._short_lived} times in a row within "
                f"{SHORT_LIVED_S:g} s of accepting it"
            )
        if why is not None:
            self.failure = (
                f"client id {self.client_id} is in use by another connection ({why}); "
                "stopping. Give each process its own --client-id"
            )
            self._refused = self._refused or self.failure
            self._subscribed.set()
            # No reconnect: it would throw the other connection out in turn, and so on.
            self._link.close()
        if self._on_link is not None:
            self._on_link(False)
        if rc.is_failure and self.failure is None:
            log.warning("lost broker %s (%s); reconnecting", self._broker, rc)

    def _on_message(self, topic: str, payload: bytes, mid: int, qos: int, retain: bool) -> None:
        now = time.monotonic()
        with self._lock:
            seq, self._seq = self._seq, self._seq + 1
            d = Delivery(topic, payload, mid, qos, self._generation, seq, now, retain)
            self._ledger.register(seq, mid, qos)
            overrun = qos > 0 and self._ledger.unacked > self._receive_maximum
            if (
                overrun
                and not self._overrun_logged
                and self._ledger.unacked_qos1 > (self._receive_maximum)
            ):
                self._overrun_logged = True
                log.warning(
                    "the broker sent %d messages we have not acknowledged, more than the Receive "
                    "Maximum of %d we announced: a protocol error (MQTT 5 §4.9) that Mosquitto "
                    "before 2.0.13 makes with a backlog (eclipse-mosquitto #2306). Every message "
                    "is still processed, but this service's memory now grows with the backlog: "
                    'upgrade the broker (docs/operations.md, "Broker version")',
                    self._ledger.unacked_qos1,
                    self._receive_maximum,
                )
        if not self._deliver(d):
            with self._lock:
                if d.generation == self._generation:
                    self._ledger.forget(seq)

    def _on_publish(self, mid: int, reason: int) -> None:
        if self._on_puback is not None:
            self._on_puback(mid)

    def _on_unsubscribe(self, mid: int) -> None:
        if mid == self._fence and self._on_state is not None:
            self._fence = None
            self._on_state()
        elif self._on_unsuback is not None:
            self._on_unsuback(mid)
