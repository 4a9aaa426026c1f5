"""Topic builder and parser."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqal.errors import PayloadError
from sqal.wire import (
    DeadReason,
    DeviceTopic,
    Kind,
    dead_letter_topic,
    device_topic,
    is_dead_letter_topic,
    kind_of,
    line_and_device,
    parse_topic,
    shared,
    subscription,
)

ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z").filter(lambda s: s != "_dead")


@given(line=ids, device=ids, kind=st.sampled_from(list(Kind)))
def test_build_then_parse_round_trips(line: str, device: str, kind: Kind) -> None:
    topic = device_topic(line, device, kind)
    assert parse_topic(topic) == DeviceTopic(line, device, kind)
    assert str(parse_topic(topic)) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "sqal/v1/L1/d1",
        "sqal/v1/L1/d1/tof/extra",
        "sqal/v1/L 1/d1/tof",
        "sqal/v1/L1/d+/tof",
        "sqal/v1/L1/" + "x" * 65 + "/tof",
        "sqal/v1/L1/d1/TOF",
        "other/v1/L1/d1/tof",
        "sqal/v1/_dead/d1/tof",
    ],
)
def test_parse_rejects_foreign_topics(topic: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_topic(topic)
    assert info.value.reason is DeadReason.BAD_TOPIC


@pytest.mark.parametrize(
    ("line", "device"), [("L 1", "d1"), ("L1", "d/1"), ("", "d1"), ("_dead", "d1")]
)
def test_build_rejects_bad_ids(line: str, device: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        device_topic(line, device, Kind.TOF)


def test_subscriptions_and_dead_letters() -> None:
    assert subscription(Kind.TOF) == "sqal/v1/+/+/tof"
    assert subscription("result", line="L2") == "sqal/v1/L2/+/result"
    assert dead_letter_topic("ingest") == "sqal/v1/_dead/ingest"


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("sqal/v1/L1/dev-01/tof", ("L1", "dev-01")),
        ("sqal/v1/L1/dev-01/unknown_kind", ("L1", "dev-01")),  # tolerant of the kind
        ("sqal/v1/_dead/ingest", None),
        ("sqal/v1/L1/dev 01/tof", None),
        ("sqal/v2/L1/dev-01/tof", None),
        ("sqal/v1/L1/tof", None),
        ("sqal/v1/L1/dev-01/tof/extra", None),
    ],
)
def test_line_and_device_are_read_from_any_device_topic(
    topic: str, expected: tuple[str, str] | None
) -> None:
    assert line_and_device(topic) == expected


def test_shared_filters_dead_letters_and_kinds() -> None:
    assert shared(subscription(Kind.TOF), "g1") == "$share/g1/sqal/v1/+/+/tof"
    with pytest.raises(ValueError, match="shared group"):
        shared("sqal/v1/#", "bad/group")
    assert is_dead_letter_topic(dead_letter_topic("analyzer"))
    assert not is_dead_letter_topic("sqal/v1/L1/d/tof")
    assert kind_of("sqal/v1/L1/d/result") is Kind.RESULT
    assert kind_of("sqal/v1/L1/d/nonsense") is None


# --- nothing but sqal/wire/topics.py formats or splits a topic -------------------------------

PRODUCT = ("sqal", "app", "broker", "embedded", "views", "device_sim", "analyzer", "ingest",
           "storage", "capture")  # fmt: skip
TOPIC_MODULE = Path(__file__).resolve().parent.parent / "sqal" / "wire" / "topics.py"
TOPIC_TEXT = ("sqal/v1", "$share/", "/_dead", "/_probe")
SPLITTERS = {"split", "rsplit", "partition", "rpartition"}


def topic_handling(path: Path) -> list[str]:
    """Lines of ``path`` that write a topic literal or split/join on ``/`` (docstrings aside)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings and any(t in node.value for t in TOPIC_TEXT):
                found.append(f"{path}:{node.lineno}: topic literal {node.value!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            first = node.args[0] if node.args else None
            splits = f.attr in SPLITTERS and isinstance(first, ast.Constant) and first.value == "/"
            joins = f.attr == "join" and isinstance(f.value, ast.Constant) and f.value.value == "/"
            if splits or joins:
                found.append(f"{path}:{node.lineno}: {f.attr} on '/'")
    return found


def test_no_package_formats_or_splits_a_topic_itself() -> None:
    root = TOPIC_MODULE.parent.parent.parent
    found = []
    for package in PRODUCT:
        for path in sorted((root / package).rglob("*.py")):
            if path != TOPIC_MODULE:
                found += topic_handling(path)
    assert not found, "\n".join(found)


def test_the_topic_check_sees_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""A docstring may say sqal/v1/{line}/{device}/tof."""\n'
        'FILTER = "sqal/v1/+/+/tof"\n'
        "line = topic.split('/')[2]\n"
        'topic = "/".join(levels)\n'
    )
    assert sorted(f.split(": ", 1)[1] for f in topic_handling(bad)) == [
        "join on '/'",
        "split on '/'",
        "topic literal 'sqal/v1/+/+/tof'",
    ]
