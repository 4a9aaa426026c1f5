"""``sqal replay``: publish a capture's messages again on an absolute schedule.

Each message is due at ``t0 + (loop·duration + offset_s) / speed`` on the monotonic clock, so
lateness never accumulates: a message published late does not push the next one back. paho's
publish only queues (its network thread sends), so the scheduling thread stays free.

Replayed into a pipeline that has seen the capture's trays (the one it was recorded from, or a
second loop), frames keep their ``sample_id`` and are taken for redeliveries: the analyzer's
join answers duplicates with nothing, the database's unique keys store nothing. With
``fresh_ids`` each tray gets a new id per replay and loop (:class:`FreshIds`), the same for all
its messages, so they are scored and stored again. Retained messages (device configs, statuses)
are dropped unless ``retain="keep"``: replayed into a live broker, an old config would replace
what a device runs with.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from capture.fileformat import CaptureReader, Record
from sqal.errors import ConfigError
from sqal.publisher import Publisher
from sqal.wire import SAMPLE_KINDS, kind_of, rename_sample
from sqal.wire.topics import check_topic_filter, join_levels, topic_levels

PUBLISH_PROPERTIES = (
    "PayloadFormatIndicator",
    "MessageExpiryInterval",
    "ContentType",
    "ResponseTopic",
    "CorrelationData",
    "UserProperty",
)
"""MQTT 5 properties a sender sets on PUBLISH and a replay carries over."""

ACK_WAIT_S = 30.0
MAX_SAMPLE_ID = 128
"""Longest ``sample_id`` of the contract (``sqal.wire.models.SampleId``)."""


@dataclass(frozen=True)
class FreshIds:
    """New sample ids for one replay: ``{old}.r{run}-{loop}``, the same for every message of a
    tray in a loop (its frames, weight and result still meet), new for each run and loop.

    ``run`` is random, so two replays of one capture never collide either. An old id too long
    to take the suffix within the contract's 128 characters is replaced by its digest.
    """

    run: str = field(default_factory=lambda: secrets.token_hex(3))

    def new_id(self, old: str, loop: int) -> str:
        suffix = f".r{self.run}-{loop}"
        if len(old) + len(suffix) > MAX_SAMPLE_ID:
            old = hashlib.blake2b(old.encode(), digest_size=16).hexdigest()
        return old + suffix


@dataclass(frozen=True)
class Remap:
    """Replace a run of whole topic levels: ``L1=L9`` or ``sqal/v1/L1=sqal/v1/L9``."""

    old: tuple[str, ...]
    new: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Remap:
        old, sep, new = text.partition("=")
        if not sep or not old or not new:
            raise ConfigError(f"--remap {text!r}: expected OLD=NEW (topic levels)")
        if any(c in old + new for c in "+#"):
            raise ConfigError(f"--remap {text!r}: wildcards are not allowed")
        return cls(tuple(topic_levels(old)), tuple(topic_levels(new)))

    def apply(self, levels: list[str]) -> list[str]:
        n = len(self.old)
        for i in range(len(levels) - n + 1):
            if tuple(levels[i : i + n]) == self.old:
                return [*levels[:i], *self.new, *levels[i + n :]]
        return levels


def remap_topic(topic: str, remaps: list[Remap]) -> str:
    levels = topic_levels(topic)
    for r in remaps:
        levels = r.apply(levels)
    return join_levels(levels)


def publish_properties(doc: dict[str, Any]) -> Properties | None:
    """paho PUBLISH properties from a recorded properties dict (None when there are none)."""
    wanted = {k: v for k, v in doc.items() if k in PUBLISH_PROPERTIES}
    if not wanted:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for key, value in wanted.items():
        if key == "CorrelationData":
            value = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
        elif key == "UserProperty":
            value = [tuple(pair) for pair in value]
        setattr(props, key, value)
    return props


@dataclass
class ReplayStats:
    """What a replay did."""

    published: int = 0
    renamed: int = 0
    """Messages published under a fresh ``sample_id`` (``fresh_ids``)."""
    samples: int = 0
    """Messages of a tray (frames, weights, results) published."""
    skipped: int = 0
    corrupt: int = 0
    torn_files: int = 0
    elapsed_s: float = 0.0
    schedule_s: float = 0.0
    lateness_ms: list[float] = field(default_factory=list)

    def lateness(self, q: float) -> float:
        return float(np.percentile(self.lateness_ms, q)) if self.lateness_ms else 0.0


def _selected(
    paths: list[Path], topics: list[str], retain: str, stats: ReplayStats
) -> Iterator[Record]:
    for path in paths:
        reader = CaptureReader(path)
        for rec in reader:
            if topics and not any(paho.topic_matches_sub(f, rec.topic) for f in topics):
                stats.skipped += 1
                continue
            if rec.retain and retain == "drop":
                stats.skipped += 1
                continue
            yield rec
        stats.corrupt += reader.stats.corrupt
        stats.torn_files += int(reader.stats.torn_tail)


def capture_span_s(paths: list[Path]) -> float:
    """Offset of the last record: one loop's length."""
    last = 0.0
    for path in paths:
        for rec in CaptureReader(path):
            last = max(last, rec.offset_s)
    return last


def replay(
    paths: list[Path],
    broker: str,
    *,
    speed: float = 1.0,
    max_rate: bool = False,
    loops: int = 1,
    remaps: list[Remap] | None = None,
    topics: list[str] | None = None,
    qos: int | None = None,
    retain: str = "drop",
    fresh_ids: bool = False,
    on_progress: Callable[[ReplayStats], None] | None = None,
) -> ReplayStats:
    """Publish the capture(s) ``loops`` times.

    Args:
        retain: ``drop`` skips the messages recorded as retained (configs, statuses); ``keep``
            republishes them retained (into a fresh broker that should hold the same configs).
        fresh_ids: give each tray a new ``sample_id`` (:class:`FreshIds`), so a pipeline that
            has seen the capture scores and stores it again.

    Raises:
        ConfigError: bad speed, loop count, QoS, retain mode or topic filter.
        BrokerError: the broker is unreachable or refused the connection, or did not
            acknowledge every message within ``ACK_WAIT_S``.
        PublishError: the broker refused a message (its PUBACK reason code), a message is
            over the broker's maximum packet size (not sent; what came before was), or the
            connection was lost: the replay stops there.
        CaptureError: a file is not a capture or is of a newer format.
    """
    if speed <= 0:
        raise ConfigError(f"--speed {speed}: must be above 0")
    for flt in topics or []:
        check_topic_filter(flt)
    if loops < 1:
        raise ConfigError(f"--loop {loops}: must be at least 1")
    if qos is not None and qos not in (0, 1, 2):
        raise ConfigError(f"--qos {qos}: must be 0, 1 or 2")
    if retain not in ("keep", "drop"):
        raise ConfigError(f"--retain {retain}: must be keep or drop")
    # Every record is read once before connecting: a bad file fails before anything is sent.
    span = capture_span_s(paths)
    stats = ReplayStats()
    rename = FreshIds().new_id if fresh_ids else None
    # Every PUBACK is checked: a refused message (ACL, size) ends the replay with its reason.
    with Publisher(broker, "sqal-replay") as pub:
        t0 = time.monotonic()
        last_progress = t0
        for loop in range(loops):
            base = loop * span
            for rec in _selected(paths, topics or [], retain, stats):
                due = t0 + (base + rec.offset_s) / speed
                now = time.monotonic()
                if not max_rate:
                    if due > now:
                        time.sleep(due - now)
                        now = time.monotonic()
                    stats.lateness_ms.append((now - due) * 1000.0)
                topic = remap_topic(rec.topic, remaps or [])
                payload = rec.payload
                if kind_of(topic) in SAMPLE_KINDS:
                    stats.samples += 1
                    renamed = (
                        None
                        if rename is None
                        else rename_sample(topic, payload, partial(rename, loop=loop))
                    )
                    if renamed is not None:
                        payload = renamed
                        stats.renamed += 1
                pub.publish(
                    topic,
                    payload,
                    qos=rec.qos if qos is None else qos,
                    retain=rec.retain and retain == "keep",
                    properties=publish_properties(rec.properties),
                )
                stats.published += 1
                if on_progress is not None and now - last_progress > 0.5:
                    on_progress(stats)
                    last_progress = now
        stats.schedule_s = time.monotonic() - t0
        pub.wait(ACK_WAIT_S)
        stats.elapsed_s = time.monotonic() - t0
    return stats
