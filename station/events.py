"""``/events``: the live stream a line view listens to (server-sent events, WHATWG HTML §9.2).

The stream opens with a ``snapshot`` of the line (trays, rates, devices, alarms), then carries
``tray``, ``summary`` and ``alarm`` events as the feed hands them over, and a ``tick`` every
second saying whether the broker and the database are reachable. A browser that loses the
stream reconnects by itself (``retry: 1000``) and gets a fresh snapshot: nothing to replay.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from sqal.wire import ID_PATTERN
from station.auth import Role
from station.base import User, requires, station_of
from station.live import Event

router = APIRouter()

KEEPALIVE_S = 15.0
"""A comment line this often keeps proxies from closing a quiet stream."""


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One event in the text/event-stream format (one ``data:`` line: JSON has no newline)."""
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@router.get("/events")
async def events(
    request: Request,
    user: Annotated[User, Depends(requires(Role.VIEWER))],
    line: Annotated[str, Query(pattern=rf"^{ID_PATTERN}$")],
) -> StreamingResponse:
    st = station_of(request)
    queue = st.hub.subscribe(line)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 1000\n\n"
            with st.feed.lock:
                snap = st.feed.board.snapshot(line, datetime.now(UTC))
            yield sse("snapshot", snap)
            yield sse("tick", st.feed.health())
            while True:
                if queue.empty() and not st.hub.subscribed(queue):
                    return  # dropped for falling behind: the browser reconnects
                try:
                    ev: Event | None = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if ev is None:  # the station is stopping
                    return
                yield sse(ev.kind, ev.data)
        finally:
            st.hub.unsubscribe(queue)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
