"""The layout (docs/architecture.md): every import arrow points toward the core.

``sqal/`` is the core every part shares (wire contract, errors, settings, profiles, the MQTT
client and subscriber, metrics, logging) and imports nothing else of SQAL. The services meet
only on the wire, so no service imports another; ``app/`` (the CLI and the demo) is the one
composition root allowed to import everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = "sqal"
ALLOWED: dict[str, set[str]] = {
    CORE: set(),
    "device_sim": {CORE},
    "analyzer": {CORE},
    "ingest": {CORE, "storage"},
    "storage": {CORE},
    "views": {CORE, "storage"},
    "station": {CORE, "storage", "views"},
    "capture": {CORE},
    "broker": {CORE},
    "embedded": {CORE},
    "app": {"device_sim", "analyzer", "ingest", "storage", "views", "capture", "broker",
            "embedded", "station", CORE},
}  # fmt: skip
PACKAGES = tuple(ALLOWED)


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def test_every_package_of_the_tree_has_rules() -> None:
    """A new top-level package must be placed in the layout before it can import anything."""
    found = {
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").is_file() and p.name not in {"tests", "bench"}
    }
    assert found == set(ALLOWED)


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_toward_the_core(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        extra = imported_packages(path) - ALLOWED[package] - {package}
        if extra:
            wrong.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_the_services_never_import_each_other() -> None:
    services = {"analyzer", "ingest", "device_sim", "capture"}
    for s in services:
        assert not ALLOWED[s] & services, s


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "worker.py"
    bad.write_text("from analyzer.fusion import fuse\nimport ingest.batch\nfrom app import cli\n")
    assert imported_packages(bad) == {"analyzer", "ingest", "app"}
    assert imported_packages(bad) - ALLOWED["sqal"]
