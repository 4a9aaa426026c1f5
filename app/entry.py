"""The ``sqal`` console command and ``python -m app``.

A long-running service (``sqal analyzer``, ``sqal ingest``) is started from an app that holds
only its own command: the whole CLI imports the station's web framework, the report renderer
and the dashboards' SDK, which cost a service ~110 MB of memory and ~0.7 s of start-up for
nothing (docs/performance.md). Every other command line, ``--help`` included, runs the whole
CLI (:mod:`app.cli`); both print the same for a service's options.
"""

from __future__ import annotations

import importlib
import sys

from app.base import GLOBAL_OPTIONS, root_app, run

SERVICES = {
    "analyzer": ("analyzer.command", "analyzer_command"),
    "ingest": ("ingest.command", "ingest_command"),
}
"""The commands started alone: name → (module, function)."""


def command_name(args: list[str]) -> str | None:
    """The command a ``sqal`` command line names, past the root's options; None without one
    (or before an option the root does not know: the whole CLI reports it)."""
    it = iter(args)
    for arg in it:
        if arg in GLOBAL_OPTIONS:
            next(it, None)
        elif arg.split("=", 1)[0] in GLOBAL_OPTIONS:
            continue
        elif arg.startswith("-"):
            return None
        else:
            return arg
    return None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    name = command_name(args)
    if name in SERVICES:
        module, function = SERVICES[name]
        app = root_app()
        app.command(name)(getattr(importlib.import_module(module), function))
        run(app, args)
        return
    from app.cli import main as whole

    whole(args)
