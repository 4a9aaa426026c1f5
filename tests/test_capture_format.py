"""The capture file format: binary-safe, versioned, readable after a crash."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.fileformat import MAGIC, CaptureReader, CaptureWriter, Record
from capture.summary import summarise
from sqal.errors import CaptureError


def write(path: Path, records: list[Record], compress: bool = False) -> None:
    w = CaptureWriter(path, {"broker": "mqtt://127.0.0.1:1", "topics": ["#"]}, 1.7e9,
                      compress=compress)  # fmt: skip
    for rec in records:
        w.write(rec)
    w.close()


def sample(n: int = 20) -> list[Record]:
    return [
        Record(i * 0.01, 1.7e9 + i * 0.01, f"sqal/v1/L1/d{i % 3}/tof", bytes(range(i % 256)) * 3,
               qos=i % 2, retain=i == 4,
               properties={"UserProperty": [["k", str(i)]]} if i % 5 == 0 else {})
        for i in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("compress", [False, True])
def test_records_round_trip(tmp_path: Path, compress: bool) -> None:
    recs = sample()
    write(tmp_path / "c.sqalcap", recs, compress)
    reader = CaptureReader(tmp_path / "c.sqalcap")
    assert list(reader) == recs
    assert reader.meta["broker"] == "mqtt://127.0.0.1:1"
    assert reader.start_wall == 1.7e9


@settings(max_examples=50, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=2000), min_size=1, max_size=10),
    # Any topic name MQTT allows: no wildcards, no U+0000 (the reader refuses the rest).
    topic=st.text(
        st.characters(exclude_characters="+#\x00", exclude_categories=["Cs"]),
        min_size=1,
        max_size=50,
    ),
)
def test_any_payload_bytes_survive(tmp_path_factory: pytest.TempPathFactory,
                                   payloads: list[bytes], topic: str) -> None:  # fmt: skip
    path = tmp_path_factory.mktemp("h") / "c.sqalcap"
    recs = [Record(float(i), float(i), topic, p) for i, p in enumerate(payloads)]
    write(path, recs)
    assert list(CaptureReader(path)) == recs


def test_torn_last_record_is_skipped_and_the_rest_reads(tmp_path: Path) -> None:
    path = tmp_path / "c.sqalcap"
    recs = sample()
    write(path, recs)
    path.write_bytes(path.read_bytes()[:-7])
    reader = CaptureReader(path)
    assert list(reader) == recs[:-1]
    assert reader.stats.torn_tail
    assert reader.stats.corrupt == 0


def test_torn_gzip_stream_reads_what_was_flushed(tmp_path: Path) -> None:
    path = tmp_path / "c.sqalcap.gz"
    w = CaptureWriter(path, {}, 0.0, compress=True)
    recs = sample(10)
    for rec in recs:
        w.write(rec)
    w.flush()
    data = path.read_bytes()  # flushed, never closed: no gzip trailer, as after a crash
    w.close()
    (tmp_path / "crashed.gz").write_bytes(data)
    assert list(CaptureReader(tmp_path / "crashed.gz")) == recs


def test_corrupt_record_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "c.sqalcap"
    recs = sample()
    write(path, recs)
    data = bytearray(path.read_bytes())
    # flip a byte inside the payload of the 6th record
    at = data.find(recs[5].topic.encode(), data.find(recs[4].topic.encode()) + 1)
    at = data.find(recs[5].topic.encode(), at) + len(recs[5].topic) + 5
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = CaptureReader(path)
    got = list(reader)
    assert reader.stats.corrupt == 1
    assert len(got) == len(recs) - 1
    assert recs[-1] in got
    assert summarise([path]).corrupt == 1


def test_not_a_capture_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(CaptureError, match="is not a SQAL capture file"):
        CaptureReader(path)
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(CaptureError, match="is not a SQAL capture file"):
        CaptureReader(gz)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqalcap"
    path.write_bytes(MAGIC + struct.pack("<HI", 9, 2) + b"{}")
    with pytest.raises(CaptureError, match="format v9"):
        CaptureReader(path)


def test_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "c.sqalcap"
    path.write_bytes(b"evidence")
    with pytest.raises(CaptureError, match="never overwritten"):
        CaptureWriter(path, {}, 0.0)
    assert path.read_bytes() == b"evidence"


def test_summary_counts_per_topic(tmp_path: Path) -> None:
    path = tmp_path / "c.sqalcap"
    recs = sample(30)
    write(path, recs)
    s = summarise([path])
    assert s.messages == 30
    assert s.retained == 1
    assert s.topics["sqal/v1/L1/d0/tof"].messages == 10
    assert s.bytes == sum(len(r.payload) for r in recs)
    assert s.duration_s == pytest.approx(0.29)
