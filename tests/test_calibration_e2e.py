"""Calibrate a simulated device end to end through a real broker (issue 10, "Checked by")."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest

from analyzer.arrays import stack_spectral, stack_tof
from analyzer.calibrate import calibrate
from analyzer.fusion import score_batch
from analyzer.params import build_params, roi_mask
from device_sim.model import product_model
from embedded import Mosquitto
from sqal.devices import Target, fetch_configs
from sqal.errors import CalibrationError
from sqal.mqtt import client_id, paho_client
from sqal.profiles import load_profile
from sqal.wire import DeviceConfig, Result, SpectralFrame, TofFrame, decode

DEVICE = Target("line1", "line1-node01")
PROFILE = "pate_terrine_300g"
SQAL = [sys.executable, "-m", "app"]


def sim(broker: Mosquitto, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SQAL, "sim", "--broker", broker.url, "--profile", PROFILE, "--keep-config",
         "--seed", "5", *args],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip


def calibrate_with_fixture(
    broker: Mosquitto, step: str, frames: int = 25, tile_height_mm: float | None = None
) -> dict[str, Any]:
    """Run ``calibrate`` while a simulated node presents the fixture; re-raise its error."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["summary"] = calibrate(broker.url, DEVICE, step, frames, [0.97] * 10,  # type: ignore[arg-type]
                                       timeout_s=60, confirm=lambda _p: None,
                                       tile_height_mm=tile_height_mm)[1]  # fmt: skip
        except CalibrationError as exc:
            out["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(1.0)  # subscribed before the first frame
    # A node renders ahead in chunks: frames of the chunk before a new config applies keep the
    # old settings, and calibrate passes them over.
    sim(broker, "--fixture", step, "--rate", "1500", "--count", str(frames + 80))
    worker.join(60)
    if "error" in out:
        raise out["error"]
    return dict(out["summary"])


def held_config(broker: Mosquitto) -> DeviceConfig:
    import asyncio

    cfg = asyncio.run(fetch_configs(broker.url, DEVICE.topic))[DEVICE.topic]
    assert isinstance(cfg, DeviceConfig)
    return cfg


def config_set(broker: Mosquitto, *sets: str) -> None:
    args = [f"--set={s}" for s in sets]
    target = f"{DEVICE.line}/{DEVICE.device}"
    cmd = [*SQAL, "config", "set", target, "--profile", PROFILE, "--broker", broker.url, *args]
    subprocess.run(cmd, check=True, capture_output=True)


def test_calibrate_then_score(private_broker: Mosquitto, tmp_path: Path) -> None:
    broker = private_broker
    # A white tile at a gain far too high saturates: refused with the reason, nothing published.
    config_set(broker, "spectral.gain=512")
    with pytest.raises(CalibrationError, match="white: saturated"):
        calibrate_with_fixture(broker, "white")
    assert held_config(broker).calibration is None

    config_set(broker, "spectral.gain=16")  # back to the profile's gain
    empty = calibrate_with_fixture(broker, "empty", 40)
    dark = calibrate_with_fixture(broker, "dark")
    # With the tile's height (the simulated fixture's spec: 17 mm for pâté, d0 200, z_cal 183)
    # the white step also measures the range's slope (the simulator's 0.005 mm per mm).
    model = product_model(PROFILE)
    white = calibrate_with_fixture(broker, "white", tile_height_mm=model.d0_mm - model.z_cal_mm)
    cal = held_config(broker).calibration
    assert cal is not None
    assert cal.id == white["calibration_id"] != dark["calibration_id"]
    assert cal.d0_map_mm is not None
    # The floor's return per zone, for splitting mixed zones: the tray base (ρ 0.45) at d0 ≈ 200
    # returns S = 2000·(0.45/0.5)·(200/z)² ≈ 1,800 kcps/SPAD over the ROI (docs/domain.md §1).
    assert cal.signal0_map_kcps is not None
    roi_signal = np.ravel(cal.signal0_map_kcps)[
        roi_mask(load_profile(PROFILE), empty["d0_mm"]).ravel()
    ]
    assert 1500 < float(np.median(roi_signal)) < 2100
    assert cal.dark_bc is not None
    assert cal.white_bc is not None
    assert abs(empty["d0_mm"] - load_profile(PROFILE).tof.mount_distance_mm) < 5
    assert white["z_cal_mm"] < empty["d0_mm"]
    assert cal.range_scale is not None
    assert cal.range_scale == pytest.approx(1.005, abs=0.015)

    # Score product trays with the analyzer service: every result carries the calibration id
    # and the spectral indices are there.
    analyzer = subprocess.Popen([*SQAL, "analyzer", "--broker", broker.url, "--metrics-port",
                                 "0", "--client-id", "cal-e2e"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    results: list[Result] = []
    frames: dict[str, dict[str, TofFrame | SpectralFrame]] = {}

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        obj = decode(msg.topic, bytes(msg.payload))
        if isinstance(obj, Result):
            results.append(obj)
        elif isinstance(obj, TofFrame | SpectralFrame):
            frames.setdefault(obj.sample_id, {})[type(obj).__name__] = obj

    sub = paho_client(broker.url, client_id("cal-sub"), persistent=False, on_message=on_message)
    try:
        sub.subscribe("sqal/v1/line1/+/+", qos=1)
        time.sleep(2.0)
        truth = tmp_path / "truth.jsonl"
        sim(broker, "--rate", "600", "--count", "60", "--truth", str(truth), "--defect-rate", "0")
        deadline = time.monotonic() + 30
        while len(results) < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        analyzer.terminate()
        analyzer.wait(10)
        sub.disconnect()
        sub.loop_stop()
    assert len({r.sample_id for r in results}) == 60
    assert {r.calibration_id for r in results} == {cal.id}
    # Dark and white references make the reflectance ratios, hence the oxidation index, real;
    # L*a*b* (and so freshness and fat quality) also need the colour matrix of a chart capture.
    oxid = sum(r.spectral is not None and r.spectral.oxidation_index is not None for r in results)
    assert oxid >= 55
    assert all("uncalibrated" not in r.fusion.defects for r in results)

    # Volume error with the measured d0 (and its per-zone map) is no worse than with the
    # profile's nominal mount distance.
    lines = [json.loads(x) for x in truth.read_text().splitlines()]
    ids = [
        t["sample_id"]
        for t in lines
        if {"TofFrame", "SpectralFrame"} <= set(frames[t["sample_id"]])
    ]
    true_v = np.array([t["volume_mm3"] for t in lines if t["sample_id"] in ids])
    profile = load_profile(PROFILE)
    tof = stack_tof([frames[i]["TofFrame"] for i in ids], profile.tof.layout)  # type: ignore[misc]
    spec = stack_spectral([frames[i]["SpectralFrame"] for i in ids])  # type: ignore[misc]

    def mae(calibration: Any) -> float:
        v = score_batch(tof, spec, build_params(profile, calibration)).tof.volume_mm3
        return float(np.mean(np.abs(v - true_v) / true_v))

    nominal = cal.model_copy(update={"d0_mm": None, "d0_map_mm": None})
    assert mae(cal) <= mae(nominal) + 1e-9
