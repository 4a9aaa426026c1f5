"""Sensor and tray geometry: VL53L8CH ray fans, the tray scene on a 1 mm grid, the ROI.

Coordinates (mm): x along the tray's length (the sensor's columns), y along its width (rows),
origin on the sensor axis, heights ``h`` upward from the tray base, perpendicular distances
``z = d0 − h`` downward from the sensor (docs/domain.md §1 "Geometry", §2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from sqal.profiles import Roi, Tray

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]

HALF_FOV_DEG: Final = 22.5
"""Half of the VL53L8CH's 45° square field of view [V 3,4]."""
SUB_RAYS: Final = 8
"""Sub-rays per zone side: 8x8 = 64 per zone (docs/domain.md §7 "ToF")."""
WALL_MM: Final = 1.5
"""Tray wall thickness seen from above [D]."""
FLANGE_MM: Final = 8.0
"""Sealing flange width (docs/domain.md §7 "Surface")."""
CONVEYOR_H_MM: Final = -0.5
"""Belt surface relative to the tray base's top: the base's thickness [D]."""

LABEL_CONVEYOR, LABEL_TRAY, LABEL_PRODUCT = 0, 1, 2


def zone_k(layout: int) -> float:
    """Zone pitch per mm of distance, ``k = 2·tan(22.5°)/N`` (0.10355 at 8x8, 0.20711 at 4x4)."""
    return 2.0 * math.tan(math.radians(HALF_FOV_DEG)) / layout


@dataclass(frozen=True)
class RayFan:
    """Directions of the sub-rays of every zone, as tangents (x = tan_x·z, y = tan_y·z).

    Attributes:
        layout: 4 or 8.
        tan_x, tan_y: (Z, S) with Z = layout² zones (row-major, zone i = r·N + c) and
            S = SUB_RAYS² sub-rays on a regular grid inside each zone.
    """

    layout: int
    tan_x: F64
    tan_y: F64

    @property
    def zones(self) -> int:
        return self.layout * self.layout


def ray_fan(layout: int, sub: int = SUB_RAYS) -> RayFan:
    """Uniform angular tiling of the FoV (docs/domain.md §1 "Geometry", [D])."""
    k = zone_k(layout)
    centre = np.arange(layout) - (layout - 1) / 2.0
    off = (np.arange(sub) + 0.5) / sub - 0.5
    v, u = np.meshgrid(centre, centre, indexing="ij")  # zone row, column
    sv, su = np.meshgrid(off, off, indexing="ij")
    tan_x = (u.reshape(-1, 1) + su.reshape(1, -1)) * k
    tan_y = (v.reshape(-1, 1) + sv.reshape(1, -1)) * k
    return RayFan(layout, tan_x, tan_y)


def zone_offsets(layout: int) -> tuple[F64, F64]:
    """(Z,) zone-centre offsets u = c − (N−1)/2 and v = r − (N−1)/2 (docs/domain.md §1)."""
    centre = np.arange(layout) - (layout - 1) / 2.0
    v, u = np.meshgrid(centre, centre, indexing="ij")
    return u.reshape(-1), v.reshape(-1)


def rounded_rect_sdf(x: F64, y: F64, length: float, width: float, radius: float) -> F64:
    """Signed distance (mm) to a centred rounded rectangle: negative inside."""
    qx = np.abs(x) - (length / 2.0 - radius)
    qy = np.abs(y) - (width / 2.0 - radius)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - radius


@dataclass(frozen=True)
class TrayScene:
    """The static part of the scene in the tray's frame, on a 1 mm grid.

    Attributes:
        half_mm: the grid spans [−half_mm, half_mm) on both axes; cell j's centre is
            −half_mm + j + 0.5.
        static_h: (G, G) float32 heights of tray base (0), walls and flange (depth), conveyor.
        static_label: (G, G) uint8, LABEL_CONVEYOR or LABEL_TRAY.
        crop_x0, crop_y0: grid index of the product crop's first column/row.
        inside: (Cy, Cx) bool, the tray's inner rounded rectangle within the crop.
        wall_dist: (Cy, Cx) float32 distance (mm) from a cell to the nearest wall (≥ 0 inside).
        xs, ys: (Cx,), (Cy,) cell-centre coordinates of the crop.
    """

    tray: Tray
    half_mm: int
    static_h: F32
    static_label: NDArray[np.uint8]
    crop_x0: int
    crop_y0: int
    inside: NDArray[np.bool_]
    wall_dist: F32
    xs: F64
    ys: F64


def tray_scene(tray: Tray, d0_mm: float) -> TrayScene:
    """Render tray walls, flange and conveyor on a grid that covers the FoV at the belt."""
    half = math.ceil(math.tan(math.radians(HALF_FOV_DEG)) * (d0_mm + 30.0)) + 24
    c = np.arange(-half, half) + 0.5
    x, y = np.meshgrid(c, c, indexing="xy")
    sd = rounded_rect_sdf(x, y, tray.inner_length_mm, tray.inner_width_mm, tray.corner_radius_mm)
    rim = (sd > 0) & (sd <= WALL_MM + FLANGE_MM)
    static_h = np.where(sd <= 0, 0.0, np.where(rim, tray.depth_mm, CONVEYOR_H_MM))
    label = np.where(sd <= WALL_MM + FLANGE_MM, LABEL_TRAY, LABEL_CONVEYOR).astype(np.uint8)
    hx, hy = tray.inner_length_mm / 2.0, tray.inner_width_mm / 2.0
    x0, x1 = math.floor(half - hx), math.ceil(half + hx)
    y0, y1 = math.floor(half - hy), math.ceil(half + hy)
    inside = sd[y0:y1, x0:x1] <= 0
    return TrayScene(
        tray=tray,
        half_mm=half,
        static_h=static_h.astype(np.float32),
        static_label=label,
        crop_x0=x0,
        crop_y0=y0,
        inside=inside,
        wall_dist=np.maximum(-sd[y0:y1, x0:x1], 0.0).astype(np.float32),
        xs=np.asarray(c[x0:x1], dtype=np.float64),
        ys=np.asarray(c[y0:y1], dtype=np.float64),
    )


def roi_mask(
    layout: int, d0_mm: float, tray: Tray, roi: Roi, samples: int = 12
) -> NDArray[np.bool_]:
    """(Z,) True for zones whose base-plane footprint lies ≥ ``min_inside`` inside the tray.

    docs/domain.md §2 "ROI": the footprint of zone (u, v) at d0 is the square of side k·d0 centred
    on (u·k·d0, v·k·d0); an explicit ``zone_mask`` wins.
    """
    if roi.zone_mask is not None:
        return np.asarray(roi.zone_mask, dtype=bool).reshape(-1)
    k = zone_k(layout)
    u, v = zone_offsets(layout)
    s = ((np.arange(samples) + 0.5) / samples - 0.5) * k * d0_mm
    sx, sy = np.meshgrid(s, s)
    px = u[:, None] * k * d0_mm + sx.reshape(1, -1) - roi.offset_mm[0]
    py = v[:, None] * k * d0_mm + sy.reshape(1, -1) - roi.offset_mm[1]
    sd = rounded_rect_sdf(px, py, tray.inner_length_mm, tray.inner_width_mm, tray.corner_radius_mm)
    return np.asarray((sd <= 0).mean(axis=1) >= roi.min_inside, dtype=bool)
