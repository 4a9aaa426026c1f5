"""Join timeouts that end only once the broker has shown it works past them.

A frozen broker (SIGSTOP, a stalled disk, a paused VM) keeps its TCP connections open; a client
notices only when keep-alive runs out, a minute later. Meanwhile the other half of a waiting
sample may sit inside the broker, and a wall-clock join timeout would release the first half
as a partial result although both frames exist (tests/chaos, "SIGSTOP mosquitto": 3 partial
results of 240 before this module).

So a half times out only once the broker has *shown* that it is working past the deadline:

- **Evidence** is anything that arrives from the broker (a message, a PUBACK, the answer to a
  probe), stamped by the link's network thread and seen by the worker in arrival order, so a frame
  still in the worker's inbox is never overtaken by later evidence.
- A **stall** is a gap between pieces of evidence longer than :meth:`BrokerLiveness.stall_s`
  (the keep-alive silence plus the larger of ``stall_gap_s`` and four usual probe round trips,
  so a slow but working broker is no stall). The broker's working period restarts at the first
  evidence after it: a broker that wakes up delivers, in its first moments, the frames it held
  when it froze.
- **Settled** time is ``last evidence − grace_s``, defined once the current working period is
  ``grace_s`` old: everything the broker held at that moment has had ``grace_s`` to reach us.
  The joiner expires samples against it.
- While a half waits and the broker has been silent for ``keepalive_s``, and when a half is
  due with no evidence past its deadline, the worker sends a **probe**: an
  UNSUBSCRIBE of a filter nobody uses (:data:`PROBE_FILTER`). The broker answers UNSUBACK (MQTT 5
  reason 0x11, "no subscription existed"); no message is published, no ACL rule is needed, and
  no other client sees it. One probe is outstanding at a time, at most one per ``probe_every_s``.

A partial result therefore costs ``join_timeout_s + grace_s`` (plus a probe's round trip on a
quiet line) instead of ``join_timeout_s``; joined samples are released as before, at once. The
service caps the wait (``analyzer.service.MAX_HOLD_S``) for a broker that never settles.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqal.wire import PROBE_FILTER

__all__ = ["PROBE_FILTER", "BrokerLiveness"]


@dataclass
class BrokerLiveness:
    """Evidence that the broker works, and the settled time derived from it (monotonic clock).

    Attributes:
        stall_gap_s: silence beyond the expected one that makes a stall (see :meth:`stall_s`).
        grace_s: how long after waking up the broker gets to deliver what it held.
        keepalive_s: silence, while a half waits, after which a probe goes out.
        probe_every_s: the least time between two probes.
        rtt_s: the probes' usual round trip (moving average of those that were not stalls).
    """

    stall_gap_s: float = 0.5
    grace_s: float = 0.25
    keepalive_s: float = 0.2
    probe_every_s: float = 0.1
    rtt_s: float | None = None
    last_s: float | None = None
    since_s: float | None = None
    probe_mid: int | None = None
    probe_sent_s: float = float("-inf")
    outstanding: tuple[int, float] | None = None
    """(mid, sent_s) of the unanswered probe, as one value for readers in other threads."""
    heard_s: float = float("-inf")
    """When anything last *arrived* from the broker (written by the link's thread). Under a backlog
    the worker sees evidence seconds after it arrived: probing then would only queue the answer
    behind the backlog, so probes are paced on arrivals, and settling on what was processed."""

    def stall_s(self) -> float:
        """A gap longer than this is a stall: the keep-alive silence, plus the larger of
        ``stall_gap_s`` and four usual round trips (a slow but working broker is no stall)."""
        return self.keepalive_s + max(self.stall_gap_s, 4.0 * (self.rtt_s or 0.0))

    def saw(self, t: float) -> float:
        """Record evidence stamped ``t``; returns the gap it closed (0.0 for the first one)."""
        if self.last_s is None:
            self.last_s = self.since_s = t
            return 0.0
        gap = t - self.last_s
        if gap > self.stall_s():
            self.since_s = t
        if t > self.last_s:
            self.last_s = t
        return max(gap, 0.0)

    def settled(self) -> float | None:
        """The latest time whose frames have surely reached us, or None while the broker has
        not been seen working for ``grace_s`` since its last stall."""
        if self.last_s is None or self.since_s is None:
            return None
        if self.last_s - self.since_s < self.grace_s:
            return None
        return self.last_s - self.grace_s

    def heard(self, t: float, mid: int | None = None) -> None:
        """Something arrived at ``t`` (the link's thread); ``mid``: an UNSUBACK's packet id."""
        self.heard_s = t
        probe = self.outstanding
        if mid is not None and probe is not None and probe[0] == mid:
            self.outstanding = None  # answered, though the worker may not know it yet

    def answered(self, mid: int, t: float) -> bool:
        """Whether ``mid`` is the outstanding probe, answered at ``t`` (then it is no longer
        outstanding, and its round trip feeds :attr:`rtt_s` unless it took a stall's time).
        The caller records ``t`` as evidence with :meth:`saw`, like any other."""
        if mid != self.probe_mid:
            return False
        self.probe_mid = None
        self.outstanding = None
        rtt = t - self.probe_sent_s
        if rtt <= self.stall_s():
            self.rtt_s = rtt if self.rtt_s is None else self.rtt_s + 0.2 * (rtt - self.rtt_s)
        return True

    def reset_probe(self) -> None:
        """Forget the outstanding probe (the connection it went out on is gone)."""
        self.probe_mid = None
        self.outstanding = None

    def next_probe_s(self, due_s: float | None) -> float | None:
        """When the next probe should go out, or None (nothing waits, or one is outstanding).

        While a half waits (``due_s`` is not None): a keep-alive probe once the broker has been
        silent for ``keepalive_s``, so that a longer silence is the broker's and not the line's;
        and, once the half is due, probes until evidence past ``due_s`` settles it.
        """
        if due_s is None or self.probe_mid is not None:
            return None
        earliest = self.probe_sent_s + self.probe_every_s
        heard = self.heard_s if self.last_s is None else max(self.last_s, self.heard_s)
        at = heard + self.keepalive_s
        # The evidence that settles the half: from ``due_s`` on, in a working period at least
        # ``grace_s`` old. Chase it only if it has not arrived (it may wait in the inbox).
        need = due_s if self.since_s is None else max(due_s, self.since_s + self.grace_s)
        if heard < need:
            at = min(at, need)
        return max(earliest, at)

    def probed(self, mid: int | None, now: float) -> None:
        """A probe went out at ``now`` (``mid`` None: it could not be sent; try again later)."""
        self.probe_mid = mid
        self.probe_sent_s = now
        self.outstanding = None if mid is None else (mid, now)
