"""The analyzer's MQTT plumbing: a manual-ack paho client, subscriptions, retained configs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho

from sqal.errors import BrokerError, PayloadError
from sqal.mqtt import client_id, paho_client
from sqal.wire import DeviceConfig, Kind, decode, parse_topic, subscription

CONFIG_QUIET_S = 0.3
"""Retained configs arrive right after SUBACK; this much silence ends the fetch."""
CONFIG_MAX_S = 3.0


def connect(
    url: str,
    cid: str,
    *,
    on_message: Callable[..., None] | None = None,
    on_publish: Callable[..., None] | None = None,
    manual_ack: bool = True,
    persistent: bool = True,
    receive_maximum: int | None = None,
    timeout_s: float = 10.0,
) -> paho.Client:
    """A connected MQTT 5 paho client with the analyzer's callbacks installed before CONNECT.

    ``receive_maximum`` bounds both directions: the frames the broker may send unacknowledged,
    and our own results in flight.

    Raises:
        BrokerError: unreachable, no CONNACK in time, or refused.
    """
    return paho_client(
        url,
        cid,
        manual_ack=manual_ack,
        persistent=persistent,
        receive_maximum=receive_maximum,
        max_inflight=receive_maximum,
        on_message=on_message,
        on_publish=on_publish,
        connect_timeout_s=timeout_s,
    )


def subscribe(
    client: paho.Client,
    kinds: Sequence[Kind],
    timeout_s: float = 10.0,
    lines: Sequence[str] = (),
) -> None:
    """Subscribe to ``sqal/v1/+/+/{kind}`` for each kind at QoS 1 and wait for the SUBACK.

    With ``lines``, one ``sqal/v1/{line}/+/{kind}`` filter per line instead: analyzers split by
    line still see both frames of each of their samples (same line, same device).

    Raises:
        BrokerError: no SUBACK in time, or a filter was refused.
    """
    acked = threading.Event()
    codes: list[Any] = []

    def on_subscribe(c: paho.Client, u: object, mid: int, rcs: list[Any], props: object) -> None:
        codes.extend(rcs)
        acked.set()

    client.on_subscribe = on_subscribe
    client.subscribe([(subscription(k, line=ln), 1) for k in kinds for ln in (lines or ["+"])])
    if not acked.wait(timeout_s):
        raise BrokerError(f"no SUBACK within {timeout_s:g} s")
    bad = [c for c in codes if getattr(c, "is_failure", False)]
    if bad:
        raise BrokerError(f"subscription refused: {bad[0]}", getattr(bad[0], "value", None))


def fetch_retained_configs(url: str, lines: Sequence[str] = ()) -> list[tuple[str, DeviceConfig]]:
    """Every retained device config, read on a throwaway clean session.

    Undecodable configs are skipped here (the main subscription dead-letters them).
    """
    seen: dict[str, DeviceConfig] = {}
    last = [time.monotonic()]

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        last[0] = time.monotonic()
        try:
            topic = parse_topic(msg.topic)
            cfg = decode(topic, bytes(msg.payload))
        except PayloadError:
            return
        if isinstance(cfg, DeviceConfig):
            seen[topic.device] = cfg

    client = connect(
        url, client_id("sqal-analyzer-cfg"), on_message=on_message, manual_ack=False,
        persistent=False,
    )  # fmt: skip
    try:
        subscribe(client, [Kind.CONFIG], lines=lines)
        start = last[0] = time.monotonic()
        while (
            time.monotonic() - last[0] < CONFIG_QUIET_S and time.monotonic() - start < CONFIG_MAX_S
        ):
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    return sorted(seen.items())
