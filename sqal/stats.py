"""Small statistics every room shares (the analyzer's eval, the views' re-check figures)."""

from __future__ import annotations

import math

Z95 = 1.959964
"""Two-sided 95 % normal quantile, the z of the Wilson intervals."""

Interval = tuple[float, float]
"""A (low, high) pair of fractions."""


def wilson(successes: int, n: int, z: float = Z95) -> Interval | None:
    """The Wilson score interval of the proportion ``successes / n``; None when n is 0.

    Unlike p ± z·√(p(1−p)/n) it stays inside [0, 1] and does not shrink to a point at 0 or n
    successes, which is where quality figures (a missed-REJECT rate near 0) usually sit.

    Raises:
        ValueError: ``successes`` is not within 0..n.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} not within 0..{n}")
    if n == 0:
        return None
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return max(0.0, centre - half), min(1.0, centre + half)
