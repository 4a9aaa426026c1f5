"""Batched numerics of the ToF core: masked medians and weighted least squares over zones.

Each function works on n samples at once; a sample's unused zones carry weight 0 (fits) or are
masked (medians), so no Python loop runs per sample.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
B = NDArray[np.bool_]


def masked_median(values: F64, mask: B) -> F64:
    """Median over the last axis of the entries where ``mask`` is True; NaN where none.

    Args:
        values: (..., m) numbers.
        mask: (..., m) bool, same shape.

    Returns:
        (...) medians (mean of the two middle values for an even count).
    """
    filled = np.where(mask, values, np.inf)
    ordered = np.sort(filled, axis=-1)
    count = mask.sum(axis=-1)
    lo = np.clip((count - 1) // 2, 0, None)
    hi = np.clip(count // 2, 0, values.shape[-1] - 1)
    a = np.take_along_axis(ordered, lo[..., None], axis=-1)[..., 0]
    b = np.take_along_axis(ordered, hi[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):
        med = 0.5 * (a + b)
    return np.asarray(np.where(count > 0, med, np.nan))


def weighted_lstsq(design: F64, target: F64, weight: F64, active: B) -> F64:
    """Weighted least squares per sample via the normal equations, solved as one batch.

    Minimises Σ_i w_i (A_i·β − y_i)² for each sample. Columns that ``active`` switches off get
    β = 0 (their rows and columns of AᵀWA are replaced by the identity), so plane and quadric
    fits share one batch. Samples whose system is singular (too few weighted zones) get NaN.

    Args:
        design: (n, m, p) design matrix A (m zones, p parameters).
        target: (n, m) observations y.
        weight: (n, m) non-negative weights w (0 leaves a zone out).
        active: (n, p) bool, True for the parameters each sample fits.

    Returns:
        (n, p) coefficients β (0 for inactive parameters, NaN rows where singular).
    """
    a = design * active[:, None, :]
    aw = a * weight[..., None]
    awt = aw.transpose(0, 2, 1)
    normal = awt @ a
    rhs = (awt @ target[..., None])[..., 0]
    p = design.shape[-1]
    eye = np.eye(p, dtype=bool)
    off = ~active
    # Inactive parameter: identity row/column, zero right-hand side → β = 0.
    normal = np.where(off[:, :, None] | off[:, None, :], 0.0, normal)
    normal = normal + np.where(off[:, :, None] & eye[None], 1.0, 0.0)
    rhs = np.where(off, 0.0, rhs)
    # Jacobi scaling gives a unit diagonal, so the determinant measures collinearity only
    # (it is 1 for orthogonal columns, 0 for dependent ones), whatever the units.
    diag = np.einsum("npp->np", normal)
    ok_diag = np.all(diag > 0, axis=1)
    d = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    scaled = normal * d[:, :, None] * d[:, None, :]
    solvable = ok_diag & (np.abs(np.linalg.det(scaled)) > 1e-9)
    safe = np.where(solvable[:, None, None], scaled, np.eye(p)[None])
    gamma = np.linalg.solve(safe, (rhs * d)[..., None])[..., 0]
    return np.asarray(np.where(solvable[:, None], gamma * d, np.nan))
