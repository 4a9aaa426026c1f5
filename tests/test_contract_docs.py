"""docs/contract/ holds the JSON Schemas firmware teams build against; it must match the code."""

from __future__ import annotations

from pathlib import Path

from sqal.wire.schema import schema_documents

CONTRACT = Path(__file__).resolve().parent.parent / "docs" / "contract"


def test_committed_schemas_match_the_models() -> None:
    expected = schema_documents()
    committed = {p.name: p.read_text() for p in CONTRACT.glob("*.schema.json")}
    assert set(committed) == set(expected), "run: sqal contract export --out docs/contract"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} is stale; run: sqal contract export"


def test_schemas_describe_the_frame_fields() -> None:
    import json

    tof = json.loads(schema_documents()["tof.schema.json"])
    for field in ("distance_mm", "target_status", "range_sigma_mm", "layout", "sample_id", "seq"):
        assert field in tof["properties"]
