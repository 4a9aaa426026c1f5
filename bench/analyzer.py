"""Analyzer figures: scoring core throughput on one core, and service latency through a broker.

Targets (issue 4): core >= 20,000 samples/s in batches of 256 on one core; service p99 <= 20 ms
at 200 samples/s, from the publish of a sample's last frame to its result at a subscriber.

    python -m bench.analyzer [--seconds 10] [--rate 200]
"""

from __future__ import annotations

import os

# One core: BLAS and OpenMP pools would otherwise spread the batched solves over every CPU.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402

from analyzer import build_params, score_batch, stack_spectral, stack_tof  # noqa: E402
from analyzer.params import BatchParams  # noqa: E402
from bench.common import header, rate  # noqa: E402
from embedded import free_port, start_mosquitto  # noqa: E402
from sqal.mqtt import paho_client  # noqa: E402
from sqal.profiles import load_profile  # noqa: E402
from sqal.wire import DeviceConfig, Kind, SpectralFrame, TofFrame, device_topic, encode  # noqa: E402
from tests.test_analyzer_support import (  # noqa: E402
    calibration,
    dome_distances,
    raw_for_reflectance,
    spectral_payload,
    tof_payload,
)

ROOT = Path(__file__).resolve().parent.parent
BATCH = 256
DEVICES = 64


def make_frames(
    rng: np.random.Generator, n: int, device: str = "bench1", start: int = 0
) -> list[tuple[TofFrame, SpectralFrame]]:
    """n samples: noisy domes and a pale spectrum with noise."""
    out = []
    for i in range(n):
        seq = start + i
        tof = TofFrame.model_validate(
            tof_payload(dome_distances(rng), device=device, seq=seq, sigma_mm=2.0)
        )
        r = np.clip(rng.normal(0.45, 0.03, 10), 0.05, 0.95)
        raw = [raw_for_reflectance(float(x), 12.5) for x in r] + [2]
        spec = SpectralFrame.model_validate(spectral_payload(raw, device=device, seq=seq))
        out.append((tof, spec))
    return out


def bench_core() -> None:
    profile = load_profile("foie_gras_lobe_400g")
    # With the white step's count noise: every spectral index then carries its σ (the costlier
    # path, 10 perturbed evaluations of the indices per sample).
    cal = calibration().model_copy(update={"count_noise_k": 0.6, "common_noise_frac": 0.01})
    params = build_params(profile, cal)
    samples = make_frames(np.random.default_rng(7), BATCH)
    tof = stack_tof([t for t, _ in samples], 8)
    spec = stack_spectral([s for _, s in samples])
    med, spread = rate(lambda: score_batch(tof, spec, params), BATCH, repeats=15, warmup=3)
    print(f"score_batch n={BATCH}  {med:,.0f} samples/s  spread {100 * spread:.0f} %")
    stack = rate(
        lambda: (
            stack_tof([t for t, _ in samples], 8),
            stack_spectral([s for _, s in samples]),
        ),
        BATCH,
        repeats=7,
    )[0]
    print(f"stack frames n={BATCH}  {stack:,.0f} samples/s (models -> arrays)")
    # The analyzer's round holds samples of many devices: one call per device, or one call for
    # every device of a profile and ROI (BatchParams), as the service now does.
    rng = np.random.default_rng(11)
    d0 = params.d0_mm
    devices = [
        build_params(profile, cal.model_copy(
            update={"d0_map_mm": (d0 + rng.normal(0, 1.0, (8, 8))).round(1).tolist()}))
        for _ in range(DEVICES)
    ]  # fmt: skip
    devices = [d for d in devices if d.batch_key == devices[0].batch_key]
    owner = [devices[i % len(devices)] for i in range(BATCH)]
    per_device = {id(d): [i for i, o in enumerate(owner) if o is d] for d in devices}

    def one_call_per_device() -> None:
        for d in devices:
            mine = per_device[id(d)]
            score_batch(
                stack_tof([samples[i][0] for i in mine], 8),
                stack_spectral([samples[i][1] for i in mine]),
                d,
            )

    def one_call() -> None:
        score_batch(tof, spec, BatchParams.per_sample(owner))

    for label, fn in (("a call per device", one_call_per_device), ("one call", one_call)):
        med, spread = rate(fn, BATCH, repeats=9, warmup=2)
        print(f"score_batch n={BATCH} over {len(devices)} devices, {label}:  {med:,.0f} samples/s"
              f"  spread {100 * spread:.0f} %")  # fmt: skip


def wait_healthy(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("analyzer did not become healthy")


def bench_service(seconds: float, per_s: float) -> None:
    folder = Path(tempfile.mkdtemp(prefix="sqal-bench-"))
    broker = start_mosquitto(folder, free_port())
    metrics_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "analyzer", "--broker", broker.url, "--metrics-port"]
    cmd += [str(metrics_port), "--client-id", f"bench-{uuid.uuid4().hex[:6]}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    lock = threading.Lock()

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        sid = msg.payload.split(b'"sample_id":"', 1)[1].split(b'"', 1)[0].decode()
        with lock:
            got.setdefault(sid, now)

    try:
        line, dev = "benchline", "bench1"
        pub = paho_client(broker.url, "bench-pub", persistent=False)
        sub = paho_client(broker.url, "bench-sub", persistent=False)
        sub.on_message = on_message
        sub.subscribe(device_topic(line, dev, Kind.RESULT), qos=1)
        config = DeviceConfig(
            device_id=dev, profile="foie_gras_lobe_400g", calibration=calibration()
        )
        pub.publish(device_topic(line, dev, Kind.CONFIG), encode(config), qos=1, retain=True)
        wait_healthy(metrics_port)
        n = int(seconds * per_s)
        payloads = [
            (encode(t), encode(s), t.sample_id)
            for t, s in make_frames(np.random.default_rng(11), n, dev)
        ]
        tof_t, spec_t = device_topic(line, dev, Kind.TOF), device_topic(line, dev, Kind.SPECTRAL)
        start = time.perf_counter()
        for i, (tof, spec, sid) in enumerate(payloads):
            due = start + i / per_s
            while (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
            pub.publish(tof_t, tof, qos=1)
            with lock:
                sent[sid] = time.perf_counter()
            pub.publish(spec_t, spec, qos=1)
        deadline = time.perf_counter() + 10
        while len(got) < n and time.perf_counter() < deadline:
            time.sleep(0.05)
        lat = sorted(1000 * (got[k] - sent[k]) for k in sent if k in got)
        if not lat:
            print("service: no results arrived")
            return
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(
            f"service {per_s:.0f} samples/s x {seconds:.0f} s  results {len(lat)}/{n}  "
            f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  max {lat[-1]:.2f} ms"
        )
        pub.publish(device_topic(line, dev, Kind.CONFIG), b"", qos=1, retain=True)
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
    finally:
        proc.terminate()
        proc.wait(15)
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=200.0)
    args = ap.parse_args()
    print(header("analyzer"))
    bench_core()
    bench_service(args.seconds, args.rate)


if __name__ == "__main__":
    main()
