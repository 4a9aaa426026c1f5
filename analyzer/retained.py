"""The device configs retained at the broker, read once at start on a throwaway clean session."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as paho

from sqal.errors import BrokerError, PayloadError
from sqal.mqtt import client_id, paho_client
from sqal.wire import DeviceConfig, Kind, decode, parse_topic, subscription

CONFIG_QUIET_S = 0.3
"""Retained configs arrive right after SUBACK; this much silence ends the fetch."""
CONFIG_MAX_S = 3.0


def fetch_retained_configs(
    url: str, lines: Sequence[str] = (), timeout_s: float = 10.0
) -> list[tuple[str, DeviceConfig]]:
    """Every retained device config (of ``lines``, or of every line), sorted by device.

    Undecodable configs are skipped here (the service's subscription dead-letters them).

    Raises:
        BrokerError: unreachable, refused, or no SUBACK in time.
    """
    seen: dict[str, DeviceConfig] = {}
    last = [time.monotonic()]
    acked = threading.Event()
    codes: list[Any] = []

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        last[0] = time.monotonic()
        try:
            topic = parse_topic(msg.topic)
            cfg = decode(topic, bytes(msg.payload))
        except PayloadError:
            return
        if isinstance(cfg, DeviceConfig):
            seen[topic.device] = cfg

    def on_subscribe(c: paho.Client, u: object, mid: int, rcs: list[Any], props: object) -> None:
        codes.extend(rcs)
        acked.set()

    client = paho_client(
        url, client_id("sqal-analyzer-cfg"), persistent=False, on_message=on_message,
        connect_timeout_s=timeout_s,
    )  # fmt: skip
    try:
        client.on_subscribe = on_subscribe
        client.subscribe([(subscription(Kind.CONFIG, line=ln), 1) for ln in (lines or ["+"])])
        if not acked.wait(timeout_s):
            raise BrokerError(f"no SUBACK within {timeout_s:g} s")
        bad = [c for c in codes if getattr(c, "is_failure", False)]
        if bad:
            raise BrokerError(f"subscription refused: {bad[0]}", getattr(bad[0], "value", None))
        start = last[0] = time.monotonic()
        while (
            time.monotonic() - last[0] < CONFIG_QUIET_S and time.monotonic() - start < CONFIG_MAX_S
        ):
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    return sorted(seen.items())
