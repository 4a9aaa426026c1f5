"""The layout of DESIGN.md: the services meet only on the wire, and sqal/ imports none of them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sqal", "device_sim", "analyzer", "ingest", "storage", "capture")
ALLOWED: dict[str, set[str]] = {
    "sqal": set(),
    "device_sim": {"sqal"},
    "analyzer": {"sqal"},
    "ingest": {"sqal", "storage"},
    "storage": {"sqal"},
    "capture": {"sqal"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def test_packages_import_only_what_design_allows() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            if package == "sqal" and path.name == "cli.py":
                continue  # the CLI wires every part together
            extra = imported_packages(path) - allowed - {package}
            if extra:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "worker.py"
    bad.write_text("from analyzer.fusion import fuse\nimport ingest.batch\n")
    assert imported_packages(bad) == {"analyzer", "ingest"}
