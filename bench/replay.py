"""``sqal replay`` against a real broker: schedule accuracy, lateness, and the max-rate limit.

Targets (Capture issue): a 60 s capture replayed at 1x ends within 50 ms of 60 s; lateness p99
≤ 5 ms at 2,000 msg/s; ``--max-rate`` throughput against the one-hop publish limit measured in
the same run (bench.onehop).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import header
from bench.onehop import PAYLOAD_BYTES, onehop_rate
from capture.fileformat import CaptureWriter, Record
from capture.replay import replay
from embedded import free_port, start_mosquitto


def write_capture(path: Path, seconds: float, rate_per_s: float) -> int:
    """A capture of evenly spaced 1.3 KB messages over ``seconds``; returns how many."""
    n = int(seconds * rate_per_s)
    payload = b"x" * PAYLOAD_BYTES
    w = CaptureWriter(path, {"broker": "bench"}, 0.0)
    for i in range(n):
        t = i / rate_per_s
        w.write(Record(t, t, f"bench/replay/{i % 8}", payload, qos=1))
    w.close()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="Capture length.")
    parser.add_argument("--rate", type=float, default=2000.0, help="Messages per second.")
    args = parser.parse_args()
    print(header("replay"))
    with tempfile.TemporaryDirectory(prefix="sqal-bench-replay-") as folder:
        broker = start_mosquitto(Path(folder) / "mqtt", free_port())
        try:
            cap = Path(folder) / "bench.sqalcap"
            n = write_capture(cap, args.seconds, args.rate)
            span = (n - 1) / args.rate
            timed = replay([cap], broker.url)
            print(
                f"1x replay of {span:.1f} s, {n:,} msgs at {args.rate:,.0f}/s: schedule ended "
                f"{(timed.schedule_s - span) * 1000:+.1f} ms from the capture's span "
                f"(target within 50 ms); lateness p50 {timed.lateness(50):.2f} ms, "
                f"p99 {timed.lateness(99):.2f} ms (target p99 ≤ 5 ms)"
            )
            fast = replay([cap], broker.url, max_rate=True)
            limit = onehop_rate(broker.url, min(n, 50_000))
            rate = fast.published / fast.elapsed_s
            print(
                f"--max-rate: {rate:,.0f} msg/s acknowledged; one-hop QoS 1 limit "
                f"{limit:,.0f} msg/s; ratio {rate / limit:.2f}"
            )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
