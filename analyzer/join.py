"""The sample join: ToF and spectral frames (and the checkweigher's weight where the line has
one) meet by (line, device_id, sample_id), never by ``ts``.

Pure and clock-free (STYLE.md): every call takes ``now`` (seconds, monotonic). The service
feeds it decoded frames with an opaque handle (what it must acknowledge once the sample's
result is out) and acts on what comes back.

Rules (issue 4, docs/domain.md §7 "Timing"):

- The first part of a sample waits at most ``join_timeout_s`` for the others; then the sample
  is released with the missing part ``None`` (its result says ``missing_*``). A sample is
  complete with its ToF and spectral frames, and its weight when the offer said one is
  expected (the device's config has a ``checkweigher``, issue #17). "Half" below means part.
- A second copy of a half while the sample waits is a duplicate: its handle joins the sample's
  handles (acknowledged with it), the first copy is scored.
- After a sample was released, its key is remembered for ``done_ttl_s`` (at most
  ``done_capacity`` keys): a copy of a half it had is a ``DUPLICATE``, the half it lacked is
  ``LATE``; neither yields a second result.
- At most ``max_pending`` samples wait; beyond that the oldest is released early (``evicted``,
  scored with what it has), so memory stays bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from sqal.wire import SpectralFrame, TofFrame, Weight

H = TypeVar("H")
Key = tuple[str, str, str]
"""(line, device, sample): a device id is unique within its line only."""
TOF, SPEC, WEIGHT = 1, 2, 4
Part = TofFrame | SpectralFrame | Weight


class Outcome(StrEnum):
    """What became of an offered frame."""

    WAITING = "waiting"  # first half of its sample; waits for the other
    JOINED = "joined"  # completed its sample (returned as ready)
    HELD = "held"  # a copy of a half the waiting sample has: acknowledged with the sample
    DUPLICATE = "duplicate"  # a copy of a half of a sample already released
    LATE = "late"  # the missing half of a sample already released
    CONFLICT = "conflict"  # a half the sample has (or had) already, with other content


class Release(StrEnum):
    """Why a sample left the join."""

    JOINED = "joined"
    TIMEOUT = "timeout"
    EVICTED = "evicted"


@dataclass
class _Pending(Generic[H]):
    line: str
    since_s: float
    needed: int = TOF | SPEC
    tof: TofFrame | None = None
    spectral: SpectralFrame | None = None
    weight: Weight | None = None
    handles: list[H] = field(default_factory=list)
    digests: dict[int, int] = field(default_factory=dict)
    """Per half (TOF, SPEC): the digest it was offered with."""


@dataclass(frozen=True)
class Ready(Generic[H]):
    """A sample to score: its frames (any may be None), handles to acknowledge after the
    result is delivered, why it was released, and when its last frame was offered.
    ``weight_expected``: the line weighs its trays, so a missing ``weight`` is a missing part."""

    device_id: str
    sample_id: str
    line: str
    tof: TofFrame | None
    spectral: SpectralFrame | None
    handles: tuple[H, ...]
    release: Release
    last_offer_s: float
    weight: Weight | None = None
    weight_expected: bool = False


@dataclass
class JoinStats:
    """Running counts (the service exports them)."""

    joined: int = 0
    timed_out: int = 0
    evicted: int = 0
    duplicates: int = 0
    late: int = 0
    conflicts: int = 0


class Joiner(Generic[H]):
    """Pairs ToF and spectral frames of a sample (see the module docstring)."""

    def __init__(
        self,
        join_timeout_s: float = 2.0,
        max_pending: int = 50_000,
        done_capacity: int = 200_000,
        done_ttl_s: float = 600.0,
    ) -> None:
        if join_timeout_s < 0 or max_pending < 1 or done_capacity < 1 or done_ttl_s < 0:
            raise ValueError("join limits must be positive")
        self.join_timeout_s = join_timeout_s
        self.max_pending = max_pending
        self.done_capacity = done_capacity
        self.done_ttl_s = done_ttl_s
        self.stats = JoinStats()
        self._pending: OrderedDict[Key, _Pending[H]] = OrderedDict()
        self._done: OrderedDict[Key, tuple[float, int, dict[int, int]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def offer(
        self,
        line: str,
        frame: Part,
        handle: H,
        now: float,
        digest: int | None = None,
        expect_weight: bool = False,
    ) -> tuple[Outcome, list[Ready[H]]]:
        """Offer one decoded frame (or weight).

        Args:
            digest: a fingerprint of the frame's content (the analyzer hashes the payload). A
                copy of a half the sample has, or had, with another digest is ``CONFLICT``: the
                caller dead-letters it instead of taking it for a redelivery.
            expect_weight: the device's line weighs its trays: the sample waits for its weight
                too. The latest offer's word counts (a config may change while a sample waits).

        Returns:
            (what happened to it, samples released by this call: the joined one, or one
            evicted to make room). For ``DUPLICATE``/``LATE`` of an already released sample the
            list is empty and the caller may acknowledge ``handle`` at once.
        """
        key = (line, frame.device_id, frame.sample_id)
        half = _part(frame)
        needed = TOF | SPEC | (WEIGHT if expect_weight else 0)
        self._forget(now)
        done = self._done.get(key)
        if done is not None:
            if done[1] & half:
                if _differs(done[2].get(half), digest):
                    self.stats.conflicts += 1
                    return Outcome.CONFLICT, []
                self.stats.duplicates += 1
                return Outcome.DUPLICATE, []
            self.stats.late += 1
            return Outcome.LATE, []
        pend = self._pending.get(key)
        if pend is None:
            pend = _Pending[H](line=line, since_s=now, needed=needed)
            self._set(pend, frame, half, digest)
            pend.handles.append(handle)
            self._pending[key] = pend
            released = []
            while len(self._pending) > self.max_pending:
                old_key, old = self._pending.popitem(last=False)
                self.stats.evicted += 1
                released.append(self._release(old_key, old, Release.EVICTED, now))
            return Outcome.WAITING, released
        held = _held(pend)
        if held & half and _differs(pend.digests.get(half), digest):
            self.stats.conflicts += 1
            return Outcome.CONFLICT, []
        pend.handles.append(handle)
        if held & half:
            self.stats.duplicates += 1
            return Outcome.HELD, []
        self._set(pend, frame, half, digest)
        pend.needed = needed
        if _held(pend) & needed != needed:
            return Outcome.WAITING, []
        del self._pending[key]
        self.stats.joined += 1
        return Outcome.JOINED, [self._release(key, pend, Release.JOINED, now)]

    def expire(self, now: float, settled: float | None = None) -> list[Ready[H]]:
        """Release every sample that waited ``join_timeout_s`` or longer, oldest first.

        Args:
            now: the clock's time, stamped on what is released.
            settled: count waiting only up to this time (default ``now``): the analyzer passes
                the last moment the broker was seen working (:mod:`analyzer.liveness`).
        """
        until = now if settled is None else min(now, settled)
        out = []
        while self._pending:
            key, pend = next(iter(self._pending.items()))
            if until - pend.since_s < self.join_timeout_s:
                break
            del self._pending[key]
            self.stats.timed_out += 1
            out.append(self._release(key, pend, Release.TIMEOUT, now))
        self._forget(now)
        return out

    def restart_waits(self, now: float) -> None:
        """Every waiting sample waits a whole join timeout again, from ``now``.

        Called when the broker is back after an outage. While it was away the other half could
        not arrive, and the devices reconnect about when we do, each after its own backoff, then
        resend what they could not deliver: counting the time before the outage against the
        timeout released halves as partial results (tests/chaos, "restart mosquitto").
        """
        for pend in self._pending.values():
            pend.since_s = max(pend.since_s, now)

    def next_deadline(self) -> float | None:
        """When the oldest waiting sample times out (same clock as ``now``), or None."""
        if not self._pending:
            return None
        return next(iter(self._pending.values())).since_s + self.join_timeout_s

    def drain(self, now: float) -> list[Ready[H]]:
        """Release everything still waiting (shutdown), as timeouts."""
        out = [self._release(k, p, Release.TIMEOUT, now) for k, p in self._pending.items()]
        self.stats.timed_out += len(out)
        self._pending.clear()
        return out

    @staticmethod
    def _set(pend: _Pending[H], frame: Part, half: int, digest: int | None) -> None:
        if digest is not None:
            pend.digests[half] = digest
        if isinstance(frame, TofFrame):
            pend.tof = frame
        elif isinstance(frame, SpectralFrame):
            pend.spectral = frame
        else:
            pend.weight = frame

    def _release(self, key: Key, pend: _Pending[H], why: Release, now: float) -> Ready[H]:
        self._done[key] = (now, _held(pend), pend.digests)
        self._done.move_to_end(key)
        while len(self._done) > self.done_capacity:
            self._done.popitem(last=False)
        return Ready(
            device_id=key[1],
            sample_id=key[2],
            line=pend.line,
            tof=pend.tof,
            spectral=pend.spectral,
            handles=tuple(pend.handles),
            release=why,
            last_offer_s=now,
            weight=pend.weight,
            weight_expected=bool(pend.needed & WEIGHT),
        )

    def _forget(self, now: float) -> None:
        while self._done:
            key, (when, _, _) = next(iter(self._done.items()))
            if now - when < self.done_ttl_s:
                break
            del self._done[key]


def _part(frame: Part) -> int:
    if isinstance(frame, TofFrame):
        return TOF
    return SPEC if isinstance(frame, SpectralFrame) else WEIGHT


def _held(pend: _Pending[H]) -> int:
    """The parts a waiting sample has, as TOF | SPEC | WEIGHT bits."""
    return (
        (TOF if pend.tof is not None else 0)
        | (SPEC if pend.spectral is not None else 0)
        | (WEIGHT if pend.weight is not None else 0)
    )


def _differs(kept: int | None, offered: int | None) -> bool:
    """Both digests known and unequal: the same half with other content."""
    return kept is not None and offered is not None and kept != offered
