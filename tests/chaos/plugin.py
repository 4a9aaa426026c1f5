"""pytest options and the summary table of the chaos suite.

Registered in ``tests/conftest.py``'s ``pytest_plugins`` (options must come from a plugin or
the root conftest). The defaults are the short form ``make test`` runs (about a minute);
``make soak`` passes the long form.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Row:
    """One line of the summary: a scenario and what the audit found."""

    scenario: str
    samples: int
    lost: int
    duplicated: int
    seq_gaps: int
    partial: int
    recovery_s: float


ROWS: list[Row] = []
NOTES: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "chaos suite (tests/chaos)")
    group.addoption(
        "--samples", type=int, default=240, help="Samples per chaos scenario (default 240)."
    )
    group.addoption(
        "--outage-s",
        type=float,
        default=5.0,
        help="Seconds PostgreSQL stays down in the outage scenario (default 5; soak: 60).",
    )
    group.addoption(
        "--freeze-s",
        type=float,
        default=5.0,
        help="Seconds the broker stays SIGSTOPped (default 5; soak: 10).",
    )
    group.addoption(
        "--overload-samples",
        type=int,
        default=4000,
        help="Samples offered at full speed in the overload scenario (default 4000; soak: 40000).",
    )
    group.addoption(
        "--bridge-backlog",
        type=int,
        default=2000,
        help="Samples queued at the plant broker while the central one is down, then drained "
        "through the bridge (default 2000; soak: 20000).",
    )
    group.addoption(
        "--fuzz-count",
        type=int,
        default=2000,
        help="Hostile payloads the fuzz test sends (default 2000; soak: 10000).",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS and not NOTES:
        return
    tr = terminalreporter
    tr.section("chaos summary")
    if ROWS:
        head = ("scenario", "samples", "lost", "duplicated", "seq gaps", "partial", "recovery s")
        tr.write_line(
            f"{head[0]:<28} {head[1]:>7} {head[2]:>5} {head[3]:>10} {head[4]:>8} "
            f"{head[5]:>7} {head[6]:>10}"
        )
        for r in ROWS:
            tr.write_line(
                f"{r.scenario:<28} {r.samples:>7} {r.lost:>5} {r.duplicated:>10} "
                f"{r.seq_gaps:>8} {r.partial:>7} {r.recovery_s:>10.1f}"
            )
    for note in NOTES:
        tr.write_line(note)
