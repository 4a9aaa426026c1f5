"""The ``sqal`` entry point: a service starts without the rest of the CLI, and says the same."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.entry import SERVICES, command_name

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["analyzer", "--broker", "x"], "analyzer"),
        (["--log-level", "DEBUG", "ingest"], "ingest"),
        (["--log-format=json", "--log-level", "INFO", "analyzer"], "analyzer"),
        (["--log-level"], None),
        (["--help"], None),
        (["--bogus", "analyzer"], None),
        (["db", "migrate"], "db"),
        ([], None),
    ],
)
def test_the_command_is_found_past_the_root_options(args: list[str], name: str | None) -> None:
    assert command_name(args) == name


def run_py(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_starts_without_the_web_and_report_stacks_and_helps_alike(service: str) -> None:
    lean = run_py(
        "import sys, contextlib, io\n"
        "from app.entry import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        f"    main(['--log-level', 'WARNING', {service!r}, '--help'])\n"
        "heavy = [m for m in ('fastapi', 'weasyprint', 'matplotlib', 'station', 'views')"
        " if m in sys.modules]\n"
        "print(repr(heavy))\n"
        "print(out.getvalue())\n"
    )
    heavy, _, lean_help = lean.partition("\n")
    assert heavy == "[]"
    whole = run_py(
        "import contextlib\n"
        "from app.cli import main\n"
        "with contextlib.suppress(SystemExit):\n"
        f"    main(['--log-level', 'WARNING', {service!r}, '--help'])\n"
    )
    assert lean_help.rstrip("\n") == whole.rstrip("\n")
    assert f"Usage: sqal {service} [OPTIONS]" in whole
