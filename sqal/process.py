"""Process-wide settings a long-running service applies once it has started, and the
supervisor behind ``--workers``."""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from multiprocessing.queues import SimpleQueue
from types import FrameType
from typing import Any

from sqal.errors import ServiceError, SqalError

log = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 20, 100)
"""The cyclic collector's thresholds for a service (CPython's default: 700, 10, 10).

Decoding a batch allocates tens of thousands of lists (a ToF frame holds 48), and CPython runs a
young collection every 700 net allocations of container objects, an older one every tenth of
those: for ingest that was ~15 % of its CPU while draining a backlog (``python -m bench.ingest``,
docs/performance.md). SQAL's per-message objects hold no reference cycles, so reference counting
frees them and the collector only looks for the rare cycle (an exception's traceback): running
it about 70 times less often costs a few MB at most."""

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def tune_gc() -> None:
    """Move what start-up built (modules, models, schemas) out of the collector's sight
    (``gc.freeze``) and make collections rarer (:data:`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _stop_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM when the supervisor dies, even by SIGKILL (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return  # not Linux: a worker outlives a killed supervisor until it is stopped
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _child(target: Callable[[], None], parent: int, index: int, why: SimpleQueue[Any]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the target installs its own handlers
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _stop_with_parent(parent)
    try:
        target()
    except SqalError as exc:
        why.put((index, str(exc)))  # the supervisor prints the one Error line
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def supervise(targets: Sequence[Callable[[], None]], what: str) -> None:
    """Run each target in its own process (forked) until a signal or until one of them stops.

    SIGTERM or SIGINT is passed to every worker, and each finishes what it holds. A worker that
    stops on its own, for whatever reason, stops the others too: the command ends, so whatever
    restarts it (systemd, compose) restarts all of them with the same client ids, and each
    resumes its own session at the broker. A killed supervisor takes its workers with it
    (``PR_SET_PDEATHSIG``).

    Args:
        targets: one callable per worker, each running its service until SIGTERM.
        what: the workers' name in messages (``ingest``).

    Raises:
        ServiceError: a worker stopped without being asked: its own error (a
            :class:`~sqal.errors.SqalError` it raised), else its exit code. What the other
            workers raised meanwhile is logged.
    """
    ctx = multiprocessing.get_context("fork")  # the workers share the parsed configuration
    n = len(targets)
    why: SimpleQueue[Any] = ctx.SimpleQueue()
    procs = [
        ctx.Process(
            target=_child,
            args=(t, os.getpid(), i, why),
            name=f"{what}-{i + 1}",
            daemon=False,
        )
        for i, t in enumerate(targets)
    ]
    for p in procs:
        p.start()
    asked = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal asked
        asked = True
        for p in procs:
            if p.exitcode is None and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    first: int | None = None
    try:
        log.info("%s: %d workers, pids %s", what, n, ", ".join(str(p.pid) for p in procs))
        running = list(procs)
        while running:
            wait([p.sentinel for p in running])
            for p in [p for p in running if p.exitcode is not None]:
                running.remove(p)
                if not asked:  # the first to stop unasked: it ends the command
                    first = procs.index(p)
                    log.warning(
                        "%s worker %d/%d stopped (exit code %s); stopping the others",
                        what, first + 1, n, p.exitcode,
                    )  # fmt: skip
                    on_signal(signal.SIGTERM, None)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for p in procs:
            p.join()
    reasons: dict[int, str] = {}
    while not why.empty():
        index, reason = why.get()
        reasons.setdefault(index, reason)
    for index, reason in sorted(reasons.items()):
        if index != first:
            log.warning("%s worker %d/%d: %s", what, index + 1, n, reason)
    if first is not None:
        said = reasons.get(first, f"stopped (exit code {procs[first].exitcode})")
        raise ServiceError(f"{what} worker {first + 1} of {n}: {said}")
