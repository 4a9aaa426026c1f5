"""Enumerations shared on the wire: grades, defect codes, dead-letter reasons, topic kinds."""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """The last level of a device topic, ``sqal/v1/{line}/{device}/{kind}``."""

    TOF = "tof"
    SPECTRAL = "spectral"
    STATUS = "status"
    CONFIG = "config"
    RESULT = "result"
    WEIGHT = "weight"
    """A tray's mass from the line's checkweigher, with the sample_id of the node's frames."""
    RECHECK = "recheck"
    """An operator's answer for a HOLD tray, from the station (issue #20)."""


class Grade(StrEnum):
    """Final and per-sensor grades, best first (docs/domain.md §5)."""

    A = "A"
    B = "B"
    C = "C"
    REJECT = "REJECT"


class Decision(StrEnum):
    """What the line does with a tray (docs/domain.md §5, revised 2026-12): ship it, send it to
    the re-check lane, or bin it."""

    PASS = "PASS"
    HOLD = "HOLD"
    REJECT = "REJECT"


class RecheckAnswer(StrEnum):
    """What the operator found when re-checking a HOLD tray by hand: ship it or bin it."""

    ACCEPT = "accept"
    REJECT = "reject"


class DefectCode(StrEnum):
    """Every defect a result may carry (docs/domain.md §2, §4, §5)."""

    UNDERFILL = "underfill"
    OVERFILL = "overfill"
    SURFACE_IRREGULAR = "surface_irregular"
    TILTED = "tilted"
    ZONES_INVALID = "zones_invalid"
    OXIDATION = "oxidation"
    DISCOLORATION = "discoloration"
    FAT_YELLOWING = "fat_yellowing"
    SPECTRAL_SATURATED = "spectral_saturated"
    MISSING_TOF = "missing_tof"
    MISSING_SPECTRAL = "missing_spectral"
    MISSING_WEIGHT = "missing_weight"
    LOW_CONFIDENCE = "low_confidence"
    UNCALIBRATED = "uncalibrated"
    """The device has no dark/white reference yet: spectral indices cannot be computed."""


class Severity(StrEnum):
    """How bad a defect is: a minor one caps the grade, a critical one rejects."""

    MINOR = "minor"
    CRITICAL = "critical"


class DeadReason(StrEnum):
    """Why a message was dead-lettered. One enum for every stage, so counts add up."""

    BAD_TOPIC = "bad_topic"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    BAD_JSON = "bad_json"
    NOT_OBJECT = "not_object"
    UNSUPPORTED_VERSION = "unsupported_version"
    SCHEMA = "schema"
    DEVICE_MISMATCH = "device_mismatch"
    UNKNOWN_PROFILE = "unknown_profile"
    BAD_CONFIG = "bad_config"
    TS_OUT_OF_RANGE = "ts_out_of_range"
    CONFLICT = "conflict"
    PROCESSING = "processing"


class Mode(StrEnum):
    """What a device's trays are for (its config's ``mode``, stamped on each result).

    Only ``production`` trays are product: roll-ups, dashboards, reports, ``sqal eval --db`` and
    the packers' rules count them alone, and show the others apart. ``sqal calibrate`` sets
    ``calibration`` while it captures a fixture; an operator sets ``maintenance`` while the node
    is serviced (``sqal config set --mode``).
    """

    PRODUCTION = "production"
    CALIBRATION = "calibration"
    MAINTENANCE = "maintenance"


class DeviceState(StrEnum):
    """A device's presence, published retained on its status topic (offline via last will)."""

    ONLINE = "online"
    OFFLINE = "offline"


class Channel(StrEnum):
    """The AS7341's eleven reported channels, in wire order (docs/domain.md §3)."""

    F1 = "F1_415nm"
    F2 = "F2_445nm"
    F3 = "F3_480nm"
    F4 = "F4_515nm"
    F5 = "F5_555nm"
    F6 = "F6_590nm"
    F7 = "F7_630nm"
    F8 = "F8_680nm"
    CLEAR = "Clear"
    NIR = "NIR_910nm"
    FLICKER = "Flicker"


CHANNELS: tuple[Channel, ...] = tuple(Channel)
"""Channel order of every (n, 11) spectral array in SQAL."""
