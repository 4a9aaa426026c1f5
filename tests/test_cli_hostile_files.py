"""#18 item 4: hostile capture and truth files and a read-only login give one ``Error:`` line.

The capture files are written here from the format's description (capture/fileformat.py's
docstring), with correct CRCs: the reader must refuse what checks out but no recorder writes,
not count it as damage and not crash on it.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tests.test_cli import assert_one_error_line, run_main
from tests.test_ingest_frames import migrated

CLOSED_BROKER = "mqtt://127.0.0.1:1"
RESULT_TOPIC = "sqal/v1/L1/d1/result"
DEEP = 100_000
"""Nesting depth past CPython's JSON parser (its recursion limit is 1000)."""


def header(doc: bytes) -> bytes:
    """``MAGIC``, version 1, ``header_len`` and the header's bytes."""
    return b"SQALCAP\x00" + struct.pack("<HI", 1, len(doc)) + doc


GOOD_HEADER = header(
    json.dumps({"start_wall": 1.7e9, "broker": "mqtt://x", "topics": ["#"]}).encode()
)


def record(
    *,
    offset_s: float = 0.5,
    wall: float = 1.7e9,
    qos: int = 1,
    retain: int = 0,
    topic: bytes = RESULT_TOPIC.encode(),
    props: bytes = b"{}",
    payload: bytes = b'{"v": 1}',
) -> bytes:
    """One record: SYNC, body length, the body's CRC-32, then the body."""
    body = (
        struct.pack("<ddBBHII", offset_s, wall, qos, retain, len(topic), len(props), len(payload))
        + topic
        + props
        + payload
    )
    return b"\xa5\x5a" + struct.pack("<II", len(body), zlib.crc32(body)) + body


HOSTILE = {
    "list-header": (header(b"[1, 2, 3]") + record(), "header that is a JSON list, not an object"),
    "deep-header": (
        header(b"[" * DEEP + b"]" * DEEP) + record(),
        "header nested too deeply",
    ),
    "string-start-wall": (
        header(b'{"start_wall": "yesterday"}') + record(),
        "start_wall 'yesterday' is no Unix time",
    ),
    "qos-7": (GOOD_HEADER + record(qos=7), "QoS 7 (MQTT has 0, 1 and 2)"),
    "retain-2": (GOOD_HEADER + record(retain=2), "retain flag 2"),
    "wildcard-topic": (
        GOOD_HEADER + record(topic=b"sqal/v1/+/d1/result"),
        "'sqal/v1/+/d1/result': a topic name must not contain the wildcards",
    ),
    "hash-topic": (
        GOOD_HEADER + record(topic=b"sqal/v1/#"),
        "must not contain the wildcards",
    ),
    "not-utf8-topic": (GOOD_HEADER + record(topic=b"sqal/\xff"), "topic is not UTF-8"),
    "huge-offset": (GOOD_HEADER + record(offset_s=1e300), "offset 1e+300 s is outside"),
    "negative-offset": (GOOD_HEADER + record(offset_s=-5.0), "offset -5.0 s is outside"),
    "nan-offset": (GOOD_HEADER + record(offset_s=float("nan")), "offset nan s is outside"),
    "huge-wall": (GOOD_HEADER + record(wall=1e20), "wall time 1e+20 is outside"),
    "list-properties": (
        GOOD_HEADER + record(props=b"[1]"),
        "properties are a JSON list, not an object",
    ),
    "deep-properties": (
        GOOD_HEADER + record(props=b'{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
        "properties are JSON nested too deeply",
    ),
    "not-json-properties": (GOOD_HEADER + record(props=b"{oops"), "properties are not JSON"),
    "bad-user-property": (
        GOOD_HEADER + record(props=b'{"UserProperty": 5}'),
        "UserProperty must be a list of [name, value] string pairs",
    ),
    "bad-expiry": (
        GOOD_HEADER + record(props=b'{"MessageExpiryInterval": -1}'),
        "MessageExpiryInterval must be an integer",
    ),
    "bad-correlation": (
        GOOD_HEADER + record(props=b'{"CorrelationData": "zz"}'),
        "CorrelationData must be hex",
    ),
    "wildcard-response-topic": (
        GOOD_HEADER + record(props=b'{"ResponseTopic": "a/#"}'),
        "ResponseTopic must be a topic name",
    ),
}


@pytest.fixture
def truth(tmp_path: Path) -> Path:
    path = tmp_path / "truth.jsonl"
    path.write_text(json.dumps({"device_id": "d1", "sample_id": "s1", "grade": "A"}) + "\n")
    return path


def commands(capture: Path, truth: Path) -> dict[str, list[str]]:
    return {
        "capture info": ["capture", "info", str(capture)],
        "replay": ["replay", str(capture), "--broker", CLOSED_BROKER],
        "eval --capture": ["eval", "--truth", str(truth), "--capture", str(capture)],
    }


def test_a_well_formed_file_of_these_helpers_reads(
    tmp_path: Path, truth: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control: the hand-written format is the real one, so the refusals below are real."""
    path = tmp_path / "good.sqalcap"
    path.write_bytes(GOOD_HEADER + record() + record(offset_s=1.0, props=b'{"ContentType": "x"}'))
    code, out, err = run_main(["capture", "info", "--json", str(path)], capsys)
    assert (code, err) == (0, "")
    summary = json.loads(out)
    assert summary["messages"] == 2
    assert summary["corrupt_records"] == 0
    assert summary["topics"] == {RESULT_TOPIC: {"messages": 2, "bytes": 16}}


@pytest.mark.parametrize("command", ["capture info", "replay", "eval --capture"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_capture_is_one_error_line(
    case: str, command: str, tmp_path: Path, truth: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each gave a traceback (or a replay sleeping for ever); replay fails before connecting."""
    data, problem = HOSTILE[case]
    path = tmp_path / f"{case}.sqalcap"
    path.write_bytes(data)
    code, _, err = run_main(commands(path, truth)[command], capsys)
    line = assert_one_error_line(code, err)
    assert str(path) in line
    assert problem in line
    assert "cannot reach broker" not in line


def test_an_invalid_record_after_good_ones_names_its_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "late.sqalcap"
    first = record()
    path.write_bytes(GOOD_HEADER + first + record(qos=3))
    code, _, err = run_main(["capture", "info", str(path)], capsys)
    line = assert_one_error_line(code, err)
    assert f"record at byte {len(GOOD_HEADER) + len(first)} is invalid: QoS 3" in line


def test_a_result_nested_too_deeply_is_passed_over_like_any_unreadable_one(
    tmp_path: Path, truth: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deep payload is the message's content, not the file's: eval skips it as bad JSON."""
    path = tmp_path / "deep-payload.sqalcap"
    path.write_bytes(GOOD_HEADER + record(payload=b"[" * DEEP + b"]" * DEEP))
    code, out, err = run_main(["eval", "--json", "--truth", str(truth), "--capture", str(path)],
                              capsys)  # fmt: skip
    assert "Traceback" not in err
    assert code == 0, err
    assert json.loads(out)["results"] == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[" * DEEP + b"]" * DEEP + b"\n", "truth.jsonl:1: JSON nested too deeply"),
        (b"\xff\xfe\x00binary", "truth.jsonl: byte 0 is not UTF-8"),
    ],
    ids=["deep", "binary"],
)
def test_a_hostile_truth_file_is_one_error_line(
    content: bytes, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truth, results = tmp_path / "truth.jsonl", tmp_path / "results.jsonl"
    truth.write_bytes(content)
    results.write_text("")
    code, _, err = run_main(["eval", "--truth", str(truth), "--results", str(results)], capsys)
    assert problem in assert_one_error_line(code, err)


_logins = itertools.count()


@pytest.fixture
def login(fresh_db: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database and a login in the group role ``request.param``; yields its DSN."""
    migrated(fresh_db)
    name = f"ro_{os.getpid()}_{next(_logins)}"
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                sql.Identifier(name), sql.Identifier(request.param)
            )
        )
    parts = urlsplit(fresh_db)
    try:
        yield urlunsplit(parts._replace(netloc=f"{name}@{parts.hostname}:{parts.port}"))
    finally:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.mark.parametrize("login", ["sqal_reader", "sqal_ingest"], indirect=True)
@pytest.mark.parametrize("table", ["tof_frames", "dead_letters"])
def test_retention_as_a_login_without_rights_is_one_error_line(
    login: str, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """#18: psycopg's InsufficientPrivilege escaped as a traceback."""
    code, _, err = run_main(
        ["db", "retention", "--older-than", "30d", "--table", table, "--db", login], capsys
    )
    line = assert_one_error_line(code, err)
    assert line.startswith(f"Error: cannot prune {table}: ")
    assert "owner" in line or "permission denied" in line
