"""What every benchmark prints first, and how it times things."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_sha() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def header(name: str) -> str:
    """``# bench NAME | CPU | cores | Python | numpy | git sha``."""
    return (
        f"# bench {name} | {cpu_name()} | {os.cpu_count()} cores | "
        f"Python {platform.python_version()} | numpy {np.__version__} | git {git_sha()}"
    )


def rate(
    fn: Callable[[], object], n_items: int, repeats: int = 7, warmup: int = 1
) -> tuple[float, float]:
    """Items per second over ``repeats`` timed calls: (median, spread as max-min over median)."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(n_items / (time.perf_counter() - start))
    med = statistics.median(rates)
    return med, (max(rates) - min(rates)) / med
