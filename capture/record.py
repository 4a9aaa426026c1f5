"""``sqal record``: subscribe to topic filters and append every message to a capture file."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from capture.fileformat import CaptureWriter, Record
from sqal import __version__
from sqal.errors import BrokerError, ConfigError
from sqal.mqtt import aiomqtt_client, client_id
from sqal.settings import parse_broker_url
from sqal.wire import check_topic_filter

FLUSH_EVERY_S = 0.5
"""Records reach the OS at least this often, so a crash loses at most this much traffic."""


@dataclass
class RecordStats:
    """What a recording wrote."""

    messages: int = 0
    bytes: int = 0
    files: list[Path] = field(default_factory=list)
    elapsed_s: float = 0.0
    stopped_by: str = "end"


def rotated_path(out: Path, index: int) -> Path:
    """``shift.sqalcap`` → ``shift.0001.sqalcap`` (the index counts from 1)."""
    suffixes = "".join(out.suffixes)
    stem = out.name[: len(out.name) - len(suffixes)] if suffixes else out.name
    return out.with_name(f"{stem}.{index:04d}{suffixes}")


def properties_dict(props: Any) -> dict[str, Any]:
    """MQTT 5 properties of a received message as JSON-able values (bytes as hex)."""
    if props is None:
        return {}
    doc: dict[str, Any] = props.json()
    doc.pop("SubscriptionIdentifier", None)  # the recorder's own subscription, not the sender's
    doc.pop("TopicAlias", None)
    return doc


class Recorder:
    """Writes records, rotating files past ``rotate_bytes``."""

    def __init__(
        self, out: Path, meta: dict[str, Any], compress: bool, rotate_bytes: int | None
    ) -> None:
        self.out, self.meta, self.compress, self.rotate_bytes = out, meta, compress, rotate_bytes
        self.start_mono = time.monotonic()
        self.start_wall = time.time()
        self.stats = RecordStats()
        self._writer = self._open(1)

    def _open(self, index: int) -> CaptureWriter:
        path = rotated_path(self.out, index) if self.rotate_bytes else self.out
        writer = CaptureWriter(path, self.meta, self.start_wall, compress=self.compress)
        self.stats.files.append(path)
        return writer

    def add(self, topic: str, payload: bytes, qos: int, retain: bool, props: Any) -> None:
        now_mono, now_wall = time.monotonic(), time.time()
        rec = Record(now_mono - self.start_mono, now_wall, topic, payload, qos, retain,
                     properties_dict(props))  # fmt: skip
        self._writer.write(rec)
        self.stats.messages += 1
        self.stats.bytes += len(payload)
        if self.rotate_bytes and self._writer.size_bytes() >= self.rotate_bytes:
            self._writer.close()
            self._writer = self._open(len(self.stats.files) + 1)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
        self.stats.elapsed_s = time.monotonic() - self.start_mono


MAX_ROTATE_MB = 1024 * 1024
"""Largest ``--rotate-mb``: 1 TiB per file (``1e308`` overflowed the byte count)."""


async def record(
    broker: str,
    topics: list[str],
    out: Path,
    *,
    duration_s: float | None = None,
    count: int | None = None,
    rotate_mb: float | None = None,
    compress: bool = False,
    on_progress: Callable[[RecordStats], None] | None = None,
    ready: asyncio.Event | None = None,
) -> RecordStats:
    """Record until ``duration_s`` passed, ``count`` messages came, or SIGINT/SIGTERM.

    Raises:
        ConfigError: no topic filter, or one that is not a valid MQTT filter.
        BrokerError: the broker is unreachable or refused.
        CaptureError: the output cannot be created.
    """
    if not topics:
        raise ConfigError("--topic: give at least one topic filter")
    for flt in topics:
        check_topic_filter(flt)  # paho refuses a bad one with a bare ValueError, after connecting
    if rotate_mb is not None and not (math.isfinite(rotate_mb) and 0 < rotate_mb <= MAX_ROTATE_MB):
        raise ConfigError(
            f"--rotate-mb {rotate_mb!r}: give more than 0 and at most {MAX_ROTATE_MB}"
        )
    url = parse_broker_url(broker)
    meta = {"broker": str(url), "topics": topics, "sqal": __version__,
            "host": socket.gethostname(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                     time.gmtime())}  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    rotate = int(rotate_mb * 1024 * 1024) if rotate_mb else None
    rec: Recorder | None = None
    try:
        async with aiomqtt_client(url, client_id("sqal-record")) as client:
            for flt in topics:
                await client.subscribe(flt, qos=1)
            rec = Recorder(out, meta, compress, rotate)
            if ready is not None:
                ready.set()
            await _run(client, rec, stop, duration_s, count, on_progress)
    except aiomqtt.MqttError as exc:
        if rec is None:
            raise BrokerError(f"cannot record from {url}: {exc}") from None
        rec.stats.stopped_by = f"broker lost: {exc}"
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        if rec is not None:
            rec.close()
    assert rec is not None
    return rec.stats


async def _pump(client: aiomqtt.Client, rec: Recorder, count: int | None) -> None:
    """Append every message; returns once ``count`` came. Only the ticker cancels it."""
    async for msg in client.messages:
        payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
        rec.add(str(msg.topic), payload, msg.qos, bool(msg.retain), msg.properties)
        if count is not None and rec.stats.messages >= count:
            rec.stats.stopped_by = "count"
            return


async def _run(
    client: aiomqtt.Client,
    rec: Recorder,
    stop: asyncio.Event,
    duration_s: float | None,
    count: int | None,
    on_progress: Callable[[RecordStats], None] | None,
) -> None:
    """Pump messages while a ticker flushes, reports progress and watches the deadline.

    The pump is never interrupted by a timeout (cancelling a pending receive at the wrong
    moment could drop a message); it is cancelled only when the recording ends.
    """
    deadline = None if duration_s is None else time.monotonic() + duration_s
    pump = asyncio.create_task(_pump(client, rec, count))
    stopper = asyncio.create_task(stop.wait())
    try:
        while not pump.done():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                rec.stats.stopped_by = "duration"
                break
            if stop.is_set():
                rec.stats.stopped_by = "signal"
                break
            wait = FLUSH_EVERY_S if deadline is None else min(FLUSH_EVERY_S, deadline - now)
            await asyncio.wait({pump, stopper}, timeout=max(wait, 0.001),
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            rec.flush()
            if on_progress is not None:
                on_progress(rec.stats)
    finally:
        stopper.cancel()
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    pump_error = pump.exception() if not pump.cancelled() else None
    if pump_error is not None:
        raise pump_error
