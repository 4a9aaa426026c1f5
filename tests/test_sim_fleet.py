"""The simulated fleet against the real Mosquitto of the session (tests/fix_mqtt.py)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from device_sim.command import sim_command
from device_sim.device import SimDevice
from device_sim.fleet import Counters, run_fleet
from device_sim.model import product_model
from device_sim.render import RENDER_CHUNK, Shot, device_optics, render_batch
from device_sim.trays import draw_tray
from embedded import free_port
from sqal.errors import BrokerError
from sqal.mqtt import aiomqtt_client
from sqal.wire import (
    DeviceConfig,
    DeviceState,
    DeviceStatus,
    Kind,
    SpectralFrame,
    SpectralSettings,
    TofFrame,
    TofSettings,
    Weight,
    decode,
    device_topic,
    encode,
)

FOIE = "foie_gras_lobe_400g"
START = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def _devices(line: str, n: int, period_s: float) -> list[SimDevice]:
    return [
        SimDevice(line, f"{line}-n{i}", i, 21, FOIE, period_s, START, realistic_faults=False)
        for i in range(n)
    ]


def test_fleet_publishes_decodable_frames_config_and_status_and_applies_new_config(broker):
    line = f"t{uuid.uuid4().hex[:8]}"
    devices = _devices(line, 2, 0.05)
    count = 40
    truth = io.StringIO()
    counters = Counters()
    got: dict[str, list[object]] = {"tof": [], "spectral": [], "config": [], "status": []}

    async def main() -> None:
        async with aiomqtt_client(broker.url) as sub:
            await sub.subscribe(f"sqal/v1/{line}/#", qos=1)
            fleet = asyncio.create_task(run_fleet(devices, broker.url, count, truth, counters))
            sent_config = False
            async with asyncio.timeout(30):
                async for msg in sub.messages:
                    assert isinstance(msg.payload, bytes)
                    frame = decode(str(msg.topic), msg.payload)
                    kind = str(msg.topic).rsplit("/", 1)[1]
                    got[kind].append(frame)
                    if kind == "spectral" and len(got["spectral"]) == 10 and not sent_config:
                        # An operator switches node 0 to gain 4 (retained, as `sqal config set`).
                        cfg = DeviceConfig(
                            device_id=devices[0].device_id,
                            profile=FOIE,
                            spectral={"gain": 4, "atime": 29, "astep": 199, "led_ma": 24},
                        )
                        await sub.publish(
                            device_topic(line, devices[0].device_id, Kind.CONFIG),
                            encode(cfg),
                            qos=1,
                            retain=True,
                        )
                        sent_config = True
                    offline = [
                        s
                        for s in got["status"]
                        if isinstance(s, DeviceStatus) and s.state == DeviceState.OFFLINE
                    ]
                    if len(offline) == len(devices):
                        break
            await fleet

    asyncio.run(main())
    assert len(got["tof"]) == len(got["spectral"]) == count * len(devices)
    assert all(isinstance(f, TofFrame) for f in got["tof"])
    specs = [f for f in got["spectral"] if isinstance(f, SpectralFrame)]
    assert {f.sample_id for f in got["tof"]} == {f.sample_id for f in specs}  # type: ignore[attr-defined]
    configs = [c for c in got["config"] if isinstance(c, DeviceConfig)]
    assert {c.device_id for c in configs if c.calibration is not None} == {
        d.device_id for d in devices
    }
    node0 = [f for f in specs if f.device_id == devices[0].device_id]
    assert node0[0].gain == 16
    assert node0[-1].gain == 4
    assert counters.configs_applied == 1
    lines = [json.loads(x) for x in truth.getvalue().splitlines()]
    assert len(lines) == count * len(devices)
    assert {x["sample_id"] for x in lines} == {f.sample_id for f in specs}


def test_with_a_checkweigher_each_tray_gets_one_weight_and_the_frames_stay_the_same():
    """#17: the weight's noise and transport faults draw from a stream of their own, so frames
    (faults included) are byte-identical with or without a checkweigher."""

    def run(sigma: float | None) -> tuple[list[tuple[float, str, bytes]], list[dict[str, Any]]]:
        dev = SimDevice("L1", "L1-n0", 0, 9, FOIE, 2.0, START, realistic_faults=True,
                        checkweigher_sigma_g=sigma)  # fmt: skip
        msgs, truth = dev.produce(60)
        return [(m.due_s, m.topic, m.payload) for m in msgs], truth

    plain, plain_truth = run(None)
    weighed, truth = run(0.5)
    assert [m for m in weighed if not m[1].endswith("/weight")] == plain
    assert all("checkweigher" not in t and "weight" not in t["transport"] for t in plain_truth)
    by_sample = {t["sample_id"]: t for t in truth}
    weights = []
    for _, topic, payload in weighed:
        if topic.endswith("/weight") and payload.endswith(b"}"):  # not a malformed copy
            w = decode(topic, payload)
            assert isinstance(w, Weight)
            weights.append(w)
    sent = {t["sample_id"] for t in truth if "lost" not in t["transport"]["weight"]}
    assert {w.sample_id for w in weights} <= set(by_sample)
    assert {w.sample_id for w in weights} >= sent - {
        t["sample_id"] for t in truth if "malformed" in t["transport"]["weight"]
    }
    for w in weights:
        t = by_sample[w.sample_id]
        assert w.sigma_g == 0.5
        assert w.seq == t["seq"]
        assert w.mass_g == t["checkweigher"]["mass_g"]
        assert abs(w.mass_g - t["mass_g"]) < 5 * 0.5 + 0.05
        assert abs(w.mass_g * 10 - round(w.mass_g * 10)) < 1e-6  # 0.1 g steps
        ts_tof = datetime.fromisoformat(str(t["ts"]))
        assert 0.4 < (ts_tof - w.ts).total_seconds() < 0.6  # weighed upstream, before capture


def test_bad_checkweigher_flags_are_one_line_errors():
    app = typer.Typer()
    app.command()(sim_command)
    runner = CliRunner()
    for args, needle in (
        (["--count", "1", "--checkweigher-sigma", "0.5"], "needs --checkweigher"),
        (["--count", "1", "--checkweigher", "--checkweigher-sigma", "0"], "--checkweigher-sigma"),
        (["--count", "1", "--checkweigher", "--checkweigher-sigma", "nan"], "--checkweigher-sigma"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code != 0
        assert needle in str(result.exception)


def test_sim_checkweigher_publishes_one_weight_per_tray_with_its_sigma(broker, tmp_path: Path):
    """``sqal sim --checkweigher --checkweigher-sigma 2``: every tray's weight on the device's
    weight topic, its truth mass + N(0, 2 g), and the checkweigher announced in the config."""
    line = "line1"
    seed = int(uuid.uuid4().int % 10**6)  # node ids are fixed (line1-node01): a run of its own
    truth_file = tmp_path / "truth.jsonl"
    app = typer.Typer()
    app.command()(sim_command)
    got: dict[str, list[object]] = {"weight": [], "config": [], "tof": []}
    count, nodes = 60, 2
    done = asyncio.Event()

    async def listen(ready: asyncio.Event) -> None:
        async with aiomqtt_client(broker.url) as sub:
            for kind in got:
                await sub.subscribe(f"sqal/v1/{line}/+/{kind}", qos=1)
            ready.set()
            async for msg in sub.messages:
                assert isinstance(msg.payload, bytes)
                obj = decode(str(msg.topic), msg.payload)
                if isinstance(obj, DeviceConfig) and obj.ts != START:
                    continue  # another test's retained config
                got[str(msg.topic).rsplit("/", 1)[1]].append(obj)
                if len(got["weight"]) == count * nodes and len(got["tof"]) == count * nodes:
                    done.set()
                    return

    async def main() -> None:
        ready = asyncio.Event()
        listener = asyncio.create_task(listen(ready))
        await ready.wait()
        result = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["--broker", broker.url, "--devices", str(nodes), "--rate", "1200", "--count",
             str(count), "--seed", str(seed), "--start-time", START.isoformat(), "--truth",
             str(truth_file), "--checkweigher", "--checkweigher-sigma", "2"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        async with asyncio.timeout(30):
            await done.wait()
        listener.cancel()

    asyncio.run(main())
    truth = {x["sample_id"]: x for x in map(json.loads, truth_file.read_text().splitlines())}
    weights = [w for w in got["weight"] if isinstance(w, Weight)]
    assert len(weights) == len(truth) == count * nodes
    assert {w.sample_id for w in weights} == set(truth)  # one per tray, no other
    assert {w.sample_id for w in got["tof"]} == set(truth)  # type: ignore[attr-defined]
    assert {w.sigma_g for w in weights} == {2.0}
    residual = np.array([w.mass_g - truth[w.sample_id]["mass_g"] for w in weights])
    assert abs(residual.mean()) < 3 * 2.0 / np.sqrt(residual.size)
    assert 0.75 < residual.std(ddof=1) / 2.0 < 1.25  # 120 draws: ± 3 standard errors
    configs = [c for c in got["config"] if isinstance(c, DeviceConfig)]
    assert {c.device_id for c in configs} == {f"{line}-node{i + 1:02d}" for i in range(nodes)}
    assert all(c.checkweigher is not None and c.checkweigher.sigma_g == 2.0 for c in configs)


def test_unreachable_broker_is_one_error_naming_the_url():
    url = f"mqtt://127.0.0.1:{free_port()}"
    with pytest.raises(BrokerError, match=url.replace(".", r"\.")):
        asyncio.run(run_fleet(_devices("tx", 1, 1.0), url, 1, None, Counters()))


def test_killing_the_sim_process_publishes_the_offline_will(broker, tmp_path: Path):
    topic = device_topic("line1", "line1-node01", Kind.STATUS)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    cmd = [
        sys.executable,
        "-m",
        "device_sim",
        "--broker",
        broker.url,
        "--rate",
        "60",
        "--count",
        "1000",
        "--seed",
        "4",
        "--truth",
        str(tmp_path / "t.jsonl"),
    ]

    async def main(proc: subprocess.Popen[bytes]) -> list[DeviceState]:
        states: list[DeviceState] = []
        async with aiomqtt_client(broker.url) as sub:
            await sub.subscribe(topic, qos=1)
            async with asyncio.timeout(30):
                async for msg in sub.messages:
                    assert isinstance(msg.payload, bytes)
                    status = decode(str(msg.topic), msg.payload)
                    assert isinstance(status, DeviceStatus)
                    states.append(status.state)
                    if status.state == DeviceState.ONLINE and proc.poll() is None:
                        os.kill(proc.pid, signal.SIGKILL)
                    elif DeviceState.ONLINE in states and status.state == DeviceState.OFFLINE:
                        break
        return states

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        states = asyncio.run(main(proc))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    first_online = states.index(DeviceState.ONLINE)
    assert DeviceState.OFFLINE in states[first_online:]


def test_bad_flags_are_one_line_errors():
    app = typer.Typer()
    app.command()(sim_command)
    runner = CliRunner()
    for args, needle in (
        (["--count", "1", "--faults", "some"], "--faults"),
        (["--count", "1", "--duration", "2"], "--count"),
        (["--count", "1", "--profile", "nope"], "unknown profile"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code != 0
        assert needle in str(result.exception)


def test_gain_saturated_trays_render_the_same_alone_or_across_render_chunks():
    """Each tray's injected gain step reads its own spectrum (it once read the batch's first),
    and splitting a long batch into render chunks changes no value."""
    model = product_model(FOIE)
    rates = {"spectral_saturated": 1.0, "oxidation": 0.5, "fat_yellowing": 0.5, "underfill": 0.5}
    dev = device_optics(np.random.default_rng(3))

    def shots() -> list[Shot]:
        out = []
        for i in range(RENDER_CHUNK + 5):
            rng = np.random.default_rng([11, i])
            draw = draw_tray(model, rng, rates, model.profile.scenarios.stress)
            out.append(Shot(draw, rng, dev, TofSettings(), SpectralSettings(), 900.0, False))
        return out

    batch = render_batch(model, shots())
    alone = [render_batch(model, [s])[0] for s in shots()]
    assert sum(s.draw.saturate == "gain" for s in shots()) >= 10
    assert batch == alone
