"""Render a batch of trays into ToF and spectral measurements and their ground truth.

The batch axis runs through every step (surface, ray casting, zone aggregation, spectra,
counts); only the truth's small least-squares fits and the final per-tray dicts loop in
Python. A tray renders identically alone or in any batch: every random number comes from the
tray's own generator, in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from device_sim import as7341, tof
from device_sim.geometry import LABEL_CONVEYOR
from device_sim.materials import (
    R_DARK_TRAP,
    RHO940_CONVEYOR,
    RHO940_DARK_TRAP,
    RHO940_TRAY,
    TRAY_REFLECTANCE,
)
from device_sim.model import ProductModel
from device_sim.spectra import lab_of
from device_sim.surface import ProductShapes, render_products
from device_sim.trays import SPOT_RADIUS_MM, TrayDraw
from device_sim.truth import TofTruth, grade, margins, spectral_truth, tof_truth_batch
from sqal.wire import SpectralSettings, TofSettings

F64 = NDArray[np.float64]
Fixture = Literal["empty", "dark", "white"]
USED_CHANNELS: Final = (0, 1, 2, 3, 4, 5, 6, 7, 9)
"""F1-F8 and NIR: the channels an index uses (Clear is not), for ``spectral_saturated``."""
WHITE_RHO940: Final = 0.95
RENDER_CHUNK: Final = 32
"""Trays rendered together. Every tray draws from its own generator, so chunking changes no
value; it keeps the (n, Z, 64) sub-ray arrays (float64: 1 MB per 32 trays at 8x8) in cache
instead of page-faulting fresh 16 MB temporaries for a batch of 512."""


@dataclass(frozen=True)
class DeviceOptics:
    """What differs between two units of the same node design, fixed per device.

    Attributes:
        zone_offset_mm: layout → (Z,) fixed per-zone ToF offsets, N(0, 1 mm) (docs/domain.md §1).
        ambient_kcps: ambient light at the node, 0-50 kcps/SPAD indoors.
        channel_gain: (10,) AS7341 channel throughput spread, N(1, 3 %) [D].
        temp_c: the node's temperature.
    """

    zone_offset_mm: dict[int, F64]
    ambient_kcps: float
    channel_gain: F64
    temp_c: float


def device_optics(rng: np.random.Generator) -> DeviceOptics:
    """Draw one device's unit-to-unit constants."""
    return DeviceOptics(
        zone_offset_mm={8: rng.standard_normal(64), 4: rng.standard_normal(16)},
        ambient_kcps=float(rng.uniform(0.0, 50.0)),
        channel_gain=1.0 + 0.03 * rng.standard_normal(10),
        temp_c=float(rng.uniform(28.0, 36.0)),
    )


@dataclass(frozen=True)
class Shot:
    """One tray to render: its draw, its noise generator and the device's state at capture."""

    draw: TrayDraw
    rng: np.random.Generator
    device: DeviceOptics
    tof: TofSettings
    spectral: SpectralSettings
    uptime_s: float
    first_frame: bool


@dataclass(frozen=True)
class Sample:
    """A rendered tray: frame fields (wire names, rounded as the drivers report) and truth."""

    tof: dict[str, Any]
    spectral: dict[str, Any]
    truth: dict[str, Any] | None


def _shapes(draws: list[TrayDraw]) -> ProductShapes:
    lobes = np.zeros((len(draws), 3, 6))
    for i, d in enumerate(draws):
        lobes[i, : len(d.lobes)] = d.lobes

    def col(name: str) -> F64:
        return np.array([getattr(d, name) for d in draws], dtype=np.float64)

    dent = np.array([d.dent for d in draws])
    return ProductShapes(
        volume_mm3=col("volume_mm3"),
        lobe_x0=lobes[:, :, 0],
        lobe_y0=lobes[:, :, 1],
        lobe_a=lobes[:, :, 2],
        lobe_b=lobes[:, :, 3],
        lobe_phi_rad=lobes[:, :, 4],
        lobe_gamma=lobes[:, :, 5],
        groove_mm=col("groove_mm"),
        groove_w_mm=col("groove_w_mm"),
        field_bank=col("field_bank").astype(np.int64),
        field_ox=col("field_ox").astype(np.int64),
        field_oy=col("field_oy").astype(np.int64),
        field_std_mm=col("field_std_mm"),
        dent_mm=dent[:, 0],
        dent_s_mm=dent[:, 1],
        dent_x=dent[:, 2],
        dent_y=dent[:, 3],
    )


def _spot(model: ProductModel, product_h: NDArray[np.float32]) -> tuple[F64, F64]:
    """(n,) product fraction and mean height inside the Ø 60 mm spectral spot."""
    sc = model.scene
    disc = (sc.xs[None, :] ** 2 + sc.ys[:, None] ** 2) <= SPOT_RADIUS_MM**2
    h = product_h[:, disc]
    return (h > 0.3).mean(axis=1), h.mean(axis=1, dtype=np.float64)


NOISELESS_UNIFORM = 0.5
"""The uniform draw of a noiseless render: below 0.7, so a mixed zone reads status 9, and above
the 0.3 % of random 12/13 failures (docs/domain.md §7)."""


def render_batch(
    model: ProductModel,
    shots: list[Shot],
    fixture: Fixture | None = None,
    truth: bool = True,
    noise: bool = True,
) -> list[Sample]:
    """Render n trays (or calibration fixtures) captured with one ToF layout.

    Args:
        model: the product model.
        shots: the trays; all must share ``tof.layout``.
        fixture: present an empty tray, a dark trap or a white tile instead of the product
            (issue 10); no truth is computed for fixtures.
        truth: compute the ground truth (skip for speed when it is not wanted).
        noise: ``False`` switches every sensor noise source off (``bench.accuracy --ceiling``):
            ranging and count noise, the per-zone range offsets, the LED drift, and the random
            status draws (a mixed zone is then always status 9, no zone fails at random). The
            same tray then renders to the same frames whatever its noise generator.
    """
    layout = shots[0].tof.layout
    if any(s.tof.layout != layout for s in shots):
        raise ValueError("a batch must share one ToF layout")
    if len(shots) > RENDER_CHUNK:
        out: list[Sample] = []
        for start in range(0, len(shots), RENDER_CHUNK):
            out += _render_chunk(model, shots[start : start + RENDER_CHUNK], fixture, truth, noise)
        return out
    return _render_chunk(model, shots, fixture, truth, noise)


def _render_chunk(
    model: ProductModel, shots: list[Shot], fixture: Fixture | None, truth: bool, noise: bool
) -> list[Sample]:
    n = len(shots)
    layout = shots[0].tof.layout
    draws = [s.draw for s in shots]
    sc, d0 = model.scene, model.d0_mm
    if fixture is None:
        product_h = render_products(sc, model.kind, _shapes(draws))
    else:
        level = d0 - model.z_cal_mm if fixture == "white" else 0.0
        product_h = np.full((n, *sc.inside.shape), level, dtype=np.float32)
    tilt = np.array([0.0 if fixture else d.tilt_deg for d in draws])
    axis = np.array([d.tilt_axis_rad for d in draws])
    d0s = np.full(n, d0)
    fan = model.fans[layout]
    z, xt, yt, prod_h = tof.cast_level(sc, product_h, fan, d0, model.statics[layout])
    tilted = np.flatnonzero(tilt != 0)
    if tilted.size:
        sub = tof.cast_general(sc, product_h[tilted], fan, d0, tilt[tilted], axis[tilted])
        for full, part in zip((z, xt, yt, prod_h), sub, strict=True):
            full[tilted] = part
    on_product = prod_h > 0.3
    label = tof.static_labels(sc, xt, yt)

    conc = np.array([d.conc for d in draws])
    rho_prod = model.optics.rho940(conc) * np.array([d.rho940_factor for d in draws])
    blood = np.array([d.blood for d in draws])
    blood_r = SPOT_RADIUS_MM * np.sqrt(blood[:, 0])
    in_blood = (xt - blood[:, 1, None, None]) ** 2 + (yt - blood[:, 2, None, None]) ** 2 < (
        blood_r[:, None, None] ** 2
    )
    rho = np.where(label == LABEL_CONVEYOR, RHO940_CONVEYOR, RHO940_TRAY)
    rho = np.where(on_product, rho_prod[:, None, None], rho)
    rho = np.where(on_product & in_blood, rho * model.optics.blood_rho940_factor, rho)
    if fixture == "dark":
        rho = np.full_like(z, RHO940_DARK_TRAP)
    elif fixture == "white":
        rho = np.where(on_product, WHITE_RHO940, rho)
    zones = tof.zone_truth(z, rho, d0s)

    normal = np.empty((n, tof.NOISE_ROWS, zones.distance_mm.shape[1]))
    uniform = np.empty((n, tof.UNIFORM_ROWS, zones.distance_mm.shape[1]))
    spec_noise = np.empty((n, 10))
    flicker_noise = np.empty(n)
    for i, s in enumerate(shots):
        normal[i] = s.rng.standard_normal(normal.shape[1:])
        uniform[i] = s.rng.random(uniform.shape[1:])
        spec_noise[i] = s.rng.standard_normal(10)
        flicker_noise[i] = s.rng.standard_normal()
    if not noise:  # drawn all the same, so the generators stay in step with a noisy render
        normal[:], spec_noise[:], flicker_noise[:] = 0.0, 0.0, 0.0
        uniform[:] = NOISELESS_UNIFORM
    forced = np.zeros(zones.distance_mm.shape, dtype=np.int64)
    for i, d in enumerate(draws):
        if d.invalid_zones8 and fixture is None:
            idx = np.array(d.invalid_zones8)
            r, c = idx // 8, idx % 8
            zi = r * 8 + c if layout == 8 else (r // 2) * 4 + c // 2
            forced[i, zi] = d.invalid_status
    meas = tof.measure(
        zones,
        integration_ms=np.array([s.tof.integration_ms for s in shots], dtype=np.float64),
        ambient_kcps=np.array([s.device.ambient_kcps for s in shots]),
        zone_offset_mm=np.stack([s.device.zone_offset_mm[layout] for s in shots])
        * (1.0 if noise else 0.0),
        uptime_s=np.array([s.uptime_s for s in shots]),
        first_frame=np.array([s.first_frame for s in shots]),
        forced_status=forced,
        normal=normal,
        uniform=uniform,
    )

    # Spectral: the spot mixes product, blood spot and tray base by area (docs/domain.md §7).
    if fixture is None:
        f_prod, h_spot = _spot(model, product_h)
        f_blood = np.minimum(blood[:, 0], f_prod)
        optics = model.optics
        blood_conc = conc + optics.blood
        r_spot = (
            (f_prod - f_blood)[:, None] * optics.reflectance(conc)
            + f_blood[:, None] * optics.reflectance(blood_conc)
            + (1.0 - f_prod)[:, None] * TRAY_REFLECTANCE
        )
        z_s = d0 - h_spot
    else:
        base = {"empty": TRAY_REFLECTANCE, "white": as7341.WHITE_TILE}.get(fixture)
        r_spot = np.tile(
            np.full_like(TRAY_REFLECTANCE, R_DARK_TRAP) if base is None else base, (n, 1)
        )
        z_s = np.full(n, model.z_cal_mm if fixture == "white" else d0)
    gains = np.array([s.spectral.gain for s in shots], dtype=np.float64)
    led = np.array([s.spectral.led_ma for s in shots], dtype=np.float64)
    atime = np.array([s.spectral.atime for s in shots])
    astep = np.array([s.spectral.astep for s in shots])
    t_int = (atime + 1) * (astep + 1) * 2.78e-3
    fs = np.minimum(65535, (atime + 1) * (astep + 1)).astype(np.float64)
    ch_gain = np.stack(
        [s.device.channel_gain * (s.draw.led_drift if noise else 1.0) for s in shots]
    )

    def expected(g: F64, led_ma: F64) -> F64:
        geff = np.array([as7341.g_eff(x) for x in g])
        return as7341.expected_counts(r_spot, z_s, model.z_cal_mm, geff, t_int, led_ma, ch_gain)

    gain_steps = np.zeros(n, dtype=np.int64)
    # At the line settings, before any injected change (row i is only changed at step i). Each
    # tray reads its own row: indexing row 0 here made a tray's gain step depend on which tray
    # came first in its batch.
    at_line = expected(gains, led) if any(d.saturate == "gain" for d in draws) else None
    for i, d in enumerate(draws):
        if fixture is not None or d.saturate is None:
            continue
        if d.saturate == "led":
            led[i] = min(258.0, 3.0 * led[i])
            continue
        # "Gain one step too high" (§7); a dark product may need two to reach full scale.
        assert at_line is not None
        base = at_line[i, :8].max()
        k0 = as7341.GAINS.index(float(gains[i]))
        for steps in (1, 2, 3):
            k = min(k0 + steps, len(as7341.GAINS) - 1)
            ratio = as7341.g_eff(as7341.GAINS[k]) / as7341.g_eff(gains[i])
            if base * ratio >= fs[i] or k == len(as7341.GAINS) - 1:
                break
        gains[i], gain_steps[i] = as7341.GAINS[k], steps
    exp_counts = expected(gains, led)
    counts, sat = as7341.measure(exp_counts, fs, spec_noise)
    geff_all = np.array([as7341.g_eff(x) for x in gains])
    flicker = np.maximum(np.rint(0.01 * geff_all * t_int * (1.0 + 0.2 * flicker_noise)), 0)

    lab = lab_of(r_spot) if truth and fixture is None else None
    spec_truth = (
        spectral_truth(model, as7341.channel_reflectance(r_spot), lab) if lab is not None else None
    )
    sat_frac = model.profile.spectral.saturation_frac
    true_sat = (exp_counts[:, USED_CHANNELS] >= sat_frac * fs[:, None]).any(axis=1)
    volume = product_h.sum(axis=(1, 2), dtype=np.float64)
    peak_h = product_h.max(axis=(1, 2))
    ny = layout
    tof_truths = _tof_truths(model, layout, zones, forced > 0) if spec_truth is not None else []
    out: list[Sample] = []
    for i, s in enumerate(shots):
        tof_fields = {
            "layout": layout,
            "distance_mm": meas.distance_mm[i].reshape(ny, ny).tolist(),
            "target_status": meas.target_status[i].reshape(ny, ny).tolist(),
            "signal_per_spad": meas.signal_per_spad[i].reshape(ny, ny).tolist(),
            "ambient_per_spad": meas.ambient_per_spad[i].reshape(ny, ny).tolist(),
            "range_sigma_mm": meas.range_sigma_mm[i].reshape(ny, ny).tolist(),
            "reflectance_pct": meas.reflectance_pct[i].reshape(ny, ny).tolist(),
            "ranging_hz": s.tof.ranging_hz,
            "integration_ms": s.tof.integration_ms,
            "sensor_temp_c": round(s.device.temp_c + 4.0 * (1.0 - np.exp(-s.uptime_s / 600.0))),
        }
        names = as7341.CHANNEL_NAMES
        channels = {names[c]: int(counts[i, c]) for c in range(10)}
        channels["Flicker"] = int(flicker[i])
        spec_fields = {
            "channels": channels,
            "gain": float(gains[i]),
            "atime": int(atime[i]),
            "astep": int(astep[i]),
            "integration_ms": round(float(t_int[i]), 3),
            "led_ma": int(led[i]),
            "saturated": [names[c] for c in range(10) if sat[i, c]],
        }
        record = None
        if spec_truth is not None:
            record = _truth_record(
                model,
                s.draw,
                float(volume[i]),
                float(peak_h[i]),
                tof_truths[i],
                spec_truth[i],
                bool(true_sat[i]),
                int(gain_steps[i]),
            )
        out.append(Sample(tof_fields, spec_fields, record))
    return out


def _tof_truths(
    model: ProductModel, layout: int, zones: tof.ZoneTruth, invalid: NDArray[np.bool_]
) -> list[TofTruth]:
    """§2 truth metrics of every tray from (n, Z) noise-free zones and the invalid clusters."""
    return tof_truth_batch(model, layout, zones.height_mm, zones.rho940, invalid)


def _truth_record(
    model: ProductModel,
    draw: TrayDraw,
    volume: float,
    peak: float,
    t: TofTruth,
    spec: dict[str, Any],
    saturated: bool,
    gain_steps: int,
) -> dict[str, Any]:
    mass = draw.density_g_cm3 * volume / 1000.0
    defects, letter, final = grade(model, mass, t, spec, saturated, peak)
    injected = []
    for inj in draw.injected:
        params = dict(inj.params)
        if inj.defect == "spectral_saturated" and params.get("mode") == "gain":
            params["gain_steps"] = gain_steps
        injected.append({"defect": inj.defect, "params": params})
    return {
        "mass_g": round(mass, 3),
        "volume_mm3": round(volume, 1),
        "avg_height_mm": round(t.avg_height_mm, 3),
        "max_height_mm": round(t.max_height_mm, 3),
        "peak_height_mm": round(peak, 3),
        "height_variation_mm": round(t.height_variation_mm, 3),
        "roughness_mm": round(t.roughness_mm, 3),
        "surface_uniformity": (
            None if t.surface_uniformity is None else round(t.surface_uniformity, 4)
        ),
        "tilt_deg": round(t.tilt_deg, 3),
        "fill_ratio": round(mass / model.profile.product.nominal_mass_g, 4),
        "valid_share": round(t.valid_share, 4),
        "spectral": {
            k: [round(x, 3) for x in v] if isinstance(v, list) else round(v, 4)
            for k, v in spec.items()
        },
        "injected": injected,
        "defects": defects,
        "grade": letter,
        "final_score": round(final, 4),
        "margins": {k: round(v, 4) for k, v in margins(model, mass, t, spec, peak, final).items()},
    }
