"""True product surfaces on the tray's 1 mm grid (docs/domain.md §7 "Surface").

Foie gras: ``h = H·(1 − ρ²)^γ`` for ρ < 1, ρ² = (x'/a)² + (y'/b)² in a frame rotated by φ and
shifted by (x0, y0); up to three lobes (fragments); a lobe groove ``−g·exp(−x'²/2w²)``; a smooth
random field (std 1-2 mm, correlation 15-25 mm) tapered to zero at the product's edge; an
optional dent ``−D·exp(−r²/2s²)``. Pâté: a flat fill with a 5 mm edge fillet, the same field.

Every term but the dome/fill level H is fixed before H is chosen, so ``V(H) = H·ΣU + ΣT`` is
linear and H is solved in one step for the drawn volume; cells are clipped at 0 afterwards and
the truth keeps the exact grid integral of what was rendered.

Pure numpy, vectorised over a batch of n trays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from device_sim.geometry import TrayScene

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]

FIELD_BANK_PX: Final = 384
FIELD_CORR_MM: Final = (15.0, 20.0, 25.0)
"""Correlation lengths of the smooth-field bank (docs/domain.md §7: 15-25 mm)."""
_FIELD_BANK_SEED: Final = 0x5EA1
"""The bank is a fixed texture; each tray takes a seeded random window of it."""
FILLET_MM: Final = 5.0
MAX_LOBES: Final = 3


def _make_field_bank() -> F32:
    """(3, P, P) periodic Gaussian-correlated fields of unit std, one per correlation length.

    White noise convolved with a Gaussian kernel of σ_k = ℓ/√2 (done in Fourier space) has the
    correlation exp(−r²/(4σ_k²)) = exp(−r²/(2ℓ²)), i.e. correlation length ℓ.
    """
    rng = np.random.default_rng(_FIELD_BANK_SEED)
    p = FIELD_BANK_PX
    f = np.fft.fftfreq(p) * 2.0 * np.pi
    kx, ky = np.meshgrid(f, f)
    out = []
    for corr in FIELD_CORR_MM:
        sig = corr / np.sqrt(2.0)
        filt = np.exp(-0.5 * (kx**2 + ky**2) * sig**2)
        field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((p, p))) * filt).real
        out.append((field - field.mean()) / field.std())
    return np.stack(out).astype(np.float32)


FIELD_BANK: Final = _make_field_bank()


@dataclass(frozen=True)
class ProductShapes:
    """Shape parameters of n trays (arrays with the batch axis first).

    Attributes:
        volume_mm3: (n,) product volume to render.
        lobe_x0, lobe_y0, lobe_a, lobe_b, lobe_phi_rad, lobe_gamma: (n, 3) dome lobes
            (free_form only); a lobe with ``lobe_a == 0`` is absent, lobe 0 is always present.
        groove_mm, groove_w_mm: (n,) lobe groove depth and width (0 = none).
        field_bank: (n,) int index into FIELD_CORR_MM; field_ox, field_oy: (n,) int window
            offsets in the bank; field_std_mm: (n,).
        dent_mm, dent_s_mm, dent_x, dent_y: (n,) dent depth, width and centre (0 = none).
    """

    volume_mm3: F64
    lobe_x0: F64
    lobe_y0: F64
    lobe_a: F64
    lobe_b: F64
    lobe_phi_rad: F64
    lobe_gamma: F64
    groove_mm: F64
    groove_w_mm: F64
    field_bank: NDArray[np.int64]
    field_ox: NDArray[np.int64]
    field_oy: NDArray[np.int64]
    field_std_mm: F64
    dent_mm: F64
    dent_s_mm: F64
    dent_x: F64
    dent_y: F64


def _field_windows(shapes: ProductShapes, cy: int, cx: int) -> F32:
    return np.stack(
        [
            FIELD_BANK[b, oy : oy + cy, ox : ox + cx]
            for b, ox, oy in zip(shapes.field_bank, shapes.field_ox, shapes.field_oy, strict=True)
        ]
    )


def _col(v: F64) -> F32:
    return v.astype(np.float32)[:, None, None]


def _lobe_frame(
    x: F64, y: F64, shapes: ProductShapes, rows: NDArray[np.intp], j: int
) -> tuple[F32, F32]:
    c = _col(np.cos(shapes.lobe_phi_rad[rows, j]))
    s = _col(np.sin(shapes.lobe_phi_rad[rows, j]))
    dx = (x[None, None, :] - shapes.lobe_x0[rows, j][:, None, None]).astype(np.float32)
    dy = (y[None, :, None] - shapes.lobe_y0[rows, j][:, None, None]).astype(np.float32)
    return dx * c + dy * s, -dx * s + dy * c


def _dome(xp: F32, yp: F32, a: F64, b: F64, gamma: F64) -> F32:
    """``(1 − ρ²)^γ`` inside the ellipse, 0 outside; consumes ``yp`` (overwritten in place).

    In-place ufuncs with the same operation order as the plain expression: the result is
    bit-identical, without the dozen 1 MB temporaries a chunk of trays would otherwise allocate.
    """
    xa = xp * _col(1.0 / a)
    yb = np.multiply(yp, _col(1.0 / b), out=yp)
    np.multiply(xa, xa, out=xa)
    np.multiply(yb, yb, out=yb)
    inner: F32 = xa
    np.add(xa, yb, out=inner)
    np.subtract(np.float32(1.0), inner, out=inner)
    np.maximum(inner, np.float32(1e-30), out=inner)
    outside = inner <= 1e-30
    # (1 − ρ²)^γ as exp(γ·log(·)) in float32: SIMD exp/log are much faster than pow; the 1e-30
    # floor makes the outside exactly 0 after rounding (exp(0.3·log 1e-30) ≈ 1e-9 → masked).
    np.log(inner, out=inner)
    np.multiply(_col(gamma), inner, out=inner)
    np.exp(inner, out=inner)
    inner[outside] = 0.0
    return inner


CHUNK: Final = 8
"""Trays rendered together: big enough to amortise Python, small enough to stay in cache."""


def render_products(scene: TrayScene, kind: str, shapes: ProductShapes) -> F32:
    """Render n product height maps on the scene's crop, :data:`CHUNK` trays at a time.

    Args:
        scene: the tray (its crop, inside mask and wall distances).
        kind: ``free_form`` (dome lobes) or ``fills_tray`` (flat fill with fillet).
        shapes: per-tray parameters.

    Returns:
        (n, Cy, Cx) float32 heights (mm) above the tray base, 0 where there is no product.
    """
    n = shapes.volume_mm3.shape[0]
    if n <= CHUNK:
        return _render(scene, kind, shapes)
    parts = []
    for start in range(0, n, CHUNK):
        sl = slice(start, start + CHUNK)
        sub = ProductShapes(**{k: v[sl] for k, v in shapes.__dict__.items()})
        parts.append(_render(scene, kind, sub))
    return np.concatenate(parts)


def _render(scene: TrayScene, kind: str, shapes: ProductShapes) -> F32:
    n = shapes.volume_mm3.shape[0]
    cy, cx = scene.inside.shape
    x, y = scene.xs, scene.ys
    inside = scene.inside[None]
    field = _field_windows(shapes, cy, cx)
    field *= _col(shapes.field_std_mm)
    if kind == "free_form":
        rows = np.arange(n)
        xp, yp = _lobe_frame(x, y, shapes, rows, 0)
        unit = _dome(xp, yp, shapes.lobe_a[:, 0], shapes.lobe_b[:, 0], shapes.lobe_gamma[:, 0])
        for j in range(1, MAX_LOBES):
            sub = np.flatnonzero(shapes.lobe_a[:, j] > 0)
            if sub.size:
                xj, yj = _lobe_frame(x, y, shapes, sub, j)
                lobe = _dome(
                    xj, yj, shapes.lobe_a[sub, j], shapes.lobe_b[sub, j], shapes.lobe_gamma[sub, j]
                )
                unit[sub] = np.maximum(unit[sub], lobe)
        unit *= inside
        taper = unit / 0.3
        np.clip(taper, 0.0, 1.0, out=taper)
        # The groove term g·exp(−x'²/2w²) is exactly 0 for the ~30 % of trays without one:
        # skip its exp there (same result, a third fewer transcendental calls).
        grooved = np.flatnonzero(shapes.groove_mm > 0)
        if grooved.size:
            xw = xp[grooved] * _col(1.0 / np.maximum(shapes.groove_w_mm[grooved], 1e-3))
            e = np.multiply(np.float32(-0.5), xw)
            np.multiply(e, xw, out=e)
            np.exp(e, out=e)
            e *= _col(shapes.groove_mm[grooved])
            field[grooved] -= e
        extra = np.multiply(taper, field, out=field)
        support = unit > 0
    else:
        unit = np.broadcast_to(inside, (n, cy, cx)).astype(np.float32)
        d = scene.wall_dist[None]
        fillet = np.where(
            d < FILLET_MM,
            FILLET_MM - np.sqrt(np.maximum(FILLET_MM**2 - (FILLET_MM - d) ** 2, 0.0)),
            0.0,
        )
        taper = np.clip(d / 10.0, 0.0, 1.0)
        extra = (taper * field - fillet) * inside
        support = np.broadcast_to(inside, (n, cy, cx))
    dented = np.flatnonzero(shapes.dent_mm > 0)
    if dented.size:
        ex = (x[None, None, :] - shapes.dent_x[dented, None, None]).astype(np.float32)
        ey = (y[None, :, None] - shapes.dent_y[dented, None, None]).astype(np.float32)
        s2 = _col(-0.5 / np.maximum(shapes.dent_s_mm[dented], 1e-3) ** 2)
        extra[dented] -= _col(shapes.dent_mm[dented]) * np.exp((ex * ex + ey * ey) * s2)
    extra = np.where(support, extra, np.float32(0.0))
    level = (shapes.volume_mm3 - extra.sum(axis=(1, 2), dtype=np.float64)) / np.maximum(
        unit.sum(axis=(1, 2), dtype=np.float64), 1.0
    )
    h: F32 = np.multiply(unit, level.astype(np.float32)[:, None, None])
    h += extra
    np.maximum(h, np.float32(0.0), out=h)
    return h


def dome_volume_mm3(a_mm: float, b_mm: float, height_mm: float, gamma: float) -> float:
    """Closed form of ``∫ H(1 − ρ²)^γ`` over the ellipse: ``π·a·b·H/(γ + 1)``
    (docs/domain.md §7)."""
    return float(np.pi * a_mm * b_mm * height_mm / (gamma + 1.0))
