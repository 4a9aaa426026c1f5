"""A line's lot on the broker: the retained ``sqal/v1/{line}/lot`` topic (``sqal lot``).

The operator opens a lot (its id, the product, the nominal quantity Qn printed on the packs, the
start) and ends it; each is one retained message, so the analyzer and ingest read the line's
current lot on connecting, and the ended lot stays retained until the next one opens (a late
subscriber learns that none is open). Opening a lot ends the line's open one first: two lots
are never open on one line.

Defaults: the product is the profile of the line's devices (their retained configs), Qn the
profile's nominal mass, TNE the Directive 76/211/EEC Annex I value for Qn
(:func:`sqal.profiles.tne_g`).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import aiomqtt
from pydantic import ValidationError

from sqal.devices import RETAINED_WAIT_S, fetch_configs
from sqal.errors import BrokerError, ConfigError, PayloadError
from sqal.mqtt import aiomqtt_client, client_id
from sqal.profiles import load_profile, tne_g
from sqal.publisher import publish_acked
from sqal.settings import parse_broker_url
from sqal.wire import (
    DeviceConfig,
    Kind,
    Lot,
    decode_as,
    encode,
    is_valid_id,
    lot_subscription,
    lot_topic,
    parse_lot_topic,
    subscription,
)


def check_line(line: str) -> str:
    """``line`` if it is a valid line id.

    Raises:
        ConfigError: it is not.
    """
    if not is_valid_id(line) or line == "_dead":
        raise ConfigError(f"--line {line!r}: a line id is 1-64 of A-Z a-z 0-9 _ -")
    return line


async def fetch_lots(broker: str, line: str | None = None) -> dict[str, Lot | str]:
    """The lots the broker holds (retained): line → lot, or why its message does not decode.

    Raises:
        BrokerError: the broker is unreachable.
    """
    url = parse_broker_url(broker)
    found: dict[str, Lot | str] = {}
    try:
        async with aiomqtt_client(url, client_id("sqal-lot")) as client:
            await client.subscribe(lot_subscription(line or "+"), qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETAINED_WAIT_S):
                    async for msg in client.messages:
                        payload = msg.payload if isinstance(msg.payload, bytes) else b""
                        if not msg.retain or not payload:
                            continue
                        topic = str(msg.topic)
                        try:
                            got_line = parse_lot_topic(topic)
                        except PayloadError:
                            continue  # not a line's topic (e.g. sqal/v1/_dead/lot)
                        try:
                            found[got_line] = decode_as(Lot, payload, topic)
                        except PayloadError as exc:
                            found[got_line] = str(exc)
    except aiomqtt.MqttError as exc:
        raise BrokerError(f"cannot reach broker {url}: {exc}") from None
    return found


def line_profile(broker: str, line: str) -> str:
    """The profile the line's devices are configured with (their retained configs).

    Raises:
        ConfigError: no device of the line has a config, or they disagree.
        BrokerError: the broker is unreachable.
    """
    found = asyncio.run(fetch_configs(broker, subscription(Kind.CONFIG, line=line)))
    profiles = sorted({c.profile for c in found.values() if isinstance(c, DeviceConfig)})
    if len(profiles) == 1:
        return profiles[0]
    if not profiles:
        raise ConfigError(
            f"line {line} has no device config to take the product from; give --product"
        )
    raise ConfigError(
        f"line {line}'s devices run {', '.join(profiles)}; give --product to say which this lot is"
    )


def new_lot(
    lot_id: str,
    product: str,
    started: datetime,
    qn_g: float | None = None,
    note: str | None = None,
) -> Lot:
    """A lot opened at ``started``: Qn from the product's profile unless given, TNE from Qn.

    Raises:
        ConfigError: unknown product, or an id, Qn or note the contract refuses.
    """
    profile = load_profile(product)
    qn = profile.product.nominal_mass_g if qn_g is None else qn_g
    if not qn > 0:
        raise ConfigError(f"--qn {qn:g}: the nominal quantity is a mass in g, > 0")
    try:
        return Lot(
            lot=lot_id, product=product, qn_g=qn, tne_g=tne_g(qn), started=started, note=note
        )
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "lot"
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"lot {lot_id!r}: {where}: {msg}") from None


def ended(lot: Lot, at: datetime, note: str | None = None) -> Lot:
    """``lot`` ended at ``at`` (a note given replaces its note).

    Raises:
        ConfigError: ``at`` is before the lot's start.
    """
    if at < lot.started:
        raise ConfigError(
            f"lot {lot.lot} started at {lot.started.isoformat()}, after {at.isoformat()}: is "
            "this machine's clock right?"
        )
    return lot.model_copy(update={"ended": at, "note": note if note is not None else lot.note})


async def publish_lot(broker: str, line: str, lot: Lot) -> None:
    """Publish ``lot`` retained at QoS 1 on the line's lot topic; return once PUBACKed.

    Raises:
        BrokerError: the broker is unreachable or did not answer.
        PublishError: the broker refused it (e.g. not authorised: run as user ``operator``).
    """
    await asyncio.to_thread(
        publish_acked, broker, lot_topic(line), encode(lot), retain=True, prefix="sqal-lot"
    )
