"""The one subscriber (sqal.subscriber) on a real broker: ordered acks, generations, sessions."""

from __future__ import annotations

import queue
import threading
import time
import uuid

import pytest

from embedded import Mosquitto, mosquitto_version
from sqal.mqtt import INFLIGHT_WINDOW, client_id, paho_client
from sqal.subscriber import AckLedger, Delivery, Handoff, Subscriber
from tests.test_ingest_frames import wait_until

TIMEOUT_S = 10.0


def test_the_ledger_releases_acks_in_arrival_order() -> None:
    ledger = AckLedger()
    for seq, mid in enumerate((11, 12, 13, 14)):
        ledger.register(seq, mid, 1)
    assert ledger.finish([2, 1]) == []  # 0 is still open: nothing may overtake it
    assert ledger.unacked == 4
    assert ledger.finish([0]) == [(11, 1), (12, 1), (13, 1)]
    ledger.forget(3)  # refused by the service: never acked, blocks nothing
    assert ledger.unacked == 0
    ledger.register(4, 15, 1)
    assert ledger.finish([4]) == [(15, 1)]


def test_a_unit_is_never_split_by_the_ack_cut() -> None:
    """The halves of a sample (1 and 4) are acked together, never 1 alone while 4 waits for 2."""
    ledger = AckLedger()
    for seq in range(6):
        ledger.register(seq, 10 + seq, 1)
    assert ledger.finish([0]) == [(10, 1)]
    assert ledger.finish([1, 4]) == []  # 1 is ackable, 4 is not (2 and 3 are open): neither
    assert ledger.finish([3]) == []
    assert ledger.finish([2, 5]) == [(11, 1), (12, 1), (13, 1), (14, 1), (15, 1)]
    assert ledger.unacked == 0


def test_units_that_overlap_the_cut_in_a_chain_all_wait() -> None:
    ledger = AckLedger()
    for seq in range(6):
        ledger.register(seq, 10 + seq, 1)
    assert ledger.finish([0, 2]) == []  # 1 open
    assert ledger.finish([1, 5]) == []  # 0..2 done, but 1's unit reaches 5 (3, 4 open)
    assert ledger.finish([3]) == []
    assert ledger.finish([4]) == [(10 + s, 1) for s in range(6)]


def test_a_full_handoff_holds_messages_back_until_the_worker_takes_one() -> None:
    box: Handoff[int] = Handoff(2)
    assert box.put(1)
    assert box.put(2)
    taken = threading.Event()

    def worker() -> None:
        time.sleep(0.3)
        assert box.get(1) == 1
        taken.set()

    threading.Thread(target=worker).start()
    assert box.put(3)  # waits for the worker's get: never dropped
    assert taken.is_set()
    assert box.waited_s >= 0.2
    assert [box.get(1), box.get(1)] == [2, 3]


def test_signals_never_wait_and_keep_their_order_among_messages() -> None:
    # A PUBACK that waited for room would deadlock paho (on_publish runs under the lock
    # publish() takes) against a worker publishing a result.
    box: Handoff[str] = Handoff(1)
    assert box.put("frame 1")
    box.signal("puback 1")
    box.signal("puback 2")
    assert box.depth() == 3
    assert [box.get_nowait() for _ in range(3)] == ["frame 1", "puback 1", "puback 2"]
    with pytest.raises(queue.Empty):
        box.get_nowait()


def test_a_closed_handoff_lets_a_waiting_put_go_without_the_message() -> None:
    box: Handoff[int] = Handoff(1)
    assert box.put(1)
    threading.Timer(0.2, box.close).start()
    assert box.put(2) is False  # shutting down: it stays unacknowledged at the broker
    assert box.get_nowait() == 1
    with pytest.raises(queue.Empty):
        box.get_nowait()


class Sink:
    """Collects deliveries; refuses them while ``accepting`` is False."""

    def __init__(self) -> None:
        self.got: queue.Queue[Delivery] = queue.Queue()
        self.accepting = True

    def __call__(self, d: Delivery) -> bool:
        if self.accepting:
            self.got.put(d)
        return self.accepting

    def take(self, n: int) -> list[Delivery]:
        return [self.got.get(timeout=TIMEOUT_S) for _ in range(n)]

    def nothing_more(self, wait_s: float = 0.5) -> bool:
        try:
            self.got.get(timeout=wait_s)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def topic() -> str:
    return f"sqal/v1/T{uuid.uuid4().hex[:8]}/dev/tof"


def publish(broker: Mosquitto, topic: str, payloads: list[bytes]) -> None:
    pub = paho_client(broker.url, client_id("test-pub"), persistent=False)
    try:
        for p in payloads:
            pub.publish(topic, p, qos=1).wait_for_publish(TIMEOUT_S)
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_messages_not_done_are_sent_again_and_done_ones_are_not(
    broker: Mosquitto, topic: str
) -> None:
    cid = f"sub-{uuid.uuid4().hex[:8]}"
    sink = Sink()
    sub = Subscriber(broker.url, cid, [topic], sink)
    sub.start()
    assert sub.broker_receive_maximum == INFLIGHT_WINDOW
    publish(broker, topic, [b"0", b"1", b"2", b"3"])
    first = sink.take(4)
    assert [d.payload for d in first] == [b"0", b"1", b"2", b"3"]
    assert sub.done([first[2]]) == 0  # 0 and 1 are open: 2's ack waits
    assert sub.done([first[0]]) == 1
    assert sub.unacked == 3
    sub.stop()  # 1, 2 and 3 were never acknowledged

    again = Sink()
    sub2 = Subscriber(broker.url, cid, [topic], again)
    sub2.start()
    try:
        assert sub2.session_present
        back = again.take(3)
        assert sorted(d.payload for d in back) == [b"1", b"2", b"3"]
        assert {d.generation for d in back} == {1}
        sub2.done(back)
        assert sub2.unacked == 0
        assert again.nothing_more()
    finally:
        sub2.stop()


def test_a_refused_delivery_stays_at_the_broker_and_blocks_no_ack(
    broker: Mosquitto, topic: str
) -> None:
    sink = Sink()
    sub = Subscriber(broker.url, f"sub-{uuid.uuid4().hex[:8]}", [topic], sink)
    sub.start()
    try:
        sink.accepting = False
        publish(broker, topic, [b"refused"])
        sink.accepting = True
        publish(broker, topic, [b"taken"])
        (taken,) = sink.take(1)
        assert taken.payload == b"taken"
        assert sub.done([taken]) == 1  # the refused one before it does not hold this ack
        sub.reconnect()  # a new connection: the broker sends the unacknowledged one again
        (back,) = sink.take(1)
        assert back.payload == b"refused"
        assert back.generation == taken.generation + 1
    finally:
        sub.stop()


def test_a_lost_session_is_subscribed_again(broker: Mosquitto, topic: str) -> None:
    """While the subscriber is away, another login with its client id and a clean start
    deletes its session; the subscriber reconnects, finds no session, subscribes again and goes
    on receiving. (A login while it is connected takes the session over: Mosquitto ≥ 2.0.15
    says so with 0x8E and the service stops, tests/test_service_logs.py.)"""
    cid = f"sub-{uuid.uuid4().hex[:8]}"
    sink = Sink()
    sub = Subscriber(broker.url, cid, [topic], sink)
    sub.start()
    try:
        first_gen = sub.generation
        sub._link.drop()  # away: it reconnects after its 1 s delay
        assert wait_until(lambda: not sub.connected, TIMEOUT_S)
        intruder = paho_client(broker.url, cid, persistent=False)
        intruder.disconnect()
        intruder.loop_stop()
        assert wait_until(lambda: sub.connected and sub.generation > first_gen, TIMEOUT_S)
        assert sub.session_present is False
        publish(broker, topic, [b"after"])
        (d,) = sink.take(1)
        assert d.payload == b"after"
        assert d.generation == sub.generation
    finally:
        sub.stop()


def test_an_ack_never_goes_to_a_later_connection(broker: Mosquitto, topic: str) -> None:
    sink = Sink()
    sub = Subscriber(broker.url, f"sub-{uuid.uuid4().hex[:8]}", [topic], sink)
    sub.start()
    try:
        publish(broker, topic, [b"x"])
        (old,) = sink.take(1)
        sub.reconnect()
        (again,) = sink.take(1)  # unacknowledged: sent again on the new connection
        assert again.payload == b"x"
        assert sub.done([old]) == 0  # the old connection's copy: no ack
        assert sub.done([again]) == 1
    finally:
        sub.stop()


def test_a_restart_with_a_full_window_waiting_comes_up_and_drains(
    broker: Mosquitto, topic: str
) -> None:
    """#21: after a kill -9 with the window full of unacknowledged messages and more queued,
    the broker resends ahead of the SUBACK more than the inbox holds; start() waited for the
    SUBACK that paho's blocked thread never read, then hung in loop_stop. With the session
    present it returns at once, and the worker drains the window."""
    cid = f"sub-{uuid.uuid4().hex[:8]}"
    small = 50
    sink = Sink()
    first = Subscriber(broker.url, cid, [topic], sink, receive_maximum=small)
    first.start()
    publish(broker, topic, [str(i).encode() for i in range(3 * small)])
    sink.take(small)  # the window is full: nothing acknowledged, the rest queued
    first._link.close(disconnect=False)  # a kill -9: the connection drops without a DISCONNECT

    box: Handoff[Delivery] = Handoff(small // 2, "inbox")  # less than the broker resends
    again = Subscriber(broker.url, cid, [topic], box.put, receive_maximum=small)
    started = threading.Event()
    failed: list[BaseException] = []

    def start() -> None:
        try:
            again.start(timeout_s=5.0)
            started.set()
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            failed.append(exc)

    threading.Thread(target=start, daemon=True).start()
    assert wait_until(lambda: started.is_set() or bool(failed), TIMEOUT_S), "start() hung"
    assert not failed, failed
    try:
        seen: set[bytes] = set()
        deadline = time.monotonic() + 3 * TIMEOUT_S
        while len(seen) < 3 * small and time.monotonic() < deadline:
            try:
                d = box.get(0.5)
            except queue.Empty:
                continue
            seen.add(d.payload)
            again.done([d])
        assert len(seen) == 3 * small
    finally:
        box.close()
        again.stop()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(".")[:3] if x.isdigit())


@pytest.mark.skipif(
    _version(mosquitto_version()) < (2, 0, 13),
    reason=f"Mosquitto {mosquitto_version()} < 2.0.13 overruns the Receive Maximum "
    "(eclipse-mosquitto #2306); make setup installs 2.0.21 from bookworm-backports, which this "
    "machine's mirror did not serve (docs/operations.md, 'Broker version')",
)
def test_a_backlog_drained_with_acks_stays_within_the_receive_maximum(
    broker: Mosquitto, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Mosquitto before 2.0.13 sent a client's whole queue once it acked one message while
    others were queued (eclipse-mosquitto #2306): the analyzer then held every frame of a
    backlog until its results' PUBACKs came through. The set-up installs a broker that keeps
    to the window; this fails on a broker that claims to and does not."""
    cid = f"sub-{uuid.uuid4().hex[:8]}"
    small = 20
    sink = Sink()
    first = Subscriber(broker.url, cid, [topic], sink, receive_maximum=small)
    first.start()
    first.stop()
    publish(broker, topic, [str(i).encode() for i in range(10 * small)])  # queued while away
    again = Subscriber(broker.url, cid, [topic], sink, receive_maximum=small)
    again.start()
    try:
        most = 0
        for _ in range(10 * small):
            d = sink.got.get(timeout=TIMEOUT_S)
            most = max(most, again.unacked)
            again.done([d])  # one ack at a time: each lets the broker send one more
        assert most <= small
        assert "Receive Maximum" not in caplog.text
    finally:
        again.stop()


def test_a_broker_overrunning_the_receive_maximum_is_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What an old Mosquitto does, as the link's thread would report it: one message more than
    # the window, unacknowledged. The service takes it (it cannot read past it otherwise).
    sink = Sink()
    sub = Subscriber("mqtt://127.0.0.1:1", "overrun", ["t/#"], sink, receive_maximum=3)
    for mid in range(1, 7):
        sub._on_message("t/x", b"x", mid, 1, False)
    assert sink.got.qsize() == 6
    warnings = [r for r in caplog.records if "Receive Maximum of 3" in r.getMessage()]
    assert len(warnings) == 1
    assert "sent 4 messages" in warnings[0].getMessage()
