"""Batched numerics of the ToF core: masked medians and weighted least squares over zones.

Each function works on n samples at once; a sample's unused zones carry weight 0 (fits) or are
masked (medians), so no Python loop runs per sample.
"""

from __future__ import annotations

import functools

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
    m = values.shape[-1]
    ordered = np.sort(np.where(mask, values, np.inf), axis=-1).reshape(-1, m)
    count = mask.sum(axis=-1).reshape(-1)
    rows = np.arange(count.size)
    a = ordered[rows, np.maximum((count - 1) // 2, 0)]
    b = ordered[rows, np.minimum(count // 2, m - 1)]
    with np.errstate(invalid="ignore"):
        med = 0.5 * (a + b)
    return np.asarray(np.where(count > 0, med, np.nan).reshape(mask.shape[:-1]))


@functools.cache
def _eye(p: int) -> NDArray[np.bool_]:
    eye = np.eye(p, dtype=bool)
    eye.flags.writeable = False
    return eye


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
    eye = _eye(p)
    off = ~active
    # Inactive parameter: identity row/column, zero right-hand side → β = 0.
    normal = np.where(off[:, :, None] | off[:, None, :], 0.0, normal)
    normal = normal + np.where(off[:, :, None] & eye[None], 1.0, 0.0)
    rhs = np.where(off, 0.0, rhs)
    # Jacobi scaling gives a unit diagonal, so the determinant measures collinearity only
    # (it is 1 for orthogonal columns, 0 for dependent ones), whatever the units.
    diag = np.einsum("npp->np", normal)
    ok_diag = (diag > 0).all(axis=1)
    d = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    scaled = normal * d[:, :, None] * d[:, None, :]
    solvable = ok_diag & (np.abs(np.linalg.det(scaled)) > 1e-9)
    safe = np.where(solvable[:, None, None], scaled, eye[None])
    gamma = np.linalg.solve(safe, (rhs * d)[..., None])[..., 0]
    return np.asarray(np.where(solvable[:, None], gamma * d, np.nan))
