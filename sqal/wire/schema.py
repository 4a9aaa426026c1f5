"""JSON Schemas of every payload: what firmware teams build real ESP32 nodes against."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from sqal.wire.models import (
    DeadLetter,
    DeviceConfig,
    DeviceStatus,
    Lot,
    Recheck,
    Result,
    SpectralFrame,
    TofFrame,
    Weight,
)

SCHEMAS: dict[str, type[BaseModel]] = {
    "tof": TofFrame,
    "spectral": SpectralFrame,
    "weight": Weight,
    "status": DeviceStatus,
    "config": DeviceConfig,
    "result": Result,
    "lot": Lot,
    "recheck": Recheck,
    "dead_letter": DeadLetter,
}
"""File stem → model; ``{stem}.schema.json`` is written for each."""


def schema_documents() -> dict[str, str]:
    """File name → JSON Schema text (draft 2020-12, as pydantic writes it), stable order."""
    docs = {}
    for stem, model in SCHEMAS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://sqal.dev/contract/v1/{stem}.schema.json"
        docs[f"{stem}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return docs


def export_schemas(out_dir: Path) -> list[Path]:
    """Write every schema under ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_documents().items():
        path = out_dir / name
        path.write_text(text)
        written.append(path)
    return written
