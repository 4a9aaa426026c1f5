"""Device configuration on the broker: the retained ``sqal/v1/{line}/{device}/config`` topic.

``sqal config set`` builds and validates a :class:`~sqal.wire.DeviceConfig` before anything is
published; ``sqal config show`` reads back what the broker holds; ``sqal config delete`` clears
it.

Settings start from the profile's (``spectral.settings``, ``tof.layout``) when the product
changes, and from the device's current ones when it stays; ``--set`` overrides either.

The checkweigher block (whether a checkweigher weighs the device's trays, and its σ) is kept as
it is unless ``checkweigher`` says otherwise: a σ in g announces one, ``0`` removes it. The mode
(``production``, ``calibration``, ``maintenance``) is kept likewise unless ``mode`` is given.

A calibration is valid only for the settings it was measured with (docs/domain.md §3: "redone each
shift and after any setting change"). ``config set`` therefore keeps the device's calibration
block when the sensor settings stay the same, and drops it, saying so, when they change.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiomqtt
from pydantic import ValidationError

from sqal.errors import BrokerError, ConfigError, PayloadError
from sqal.mqtt import aiomqtt_client, client_id
from sqal.profiles import load_profile
from sqal.publisher import publish_acked
from sqal.settings import parse_broker_url
from sqal.wire import DeviceConfig, Kind, Mode, decode, device_topic, encode, subscription
from sqal.wire.topics import parse_device_ref

RETAINED_WAIT_S = 0.5
"""How long to wait for retained messages after subscribing (the broker sends them at once)."""


@dataclass(frozen=True)
class Target:
    """``LINE/DEVICE`` as given on the command line."""

    line: str
    device: str

    @classmethod
    def parse(cls, text: str) -> Target:
        ref = parse_device_ref(text)
        if ref is None:
            raise ConfigError(f"{text!r}: expected LINE/DEVICE, ids of [A-Za-z0-9_-]{{1,64}}")
        return cls(*ref)

    @property
    def topic(self) -> str:
        return device_topic(self.line, self.device, Kind.CONFIG)


def _coerce(value: str) -> Any:
    """``--set`` values: numbers and booleans as such, the rest as text."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(value)
    return value


def apply_sets(doc: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` assignments to a config document (a deep copy).

    Only the sensor settings may be set this way (``tof.*``, ``spectral.*``); the calibration
    comes from ``sqal calibrate``.

    Raises:
        ConfigError: malformed assignment or a key outside ``tof``/``spectral``.
    """
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in doc.items()}
    for item in sets:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. tof.ranging_hz=10")
        if section not in ("tof", "spectral"):
            raise ConfigError(f"--set {item!r}: only tof.* and spectral.* settings can be set")
        out.setdefault(section, {})[name] = _coerce(value)
    return out


def build_config(
    target: Target,
    profile: str,
    sets: list[str],
    current: DeviceConfig | None,
    now: datetime,
    checkweigher: float | None = None,
    mode: Mode | None = None,
) -> tuple[DeviceConfig, str | None]:
    """The config to publish, and a note when the old calibration was dropped.

    ``checkweigher``: the line's checkweigher σ in g (its weights then decide fill and every
    tray waits for one), 0 to say the line has none; ``None`` keeps what the device has.
    ``mode``: what the device's trays are for; ``None`` keeps the device's (production for a
    new device).

    Raises:
        ConfigError: unknown profile, unknown setting, or a value outside the sensor's range.
    """
    prof = load_profile(profile)
    base: dict[str, Any] = {"device_id": target.device, "profile": profile, "ts": now}
    if current is not None and current.profile == profile:
        base["tof"] = current.tof.model_dump()
        base["spectral"] = current.spectral.model_dump()
    else:  # a new product starts from its profile's sensor settings
        base["tof"] = {"layout": prof.tof.layout}
        base["spectral"] = prof.spectral.settings.model_dump()
    if checkweigher is not None and checkweigher < 0:
        raise ConfigError(f"--checkweigher {checkweigher:g}: a σ in g, or 0 for none")
    if checkweigher:
        base["checkweigher"] = {"sigma_g": checkweigher}
    elif checkweigher is None and current is not None and current.checkweigher is not None:
        # The line's checkweigher stays whatever the product or the sensor settings become.
        base["checkweigher"] = current.checkweigher.model_dump()
    if mode is not None:
        base["mode"] = mode
    elif current is not None:
        base["mode"] = current.mode
    doc = apply_sets(base, sets)
    try:
        config = DeviceConfig.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"config for {target.line}/{target.device}: {key}: {msg}") from None
    if config.tof.layout != prof.tof.layout:
        raise ConfigError(
            f"config for {target.line}/{target.device}: tof.layout {config.tof.layout} differs "
            f"from profile {profile}'s {prof.tof.layout}; the analyzer would dead-letter every "
            "frame of this device"
        )
    note = None
    if current is not None and current.calibration is not None:
        same = (current.profile, current.tof, current.spectral) == (
            config.profile,
            config.tof,
            config.spectral,
        )
        if same:
            config = config.model_copy(update={"calibration": current.calibration})
        else:
            note = (
                f"calibration {current.calibration.id} dropped: the product or the sensor "
                "settings changed; "
                f"run sqal calibrate {target.line}/{target.device}"
            )
    return config, note


async def fetch_configs(broker: str, topic_filter: str) -> dict[str, DeviceConfig | str]:
    """Retained configs under a filter: topic → config, or the reason it does not decode."""
    url = parse_broker_url(broker)
    found: dict[str, DeviceConfig | str] = {}
    try:
        async with aiomqtt_client(url, client_id("sqal-config")) as client:
            await client.subscribe(topic_filter, qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETAINED_WAIT_S):
                    async for msg in client.messages:
                        if not msg.retain:
                            continue
                        topic = str(msg.topic)
                        payload = msg.payload if isinstance(msg.payload, bytes) else b""
                        if not payload:
                            continue  # a cleared retained message
                        try:
                            obj = decode(topic, payload)
                            found[topic] = obj if isinstance(obj, DeviceConfig) else "not a config"
                        except PayloadError as exc:
                            found[topic] = str(exc)
    except aiomqtt.MqttError as exc:
        raise BrokerError(f"cannot reach broker {url}: {exc}") from None
    return found


async def publish_config(broker: str, target: Target, config: DeviceConfig) -> None:
    """Publish retained at QoS 1 and return once the broker's PUBACK accepted it.

    Raises:
        BrokerError: the broker is unreachable or did not answer.
        PublishError: the broker refused the config (e.g. not authorised, 0x87): the device
            keeps its old one.
    """
    # paho, not aiomqtt: aiomqtt's publish drops the PUBACK's reason code (sqal.publisher).
    await asyncio.to_thread(
        publish_acked, broker, target.topic, encode(config), retain=True, prefix="sqal-config"
    )


async def delete_config(broker: str, target: Target) -> None:
    """Clear the device's retained config: an empty retained message, QoS 1, PUBACK checked.

    The broker forgets the config (MQTT 5 section 3.3.1.3) and passes the empty message to the
    subscribers of the topic: the analyzer scores the device's trays with its default profile
    again, the device keeps running with the settings it had.

    Raises:
        BrokerError: the broker is unreachable or did not answer.
        PublishError: the broker refused (e.g. not authorised, 0x87): the config stays.
    """
    await asyncio.to_thread(
        publish_acked, broker, target.topic, b"", retain=True, prefix="sqal-config"
    )


async def publish_mode(broker: str, target: Target, config: DeviceConfig, mode: Mode) -> None:
    """Publish ``config`` with ``mode`` and a fresh ``ts`` (its calibration and settings kept).

    Raises:
        BrokerError, PublishError: as :func:`publish_config`.
    """
    await publish_config(broker, target, config.model_copy(update={"mode": mode, "ts": utc_now()}))


def config_filter(target: Target | None) -> str:
    if target is None:
        return subscription(Kind.CONFIG)
    return target.topic


def utc_now() -> datetime:
    return datetime.now(UTC)
