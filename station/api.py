"""The read API (``/api/v1``, a bearer token from ``sqal station token add``), ``/healthz``
and ``/metrics``.

Parameters are validated by pydantic; a bad one is answered 422 with one ``error`` line naming
it (``since: Input should have timezone info``), a missing or unknown token 401. The OpenAPI
document is at ``/api/openapi.json``, its pages at ``/api/docs``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from sqal.wire import ID_PATTERN, Decision
from station.app import station_of
from station.auth import token_digest
from storage import station as db

router = APIRouter()
_bearer = HTTPBearer(auto_error=False)

MAX_LIMIT = 1000


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

    line: Annotated[str, Field(pattern=rf"^{ID_PATTERN}$")] | None = None
    device: Annotated[str, Field(pattern=rf"^{ID_PATTERN}$")] | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    decision: Decision | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 100

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
    received_at: datetime


@router.get("/api/v1/results", response_model=list[ResultOut], tags=["results"])
async def results(
    request: Request,
    token: Annotated[str, Depends(api_token)],
    q: Annotated[ResultsQuery, Query()],
) -> list[dict[str, Any]]:
    """Stored results, newest first, filtered by line, device, time and decision."""
    st = station_of(request)

    def load() -> list[dict[str, Any]]:
        with db.session(st.cfg.dsn, "cannot read results") as conn:
            rows = db.api_results(conn, line=q.line, device=q.device, since=q.since,
                                  until=q.until, decision=q.decision.value if q.decision else None,
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
