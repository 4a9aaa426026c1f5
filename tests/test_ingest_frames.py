"""Hand-built wire frames for the ingest and storage tests (and the bench), and the row mapping.

Frames come from :mod:`sqal.wire` models directly, values rounded as the interfaces say (ULD
precision), so these tests do not depend on the simulator.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from sqal.wire import (
    AnalyzerInfo,
    DefectCode,
    DeviceState,
    DeviceStatus,
    Fusion,
    Grade,
    Kind,
    Lab,
    Result,
    SpectralChannels,
    SpectralFrame,
    SpectralResult,
    TofFrame,
    TofHistogram,
    TofResult,
    Weight,
    device_topic,
    parse_topic,
)
from storage.rows import STATUS_SAMPLE_ID, to_row
from storage.tables import CONFIG, RESULTS, SPECTRAL, STATUS, TOF, WEIGHTS

T0 = (datetime.now(UTC) - timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)
"""Yesterday 08:00 UTC: inside any service's ts window (sqal.wire.TsWindow)."""


def sample_id(device: str, seq: int) -> str:
    return f"{device}-0a1b2c-{seq:08d}"


def tof_frame(
    device: str, seq: int, rng: np.random.Generator, layout: int = 8, **extra: object
) -> TofFrame:
    """A plausible 8x8 frame of a tray ~ 60 mm below a 300 mm mount."""
    n = layout
    dist = rng.normal(240.0, 8.0, (n, n)).round().astype(int)
    return TofFrame(
        device_id=device,
        sample_id=sample_id(device, seq),
        seq=seq,
        ts=T0 + timedelta(milliseconds=100 * seq),
        layout=layout,
        distance_mm=dist.tolist(),
        target_status=np.full((n, n), 5).tolist(),
        signal_per_spad=rng.uniform(5, 50, (n, n)).round(1).tolist(),
        ambient_per_spad=rng.uniform(0, 2, (n, n)).round(2).tolist(),
        range_sigma_mm=rng.uniform(1, 4, (n, n)).round(2).tolist(),
        reflectance_pct=(np.round(rng.uniform(10, 40, (n, n)) * 2) / 2).tolist(),
        ranging_hz=15.0,
        integration_ms=20.0,
        sensor_temp_c=31.5,
        **extra,
    )


def spectral_frame(device: str, seq: int, rng: np.random.Generator) -> SpectralFrame:
    counts = rng.integers(200, 30000, 11).tolist()
    names = [
        "F1_415nm", "F2_445nm", "F3_480nm", "F4_515nm", "F5_555nm", "F6_590nm",
        "F7_630nm", "F8_680nm", "Clear", "NIR_910nm", "Flicker",
    ]  # fmt: skip
    return SpectralFrame(
        device_id=device,
        sample_id=sample_id(device, seq),
        seq=seq,
        ts=T0 + timedelta(milliseconds=100 * seq + 30),
        channels=SpectralChannels(**dict(zip(names, counts, strict=True))),
        gain=16,
        atime=29,
        astep=599,
        integration_ms=50.04,
        led_ma=24,
        saturated=[],
    )


def weight(device: str, seq: int, mass_g: float = 402.7, sigma_g: float | None = 0.5) -> Weight:
    """The checkweigher's weight of the tray of :func:`tof_frame` ``seq``, weighed 0.5 s before."""
    return Weight(
        device_id=device,
        sample_id=sample_id(device, seq),
        seq=seq,
        ts=T0 + timedelta(milliseconds=100 * seq - 500),
        mass_g=mass_g,
        sigma_g=sigma_g,
    )


def result(device: str, seq: int, grade: Grade, score: float | None, defects: list[str]) -> Result:
    codes = [DefectCode(d) for d in defects]
    return Result(
        device_id=device,
        sample_id=sample_id(device, seq),
        ts=T0 + timedelta(milliseconds=100 * seq),
        profile="ground_beef",
        tof=TofResult(
            volume_mm3=152000.0,
            mass_g=161.2,
            avg_height_mm=21.5,
            max_height_mm=30.0,
            height_variation_mm=3.1,
            surface_uniformity=0.91,
            tilt_deg=1.2,
            fill_ratio=0.88,
            valid_zones=64,
            quality_score=score,
            grade=grade,
            defects=codes,
        ),
        spectral=None
        if seq % 5 == 0
        else SpectralResult(
            freshness_index=0.8,
            fat_quality_index=0.7,
            oxidation_index=0.1,
            color_uniformity=0.9,
            lab=Lab(L=45.0, a=18.0, b=12.0),
            quality_score=score,
            grade=grade,
            defects=[],
        ),
        fusion=Fusion(final_score=score, final_grade=grade, confidence=0.9, defects=codes),
        analyzer=AnalyzerInfo(version="test", processing_ms=0.4),
    )


def status(
    device: str, ts: datetime | None, state: DeviceState = DeviceState.ONLINE
) -> DeviceStatus:
    return DeviceStatus(device_id=device, state=state, ts=ts, firmware="1.2.3", uptime_s=12.0)


# --- the row mapping (pure) ----------------------------------------------------------------


def test_tof_row_flattens_row_major_and_keeps_unknown_fields() -> None:
    rng = np.random.default_rng(1)
    hist = TofHistogram(
        start_bin=0, sub_sample=2, bin_width_mm=37.5, agg_map=list(range(64)),
        bins=[[1.0, 2.0, 3.0]] * 64, ambient=[0.5] * 64, gain_code=3,
    )  # fmt: skip
    f = tof_frame("dev-1", 7, rng, histogram=hist, firmware_build="abc")
    topic = parse_topic(device_topic("line-a", "dev-1", Kind.TOF))
    row = to_row(topic, f, T0)
    assert row is not None
    table, values = row
    cols: dict[str, Any] = dict(zip(TOF.column_names, values, strict=True))
    assert table == TOF.name
    assert cols["line_id"] == "line-a"
    assert np.ravel(cols["distance_mm"])[3 * 8 + 5] == f.distance_mm[3][5]  # zone r*N + c
    assert np.size(cols["reflectance_pct"]) == 64
    assert cols["hist_bin_count"] == 3
    assert np.size(cols["hist_bins"]) == 64 * 3
    assert cols["extra"].obj == {"firmware_build": "abc", "histogram": {"gain_code": 3}}


def test_spectral_row_puts_channels_in_wire_order() -> None:
    f = spectral_frame("dev-1", 3, np.random.default_rng(2))
    row = to_row(parse_topic(device_topic("l", "dev-1", Kind.SPECTRAL)), f, T0)
    assert row is not None
    cols = dict(zip(SPECTRAL.column_names, row[1], strict=True))
    assert cols["f1_415nm"] == f.channels.F1_415nm
    assert cols["nir_910nm"] == f.channels.NIR_910nm
    assert cols["flicker"] == f.channels.Flicker
    assert cols["extra"] is None


def test_result_row_leaves_a_missing_section_null() -> None:
    r = result("dev-1", 5, Grade.REJECT, 0.2, ["underfill"])
    row = to_row(parse_topic(device_topic("l", "dev-1", Kind.RESULT)), r, T0)
    assert row is not None
    cols = dict(zip(RESULTS.column_names, row[1], strict=True))
    assert cols["spectral_present"] is False
    assert cols["spectral_lab_l"] is None
    assert cols["tof_present"] is True
    assert cols["final_grade"] == "REJECT"
    assert cols["defects"] == ["underfill"]


def test_weight_row_keeps_mass_sigma_and_unknown_fields() -> None:
    plain = weight("dev-1", 4, 401.3, None)
    w = Weight.model_validate({**plain.model_dump(), "scale_id": "cw-3"})
    row = to_row(parse_topic(device_topic("line-a", "dev-1", Kind.WEIGHT)), w, T0)
    assert row is not None
    table, values = row
    cols: dict[str, Any] = dict(zip(WEIGHTS.column_names, values, strict=True))
    assert table == WEIGHTS.name
    assert (cols["line_id"], cols["sample_id"], cols["seq"]) == ("line-a", w.sample_id, 4)
    assert (cols["mass_g"], cols["sigma_g"]) == (401.3, None)
    assert cols["extra"].obj == {"scale_id": "cw-3"}


def test_config_row_keeps_the_checkweigher_block() -> None:
    from sqal.wire import DeviceConfig

    topic = parse_topic(device_topic("l", "dev-1", Kind.CONFIG))
    with_cw = DeviceConfig(device_id="dev-1", profile="p", checkweigher={"sigma_g": 0.5})
    for cfg, expected in (
        (with_cw, {"sigma_g": 0.5}),
        (with_cw.model_copy(update={"checkweigher": None}), None),
    ):
        row = to_row(topic, cfg, T0)
        assert row is not None
        cw: Any = dict(zip(CONFIG.column_names, row[1], strict=True))["checkweigher"]
        assert (cw.obj if cw is not None else None) == expected


def test_last_will_without_ts_is_stamped_with_arrival_time() -> None:
    st = DeviceStatus(device_id="dev-1", state=DeviceState.OFFLINE)
    row = to_row(parse_topic(device_topic("l", "dev-1", Kind.STATUS)), st, T0)
    assert row is not None
    cols = dict(zip(STATUS.column_names, row[1], strict=True))
    assert cols["ts"] == T0
    assert cols["sample_id"] == STATUS_SAMPLE_ID
    assert cols["state"] == "offline"


# --- helpers shared by the ingest tests ----------------------------------------------------


def migrated(dsn: str) -> str:
    """Apply the migrations to ``dsn``; returns it."""
    import psycopg

    from storage.migrate import migrate

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    return dsn


def count(dsn: str, query: str, *params: object) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def wait_until(pred: object, timeout_s: float = 20.0, every_s: float = 0.05) -> bool:
    """Poll ``pred()`` until true or the timeout; returns the last value."""
    import time
    from collections.abc import Callable

    assert callable(pred)
    check: Callable[[], bool] = pred
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return bool(check())


def publish_all(url: str, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
    """Publish at QoS 1 and wait until the broker has acknowledged every message."""
    from sqal.mqtt import client_id, paho_client

    c = paho_client(url, client_id("test-pub"), persistent=False)
    try:
        infos = [c.publish(t, p, qos=1, retain=retain) for t, p in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()
    finally:
        c.disconnect()
        c.loop_stop()


def drop_session(url: str, cid: str) -> None:
    """End a persistent session left on the shared broker (clean start, expiry 0)."""
    from sqal.mqtt import paho_client

    c = paho_client(url, cid, persistent=False)
    c.disconnect()
    c.loop_stop()
