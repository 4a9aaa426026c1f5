"""Two limits of one hop through Mosquitto, QoS 1, 1.3 KB payloads (the size of a ToF frame),
publisher and subscriber in separate processes:

- the broker's own, with Mosquitto's C clients (``mosquitto_pub -l`` → ``mosquitto_sub``): what
  the broker carries when its clients cost next to nothing;
- the Python client's, one paho publisher → one paho subscriber through :mod:`sqal.mqtt`
  (MQTT 5): what a paho-based service could receive at best;
- the subscribers side by side, fed by ``mosquitto_pub -l`` (so the publisher is never the
  limit): ``mosquitto_sub``, a paho subscriber (automatic acks, its cheapest), and
  :class:`sqal.subscriber.Subscriber` on SQAL's own client (:mod:`sqal.link`), acking in
  batches of :data:`ACK_BATCH` from its thread as a service does from its worker.

The first two are denominators of ``make bench`` (:mod:`bench.pipeline`): the first says how
far SQAL is from the broker, the second how much of that gap is the client library.

    python -m bench.onehop [--messages 50000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import subprocess
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
ACK_BATCH = 100


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


def _link_subscriber(broker_url: str, topic: str, n: int, ready: Any, done: Any) -> None:
    """Child process: :class:`Subscriber` counting n deliveries, acking every ACK_BATCH."""
    from sqal.subscriber import Delivery, Subscriber

    batch: list[Delivery] = []
    got = 0
    finished = threading.Event()

    def deliver(d: Delivery) -> bool:
        nonlocal got
        got += 1
        batch.append(d)
        if len(batch) >= ACK_BATCH or got >= n:
            sub.done(batch)
            batch.clear()
        if got >= n:
            finished.set()
        return True

    sub = Subscriber(broker_url, client_id("bench-link"), [topic], deliver, session_expiry_s=0)
    sub.start()
    ready.set()
    ok = finished.wait(timeout=max(60.0, n / 500))
    done.send((time.perf_counter() if ok else None, got))
    sub.stop()


SUBSCRIBERS = {"paho": _subscriber, "sqal.link": _link_subscriber}


def subscriber_rate(kind: str, broker_url: str, host: str, port: int, n: int = 50_000,
                    topic: str = "bench/sub") -> float:  # fmt: skip
    """Messages/s into one Python subscriber (``kind``: paho or sqal.link) from
    ``mosquitto_pub -l`` (QoS 1, 1.3 KB), first publish to last delivery; all n must arrive."""
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=SUBSCRIBERS[kind], args=(broker_url, topic, n, ready, send))
    child.start()
    try:
        if not ready.wait(30):
            raise RuntimeError(f"{kind} subscriber did not start")
        time.sleep(0.3)  # the SUBACK
        with tempfile.TemporaryDirectory(prefix="sqal-bench-sub-") as folder:
            lines = Path(folder) / "lines"
            lines.write_bytes((b"x" * PAYLOAD_BYTES + b"\n") * n)
            with lines.open("rb") as src:
                start = time.perf_counter()
                publisher = subprocess.Popen(
                    ["mosquitto_pub", "-h", host, "-p", str(port), "-q", "1",
                     "-M", str(C_INFLIGHT), "-t", topic, "-l"],
                    stdin=src, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            end, got = recv.recv()
            publisher.wait(timeout=30)
        if end is None:
            raise RuntimeError(f"{kind}: only {got} of {n} messages arrived")
        return float(n / (end - start))
    finally:
        child.join(timeout=10)


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


C_CLIENTS = ("mosquitto_pub", "mosquitto_sub")
C_INFLIGHT = 1000
"""``mosquitto_pub -M``: the unacked window of the paho publisher above (its default is 20)."""


def c_clients_missing() -> str | None:
    """The first of Mosquitto's C clients not on ``PATH`` (Debian: mosquitto-clients), or None."""
    return next((c for c in C_CLIENTS if shutil.which(c) is None), None)


def c_client_rate(host: str, port: int, n: int = 50_000, payload_bytes: int = PAYLOAD_BYTES,
                  topic: str = "bench/c") -> float:  # fmt: skip
    """Messages/s through the broker from ``mosquitto_pub -l`` to ``mosquitto_sub``, QoS 1.

    The subscriber knows it is subscribed when a retained message on ``TOPIC/ready`` arrives
    (it is counted, then cleared); the clock runs from starting the publisher to the subscriber
    exiting after its n-th message (``-C``). All n must arrive.

    Raises:
        RuntimeError: a client is missing, or fewer than n messages arrived.
    """
    missing = c_clients_missing()
    if missing:
        raise RuntimeError(f"{missing} is not installed (Debian: apt install mosquitto-clients)")
    where = ["-h", host, "-p", str(port)]
    pub = [*where, "-q", "1"]
    with tempfile.TemporaryDirectory(prefix="sqal-bench-c-") as folder:
        lines, out = Path(folder) / "lines", Path(folder) / "received"
        lines.write_bytes((b"x" * payload_bytes + b"\n") * n)
        subprocess.run(["mosquitto_pub", *pub, "-r", "-t", f"{topic}/ready", "-m", "ready"],
                       check=True, timeout=10)  # fmt: skip
        with out.open("wb") as sink:
            # -F %l: one short line (the payload's length) per message, not the payload.
            sub = subprocess.Popen(
                ["mosquitto_sub", *where, "-q", "1", "-t", f"{topic}/#", "-C", str(n + 1),
                 "-W", str(int(max(60, n / 500))), "-F", "%l"],
                stdout=sink, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        publisher: subprocess.Popen[bytes] | None = None
        try:
            deadline = time.monotonic() + 10
            while out.stat().st_size == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            with lines.open("rb") as src:
                start = time.perf_counter()
                publisher = subprocess.Popen(
                    ["mosquitto_pub", *pub, "-M", str(C_INFLIGHT), "-t", f"{topic}/data", "-l"],
                    stdin=src, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            sub.wait()  # blocking waitpid: the exit is seen at once, not at a polling tick
            end = time.perf_counter()
            publisher.wait(timeout=30)
        finally:
            for proc in (sub, publisher):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
            subprocess.run(["mosquitto_pub", *pub, "-r", "-n", "-t", f"{topic}/ready"],
                           check=False, timeout=10)  # fmt: skip
        got = sum(
            1 for line in out.read_bytes().splitlines() if line == str(payload_bytes).encode()
        )
    if got < n:
        raise RuntimeError(f"mosquitto_sub got {got} of {n} messages")
    return n / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    print(header("onehop"))
    with tempfile.TemporaryDirectory(prefix="sqal-bench-") as folder:
        broker = start_mosquitto(Path(folder), free_port())
        try:
            c_rates: list[float] = []
            subs: dict[str, list[float]] = {}
            if c_clients_missing() is None:
                c_client_rate(broker.host, broker.port, 2000)  # warm-up
                c_rates = [c_client_rate(broker.host, broker.port, args.messages)
                           for _ in range(3)]  # fmt: skip
                for kind in SUBSCRIBERS:  # alternating, so drift hits both alike
                    subscriber_rate(kind, broker.url, broker.host, broker.port, 2000)
                for _ in range(3):
                    for kind in SUBSCRIBERS:
                        subs.setdefault(kind, []).append(subscriber_rate(
                            kind, broker.url, broker.host, broker.port, args.messages))  # fmt: skip
            onehop_rate(broker.url, 2000)  # warm-up
            rates = [onehop_rate(broker.url, args.messages) for _ in range(3)]
        finally:
            broker.stop()
    if c_rates:
        c_rates.sort()
        print(
            f"C clients QoS 1, {PAYLOAD_BYTES} B {c_rates[1]:>10,.0f} msg/s  "
            f"(min {c_rates[0]:,.0f}, max {c_rates[2]:,.0f}; mosquitto_pub -l -> mosquitto_sub)"
        )
    else:
        print(f"C clients skipped: {c_clients_missing()} is not installed (mosquitto-clients)")
    rates.sort()
    print(f"paho QoS 1, {PAYLOAD_BYTES} B      {rates[1]:>10,.0f} msg/s  "
          f"(min {rates[0]:,.0f}, max {rates[2]:,.0f}; sqal.mqtt, MQTT 5)")  # fmt: skip
    if c_rates:
        print(f"paho / C clients   {rates[1] / c_rates[1]:10.2f}")
    for kind, runs in subs.items():
        runs.sort()
        print(
            f"{kind + ' subscriber':<22} {runs[1]:>10,.0f} msg/s  (min {runs[0]:,.0f}, max "
            f"{runs[2]:,.0f}; from mosquitto_pub -l; {runs[1] / c_rates[1]:.2f} of C clients)"
        )


if __name__ == "__main__":
    main()
