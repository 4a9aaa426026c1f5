"""The read API's records (``/api/v1``, a bearer token like ``/api/v1/results``): one sample
with its frames, the devices and their last status, dead letters, lots and a lot's packers'
rules.

Every parameter is validated by pydantic (a bad one: 422 and one ``error`` line); an id the
database does not hold is 404. The SQL is in :mod:`storage.station`, :mod:`storage.queries` and
:mod:`storage.deadletters`; the packers' rules are :mod:`views.packers`'.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, model_validator

from sqal.wire import ID_PATTERN, DeadReason, SpectralFrame, TofFrame, Weight
from station.api import Limit, LineId, api_token
from station.base import station_of
from storage import station as db
from storage.queries import LotInfo

router = APIRouter(prefix="/api/v1", dependencies=[Depends(api_token)])

LinePath = Annotated[str, Path(pattern=rf"^{ID_PATTERN}$")]
SamplePath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
LotPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


def _missing(what: str) -> HTTPException:
    return HTTPException(404, what)


# --- one sample --------------------------------------------------------------------------


class SampleResult(BaseModel):
    """The stored result of a sample (``results``: the fused verdict and both sections)."""

    model_config = ConfigDict(extra="allow")

    ts: datetime
    line_id: str
    device_id: str
    sample_id: str
    profile: str
    final_grade: str
    decision: str | None
    defects: list[str]
    p_reject: float | None
    p_defects: dict[str, float] | None
    tof_mass_g: float | None
    weight_mass_g: float | None
    lot_id: str | None
    mode: str
    received_at: datetime


class SampleOut(BaseModel):
    """A sample: its result and the frames stored for it (each ``null`` when not stored)."""

    result: SampleResult | None
    tof: TofFrame | None
    spectral: SpectralFrame | None
    weight: Weight | None


@router.get("/samples/{line}/{device}/{sample_id}", response_model=SampleOut, tags=["samples"])
async def sample(
    request: Request, line: LinePath, device: LinePath, sample_id: SamplePath
) -> dict[str, Any]:
    """One sample: its result, ToF frame, spectral frame and checkweigher weight, as stored
    (the latest stored copy of each). 404 when none of them is stored."""
    from storage.queries import stored_frames

    st = station_of(request)

    def load() -> dict[str, Any]:
        with db.session(st.cfg.dsn, "cannot read the sample") as conn:
            row = db.sample_result(conn, line, device, sample_id)
        frames = stored_frames(st.cfg.dsn, line, device, [sample_id])
        if row is not None:
            for key in ("defects", "tof_defects", "spectral_defects"):
                row[key] = list(row[key] or [])
        return {
            "result": row,
            "tof": frames.tof.get(sample_id),
            "spectral": frames.spectral.get(sample_id),
            "weight": frames.weights.get(sample_id),
        }

    doc = await asyncio.to_thread(load)
    if all(v is None for v in doc.values()):
        raise _missing(f"no result or frame of sample {line}/{device}/{sample_id}")
    return doc


# --- devices ---------------------------------------------------------------------------------


class DevicesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: LineId | None = None


class DeviceOut(BaseModel):
    """A device's latest retained status (``state``: online or offline, its last will)."""

    line_id: str
    device_id: str
    state: str
    ts: datetime
    firmware: str | None
    temperature_c: float | None
    humidity_pct: float | None
    uptime_s: float | None
    received_at: datetime


@router.get("/devices", response_model=list[DeviceOut], tags=["devices"])
async def devices(request: Request, q: Annotated[DevicesQuery, Query()]) -> list[dict[str, Any]]:
    """Every device (of one line) with its latest status, by line and device."""
    st = station_of(request)

    def load() -> list[dict[str, Any]]:
        with db.session(st.cfg.dsn, "cannot read the devices") as conn:
            return db.last_statuses(conn, q.line)

    return await asyncio.to_thread(load)


# --- dead letters ------------------------------------------------------------------------


class DeadQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: LineId | None = None
    reason: DeadReason | None = None
    since: AwareDatetime | None = None
    limit: Limit = 100


class DeadLetterOut(BaseModel):
    """A stored dead letter (``sqal dead list``); ``payload_base64`` only when asked by id."""

    id: int
    received_at: datetime
    stage: str
    topic: str
    line_id: str | None
    device_id: str | None
    reason: str
    detail: str
    payload_bytes: int
    redriven_at: datetime | None
    redrive_count: int
    payload_base64: str | None = None


def _dead_doc(row: Any) -> dict[str, Any]:
    payload = row.payload
    return {
        "id": row.id, "received_at": row.received_at, "stage": row.stage, "topic": row.topic,
        "line_id": row.line_id, "device_id": row.device_id, "reason": row.reason,
        "detail": row.detail, "payload_bytes": row.payload_bytes,
        "redriven_at": row.redriven_at, "redrive_count": row.redrive_count,
        "payload_base64": base64.b64encode(payload).decode() if payload is not None else None,
    }  # fmt: skip


@router.get("/dead-letters", response_model=list[DeadLetterOut], tags=["dead letters"])
async def dead_letters(request: Request, q: Annotated[DeadQuery, Query()]) -> list[dict[str, Any]]:
    """Stored dead letters, newest first, without their payloads (``/dead-letters/{id}``)."""
    from storage.deadletters import DeadFilter, find_dead

    st = station_of(request)
    reason = q.reason.value if q.reason else None

    def load() -> list[dict[str, Any]]:
        with db.session(st.cfg.dsn, "cannot read dead letters") as conn:
            rows = find_dead(conn, DeadFilter(q.line, reason, q.since), q.limit)
        return [_dead_doc(r) for r in rows]

    return await asyncio.to_thread(load)


@router.get("/dead-letters/{dead_id}", response_model=DeadLetterOut, tags=["dead letters"])
async def dead_letter(
    request: Request, dead_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> dict[str, Any]:
    """One dead letter with its payload, whole, in base64 (it may be any bytes)."""
    from storage.deadletters import get_dead

    st = station_of(request)

    def load() -> Any:
        with db.session(st.cfg.dsn, "cannot read the dead letter") as conn:
            return get_dead(conn, dead_id)

    row = await asyncio.to_thread(load)
    if row is None:
        raise _missing(f"no dead letter with id {dead_id}")
    return _dead_doc(row)


# --- lots and their packers' rules ------------------------------------------------------------


class LotsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: LineId | None = None
    since: AwareDatetime | None = None
    """Lots not ended before this."""
    limit: Limit = 100


@router.get("/lots", response_model=list[LotInfo], tags=["lots"])
async def lots(request: Request, q: Annotated[LotsQuery, Query()]) -> list[Any]:
    """Stored lots, newest first (of one line; those not ended before ``since``)."""
    from storage.queries import lots as stored_lots

    st = station_of(request)

    def load() -> list[Any]:
        with db.session(st.cfg.dsn, "cannot read lots") as conn:
            return [asdict(x) for x in stored_lots(conn, line=q.line, since=q.since,
                                                     limit=q.limit)]  # fmt: skip

    return await asyncio.to_thread(load)


@router.get("/lots/{line}/{lot_id}", response_model=LotInfo, tags=["lots"])
async def lot(request: Request, line: LinePath, lot_id: LotPath) -> Any:
    """One lot of a line."""
    from storage.queries import lots as stored_lots

    st = station_of(request)

    def load() -> list[Any]:
        with db.session(st.cfg.dsn, "cannot read the lot") as conn:
            return stored_lots(conn, line=line, lot=lot_id, limit=1)

    found = await asyncio.to_thread(load)
    if not found:
        raise _missing(f"no lot {lot_id} on line {line}")
    return asdict(found[0])


class RulesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime | None = None
    until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _window(self) -> RulesQuery:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


class RulesOut(BaseModel):
    """The packers' rules of a lot (Directive 76/211/EEC Annex II, :mod:`views.packers`)."""

    model_config = ConfigDict(extra="allow")

    lot: str | None
    verdict: str
    rule: str | None
    rule_text: str
    n: int
    weighed: int
    qn_g: float
    tne_g: float


@router.get("/lots/{line}/{lot_id}/rules", response_model=RulesOut, tags=["lots"])
async def lot_rules(
    request: Request, line: LinePath, lot_id: LotPath, q: Annotated[RulesQuery, Query()]
) -> dict[str, Any]:
    """The packers' rules of a lot's production packs (of a period with ``since``/``until``):
    mean and its 95 % interval against Qn, packs below T1 and T2, giveaway, the verdict.
    404 for an unknown lot or one without a pack with a mass in the period."""
    from storage.queries import lots as stored_lots
    from storage.queries import pack_groups
    from views.packers import profile_targets, rules_of

    st = station_of(request)

    def load() -> dict[str, Any] | None:
        with db.session(st.cfg.dsn, "cannot read the packs") as conn:
            if not stored_lots(conn, line=line, lot=lot_id, limit=1):
                raise _missing(f"no lot {lot_id} on line {line}")
            packs = pack_groups(conn, line, profile_targets(), lot_id, q.since, q.until)
        groups = rules_of(packs)
        return groups[0].as_dict() if groups else None

    doc = await asyncio.to_thread(load)
    if doc is None:
        raise _missing(f"lot {lot_id} of line {line} has no production tray with a mass here")
    return doc
