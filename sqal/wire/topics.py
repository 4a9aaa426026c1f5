"""Topic builder and parser for ``sqal/v1/{line}/{device}/{kind}`` and dead letters.

Rules, each checked in :func:`parse_topic`:

- The root is ``sqal/v1``; another version is not ours to guess at.
- ``line`` and ``device`` are 1 to 64 characters of ``A-Z a-z 0-9 _ -``, so they are safe in
  file names, SQL identifiers' values and Grafana variables, and never contain MQTT wildcards.
- ``kind`` is one of :class:`~sqal.wire.enums.Kind`.
- Dead letters go to ``sqal/v1/_dead/{stage}``, so ``_dead`` is reserved and is no line id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqal.errors import PayloadError
from sqal.wire.enums import DeadReason, Kind

ROOT = "sqal/v1"
RESERVED_LINE = "_dead"
DEAD_ROOT = f"{ROOT}/{RESERVED_LINE}"
ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_ID = re.compile(rf"\A{ID_PATTERN}\Z")
_TOPIC = re.compile(
    rf"\Asqal/v1/(?P<line>{ID_PATTERN})/(?P<device>{ID_PATTERN})/(?P<kind>[a-z]+)\Z"
)


def is_valid_id(value: str) -> bool:
    """True if ``value`` may serve as a line or device id."""
    return _ID.match(value) is not None


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """A parsed device topic."""

    line: str
    device: str
    kind: Kind

    def __str__(self) -> str:
        return f"{ROOT}/{self.line}/{self.device}/{self.kind.value}"


def device_topic(line: str, device: str, kind: Kind | str) -> str:
    """Build ``sqal/v1/{line}/{device}/{kind}``.

    Raises:
        ValueError: ``line`` or ``device`` is not a valid id, or ``kind`` is unknown.
    """
    if not is_valid_id(line) or line == RESERVED_LINE:
        raise ValueError(f"line id {line!r} must match {ID_PATTERN} and not be {RESERVED_LINE}")
    if not is_valid_id(device):
        raise ValueError(f"device id {device!r} must match {ID_PATTERN}")
    return f"{ROOT}/{line}/{device}/{Kind(kind).value}"


def dead_letter_topic(stage: str) -> str:
    """Build ``sqal/v1/_dead/{stage}`` for a service stage (``analyzer``, ``ingest``)."""
    if not is_valid_id(stage):
        raise ValueError(f"stage {stage!r} must match {ID_PATTERN}")
    return f"{DEAD_ROOT}/{stage}"


def subscription(kind: Kind | str, line: str = "+", device: str = "+") -> str:
    """A subscription filter for one kind, all lines and devices unless narrowed."""
    return f"{ROOT}/{line}/{device}/{Kind(kind).value}"


def parse_topic(topic: str) -> DeviceTopic:
    """Parse a device topic.

    Raises:
        PayloadError: with reason ``bad_topic`` when ``topic`` is not a SQAL device topic.
    """
    m = _TOPIC.match(topic)
    if m is None or m["line"] == RESERVED_LINE:
        raise PayloadError(DeadReason.BAD_TOPIC, "not sqal/v1/{line}/{device}/{kind}", topic)
    try:
        kind = Kind(m["kind"])
    except ValueError:
        raise PayloadError(DeadReason.BAD_TOPIC, f"unknown kind {m['kind']!r}", topic) from None
    return DeviceTopic(m["line"], m["device"], kind)
