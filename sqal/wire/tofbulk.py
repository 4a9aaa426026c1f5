"""ToF frames decoded in bulk: orjson per frame, then a batch's matrices checked in numpy.

pydantic validates a frame's 384 numbers as 384 Python objects and a consumer then hands them
to numpy again (ingest packs them for COPY): ~40 µs a frame to decode, ~24 to pack
(``bench.codec``, docs/performance.md). Here each payload is parsed by orjson, its few scalar
fields are checked in Python, and each matrix is converted for the whole batch at once, where
one numpy call checks the type, the shape and the range of every frame's values.

The path is **sound, not complete**: a frame is taken only when
:class:`~sqal.wire.models.TofFrame` in strict mode would accept it and give the same values;
anything else — an extra field or a histogram, a ``true``, a ``null`` or a string among the
numbers, an integer written ``1.0``, a value out of range, a wrong shape, a newer ``v``, bad
JSON — is left out, and the caller decodes it with :func:`sqal.wire.decode`, whose
:class:`~sqal.errors.PayloadError` says why it is refused. ``tests/test_tofbulk.py`` holds the
two paths to the same answer on mutated frames.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from sqal.wire.codec import MAX_PAYLOAD_BYTES
from sqal.wire.models import FLOAT4_MAX, INT8_MAX, SCHEMA_VERSION, TOF_MATRICES, parse_timestamp
from sqal.wire.topics import DeviceTopic

_REQUIRED = frozenset({"device_id", "sample_id", "seq", "ts", "layout", *TOF_MATRICES})
_KNOWN = _REQUIRED | {"v", "ranging_hz", "integration_ms", "sensor_temp_c"}
_SAMPLE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # models.SampleId, without `$`'s newline
_INT_MATRICES = {"distance_mm": (-(2**15), 2**15 - 1), "target_status": (0, 255)}
"""Integer matrices and their bounds (``Int2`` and 0–255 in the model); the rest are ``Real``."""
_OPTIONAL = (
    ("ranging_hz", 0.0, False, 60.0),  # (name, low, low included, high): the model's bounds
    ("integration_ms", 2.0, True, 1000.0),
    ("sensor_temp_c", -FLOAT4_MAX, True, FLOAT4_MAX),
)
_BOOLEANS = (b"true", b"false")


@dataclass(frozen=True, slots=True)
class TofHead:
    """A frame's fields other than its matrices, as :class:`~sqal.wire.models.TofFrame` has
    them (``TsWindow.check`` reads ``ts`` from it as from a frame)."""

    ts: datetime
    device_id: str
    sample_id: str
    seq: int
    v: int
    layout: int
    ranging_hz: float | None
    integration_ms: float | None
    sensor_temp_c: float | None


@dataclass(frozen=True, slots=True)
class TofBlock:
    """Frames of one layout decoded together.

    Attributes:
        positions: each frame's index in the input, ascending.
        heads: each frame's other fields, in the same order.
        matrices: for each name of ``TOF_MATRICES``, an ``(n, layout²)`` array, row-major as on
            the wire: ``int64`` for ``distance_mm`` and ``target_status``, ``float64`` for the
            others.
    """

    layout: int
    positions: list[int]
    heads: list[TofHead]
    matrices: dict[str, np.ndarray]


def _number(x: object) -> bool:
    t = type(x)
    return t is float or t is int  # never bool: strict pydantic refuses it for a float


def _head(doc: Any, device: str) -> TofHead | None:
    """The scalar fields if every one is what the model accepts, else None."""
    if type(doc) is not dict or not (_REQUIRED <= doc.keys() <= _KNOWN):
        return None
    v = doc.get("v", SCHEMA_VERSION)
    sample_id, seq, layout = doc["sample_id"], doc["seq"], doc["layout"]
    if (
        type(v) is not int
        or not 1 <= v <= SCHEMA_VERSION
        or doc["device_id"] != device  # the topic's device matched ID_PATTERN already
        or type(sample_id) is not str
        or _SAMPLE_ID.fullmatch(sample_id) is None
        or type(seq) is not int
        or not 0 <= seq <= INT8_MAX
        or type(layout) is not int
        or layout not in (4, 8)
    ):
        return None
    try:
        ts = parse_timestamp(doc["ts"])
    except ValueError:
        return None
    if not isinstance(ts, datetime) or ts.utcoffset() is None:
        return None  # AwareDatetime
    opt: list[float | None] = []
    for name, low, low_in, high in _OPTIONAL:
        x = doc.get(name)
        if x is not None:
            if not _number(x) or not (low <= x if low_in else low < x) or not x <= high:
                return None
            x = float(x)
        opt.append(x)
    return TofHead(ts, device, sample_id, seq, v, layout, *opt)


def _column(
    name: str, values: list[Any], n: int, layout: int
) -> tuple[np.ndarray | None, np.ndarray]:
    """``values`` (n nested lists) as an ``(n, layout²)`` array and a mask of the frames whose
    matrix is accepted; ``(None, all False)`` when they do not convert together."""
    try:
        block = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        return None, np.zeros(n, bool)  # ragged, or numbers numpy cannot hold
    bounds = _INT_MATRICES.get(name)
    want = (np.dtype(np.int64),) if bounds else (np.dtype(np.int64), np.dtype(np.float64))
    if block.shape != (n, layout, layout) or block.dtype not in want:
        return None, np.zeros(n, bool)  # bool, str, null, 1.0 for an int, wrong shape
    flat = block.reshape(n, layout * layout)
    if bounds:
        ok = np.asarray(((flat >= bounds[0]) & (flat <= bounds[1])).all(axis=1))
    else:
        flat = flat.astype(np.float64, copy=False)  # as float(int) in pydantic
        ok = np.asarray((np.abs(flat) <= FLOAT4_MAX).all(axis=1))
    return flat, ok


def _block(layout: int, picked: list[tuple[int, TofHead, Any]]) -> TofBlock | None:
    """The frames of ``picked`` whose matrices all pass; one numpy call per matrix."""
    n = len(picked)
    keep = np.ones(n, bool)
    arrays: dict[str, np.ndarray] = {}
    for name in TOF_MATRICES:
        flat, ok = _column(name, [doc[name] for _, _, doc in picked], n, layout)
        if flat is None:
            # One odd frame spoils the batch's conversion: convert each frame alone.
            rows = [_column(name, [doc[name]], 1, layout) for _, _, doc in picked]
            ok = np.array([r[0] is not None and bool(r[1][0]) for r in rows])
            dtype = np.int64 if name in _INT_MATRICES else np.float64
            flat = np.zeros((n, layout * layout), dtype)
            for i, (one, _) in enumerate(rows):
                if one is not None:
                    flat[i] = one[0]
        keep &= ok
        arrays[name] = flat
    if not keep.any():
        return None
    kept = np.flatnonzero(keep)
    if len(kept) < n:
        arrays = {k: a[kept] for k, a in arrays.items()}
        picked = [picked[i] for i in kept]
    return TofBlock(layout, [p for p, _, _ in picked], [h for _, h, _ in picked], arrays)


def decode_tof_bulk(items: Sequence[tuple[DeviceTopic, bytes]]) -> list[TofBlock]:
    """Decode the ToF frames among ``items`` that take the fast path (see the module's text).

    Args:
        items: ``(topic, payload)`` of frames that arrived on ToF topics.

    Returns:
        A block per layout present; an index of ``items`` found in no block must go through
        :func:`sqal.wire.decode`, which accepts or refuses it with its reason.
    """
    by_layout: dict[int, list[tuple[int, TofHead, Any]]] = {}
    for i, (topic, payload) in enumerate(items):
        if len(payload) > MAX_PAYLOAD_BYTES or _BOOLEANS[0] in payload or _BOOLEANS[1] in payload:
            continue  # too large for the model; a JSON true/false numpy would read as 1/0
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        head = _head(doc, topic.device)
        if head is not None:
            by_layout.setdefault(head.layout, []).append((i, head, doc))
    blocks = (_block(layout, picked) for layout, picked in sorted(by_layout.items()))
    return [b for b in blocks if b is not None]
