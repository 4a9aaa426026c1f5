"""``sqal calibrate``: a guided capture of one fixture, then the device's new config.

The shell around :mod:`analyzer.calibration`: read the device's retained config (its profile
and settings), prompt the operator to present the fixture, capture frames from the device's
topics with progress, compute the reference (or refuse it with the reason), and publish the
config again with the new reference and a fresh calibration id. Fields of the calibration block
that this step does not measure are kept.

While a step captures, the device's config says ``mode: calibration`` (:func:`calibration_mode`),
so the fixture's "trays" are stored apart from the product; the config published at the end
carries the device's previous mode again, and a failed or interrupted step (Ctrl-C included)
publishes the held config back with it.

The weighed step captures nothing: it joins a file of scale weights with the volumes the
analyzer published for the same samples (read from the database by the caller) and fits the
line's mass model (:mod:`analyzer.massmodel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
from numpy.typing import NDArray

from analyzer.arrays import stack_spectral, stack_tof
from analyzer.calibration import (
    Step,
    chart_reflectance,
    empty_reference,
    fit_colour_matrix,
    range_scale,
    spectral_reference,
)
from analyzer.massmodel import MIN_TRAYS, MassFit, fit
from sqal.devices import Target, fetch_configs, publish_config, publish_mode
from sqal.errors import BrokerError, CalibrationError, ConfigError, PayloadError, SqalError
from sqal.mqtt import aiomqtt_client, client_id
from sqal.profiles import Profile, load_profile
from sqal.settings import parse_broker_url
from sqal.wire import (
    Calibration,
    DeviceConfig,
    Kind,
    Mode,
    SpectralFrame,
    TofFrame,
    decode,
    device_topic,
)

log = logging.getLogger(__name__)

F64 = NDArray[np.float64]

PROMPTS: dict[str, str] = {
    "empty": "Place an EMPTY tray under {t}, centred as in production",
    "dark": "Cover {t}'s spectral sensor with the DARK trap (LED stays on)",
    "white": "Place the WHITE tile under {t} at the usual product height",
}


@dataclass
class Capture:
    """Frames of one device collected during a calibration step."""

    tof: list[TofFrame] = field(default_factory=list)
    spectral: list[SpectralFrame] = field(default_factory=list)
    rejected: int = 0


def parse_rho_white(text: str) -> list[float]:
    """``0.97`` (every channel) or ten comma-separated values F1..F8, Clear, NIR."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--rho-white {text!r}: numbers, e.g. 0.97 or ten values") from None
    if len(values) == 1:
        values *= 10
    if len(values) != 10 or not all(0.5 <= v <= 1.0 for v in values):
        raise ConfigError(f"--rho-white {text!r}: one value or ten, each 0.5-1.0")
    return values


async def capture_frames(
    broker: str,
    target: Target,
    need_tof: int,
    need_spectral: int,
    timeout_s: float,
    on_progress: Callable[[Capture], None] | None = None,
    settings: DeviceConfig | None = None,
) -> Capture:
    """Collect frames from the device until enough of each kind came.

    With ``settings``, frames taken with other sensor settings (a device still applying its new
    config) are passed over and counted as rejected: a reference is only valid for the
    settings it was measured with.

    Raises:
        CalibrationError: not enough frames within ``timeout_s``.
        BrokerError: the broker is unreachable.
    """
    url = parse_broker_url(broker)
    got = Capture()
    deadline = time.monotonic() + timeout_s
    try:
        async with aiomqtt_client(url, client_id("sqal-calibrate")) as client:
            if need_tof:
                await client.subscribe(device_topic(target.line, target.device, Kind.TOF), qos=1)
            if need_spectral:
                spec = device_topic(target.line, target.device, Kind.SPECTRAL)
                await client.subscribe(spec, qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    async for msg in client.messages:
                        payload = msg.payload if isinstance(msg.payload, bytes) else b""
                        try:
                            frame = decode(str(msg.topic), payload)
                        except PayloadError:
                            got.rejected += 1
                            continue
                        if settings is not None and not _measured_with(frame, settings):
                            got.rejected += 1
                            continue
                        if isinstance(frame, TofFrame) and len(got.tof) < need_tof:
                            got.tof.append(frame)
                        elif isinstance(frame, SpectralFrame) and len(got.spectral) < need_spectral:
                            got.spectral.append(frame)
                        if on_progress is not None:
                            on_progress(got)
                        if len(got.tof) >= need_tof and len(got.spectral) >= need_spectral:
                            break
    except aiomqtt.MqttError as exc:
        raise BrokerError(f"cannot reach broker {url}: {exc}") from None
    if len(got.tof) < need_tof or len(got.spectral) < need_spectral:
        waited = timeout_s - max(0.0, deadline - time.monotonic())
        # Mosquitto grants a subscription the ACL denies and then delivers nothing on it, so a
        # user without read rights looks exactly like a silent device: name both.
        who = (
            f", and may broker user {url.username} read its frames (sqal calibrate runs as user "
            "calibrate)"
            if url.username
            else ""
        )
        raise CalibrationError(
            f"got {len(got.tof)}/{need_tof} ToF and {len(got.spectral)}/{need_spectral} "
            f"spectral frames in {waited:.0f} s; is {target.line}/{target.device} publishing{who}?"
        )
    return got


def _measured_with(frame: object, cfg: DeviceConfig) -> bool:
    if isinstance(frame, TofFrame):
        return frame.layout == cfg.tof.layout
    if isinstance(frame, SpectralFrame):
        s = cfg.spectral
        return (frame.gain, frame.atime, frame.astep, frame.led_ma) == (
            s.gain,
            s.atime,
            s.astep,
            s.led_ma,
        )
    return False


def new_calibration(
    current: Calibration | None, target: Target, now: datetime, **measured: Any
) -> Calibration:
    """The calibration block with this step's fields replaced and a fresh id and time."""
    base = current.model_dump() if current is not None else {}
    base.update(measured)
    base["id"] = f"cal-{target.device}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    base["ts"] = now
    return Calibration.model_validate(base)


def held_config(broker: str, target: Target) -> DeviceConfig:
    """The device's retained config: its profile, settings and current calibration.

    Raises:
        ConfigError: the device has no valid retained config.
        BrokerError: the broker is unreachable.
    """
    held = asyncio.run(fetch_configs(broker, target.topic)).get(target.topic)
    if not isinstance(held, DeviceConfig):
        raise ConfigError(
            f"{target.line}/{target.device} has no valid retained config; "
            f"run sqal config set {target.line}/{target.device} --profile NAME first"
        )
    return held


@contextlib.contextmanager
def calibration_mode(broker: str, target: Target, held: DeviceConfig) -> Iterator[None]:
    """Hold the device in ``calibration`` mode while the block runs.

    On entry the held config is published again with ``mode: calibration`` (the analyzer stamps
    the fixture's results so, and they count apart from the product). The block ends by
    publishing the new config, which carries ``held.mode``; if it raises instead (a refused
    capture, a lost broker, Ctrl-C), the held config is published back with its mode, then the
    error goes on.

    Raises:
        BrokerError, PublishError: the calibration mode could not be published (nothing ran).
    """
    asyncio.run(publish_mode(broker, target, held, Mode.CALIBRATION))
    try:
        yield
    except BaseException:
        try:
            asyncio.run(publish_mode(broker, target, held, held.mode))
        except SqalError as exc:  # the step's own error is the one to report
            log.warning(
                "%s/%s stays in calibration mode: restoring %s failed (%s); run sqal config "
                "set %s/%s --profile %s --mode %s",
                target.line, target.device, held.mode, exc,
                target.line, target.device, held.profile, held.mode,
            )  # fmt: skip
        raise


def calibrate(
    broker: str,
    target: Target,
    step: Step,
    frames: int,
    rho_white: list[float],
    timeout_s: float,
    confirm: Callable[[str], None],
    on_progress: Callable[[Capture], None] | None = None,
    tile_height_mm: float | None = None,
) -> tuple[DeviceConfig, dict[str, Any]]:
    """Run one calibration step end to end; returns the published config and a summary.

    ``tile_height_mm``: with the white step, the tile's top above the tray base (the fixture's
    spec): with the empty step's d0 map it gives the ToF range's slope (``range_scale``).

    Raises:
        ConfigError: the device has no retained config (so no profile to calibrate for).
        CalibrationError: the capture was refused or did not complete.
        BrokerError: the broker is unreachable.
    """
    held = held_config(broker, target)
    profile = load_profile(held.profile)
    with calibration_mode(broker, target, held):
        return _capture_step(
            broker, target, held, profile, step, frames, rho_white, timeout_s, confirm,
            on_progress, tile_height_mm,
        )  # fmt: skip


def _capture_step(
    broker: str,
    target: Target,
    held: DeviceConfig,
    profile: Profile,
    step: Step,
    frames: int,
    rho_white: list[float],
    timeout_s: float,
    confirm: Callable[[str], None],
    on_progress: Callable[[Capture], None] | None,
    tile_height_mm: float | None,
) -> tuple[DeviceConfig, dict[str, Any]]:
    """:func:`calibrate`'s prompt, capture, computation and publication, in calibration mode;
    the published config carries ``held.mode``."""
    confirm(PROMPTS[step].format(t=f"{target.line}/{target.device}"))
    need_tof = frames if step in ("empty", "white") else 0
    need_spec = frames if step in ("dark", "white") else 0
    got = asyncio.run(
        capture_frames(broker, target, need_tof, need_spec, timeout_s, on_progress, held)
    )
    now = datetime.now(UTC)
    summary: dict[str, Any] = {"step": step, "frames": frames, "rejected_frames": got.rejected}
    if step == "empty":
        ref = empty_reference(stack_tof(got.tof, profile.tof.layout), profile)
        cal = new_calibration(
            held.calibration, target, now, d0_mm=round(ref.d0_mm, 2),
            d0_map_mm=[[round(float(v), 2) for v in row] for row in ref.d0_map_mm],
            signal0_map_kcps=[[round(float(v), 1) for v in row] for row in ref.signal_map_kcps],
        )  # fmt: skip
        summary |= {"d0_mm": ref.d0_mm, "valid_share": ref.valid_share, "drift": ref.drift_ratio}
    else:
        tof = stack_tof(got.tof, profile.tof.layout) if got.tof else None
        sref = spectral_reference(stack_spectral(got.spectral), step, profile, tof)
        bc = [round(float(v), 4) for v in sref.bc]
        if step == "dark":
            cal = new_calibration(held.calibration, target, now, dark_bc=bc)
        else:
            z_cal = sref.z_cal_mm
            if z_cal is None:
                raise CalibrationError("white: no valid ToF reading of the tile to measure z_cal")
            measured: dict[str, Any] = {}
            if tile_height_mm is not None:
                base = held.calibration
                if base is None or base.d0_map_mm is None or tof is None:
                    raise CalibrationError(
                        "white: --tile-height-mm needs the empty step's d0 map first"
                    )
                scale = range_scale(tof, np.asarray(base.d0_map_mm), tile_height_mm, profile)
                measured["range_scale"] = round(scale, 5)
                summary["range_scale"] = scale
            cal = new_calibration(held.calibration, target, now, white_bc=bc,
                                  rho_white=rho_white, z_cal_mm=round(z_cal, 1),
                                  count_noise_k=sref.count_noise_k,
                                  common_noise_frac=sref.common_noise_frac,
                                  **measured)  # fmt: skip
            summary["z_cal_mm"] = z_cal
        summary |= {"basic_counts": bc, "peak_fs": sref.peak_fs,
                    "max_cv": float(sref.cv[:8].max())}  # fmt: skip
    config = held.model_copy(update={"calibration": cal, "ts": now})
    asyncio.run(publish_config(broker, target, config))
    summary["calibration_id"] = cal.id
    return config, summary


def ask(prompt: str) -> None:
    """Wait for Enter on a terminal; without one (scripts, CI) carry on."""
    if sys.stdin.isatty():
        input(f"{prompt}, then press Enter… ")
    else:
        sys.stderr.write(f"{prompt} (no terminal: not waiting)\n")


def load_chart(path: Path) -> tuple[list[str], F64, F64]:
    """A colour-chart file: ``{"patches": [{"name", "xyz": [X, Y, Z], "bc": [10 values]}]}``.

    ``bc`` are the patch's mean basic counts (F1..F8, Clear, NIR) captured at the white tile's
    distance with the device's current settings; ``xyz`` its spectrophotometer reading (D65/2°,
    white Y = 100).

    Raises:
        ConfigError: unreadable, or a patch without 3 XYZ and 10 basic counts.
    """
    try:
        doc = json.loads(path.read_text())
        patches = doc["patches"]
        names = [str(p.get("name", i)) for i, p in enumerate(patches)]
        xyz = np.asarray([p["xyz"] for p in patches], dtype=np.float64)
        bc = np.asarray([p["bc"] for p in patches], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"--colour-chart {path}: {exc}") from None
    if xyz.ndim != 2 or xyz.shape[1] != 3 or bc.ndim != 2 or bc.shape[1] != 10:
        raise ConfigError(f"--colour-chart {path}: each patch needs 3 xyz and 10 bc values")
    return names, bc, xyz


def calibrate_colour(
    broker: str, target: Target, chart: Path, seed: int = 0
) -> tuple[DeviceConfig, dict[str, Any]]:
    """Fit the colour matrix from a chart file and publish it in the device's calibration.

    Raises:
        ConfigError: no retained config, or no dark/white references yet.
        CalibrationError: too few patches or a held-out ΔE over the limit.
    """
    held = asyncio.run(fetch_configs(broker, target.topic)).get(target.topic)
    cal = held.calibration if isinstance(held, DeviceConfig) else None
    if (
        not isinstance(held, DeviceConfig)
        or cal is None
        or None in (cal.dark_bc, cal.white_bc, cal.rho_white)
    ):
        raise ConfigError(
            f"{target.line}/{target.device}: calibrate --step dark and --step white first; "
            "the chart's reflectances are computed from them"
        )
    names, bc, xyz = load_chart(chart)
    r = chart_reflectance(
        bc, np.asarray(cal.dark_bc), np.asarray(cal.white_bc), np.asarray(cal.rho_white)
    )
    fit = fit_colour_matrix(r, xyz, np.random.default_rng(seed))
    now = datetime.now(UTC)
    new = new_calibration(
        cal, target, now,
        color_matrix=[[round(float(v), 6) for v in row] for row in fit.matrix],
        color_delta_e=round(fit.held_out_de, 3),
    )  # fmt: skip
    config = held.model_copy(update={"calibration": new, "ts": now})
    asyncio.run(publish_config(broker, target, config))
    summary = {"step": "colour", "patches": len(names), "held_out_de": fit.held_out_de,
               "fitted_de": fit.fitted_de, "calibration_id": new.id}  # fmt: skip
    return config, summary


@dataclass(frozen=True)
class Weighings:
    """Scale weights of one device's trays, from a ``--weights`` file.

    Attributes:
        mass_g: net mass by sample id.
        other_devices: rows whose ``device_id`` names another device (passed over).
    """

    mass_g: dict[str, float]
    other_devices: int = 0


@dataclass(frozen=True)
class SampleRow:
    """A row of a sample file (``--weights``, ``--reference``) naming this device's sample.

    Attributes:
        line: the row's line number in the file (1 is the header).
        fields: the row's columns by (stripped) header name.
    """

    line: int
    sample_id: str
    fields: dict[str, str]


@dataclass(frozen=True)
class SampleRows:
    """This device's rows of a sample file, and how many rows named other devices."""

    rows: list[SampleRow]
    other_devices: int


def read_sample_rows(path: Path, flag: str, device: str, columns: tuple[str, ...]) -> SampleRows:
    """A CSV with a header holding ``sample_id``, ``columns`` and optionally ``device_id``.

    Rows without a sample id are skipped; rows naming another device are passed over and
    counted, so one file can serve a line.

    Args:
        flag: the option and file, for messages (``--weights trays.csv``).

    Raises:
        ConfigError: unreadable, not a CSV, or a needed column missing from the header.
    """
    need = ("sample_id", *columns)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [c.strip() for c in reader.fieldnames or []]
            if not set(need) <= set(header):
                raise ConfigError(
                    f"{flag}: needs a header with {' and '.join(need)} (and optionally "
                    f"device_id); found {','.join(header) or 'nothing'}"
                )
            reader.fieldnames = header
            rows: list[SampleRow] = []
            other = 0
            for row in reader:
                sample = (row.get("sample_id") or "").strip()
                if not sample:
                    continue
                dev = (row.get("device_id") or "").strip()
                if dev and dev != device:
                    other += 1
                    continue
                fields = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)}
                rows.append(SampleRow(reader.line_num, sample, fields))
    except OSError as exc:
        raise ConfigError(f"{flag}: {exc.strerror or exc}") from None
    except csv.Error as exc:
        raise ConfigError(f"{flag}: not a CSV file: {exc}") from None
    return SampleRows(rows, other)


def load_weights(path: Path, device: str) -> Weighings:
    """A CSV of ``sample_id,mass_g`` with a header, and optionally a ``device_id`` column.

    Rows naming another device are passed over and counted, so one file can serve a line.

    Raises:
        ConfigError: unreadable, a missing column, a mass that is not a finite number, or a
            sample id given twice.
    """
    flag = f"--weights {path}"
    read = read_sample_rows(path, flag, device, ("mass_g",))
    masses: dict[str, float] = {}
    for row in read.rows:
        where = f"{flag} line {row.line}"
        text = row.fields.get("mass_g", "")
        try:
            mass = float(text)
        except ValueError:
            raise ConfigError(f"{where}: mass_g {text!r} is not a number") from None
        if not math.isfinite(mass):
            raise ConfigError(f"{where}: mass_g {text!r} is not a finite number")
        if row.sample_id in masses:
            raise ConfigError(f"{where}: sample {row.sample_id} is weighed twice")
        masses[row.sample_id] = mass
    return Weighings(masses, read.other_devices)


def calibrate_weighed(
    broker: str,
    target: Target,
    weighings: Weighings,
    published: Mapping[str, tuple[float | None, str]],
    dry_run: bool = False,
) -> tuple[DeviceConfig, dict[str, Any]]:
    """Fit the line's mass model on weighed trays and publish it in the device's calibration.

    Args:
        weighings: the scale's masses by sample id.
        published: by sample id, the volume the analyzer published for it (``None`` without
            one) and the profile it was scored with; samples without a stored result absent.
        dry_run: fit and report, publish nothing.

    Raises:
        ConfigError: the device has no retained config.
        CalibrationError: fewer than 30 trays matched, or the fit refused them.
        BrokerError: the broker is unreachable.
    """
    held = held_config(broker, target)
    profile = load_profile(held.profile)
    ids = sorted(weighings.mass_g)
    not_found = [i for i in ids if i not in published]
    no_volume = [i for i in ids if i in published and published[i][0] is None]
    other_profile = [
        i for i in ids if i in published and published[i][0] is not None
        and published[i][1] != held.profile
    ]  # fmt: skip
    matched = [i for i in ids if i in published and i not in no_volume and i not in other_profile]
    summary: dict[str, Any] = {
        "step": "weighed",
        "weighed": len(ids),
        "other_devices": weighings.other_devices,
        "matched": len(matched),
        "not_found": not_found,
        "no_volume": no_volume,
        "other_profile": other_profile,
    }
    if len(matched) < MIN_TRAYS:
        raise CalibrationError(
            f"weighed: {len(matched)} of {len(ids)} weighed trays have a published volume of "
            f"{target.line}/{target.device} with profile {held.profile}, need at least "
            f"{MIN_TRAYS} ({len(not_found)} not found, {len(no_volume)} without a volume, "
            f"{len(other_profile)} scored with another profile)"
        )
    # The published volume_mm3 is V̂ itself, the geometric estimate the model weighs.
    volume = np.array([published[i][0] for i in matched], dtype=np.float64)
    mass = np.array([weighings.mass_g[i] for i in matched], dtype=np.float64)
    result = fit(volume, mass, profile.product)
    summary |= _fit_summary(result)
    now = datetime.now(UTC)
    cal = new_calibration(
        held.calibration, target, now, mass_model=result.model.to_calibration().model_dump()
    )
    config = held.model_copy(update={"calibration": cal, "ts": now})
    if not dry_run:
        asyncio.run(publish_config(broker, target, config))
    summary |= {"calibration_id": None if dry_run else cal.id, "published": not dry_run}
    return config, summary


def _fit_summary(result: MassFit) -> dict[str, Any]:
    m = result.model
    return {
        "form": result.form,
        "reason": result.reason,
        "mass_model": {"a_g": m.a_g, "b_g_per_cm3": m.b_g_per_cm3,
                       "c_g_per_cm2": m.c_g_per_cm2, "sigma_g": m.sigma_g, "n": m.n},
        "candidates": [
            {"form": c.form, "a_g": c.coef[0], "b_g_per_cm3": c.coef[1],
             "c_g_per_cm2": c.coef[2], "loo_sigma_g": c.loo_sigma_g,
             "tercile_bias_g": list(c.tercile_bias_g)}
            for c in result.candidates
        ],
    }  # fmt: skip
