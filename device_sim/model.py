"""Everything fixed per product profile: scene, ray fans, ROI, optics, reference spectra.

Built once per profile (:func:`product_model`, cached by name) and shared by the renderer,
the truth and the calibration. The spectral anchors and ``lab_ref`` are recomputed here from the
simulator's fresh and degraded reference spectra (docs/domain.md §6: "sqal sim recomputes them").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from device_sim.as7341 import channel_reflectance
from device_sim.geometry import RayFan, TrayScene, ray_fan, roi_mask, tray_scene
from device_sim.materials import IDX_CAR, OPTICS, ProductOptics
from device_sim.spectra import ks_of, lab_of
from device_sim.tof import StaticHits, static_hits
from sqal.profiles import Profile, load_profile

F64 = NDArray[np.float64]

NOMINAL_DOME = {"a_mm": 78.0, "b_mm": 52.0, "gamma": 0.35, "volume_mm3": 412e3}
"""Nominal foie gras lobe (docs/domain.md §7): a, b, γ and V = πabH/(γ+1) at H = 43.6 mm."""


def lin(x: F64 | float, x0: float, x1: float) -> F64:
    """``clip((x − x0)/(x1 − x0), 0, 1)`` (docs/domain.md notation); x0 > x1 is allowed."""
    return np.clip((np.asarray(x, dtype=np.float64) - x0) / (x1 - x0), 0.0, 1.0)


def ratio_indices(ch: F64) -> tuple[F64, F64, F64]:
    """MI, BR and NR of (n, 10) channel reflectances (docs/domain.md §4).

    ``MI = KS(R572)/KS(R525)`` with ``R525 = 0.75·F4 + 0.25·F5``, ``R572 = 0.514·F5 + 0.486·F6``;
    ``BR = R_F2/R_F7``; ``NR = R_NIR/R_F8``.
    """
    r525 = 0.75 * ch[:, 3] + 0.25 * ch[:, 4]
    r572 = 0.514 * ch[:, 4] + 0.486 * ch[:, 5]
    return ks_of(r572) / ks_of(r525), ch[:, 1] / ch[:, 6], ch[:, 9] / ch[:, 7]


@dataclass(frozen=True)
class Anchors:
    """Index anchors and reference colour recomputed from the reference spectra (§4, §6)."""

    mi_fresh: float
    mi_met: float
    br_fresh: float
    br_ox: float
    nr_ref: float
    lab_ref: tuple[float, float, float]


@dataclass(frozen=True)
class ProductModel:
    """A profile with what the simulator derives from it.

    Attributes:
        d0_mm: true sensor-to-tray-base distance (the profile's mount distance).
        z_cal_mm: white tile distance, the usual surface distance: d0 − 0.7·target height [D].
        fans, rois, statics: per layout (4, 8), the sub-ray fan, the (Z,) ROI mask and the
            sub-ray hits on the empty level tray.
        ox_q, ox_table: degradation q ∈ [0, 1] → oxidation index (for injecting a target O).
        yel_dose, yel_table: extra carotenoid → Δb* (for injecting a target Δb*).
    """

    profile: Profile
    optics: ProductOptics
    scene: TrayScene
    d0_mm: float
    z_cal_mm: float
    fans: dict[int, RayFan]
    rois: dict[int, NDArray[np.bool_]]
    statics: dict[int, StaticHits]
    anchors: Anchors
    ox_q: F64
    ox_table: F64
    yel_dose: F64
    yel_table: F64

    @property
    def kind(self) -> str:
        return self.profile.product.kind

    def oxidation_index(self, ch: F64) -> F64:
        """(n,) true oxidation index ``clip(w_m·m + (1 − w_m)·β, 0, 1)`` (docs/domain.md §4)."""
        mi, br, _ = ratio_indices(ch)
        a, w_m = self.anchors, self.profile.spectral.w_m
        m = lin(mi, a.mi_fresh, a.mi_met)
        beta = lin(br, a.br_fresh, a.br_ox)
        return np.asarray(np.clip(w_m * m + (1.0 - w_m) * beta, 0.0, 1.0))


def _anchors(optics: ProductOptics) -> Anchors:
    r = optics.reflectance(np.stack([optics.fresh, optics.degraded]))
    mi, br, nr = ratio_indices(channel_reflectance(r))
    lab = lab_of(r[:1])[0]
    return Anchors(
        float(mi[0]),
        float(mi[1]),
        float(br[0]),
        float(br[1]),
        float(nr[0]),
        (float(lab[0]), float(lab[1]), float(lab[2])),
    )


def build_model(profile: Profile) -> ProductModel:
    """Derive the simulator's fixed quantities from a validated profile."""
    optics = OPTICS[profile.product.kind]
    d0 = float(profile.tof.mount_distance_mm)
    fans = {n: ray_fan(n) for n in (4, 8)}
    rois = {
        n: roi_mask(
            n,
            d0,
            profile.tray,
            profile.tof.roi
            if n == profile.tof.layout
            else profile.tof.roi.model_copy(update={"zone_mask": None}),
        )
        for n in (4, 8)
    }
    scene = tray_scene(profile.tray, d0)
    partial = ProductModel(
        profile=profile,
        optics=optics,
        scene=scene,
        d0_mm=d0,
        z_cal_mm=float(round(d0 - 0.7 * profile.tof.max_height.target_mm)),
        fans=fans,
        rois=rois,
        statics={n: static_hits(scene, fans[n], d0) for n in (4, 8)},
        anchors=_anchors(optics),
        ox_q=np.zeros(1),
        ox_table=np.zeros(1),
        yel_dose=np.zeros(1),
        yel_table=np.zeros(1),
    )
    q = np.linspace(0.0, 1.0, 201)
    conc = (1.0 - q)[:, None] * optics.fresh + q[:, None] * optics.degraded
    ox = np.maximum.accumulate(
        partial.oxidation_index(channel_reflectance(optics.reflectance(conc)))
    )
    dose = np.linspace(0.0, 4.0, 201)
    conc_y = np.repeat(optics.fresh[None], dose.size, axis=0)
    conc_y[:, IDX_CAR] += dose
    db = np.maximum.accumulate(
        lab_of(optics.reflectance(conc_y))[:, 2] - partial.anchors.lab_ref[2]
    )
    return ProductModel(
        **{**partial.__dict__, "ox_q": q, "ox_table": ox, "yel_dose": dose, "yel_table": db}
    )


@functools.lru_cache(maxsize=16)
def product_model(name: str) -> ProductModel:
    """The model of profile ``name`` (loaded with :func:`sqal.profiles.load_profile`)."""
    return build_model(load_profile(name))
