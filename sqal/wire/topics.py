"""Topic builder and parser for ``sqal/v1/{line}/{device}/{kind}`` and dead letters.

Rules, each checked in :func:`parse_topic`:

- The root is ``sqal/v1``; another version is not ours to guess at.
- ``line`` and ``device`` are 1 to 64 characters of ``A-Z a-z 0-9 _ -``, so they are safe in
  file names, SQL identifiers' values and Grafana variables, and never contain MQTT wildcards.
- ``kind`` is one of :class:`~sqal.wire.enums.Kind`.
- Dead letters go to ``sqal/v1/_dead/{stage}``, so ``_dead`` is reserved and is no line id.
- ``sqal/v1/_probe`` is the analyzer's liveness probe filter: nothing is ever published there.
- A line's lot is ``sqal/v1/{line}/lot``: four levels, so it never matches a device topic's
  filter (``sqal/v1/+/+/{kind}``) nor a device's ACL pattern, and no device id is reserved.

This module is the only place that formats or splits a topic (``tests/test_wire_topics.py``
greps the other packages for it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqal.errors import ConfigError, PayloadError
from sqal.wire.enums import DeadReason, Kind

ROOT = "sqal/v1"
RESERVED_LINE = "_dead"
DEAD_ROOT = f"{ROOT}/{RESERVED_LINE}"
DEAD_LETTERS = f"{DEAD_ROOT}/+"
"""Every stage's dead letters."""
EVERYTHING = f"{ROOT}/#"
"""Every SQAL topic (``sqal record``'s default)."""
PROBE_FILTER = f"{ROOT}/_probe"
"""The filter the analyzer unsubscribes from as a liveness probe (analyzer.liveness); no client
subscribes to it and nothing is published on it, so the broker's UNSUBACK is all that comes."""
LOT_LEVEL = "lot"
LOTS = f"{ROOT}/+/{LOT_LEVEL}"
"""Every line's lot (retained): ``sqal/v1/+/lot``."""
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


def lot_topic(line: str) -> str:
    """Build ``sqal/v1/{line}/lot``, where a line's current lot is retained.

    Raises:
        ValueError: ``line`` is not a valid line id.
    """
    if not is_valid_id(line) or line == RESERVED_LINE:
        raise ValueError(f"line id {line!r} must match {ID_PATTERN} and not be {RESERVED_LINE}")
    return f"{ROOT}/{line}/{LOT_LEVEL}"


def lot_subscription(line: str = "+") -> str:
    """The filter of one line's lot, or every line's."""
    return f"{ROOT}/{line}/{LOT_LEVEL}"


def is_lot_topic(topic: str) -> bool:
    """True for ``sqal/v1/{anything}/lot`` (valid or not: :func:`parse_lot_topic` decides)."""
    levels = topic.split("/")
    return len(levels) == 4 and levels[3] == LOT_LEVEL and "/".join(levels[:2]) == ROOT


def parse_lot_topic(topic: str) -> str:
    """The line of ``sqal/v1/{line}/lot``.

    Raises:
        PayloadError: with reason ``bad_topic`` when ``topic`` is not a valid lot topic.
    """
    levels = topic.split("/")
    if not is_lot_topic(topic) or levels[2] == RESERVED_LINE or not is_valid_id(levels[2]):
        raise PayloadError(DeadReason.BAD_TOPIC, "not sqal/v1/{line}/lot", topic)
    return levels[2]


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


def shared(topic_filter: str, group: str) -> str:
    """``$share/{group}/{filter}``: workers of one group split the messages (MQTT 5 §4.8.2).

    Raises:
        ValueError: ``group`` is not a valid id.
    """
    if not is_valid_id(group):
        raise ValueError(f"shared group {group!r} must match {ID_PATTERN}")
    return f"$share/{group}/{topic_filter}"


def is_dead_letter_topic(topic: str) -> bool:
    """True for ``sqal/v1/_dead/{stage}`` (any stage)."""
    return topic.startswith(DEAD_ROOT + "/")


def line_and_device(topic: str) -> tuple[str, str] | None:
    """``(line, device)`` of a ``sqal/v1/{line}/{device}/{anything}`` topic, else ``None``.

    Tolerant where :func:`parse_topic` is strict: the kind may be unknown, so a dead letter of
    a bad kind still names the device that sent it.
    """
    levels = topic.split("/")
    if len(levels) != 5 or "/".join(levels[:2]) != ROOT:
        return None
    line, device = levels[2], levels[3]
    if line == RESERVED_LINE or not (is_valid_id(line) and is_valid_id(device)):
        return None
    return line, device


def kind_of(topic: str) -> Kind | None:
    """The kind of a valid device topic, else ``None`` (no error)."""
    try:
        return parse_topic(topic).kind
    except PayloadError:
        return None


def device_acl_pattern(kind: Kind | str) -> str:
    """Mosquitto ACL pattern of one kind for device users named ``{line}/{device}`` (``%u``)."""
    return f"{ROOT}/%u/{Kind(kind).value}"


def parse_device_ref(text: str) -> tuple[str, str] | None:
    """``(line, device)`` of ``LINE/DEVICE`` (how the CLI names a device, and a device's broker
    user name), else ``None``."""
    line, sep, device = text.partition("/")
    if not sep or line == RESERVED_LINE or not (is_valid_id(line) and is_valid_id(device)):
        return None
    return line, device


MAX_TOPIC_BYTES = 65535
"""A topic filter is a UTF-8 string with a two-byte length prefix (MQTT 3.1.1 §1.5.3)."""


def check_topic_filter(text: str, flag: str = "--topic") -> str:
    """``text`` if it is a valid MQTT topic filter (MQTT 3.1.1 §4.7), else a one-line error.

    The rules, each a sentence of the error: the filter is 1 to 65535 bytes of UTF-8 without
    U+0000 (§4.7.3); ``#`` is a whole level and the last one (§4.7.1.2); ``+`` is a whole level
    (§4.7.1.3). paho raises a bare ``ValueError`` on these at subscribe time, after connecting.

    Raises:
        ConfigError: the filter breaks one of the rules, naming the filter and the rule.
    """
    if not text:
        raise ConfigError(f"{flag} {text!r}: a topic filter must not be empty")
    if "\0" in text:
        raise ConfigError(f"{flag} {text!r}: a topic filter must not contain U+0000")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise ConfigError(f"{flag}: a topic filter is at most {MAX_TOPIC_BYTES} bytes of UTF-8")
    levels = text.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ConfigError(
                f"{flag} {text!r}: '#' must be a whole level and the last one, e.g. sqal/v1/#"
            )
        if "+" in level and level != "+":
            raise ConfigError(
                f"{flag} {text!r}: '+' must be a whole level, e.g. sqal/v1/+/+/result"
            )
    return text


def topic_name_problem(text: str) -> str | None:
    """What makes ``text`` no MQTT topic *name* (what a PUBLISH carries), or ``None``.

    A topic name is 1 to 65535 bytes of UTF-8 without U+0000 (MQTT 3.1.1 §1.5.3, §4.7.3) and
    without the wildcards ``+`` and ``#``, which only filters may hold (§3.3.2.1, MQTT-3.3.2-2).
    No broker delivers such a message, so a capture or dead letter holding one was not received.
    """
    if not text:
        return "a topic name must not be empty"
    if "\0" in text:
        return "a topic name must not contain U+0000"
    if "+" in text or "#" in text:
        return "a topic name must not contain the wildcards '+' or '#'"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        return f"a topic name is at most {MAX_TOPIC_BYTES} bytes of UTF-8"
    return None


def topic_levels(topic: str) -> list[str]:
    """A topic's levels (``sqal replay --remap`` rewrites them)."""
    return topic.split("/")


def join_levels(levels: list[str] | tuple[str, ...]) -> str:
    """The topic of ``levels``; the inverse of :func:`topic_levels`."""
    return "/".join(levels)
