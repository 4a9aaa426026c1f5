"""The read API (``/api/v1``, a bearer token from ``sqal station token add``): its token
dependency and results; ``/healthz`` and ``/metrics``. Samples, devices, dead letters and lots
are in :mod:`station.records`, the shift report in :mod:`station.reports`.

Parameters are validated by pydantic; a bad one is answered 422 with one ``error`` line naming
it (``since: Input should have timezone info``), a missing or unknown token 401, an unknown id
404. The OpenAPI document is at ``/api/openapi.json``, its pages at ``/api/docs``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from sqal.wire import ID_PATTERN, Decision, Mode
from sqal.wire.models import LotId
from station.auth import token_digest
from station.base import station_of
from storage import station as db

router = APIRouter()
_bearer = HTTPBearer(auto_error=False)

MAX_LIMIT = 1000

LineId = Annotated[str, Field(pattern=rf"^{ID_PATTERN}$")]
"""A line or device id (:data:`sqal.wire.ID_PATTERN`)."""
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT)]


class ModeFilter(StrEnum):
    """Which results by their mode (:class:`sqal.wire.Mode`); ``any``: every mode."""

    PRODUCTION = Mode.PRODUCTION.value
    CALIBRATION = Mode.CALIBRATION.value
    MAINTENANCE = Mode.MAINTENANCE.value
    ANY = "any"


def api_token(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """A dependency: the name of the request's valid read-API token.

    Raises:
        HTTPException: 401 when the token is missing, unknown or revoked.
    """
    from fastapi import HTTPException

    if creds is None or not creds.credentials:
        raise HTTPException(
            401,
            "a read-API token is required: Authorization: Bearer TOKEN (sqal station token add)",
            {"WWW-Authenticate": "Bearer"},
        )
    st = station_of(request)
    with db.session(st.cfg.dsn, "cannot check the token") as conn:
        name = db.token_name(conn, token_digest(creds.credentials))
    if name is None:
        raise HTTPException(401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
    return name


class ResultsQuery(BaseModel):
    """Filters of ``GET /api/v1/results``; every one optional, all must match."""

    model_config = ConfigDict(extra="forbid")

    line: LineId | None = None
    device: LineId | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    decision: Decision | None = None
    lot: LotId | None = None
    mode: ModeFilter = ModeFilter.PRODUCTION
    """Production trays only unless asked: ``calibration``, ``maintenance`` or ``any``."""
    limit: Limit = 100

    @model_validator(mode="after")
    def _window(self) -> ResultsQuery:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


class ResultOut(BaseModel):
    ts: datetime
    line_id: str
    device_id: str
    sample_id: str
    profile: str
    final_grade: str
    final_score: float | None
    confidence: float | None
    decision: str | None
    defects: list[str]
    p_reject: float | None
    tof_mass_g: float | None
    tof_volume_mm3: float | None
    weight_mass_g: float | None
    lot_id: str | None
    mode: str
    received_at: datetime


@router.get("/api/v1/results", response_model=list[ResultOut], tags=["results"])
async def results(
    request: Request,
    token: Annotated[str, Depends(api_token)],
    q: Annotated[ResultsQuery, Query()],
) -> list[dict[str, Any]]:
    """Stored results, newest first, filtered by line, device, time, decision and lot;
    production trays only unless ``mode`` asks for others."""
    st = station_of(request)

    def load() -> list[dict[str, Any]]:
        with db.session(st.cfg.dsn, "cannot read results") as conn:
            mode = None if q.mode is ModeFilter.ANY else q.mode.value
            decision = q.decision.value if q.decision else None
            rows = db.api_results(conn, line=q.line, device=q.device, since=q.since,
                                  until=q.until, decision=decision, lot=q.lot, mode=mode,
                                  limit=q.limit)  # fmt: skip
        for r in rows:
            r["defects"] = list(r["defects"] or [])
        return rows

    return await asyncio.to_thread(load)


@router.get("/healthz", include_in_schema=False)
async def healthz(request: Request) -> Response:
    ok, why = station_of(request).registry.healthy()
    return PlainTextResponse(f"{why}\n", status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    body, ctype = station_of(request).registry.render(request.headers.get("accept", ""))
    return Response(body, media_type=ctype)
