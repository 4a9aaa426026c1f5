"""Binary COPY of numeric arrays straight from numpy (PostgreSQL array wire format).

psycopg dumps a Python list into a binary array element by element in Python; a ToF frame has
six 64-zone matrices, which made that the writer's largest cost. These dumpers serve the
``int2[]``, ``int4[]`` and ``float4[]`` columns under ``Copy.set_types`` and build the whole
array in one numpy pass: a header (ndim 1, no NULLs, element OID, length, lower bound 1), then
each element as a 4-byte length and its big-endian value (PostgreSQL ``array_send``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from psycopg.adapt import Dumper, PyFormat
from psycopg.pq import Format

from storage.tables import Table

# (array OID, element OID, big-endian element dtype), from pg_type.
_ARRAYS: dict[str, tuple[int, int, str]] = {
    "int2[]": (1005, 21, ">i2"),
    "int4[]": (1007, 23, ">i4"),
    "float4[]": (1021, 700, ">f4"),
}


_LENGTH = {size: np.frombuffer(np.array([size], ">i4").tobytes(), np.uint8) for size in (2, 4)}


def pack_array(values: Any, elem_oid: int, dtype: str) -> bytes:
    """The binary form of a one-dimensional array without NULLs.

    Args:
        values: a (nested) sequence or ndarray of numbers, already range-checked (see
            :func:`storage.writer.check_ranges`); it is flattened row-major.

    Raises:
        OverflowError: an integer does not fit ``dtype``.
        FloatingPointError: a float is beyond ``float4``'s range.
    """
    with np.errstate(over="raise", invalid="ignore"):
        flat = np.asarray(values, dtype=dtype).ravel()
    n = flat.size
    if n == 0:
        return np.array([0, 0, elem_oid], dtype=">i4").tobytes()
    size = flat.itemsize
    rec = np.empty((n, 4 + size), np.uint8)
    rec[:, :4] = _LENGTH[size]
    rec[:, 4:] = flat.view(np.uint8).reshape(n, size)
    return np.array([1, 0, elem_oid, n, 1], dtype=">i4").tobytes() + rec.tobytes()


class OutOfRangeError(ValueError):
    """A number does not fit its column's type (SQLSTATE 22003 had the server seen it)."""

    sqlstate = "22003"


class PackedArray(bytes):
    """An array already in binary wire form (see :func:`prepack`); dumped as is."""


def prepack(table: Table, rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Encode the array columns of a whole batch in one numpy pass per column.

    Numpy's fixed cost per call (~10 µs) dwarfs 64 elements, so a column of n same-shaped
    arrays is converted at once and cut into n :class:`PackedArray`. A column whose arrays
    differ in shape (4x4 next to 8x8) or hold a NULL is left to the per-value dumper. The
    conversion is also the range check: numpy refuses a Python int that does not fit.

    Args:
        table: the rows' table (its COPY types say which columns are arrays).
        rows: values in COPY order; not modified.

    Raises:
        OutOfRangeError: a value does not fit its column's type, naming the column.
    """
    if not rows:
        return rows
    out = [list(r) for r in rows]
    for i, (name, typ) in enumerate(table.columns):
        spec = _ARRAYS.get(typ)
        if spec is None:
            continue
        _, elem_oid, dtype = spec
        column = [r[i] for r in rows]
        try:
            with np.errstate(over="raise", invalid="ignore"):
                block = np.asarray(column, dtype=dtype)
        except (OverflowError, FloatingPointError) as exc:
            raise OutOfRangeError(f"column {name}: {exc}") from None
        except (ValueError, TypeError):
            continue  # ragged or NULLs: per-value dumping
        n = len(rows)
        flat = block.reshape(n, -1)
        k = flat.shape[1]
        if k == 0:
            continue
        size = flat.itemsize
        rec = np.empty((n, k, 4 + size), np.uint8)
        rec[:, :, :4] = _LENGTH[size]
        rec[:, :, 4:] = flat.view(np.uint8).reshape(n, k, size)
        head = np.array([1, 0, elem_oid, k, 1], dtype=">i4").tobytes()
        body = rec.reshape(n, -1)
        for j in range(n):
            out[j][i] = PackedArray(head + body[j].tobytes())
    return [tuple(r) for r in out]


def _dumper(array_oid: int, elem_oid: int, dtype: str) -> type[Dumper]:
    class NumpyArrayDumper(Dumper):
        format = Format.BINARY
        oid = array_oid

        def dump(self, obj: Any) -> bytes:
            if isinstance(obj, PackedArray):
                return obj
            return pack_array(obj, elem_oid, dtype)

    NumpyArrayDumper.__name__ = f"NumpyArrayDumper{array_oid}"
    return NumpyArrayDumper


_DUMPERS = [_dumper(*spec) for spec in _ARRAYS.values()]


def register_array_dumpers(conn: psycopg.Connection) -> None:
    """Use the numpy dumpers for these array types in this connection's COPYs."""
    for d in _DUMPERS:
        conn.adapters.register_dumper(None, d)


__all__ = [
    "OutOfRangeError",
    "PackedArray",
    "PyFormat",
    "pack_array",
    "prepack",
    "register_array_dumpers",
]
