"""In-order acknowledgements for QoS 1 messages received with paho's ``manual_ack``.

MQTT 5 §4.6 ("Message ordering"): a receiver MUST send PUBACKs in the order the PUBLISH
packets arrived. The analyzer finishes messages out of order (a ToF frame waits up to
``join_timeout`` for its spectral half while later samples complete), so this ledger holds each
message's acknowledgement until every earlier message is finished too, then releases the done
prefix. Pure bookkeeping; the service sends what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AckLedger:
    """Arrival-ordered messages awaiting their acknowledgement.

    Each message is registered with its arrival number (0, 1, 2, … in receive order), packet id
    and QoS; :meth:`finish` marks it done and returns the (mid, qos) pairs that may be acked now.
    """

    _next: int = 0
    _entries: dict[int, tuple[int, int]] = field(default_factory=dict)
    _finished: set[int] = field(default_factory=set)

    def register(self, seq: int, mid: int, qos: int) -> None:
        self._entries[seq] = (mid, qos)

    def finish(self, seqs: list[int] | tuple[int, ...]) -> list[tuple[int, int]]:
        """Mark messages done; return the acks now due, in arrival order."""
        self._finished.update(seqs)
        due = []
        while self._next in self._finished:
            self._finished.discard(self._next)
            entry = self._entries.pop(self._next, None)
            if entry is not None:
                due.append(entry)
            self._next += 1
        return due

    @property
    def unacked(self) -> int:
        """Messages registered and not yet acknowledged (the broker's inflight window use)."""
        return len(self._entries)

    @property
    def oldest(self) -> int | None:
        """Arrival number of the first message not yet acknowledged."""
        return self._next if self._entries else None
