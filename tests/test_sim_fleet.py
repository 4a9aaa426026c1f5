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
