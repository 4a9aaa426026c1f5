"""Command-line options every service command shares (``sqal analyzer``, ``sqal ingest``, …).

Typer reads the option from the ``Annotated`` metadata; each command keeps its own default:
``metrics_port: MetricsPort = 9101``.
"""

from __future__ import annotations

from typing import Annotated

import typer

MetricsPort = Annotated[
    int,
    typer.Option(
        "--metrics-port", min=0, max=65535, help="Port of /metrics and /healthz (0: none)."
    ),
]
MetricsHost = Annotated[
    str,
    typer.Option(
        "--metrics-host",
        help="Address /metrics and /healthz listen on; 0.0.0.0 lets a Prometheus on another host "
        "or container scrape them.",
    ),
]
