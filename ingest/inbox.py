"""The hand-off between the link's network thread and the ingest worker, cut into batches.

The link's ``on_message`` puts each message here (:class:`sqal.subscriber.Handoff`): when the inbox
is full it waits for the worker, so the broker stops sending instead of anything being dropped.
It holds the inflight window, the most messages the broker should have unacknowledged with us.
"""

from __future__ import annotations

import queue
import time

from ingest.batching import batch_due
from sqal.subscriber import Delivery, Handoff


class Inbox(Handoff[Delivery]):
    """The ingest worker's inbox: a :class:`~sqal.subscriber.Handoff` that hands out batches."""

    def take(self, batch_rows: int, flush_s: float, poll_s: float = 0.25) -> list[Delivery]:
        """The next batch, cut at ``batch_rows`` messages or when its oldest is ``flush_s`` old.

        Returns an empty list after ``poll_s`` without a message, so the caller can check
        whether to stop.
        """
        try:
            first = self.get(poll_s)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < batch_rows:
            # Whatever is already waiting joins the batch, however old the first message is:
            # after an outage the inbox is full of old messages and must leave in full batches.
            try:
                batch.append(self.get_nowait())
                continue
            except queue.Empty:
                pass
            now = time.monotonic()
            if batch_due(len(batch), now - first.arrived_s, batch_rows, flush_s):
                break
            try:
                batch.append(self.get(first.arrived_s + flush_s - now))
            except queue.Empty:
                break
        return batch
