"""The bounded hand-off between paho's network thread and the ingest worker.

paho's ``on_message`` only wraps the message and ``put_nowait``s it here (STYLE.md, "Async,
threads and acks"): it must never block, or keep-alives stop. The bound cannot be reached in
normal operation: the broker keeps about the Receive Maximum unacknowledged messages out to
us, and the queue holds several times that (old copies of a broken connection plus their
redeliveries). If it is reached anyway the message is dropped unacknowledged, counted, and
the broker redelivers it after the next reconnect.
"""

from __future__ import annotations

import queue
import time

from ingest.batching import batch_due
from sqal.subscriber import Delivery


class Inbox:
    """A bounded FIFO of :class:`Delivery` that hands out batches."""

    def __init__(self, maxsize: int) -> None:
        self._q: queue.Queue[Delivery] = queue.Queue(maxsize)
        self.dropped = 0

    def offer(self, item: Delivery) -> bool:
        """Enqueue without blocking; False (and counted) when full."""
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def depth(self) -> int:
        return self._q.qsize()

    def take(self, batch_rows: int, flush_s: float, poll_s: float = 0.25) -> list[Delivery]:
        """The next batch, cut at ``batch_rows`` messages or when its oldest is ``flush_s`` old.

        Returns an empty list after ``poll_s`` without a message, so the caller can check
        whether to stop.
        """
        try:
            first = self._q.get(timeout=poll_s)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < batch_rows:
            # Whatever is already waiting joins the batch, however old the first message is:
            # after an outage the inbox is full of old messages and must leave in full batches.
            try:
                batch.append(self._q.get_nowait())
                continue
            except queue.Empty:
                pass
            now = time.monotonic()
            if batch_due(len(batch), now - first.arrived_s, batch_rows, flush_s):
                break
            try:
                batch.append(self._q.get(timeout=first.arrived_s + flush_s - now))
            except queue.Empty:
                break
        return batch
