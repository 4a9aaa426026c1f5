"""``sqal dead redrive``: publish dead letters' original payloads again, once fixed.

A message is dead-lettered for what it is (a bad payload) or for what the pipeline lacked when
it came (a profile not yet installed, a ``--ts-window-hours`` too narrow for a device's clock).
After the fix, redriving republishes the stored payload on its original topic, QoS 1, and waits
for the broker's PUBACK before marking the row (``redriven_at``, ``redrive_count``). Every stage
then sees it as new: ingest stores it once (the unique key makes a second copy insert nothing,
docs/contract.md), the analyzer scores it.

Ask: *if the process dies after the PUBACK and before the mark?* The row is redriven again next
time, and that second copy is stored once too: nothing is lost or doubled.

Never retained: a config or status dead letter republished retained would replace what the
device (or an operator) has retained since. A stage that needs the message gets it live; the
retained copy on the broker stays the newest one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import paho.mqtt.client as paho

from sqal.errors import BrokerError
from sqal.mqtt import client_id, paho_client
from sqal.wire import DeadReason, is_dead_letter_topic, topic_name_problem
from storage.deadletters import DeadLetterRow

PUBACK_WAIT_S = 10.0
"""How long one republished message may wait for its PUBACK before the redrive stops."""


def unredrivable(row: DeadLetterRow) -> str | None:
    """Why ``row`` cannot be republished as it is, or ``None``."""
    problem = topic_name_problem(row.topic)
    if problem is not None:
        return f"its topic is no topic name ({problem})"
    if row.topic.startswith("$"):
        return "its topic is a broker topic ($...)"
    if is_dead_letter_topic(row.topic):
        return "it came on a dead-letter topic (a dead letter that did not decode)"
    if row.reason == DeadReason.TOO_LARGE.value:
        # Over the contract's 64 KiB it would be refused again, and the analyzer's copy of a
        # message over 128 KiB is cut (sqal.wire.codec.MAX_DEAD_PAYLOAD_BYTES).
        return "it is over the payload size limit and would be refused again"
    return None


@dataclass
class RedriveReport:
    """Rows republished (acknowledged and marked) and rows left, with the reason."""

    redriven: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)


class Republisher:
    """A connected QoS 1 publisher that waits for each PUBACK and checks its reason code.

    Raises:
        BrokerError: unreachable, the connection refused, a PUBACK with a failure reason code
            (0x87 not authorised, 0x97 quota exceeded, ...) or none within
            :data:`PUBACK_WAIT_S`.
    """

    def __init__(self, broker: str) -> None:
        self._acks: dict[int, object] = {}
        self._cond = threading.Condition()
        self._client = paho_client(
            broker, client_id("sqal-redrive"), persistent=False, on_publish=self._on_publish
        )

    def _on_publish(
        self, client: paho.Client, userdata: object, mid: int, rc: object, props: object
    ) -> None:
        with self._cond:
            self._acks[mid] = rc
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1, not retained; return once the broker acknowledged it."""
        info = self._client.publish(topic, payload, qos=1, retain=False)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise BrokerError(f"cannot publish on {topic}: {paho.error_string(info.rc)}")
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self._acks, PUBACK_WAIT_S):
                raise BrokerError(f"no PUBACK for {topic} within {PUBACK_WAIT_S:g} s")
            rc = self._acks.pop(info.mid)
        if getattr(rc, "is_failure", False):
            raise BrokerError(
                f"the broker refused the publish on {topic}: {rc} "
                f"(0x{getattr(rc, 'value', 0):02x})",
                getattr(rc, "value", None),
            )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def plan(
    rows: Iterable[DeadLetterRow], *, force: bool = False
) -> tuple[list[DeadLetterRow], RedriveReport]:
    """The rows to send, and a report holding the rows skipped with the reason (none sent yet)."""
    report = RedriveReport()
    todo = []
    for row in rows:
        why = unredrivable(row)
        if why is None and row.redriven_at is not None and not force:
            why = f"already redriven at {row.redriven_at.isoformat()} (--force sends it again)"
        if why is not None:
            report.skipped.append((row.id, why))
        else:
            todo.append(row)
    return todo, report


def redrive(
    rows: Iterable[DeadLetterRow],
    broker: str,
    mark: Callable[[int], None],
    *,
    force: bool = False,
) -> RedriveReport:
    """Republish each row's payload on its topic in order, marking each once acknowledged.

    Args:
        rows: rows with their payloads, oldest first.
        mark: records a row as redriven (called after its PUBACK).
        force: send rows already redriven again.

    Raises:
        BrokerError: as :class:`Republisher`; rows before the failure stay redriven and marked.
    """
    todo, report = plan(rows, force=force)
    if not todo:
        return report
    pub = Republisher(broker)
    try:
        for row in todo:
            assert row.payload is not None, "redrive reads rows with their payloads"
            pub.publish(row.topic, row.payload)
            mark(row.id)
            report.redriven.append(row.id)
    finally:
        pub.close()
    return report
