"""``sqal calibrate --reference`` end to end: raw frames stored in a real TimescaleDB, a file of
known-good sample ids, the device's config on a real broker, and the analyzer's params built
from what was published (issue #17, the line's product prior)."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from analyzer import build_params, score_batch, stack_spectral, stack_tof
from analyzer.decision import p_above, p_beyond
from analyzer.prior import SD_MIN, fit_prior, fit_reference
from analyzer.reference import rescore
from embedded import Mosquitto
from sqal.devices import Target, publish_config
from sqal.profiles import load_profile
from sqal.wire import (
    Calibration,
    CheckweigherSettings,
    DeviceConfig,
    Frame,
    Kind,
    SpectralFrame,
    TofFrame,
    TofHistogram,
    Weight,
    device_topic,
    parse_topic,
)
from storage.queries import stored_frames
from storage.rows import pending_row
from storage.writer import BatchWriter
from tests import frames as wire_frames
from tests.test_analyzer_support import (
    TS,
    calibration,
    plane_distances,
    raw_for_reflectance,
    spectral_payload,
    tof_payload,
)
from tests.test_calibration_weighed import held, run_cli
from tests.test_ingest_frames import migrated

PROFILE = "pate_terrine_300g"
D0 = 200.0
FILL_MM = 23.5
"""pâté's nominal flat fill (profile: 294 cm³ over its 125.1 cm² ROI)."""
R = (0.20, 0.24, 0.15, 0.25, 0.30, 0.35, 0.44, 0.45, 0.50, 0.50)
"""The good product's reflectance F1..F8, Clear, NIR: F2/F7 puts the browning ratio inside the
oxidation index's ramp, so the index moves with the product and the noise."""
COLOUR_MATRIX = [[95.047 / 8.0] * 8 + [0.0], [100.0 / 8.0] * 8 + [0.0],
                 [108.883 / 3.0] * 3 + [0.0] * 6]  # fmt: skip
"""X and Y from the mean of F1..F8, Z from the blue channels: b* moves with the spectrum."""
K_NOISE = 0.5
"""Shot noise var = K·raw of the simulated counts, as the white step would have measured."""


def device_calibration(device: str) -> Calibration:
    """Dark 0, a flat white, the colour matrix above, the product's own L*a*b* as reference,
    and the count noise: every spectral index of the prior has a value and a σ."""
    base = calibration(d0_mm=D0, z_cal_mm=D0 - FILL_MM, color_matrix=COLOUR_MATRIX,
                       lab_ref=(61.3, 0.0, 17.0))  # fmt: skip
    return base.model_copy(
        update={"id": f"cal-{device}-1", "count_noise_k": K_NOISE, "common_noise_frac": 0.01}
    )


def tray(
    device: str, i: int, rng: np.random.Generator, tilt_deg: float | None = None
) -> tuple[TofFrame, SpectralFrame]:
    """One good tray of pâté: a flat fill around 23.5 mm, a small tilt, zone noise; a spectrum
    whose level and shape vary a little from tray to tray, read with shot noise."""
    tilt = rng.normal(1.0, 0.5) if tilt_deg is None else tilt_deg
    dist = plane_distances(D0, rng.normal(FILL_MM, 0.4), math.tan(math.radians(tilt)))
    dist = dist + rng.normal(0.0, 1.0, dist.shape)
    tof = TofFrame.model_validate(tof_payload(dist, device=device, seq=i))
    r = np.asarray(R) * rng.normal(1.0, 0.03) * (1.0 + rng.normal(0.0, 0.03, len(R)))
    counts = np.array([raw_for_reflectance(x, 12.5) for x in r] + [2], dtype=np.float64)
    counts = np.rint(counts + np.sqrt(K_NOISE * counts) * rng.standard_normal(counts.shape))
    spectral = SpectralFrame.model_validate(
        spectral_payload([int(c) for c in counts], device=device, seq=i)
    )
    return tof, spectral


def sample(device: str, i: int) -> str:
    return f"{device}-abc123-{i:08d}"


def store(dsn: str, line: str, frames: list[Frame]) -> None:
    rows = []
    for i, f in enumerate(frames):
        kind = {TofFrame: Kind.TOF, SpectralFrame: Kind.SPECTRAL, Weight: Kind.WEIGHT}[type(f)]
        row = pending_row(parse_topic(device_topic(line, f.device_id, kind)), f, TS, b"", i)
        assert row is not None
        rows.append(row)
    w = BatchWriter(dsn)
    try:
        assert sum(w.write(rows, []).inserted.values()) == len(rows)
    finally:
        w.close()


def test_a_reference_batch_gives_the_device_its_product_prior(
    broker: Mosquitto, fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = migrated(fresh_db)
    target = Target("reference1", "r1-node01")
    dev = target.device
    rng = np.random.default_rng(17)
    good = [tray(dev, i, rng) for i in range(40)]
    leaning = tray(dev, 40, rng, tilt_deg=14.0)  # in the batch, but the verdict rejects it
    batch = [*good, leaning]
    stored: list[Frame] = [f for pair in batch for f in pair]
    # Sample 3 was stored twice: first with a tray at 14°, then again with a later capture
    # time (a re-sent frame); the later copy is the one that counts, and it counts once.
    stale = tray(dev, 3, rng, tilt_deg=14.0)[0].model_copy(update={"ts": TS - timedelta(hours=1)})
    stored.append(stale)
    only_tof, only_spectral = tray(dev, 41, rng)[0], tray(dev, 42, rng)[1]
    stored += [only_tof, only_spectral]
    other = tray("r1-node02", 50, rng)  # another device's tray of the same line
    stored += list(other)
    store(dsn, target.line, stored)

    before = device_calibration(dev)
    config = DeviceConfig(device_id=dev, profile=PROFILE, calibration=before)
    asyncio.run(publish_config(broker.url, target, config))

    ids = tmp_path / "reference.csv"
    lines = ["sample_id,device_id"]
    lines += [f"{sample(dev, i)},{dev}" for i in range(43)]
    lines += [f"{sample(dev, 99)},{dev}", f"{sample('r1-node02', 50)},r1-node02"]
    ids.write_text("\n".join(lines) + "\n")
    argv = ["calibrate", f"{target.line}/{dev}", "--reference", str(ids),
            "--db", dsn, "--broker", broker.url]  # fmt: skip

    code, out, err = run_cli([*argv, "--dry-run"], capsys)
    assert code == 0, err
    assert "44 trays listed in reference.csv, 41 with both frames stored" in out
    assert "(1 row of other devices passed over)" in out
    assert f"1 not found: {sample(dev, 99)}" in out
    assert f"1 with only a ToF frame: {sample(dev, 41)}" in out
    assert f"1 with only a spectral frame: {sample(dev, 42)}" in out
    assert f"product prior from 41 trays, scored with {before.id}:" in out
    assert "1 of these trays the current verdict would not pass" in out
    (leaning_line,) = [x for x in out.splitlines() if sample(dev, 40) in x]
    assert leaning_line.startswith(f"  {sample(dev, 40)}  REJECT  ")
    assert "tilted" in leaning_line
    assert "dry run: nothing published" in out
    assert held(broker, target).calibration == before

    code, out, err = run_cli([*argv, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["trays"] == 41
    assert [f["sample_id"] for f in report["flagged"]] == [sample(dev, 40)]
    cal = held(broker, target).calibration
    assert cal is not None
    assert cal.id == report["calibration_id"] != before.id
    kept = ("d0_mm", "dark_bc", "white_bc", "color_matrix", "lab_ref", "count_noise_k")
    assert {k: getattr(cal, k) for k in kept} == {k: getattr(before, k) for k in kept}

    # The prior is what the core gives for those frames with the device's config: the later
    # copy of sample 3, each tray once.
    profile = load_profile(PROFILE)
    params = build_params(profile, before)
    scores = score_batch(
        stack_tof([t for t, _ in batch], params.layout),
        stack_spectral([s for _, s in batch]),
        params,
    )
    expected = fit_reference(scores)
    prior = cal.product_prior
    assert prior is not None
    assert prior == expected
    assert prior.n == 41
    for name, v in report["variables"].items():
        ip = getattr(prior, name)
        assert (v["mean"], v["sd"]) == (ip.mean, ip.sd)
        assert v["noise_sigma"] > 0
    assert prior.max_height_mm is not None
    assert prior.max_height_mm.mean == pytest.approx(FILL_MM + 1.2, abs=1.0)
    assert prior.oxidation_index is not None
    assert prior.oxidation_index.sd < float(np.std(scores.spectral.oxidation_index))

    # The analyzer scores this device against the line's own product from now on.
    after = build_params(profile, cal)
    assert after.product_prior == prior
    assert after.calibration_id == cal.id
    ox = prior.oxidation_index
    x, sigma = np.array([ox.mean + 3 * ox.sd]), np.array([0.1])
    flat = p_above(x, sigma, 0.30)
    assert p_beyond(x, sigma, 0.30, "oxidation_index", after)[0] < flat[0]


def test_too_few_trays_with_both_frames_are_refused_and_nothing_is_published(
    broker: Mosquitto, fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = migrated(fresh_db)
    target = Target("reference2", "r2-node01")
    rng = np.random.default_rng(5)
    stored: list[Frame] = [f for i in range(20) for f in tray(target.device, i, rng)]
    stored.append(tray(target.device, 20, rng)[0])
    store(dsn, target.line, stored)
    config = DeviceConfig(
        device_id=target.device, profile=PROFILE, calibration=device_calibration(target.device)
    )
    asyncio.run(publish_config(broker.url, target, config))
    ids = tmp_path / "good.csv"
    ids.write_text("sample_id\n" + "\n".join(sample(target.device, i) for i in range(35)) + "\n")
    argv = ["calibrate", f"{target.line}/{target.device}", "--reference", str(ids),
            "--db", dsn, "--broker", broker.url]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(
        "Error: reference: 20 of 35 listed trays have both frames stored for reference2/r2-node01"
    )
    assert "need at least 30 (14 not found, 1 with only one sensor's frame)" in err
    assert held(broker, target).calibration == config.calibration


def test_a_variable_read_the_same_on_every_tray_still_gets_a_prior() -> None:
    """A grey colour matrix reads Δb* the same on every tray with σ ≈ 0: the prior's sd is tiny
    but positive (rounded to five decimals it was 0, which IndexPrior refuses)."""
    n = 40
    prior = fit_prior({
        "delta_b": (np.full(n, -16.0), np.full(n, 3e-14)),
        "tilt_deg": (np.linspace(1.0, 1.0001, n), np.zeros(n)),
    })  # fmt: skip
    assert prior.delta_b is not None
    assert prior.delta_b.sd == SD_MIN
    assert prior.tilt_deg is not None
    assert prior.tilt_deg.sd == pytest.approx(float(np.std(np.linspace(1.0, 1.0001, n), ddof=1)),
                                              rel=1e-4)  # fmt: skip


def test_on_a_weighed_line_the_batch_is_scored_with_its_weights() -> None:
    """A device whose config announces a checkweigher: each tray is joined with its weight as
    the analyzer joins it, and a tray whose weight is missing is held, as the line holds it."""
    rng = np.random.default_rng(8)
    trays = [tray("w1", i, rng) for i in range(32)]
    ids = [t.sample_id for t, _ in trays]
    params = build_params(
        load_profile(PROFILE), device_calibration("w1"), CheckweigherSettings(sigma_g=0.5)
    )
    weights = {
        i: wire_frames.weight("w1", seq=j, sample_id=i, mass_g=300.0)
        for j, i in enumerate(ids[1:], start=1)
    }
    tof, spectral = {t.sample_id: t for t, _ in trays}, {s.sample_id: s for _, s in trays}
    got = rescore(ids, tof, spectral, weights, params, batch=10)
    whole = rescore(ids, tof, spectral, weights, params)
    assert [(f.sample_id, f.decision) for f in got.flagged] == [(ids[0], "HOLD")]
    assert "missing_weight" in got.flagged[0].defects
    assert got.unscored == []
    assert all(len(x) == 32 for x, _ in got.columns.values())
    for name, (x, sigma) in whole.columns.items():
        np.testing.assert_array_equal(got.columns[name][0], x)
        np.testing.assert_array_equal(got.columns[name][1], sigma)


def test_stored_frames_come_back_as_they_were_sent(fresh_db: str) -> None:
    """Rows → models is the inverse of models → rows: histogram, unknown fields and all
    (values exact in float4, as the sensors' are)."""
    dsn = migrated(fresh_db)
    hist = TofHistogram(
        start_bin=0, sub_sample=2, bin_width_mm=37.5, agg_map=list(range(64)),
        bins=[[1.0, 2.0, 3.0]] * 64, ambient=[0.5] * 64, gain_code=3,
    )  # fmt: skip
    tof = wire_frames.tof_frame("d1", seq=1, histogram=hist, firmware_build="abc")
    small = wire_frames.tof_frame("d1", layout=4, seq=2)
    spectral = wire_frames.spectral_frame("d1", seq=1, integration_ms=16.5, saturated=["Clear"],
                                          flicker_hz=100, lot="L-7")  # fmt: skip
    weight = wire_frames.weight("d1", seq=1)
    store(dsn, "L1", [tof, small, spectral, weight, wire_frames.tof_frame("d2", seq=1)])
    got = stored_frames(dsn, "L1", "d1", [tof.sample_id, small.sample_id, "d1-abc123-00000009"])
    assert got.tof == {tof.sample_id: tof, small.sample_id: small}
    assert got.spectral == {spectral.sample_id: spectral}
    assert got.weights == {weight.sample_id: weight}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sample,device_id\na,d9\n", "needs a header with sample_id (and optionally device_id)"),
        ("sample_id\na\nb\na\n", "line 4: sample a is listed twice"),
        ("sample_id,device_id\na,other\n", "no tray of L9/d9"),
    ],
)
def test_a_bad_reference_file_is_one_error_line(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = tmp_path / "ids.csv"
    ids.write_text(text)
    code, _, err = run_cli(["calibrate", "L9/d9", "--reference", str(ids)], capsys)
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("Error: --reference")
    assert message in err


def test_reference_goes_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = str(tmp_path / "ids.csv")
    for other in (["--weights", ids], ["--step", "white"]):
        code, _, err = run_cli(["calibrate", "L9/d9", "--reference", ids, *other], capsys)
        assert code == 1
        assert err == (
            "Error: give exactly one of --step, --colour-chart, --weights (and/or --rechecks) "
            "and --reference\n"
        )
