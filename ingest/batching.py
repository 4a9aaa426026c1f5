"""Pure decisions of the ingest loop: batch cuts, retry backoff, log throttling, limits.

No clock is read here: callers pass ``now`` (monotonic seconds), so the tests need no sleeping
(as psycopg_pool's ``AttemptWithBackoff`` is given ``now``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqal.errors import ConfigError
from sqal.mqtt import INFLIGHT_WINDOW

DEFAULT_BATCH_ROWS = INFLIGHT_WINDOW // 2
"""Half of the inflight window (:data:`sqal.mqtt.INFLIGHT_WINDOW`, ingest's Receive Maximum):
the next batch fills while this one commits. Ingest acks only after commit, so a batch can
never hold more messages than the window."""

DEFAULT_FLUSH_MS = 200
"""A batch is cut at this age even if not full, bounding the store latency at low rates."""


def check_batch_fits(
    batch_rows: int, receive_maximum: int, broker_maximum: int | None = None
) -> None:
    """Fail fast when a batch could never fill because the broker stops sending first.

    Args:
        batch_rows: ``--batch-rows``.
        receive_maximum: the Receive Maximum ingest announces.
        broker_maximum: the receive maximum in the broker's CONNACK (Mosquitto sends its
            ``max_inflight_messages`` there), ``None`` when it announced none.

    Raises:
        ConfigError: one line naming the flag and the limit.
    """
    if batch_rows < 1:
        raise ConfigError(f"--batch-rows {batch_rows}: must be at least 1")
    if batch_rows > receive_maximum:
        raise ConfigError(
            f"--batch-rows {batch_rows} exceeds ingest's receive maximum {receive_maximum}: "
            "the broker stops sending before a batch fills"
        )
    if broker_maximum is not None and batch_rows > broker_maximum:
        raise ConfigError(
            f"--batch-rows {batch_rows} exceeds the broker's max_inflight_messages "
            f"{broker_maximum}: lower --batch-rows or use the settings in mosquitto/"
        )


def batch_due(n_rows: int, oldest_age_s: float, batch_rows: int, flush_s: float) -> bool:
    """True when a batch of ``n_rows`` whose oldest message waited ``oldest_age_s`` is cut."""
    return n_rows > 0 and (n_rows >= batch_rows or oldest_age_s >= flush_s)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff: ``base_s · factor^attempt``, at most ``cap_s``.

    Attempt 0 is the first retry after a failure.
    """

    base_s: float = 0.2
    factor: float = 2.0
    cap_s: float = 5.0

    def delay_s(self, attempt: int) -> float:
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # min() before the power would overflow for huge attempts; cap the exponent instead.
        return min(self.cap_s, self.base_s * self.factor ** min(attempt, 64))

    def retry_at(self, attempt: int, now: float) -> float:
        """When the retry numbered ``attempt`` is due, given the failure happened at ``now``."""
        return now + self.delay_s(attempt)


def log_due(last_logged: float | None, now: float, every_s: float) -> bool:
    """True when a repeating condition should be logged again (at most once per ``every_s``)."""
    return last_logged is None or now - last_logged >= every_s
