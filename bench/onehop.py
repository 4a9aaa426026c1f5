"""The broker's own limit: QoS 1 messages per second from one paho publisher through Mosquitto
to one paho subscriber, 1.3 KB payloads (the size of a ToF frame). The denominator of every
pipeline figure: nothing that goes through this broker can beat it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from bench.common import header
from embedded import free_port, start_mosquitto
from sqal.mqtt import client_id, paho_client

PAYLOAD_BYTES = 1300


def _subscriber(broker_url: str, topic: str, n: int, ready: Any, done: Any) -> None:
    """Child process: count n QoS 1 deliveries, then report the time of the last one."""
    got = 0
    finished = threading.Event()

    def on_message(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
        nonlocal got
        got += 1
        if got >= n:
            finished.set()

    sub = paho_client(broker_url, client_id("bench-sub"), persistent=False, on_message=on_message)
    sub.subscribe(topic, qos=1)
    time.sleep(0.3)
    ready.set()
    ok = finished.wait(timeout=max(60.0, n / 500))
    done.send((time.perf_counter() if ok else None, got))
    sub.disconnect()
    sub.loop_stop()


def onehop_rate(broker_url: str, n: int = 50_000, payload_bytes: int = PAYLOAD_BYTES,
                topic: str = "bench/onehop") -> float:  # fmt: skip
    """Messages/s from the first publish to the last delivery (all n must arrive).

    Publisher and subscriber run in separate processes, as the pipeline's services do: in one
    process they would share the GIL and measure paho, not the broker.
    """
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_subscriber, args=(broker_url, topic, n, ready, send))
    child.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("subscriber did not start")
        pub = paho_client(broker_url, client_id("bench-pub"), persistent=False, max_inflight=1000)
        payload = b"x" * payload_bytes
        try:
            start = time.perf_counter()
            for _ in range(n):
                pub.publish(topic, payload, qos=1)
            end, got = recv.recv()
        finally:
            pub.disconnect()
            pub.loop_stop()
        if end is None:
            raise RuntimeError(f"only {got} of {n} messages arrived")
        return float(n / (end - start))
    finally:
        child.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    print(header("onehop"))
    with tempfile.TemporaryDirectory(prefix="sqal-bench-") as folder:
        broker = start_mosquitto(Path(folder), free_port())
        try:
            onehop_rate(broker.url, 2000)  # warm-up
            rates = [onehop_rate(broker.url, args.messages) for _ in range(3)]
        finally:
            broker.stop()
    rates.sort()
    print(f"one-hop QoS 1, {PAYLOAD_BYTES} B   {rates[1]:>10,.0f} msg/s  "
          f"(min {rates[0]:,.0f}, max {rates[2]:,.0f})")  # fmt: skip


if __name__ == "__main__":
    main()
