"""The SQAL capture file format, version 1: append-only, binary-safe, readable after a crash.

```text
file    := header record*
header  := MAGIC "SQALCAP\\0" (8 bytes)
           version        u16   (1)
           header_len     u32
           header_json    header_len bytes, UTF-8 JSON: {"created", "start_wall", "broker",
                          "topics", "sqal", "host"}
record  := SYNC 0xA5 0x5A (2 bytes)
           body_len       u32
           crc32          u32   of body
           body           body_len bytes:
               offset_s   f64   receive time, monotonic seconds since the capture started
               wall       f64   receive time, Unix seconds (UTC wall clock)
               qos        u8
               retain     u8
               topic_len  u16
               props_len  u32
               payload_len u32
               topic      topic_len bytes, UTF-8
               props      props_len bytes, UTF-8 JSON object of MQTT 5 properties ({} if none)
               payload    payload_len bytes, as received
```
All integers and floats are little-endian. The whole file may be gzip-compressed (the reader
sniffs the gzip magic); the writer then flushes the compressor with each flush of records so a
crash loses only the last unflushed block.

Reading: a record whose length runs past the end of the file is a torn tail (the recorder died
mid-write): it is skipped with a warning and the rest reads. A record whose CRC does not match
is corrupt: it is skipped and counted, and the reader resynchronises on the next SYNC marker
whose record checks out.

A header or a record that checks out but holds what no recorder writes (a header that is no
JSON object, JSON nested past the parser's depth, a QoS above 2, a topic with wildcards, an
offset or wall time out of range, properties that are no object or of the wrong types) was not
damaged on the way: the file was made by something else. Reading it stops with a
:class:`CaptureError` naming the byte and the problem, rather than replaying it half-understood.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import mmap
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqal.errors import CaptureError
from sqal.wire.topics import topic_name_problem

log = logging.getLogger(__name__)

MAGIC = b"SQALCAP\x00"
FORMAT_VERSION = 1
SYNC = b"\xa5\x5a"
_HEAD = struct.Struct("<HI")  # version, header_len
_FRAME = struct.Struct("<2sII")  # sync, body_len, crc32
_BODY = struct.Struct("<ddBBHII")  # offset_s, wall, qos, retain, topic_len, props_len, payload_len
MAX_BODY = 16 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
MAX_OFFSET_S = 10 * 366 * 86400.0
"""Latest offset a record may have: ten years. A recorder runs for hours or days; a replay
sleeps until each offset, and past this it would wait for ever (or overflow ``time.sleep``)."""
MAX_WALL_S = 253402300799.0
"""Latest wall time a record may have: 9999-12-31T23:59:59Z, the end of ``datetime``."""
U32 = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Record:
    """One received MQTT message."""

    offset_s: float
    wall: float
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: dict[str, Any] = field(default_factory=dict)


def encode_record(rec: Record) -> bytes:
    """The bytes of one record, framing included."""
    topic = rec.topic.encode()
    props = json.dumps(rec.properties, separators=(",", ":")).encode() if rec.properties else b"{}"
    body = (
        _BODY.pack(
            rec.offset_s,
            rec.wall,
            rec.qos,
            int(rec.retain),
            len(topic),
            len(props),
            len(rec.payload),
        )
        + topic
        + props
        + rec.payload
    )
    return _FRAME.pack(SYNC, len(body), zlib.crc32(body)) + body


class InvalidRecordError(ValueError):
    """A record that checks out (CRC) but holds what no recorder writes; the text says what."""


def _decode_body(body: bytes) -> Record:
    """The record in ``body`` (its CRC already checked).

    Raises:
        InvalidRecordError: a field is out of range or of the wrong type (the message says which).
    """
    if len(body) < _BODY.size:
        raise InvalidRecordError(f"body of {len(body)} bytes is shorter than its fixed fields")
    offset_s, wall, qos, retain, tlen, plen, dlen = _BODY.unpack_from(body)
    at = _BODY.size
    if at + tlen + plen + dlen != len(body):
        raise InvalidRecordError("field lengths do not add up to the body's length")
    if not (math.isfinite(offset_s) and 0.0 <= offset_s <= MAX_OFFSET_S):
        raise InvalidRecordError(f"offset {offset_s!r} s is outside 0 … {MAX_OFFSET_S:.0f} s")
    if not (math.isfinite(wall) and 0.0 <= wall <= MAX_WALL_S):
        raise InvalidRecordError(f"wall time {wall!r} is outside 1970 … 9999")
    if qos > 2:
        raise InvalidRecordError(f"QoS {qos} (MQTT has 0, 1 and 2)")
    if retain > 1:
        raise InvalidRecordError(f"retain flag {retain} (0 or 1)")
    try:
        topic = body[at : at + tlen].decode()
    except UnicodeDecodeError:
        raise InvalidRecordError("topic is not UTF-8") from None
    problem = topic_name_problem(topic)
    if problem is not None:
        raise InvalidRecordError(f"topic {topic[:200]!r}: {problem}")
    at += tlen
    props = _properties(body[at : at + plen]) if plen else {}
    at += plen
    return Record(offset_s, wall, topic, body[at:], qos, bool(retain), props)


def _properties(raw: bytes) -> dict[str, Any]:
    """A record's MQTT 5 properties, checked where a replay would set them on PUBLISH."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise InvalidRecordError("properties are JSON nested too deeply") from None
    except ValueError as exc:
        raise InvalidRecordError(f"properties are not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidRecordError(f"properties are a JSON {type(doc).__name__}, not an object")
    problem = _property_problem(doc)
    if problem is not None:
        raise InvalidRecordError(f"properties: {problem}")
    return doc


def _is_int(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _property_problem(doc: dict[str, Any]) -> str | None:
    """What is wrong with the PUBLISH properties a replay sends (MQTT 5 §3.3.2.3), or None.

    Others (recorded but not sent again) are kept as they are.
    """
    if "PayloadFormatIndicator" in doc and not _is_int(doc["PayloadFormatIndicator"], 0, 1):
        return "PayloadFormatIndicator must be 0 or 1"
    if "MessageExpiryInterval" in doc and not _is_int(doc["MessageExpiryInterval"], 0, U32):
        return f"MessageExpiryInterval must be an integer 0 … {U32}"
    if "ContentType" in doc and not isinstance(doc["ContentType"], str):
        return "ContentType must be a string"
    if "ResponseTopic" in doc:
        rt = doc["ResponseTopic"]
        if not isinstance(rt, str) or topic_name_problem(rt) is not None:
            return "ResponseTopic must be a topic name (no wildcards)"
    if "CorrelationData" in doc:
        cd = doc["CorrelationData"]
        if isinstance(cd, str):
            try:
                bytes.fromhex(cd)
            except ValueError:
                return "CorrelationData must be hex"
        elif not (isinstance(cd, list) and all(_is_int(b, 0, 255) for b in cd)):
            return "CorrelationData must be hex or a list of bytes"
    if "UserProperty" in doc:
        up = doc["UserProperty"]
        pairs = isinstance(up, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in up
        )
        if not pairs:
            return "UserProperty must be a list of [name, value] string pairs"
    return None


class CaptureWriter:
    """Appends records to a new capture file.

    Args:
        path: the file to create (an existing one is refused: captures are evidence).
        meta: what the header records besides the start time (broker, topics, ...).
        compress: gzip the whole stream.
    """

    def __init__(
        self, path: Path, meta: dict[str, Any], start_wall: float, *, compress: bool = False
    ) -> None:
        self.path = path
        try:
            raw = path.open("xb")
        except FileExistsError:
            raise CaptureError(f"{path} exists; captures are never overwritten") from None
        except OSError as exc:
            raise CaptureError(f"cannot create {path}: {exc.strerror}") from None
        self._raw = raw
        self._out: IO[bytes] = (
            gzip.GzipFile(fileobj=raw, mode="wb") if compress else raw  # type: ignore[assignment]
        )
        doc = json.dumps({**meta, "start_wall": start_wall}, sort_keys=True).encode()
        self._out.write(MAGIC + _HEAD.pack(FORMAT_VERSION, len(doc)) + doc)
        self.records = 0
        self.bytes_written = 0
        self.flush()

    def write(self, rec: Record) -> None:
        data = encode_record(rec)
        self._out.write(data)
        self.records += 1
        self.bytes_written += len(data)

    def flush(self) -> None:
        """Push buffered records to the OS (a crash after this loses none of them)."""
        self._out.flush()
        self._raw.flush()

    def size_bytes(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._out.close()
        self._raw.close()


@dataclass
class ReadStats:
    """What a read skipped."""

    corrupt: int = 0
    torn_tail: bool = False


class CaptureReader:
    """Reads a capture file: header first, then records as an iterator.

    Raises:
        CaptureError: not a capture file, or written by a newer version.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stats = ReadStats()
        data = _map(path)
        if data[: len(MAGIC)] != MAGIC:
            raise CaptureError(f"{path} is not a SQAL capture file")
        if len(data) < len(MAGIC) + _HEAD.size:
            raise CaptureError(f"{path} is truncated inside its header")
        version, hlen = _HEAD.unpack_from(data, len(MAGIC))
        if version > FORMAT_VERSION:
            raise CaptureError(
                f"{path} is capture format v{version}; this SQAL reads up to v{FORMAT_VERSION}"
            )
        start = len(MAGIC) + _HEAD.size
        if start + hlen > len(data):
            raise CaptureError(f"{path} is truncated inside its header")
        try:
            meta = json.loads(data[start : start + hlen])
        except RecursionError:
            raise CaptureError(f"{path} has a header nested too deeply to read") from None
        except ValueError:
            raise CaptureError(f"{path} has a damaged header") from None
        if not isinstance(meta, dict):
            raise CaptureError(
                f"{path} has a header that is a JSON {type(meta).__name__}, not an object"
            )
        wall = meta.get("start_wall", 0.0)
        if not (isinstance(wall, int | float) and not isinstance(wall, bool)
                and math.isfinite(wall) and 0.0 <= wall <= MAX_WALL_S):  # fmt: skip
            raise CaptureError(f"{path} has a header whose start_wall {wall!r} is no Unix time")
        self.meta: dict[str, Any] = meta
        self._data: mmap.mmap | bytes = data
        self._start = start + hlen

    @property
    def start_wall(self) -> float:
        return float(self.meta.get("start_wall", 0.0))

    def __iter__(self) -> Iterator[Record]:
        data, at, end = self._data, self._start, len(self._data)
        while at < end:
            if data[at : at + 2] != SYNC:
                nxt = data.find(SYNC, at + 1)
                self.stats.corrupt += 1
                log.warning("capture %s: no record at byte %d, resynchronising", self.path, at)
                if nxt < 0:
                    return
                at = nxt
                continue
            if at + _FRAME.size > end:
                self._torn(at)
                return
            _, blen, crc = _FRAME.unpack_from(data, at)
            body_at = at + _FRAME.size
            if blen > MAX_BODY or body_at + blen > end:
                if self._next_good(at + 1) < 0:
                    self._torn(at)
                    return
                self.stats.corrupt += 1
                at = self._next_good(at + 1)
                continue
            body = data[body_at : body_at + blen]
            if zlib.crc32(body) != crc:
                self.stats.corrupt += 1
                log.warning("capture %s: record at byte %d fails its CRC, skipped", self.path, at)
                nxt = self._next_good(at + 1)
                if nxt < 0:
                    return
                at = nxt
                continue
            try:
                rec = _decode_body(body)
            except InvalidRecordError as exc:
                raise CaptureError(
                    f"{self.path}: the record at byte {at} is invalid: {exc}"
                ) from None
            at = body_at + blen
            yield rec

    def _next_good(self, at: int) -> int:
        """Byte offset of the next SYNC whose record passes its CRC, or -1."""
        data, end = self._data, len(self._data)
        while True:
            at = data.find(SYNC, at)
            if at < 0 or at + _FRAME.size > end:
                return -1
            _, blen, crc = _FRAME.unpack_from(data, at)
            body_at = at + _FRAME.size
            fits = blen <= MAX_BODY and body_at + blen <= end
            if fits and zlib.crc32(data[body_at : body_at + blen]) == crc:
                return at
            at += 1

    def _torn(self, at: int) -> None:
        self.stats.torn_tail = True
        log.warning(
            "capture %s: last record (byte %d) is torn, probably a crash mid-write; skipped",
            self.path,
            at,
        )


def _map(path: Path) -> mmap.mmap | bytes:
    """The file's bytes, memory-mapped (a capture may be larger than memory).

    A gzip file is first decompressed into an anonymous temporary file, as far as the stream
    goes: a recorder that crashed leaves it unterminated.
    """
    try:
        f = path.open("rb")
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        if f.read(2) == GZIP_MAGIC:
            f.seek(0)
            with _gunzip_to_temp(f, path) as plain:
                return _mmap_whole(plain)
        return _mmap_whole(f)


def _mmap_whole(f: IO[bytes]) -> mmap.mmap | bytes:
    """Map the whole file (the map keeps its own handle, so ``f`` may be closed after)."""
    f.seek(0, io.SEEK_END)
    if f.tell() == 0:
        return b""
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _gunzip_to_temp(src: IO[bytes], path: Path) -> IO[bytes]:
    out = tempfile.TemporaryFile()  # noqa: SIM115 (returned open; the caller closes it)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        while chunk := src.read(1 << 20):
            out.write(d.decompress(chunk))
    except zlib.error as exc:
        if out.tell() == 0:
            raise CaptureError(f"{path}: gzip stream is damaged ({exc})") from None
        log.warning("capture %s: gzip stream ends damaged; reading what came before", path)
    out.flush()
    return out


def read_records(paths: list[Path]) -> Iterator[tuple[CaptureReader, Record]]:
    """Records of several files (a rotated capture) in order, with the reader of each."""
    for path in paths:
        reader = CaptureReader(path)
        for rec in reader:
            yield reader, rec
