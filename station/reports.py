"""The shift report in the read API (``/api/v1/report.pdf``, ``/api/v1/report.csv``) and on the
quality page: ``sqal report``'s report of a line or a lot, made by :mod:`views.report`.

The period is chosen as ``sqal report`` chooses it: ``since`` (an age before ``until`` such as
``8h``, or a time with an offset; default 8 h) and ``until`` (default now); with ``lot`` and
neither, the lot's whole run. Times in the report are in ``tz`` (default the station's
``--tz``).
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sqal.errors import ConfigError
from sqal.wire.models import LotId
from station.api import LineId, api_token
from station.base import station_of
from storage import station as db

router = APIRouter(prefix="/api/v1", dependencies=[Depends(api_token)], tags=["report"])

DEFAULT_SINCE = "8h"


def _instant(text: str, field: str) -> str:
    from views.report import parse_instant

    try:
        parse_instant(text, datetime.now(UTC), field)
    except ConfigError as exc:
        raise PydanticCustomError("instant", str(exc)) from None
    return text


class ReportQuery(BaseModel):
    """Which report: a line's period, or a lot (over its run unless ``since``/``until``)."""

    model_config = ConfigDict(extra="forbid")

    line: LineId | None = None
    lot: LotId | None = None
    since: str | None = None
    until: str | None = None
    tz: str | None = None
    """An IANA zone name (``Europe/Paris``) for the report's times."""

    @field_validator("since", "until")
    @classmethod
    def _instants(cls, v: str | None, info: Any) -> str | None:
        return None if v is None else _instant(v, info.field_name)

    @field_validator("tz")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        from views.command import plant_zone

        if v is not None:
            try:
                plant_zone(v)
            except ConfigError as exc:
                raise PydanticCustomError("tz", str(exc).removeprefix("--")) from None
        return v

    @model_validator(mode="after")
    def _what(self) -> ReportQuery:
        if self.line is None and self.lot is None:
            raise ValueError("give line, lot, or both")
        return self


@dataclass(frozen=True, slots=True)
class Made:
    """A made report: the file's bytes and a name to save it as."""

    body: bytes
    filename: str


def make_report(
    dsn: str, q: ReportQuery, zone: tzinfo, as_csv: bool, now: datetime | None = None
) -> Made:
    """The report of ``q`` as a PDF, or its production trays as CSV (a worker thread's call).

    Raises:
        HTTPException: 404 for an unknown line or lot, or a lot without a production tray in
            the period; 422 for a period that ends before it starts.
        StorageError: the database is unreachable.
    """
    from views.command import find_lot
    from views.report import (
        load_record,
        load_shift,
        mass_groups,
        parse_instant,
        report_context,
        write_report,
        write_trays_csv,
    )

    now = now or datetime.now(UTC)
    end = parse_instant(q.until, now, "until") if q.until else now
    start = parse_instant(q.since or DEFAULT_SINCE, end, "since")
    with db.session(dsn, "cannot read the shift") as conn:
        line = q.line
        if q.lot is not None:
            try:
                info = find_lot(conn, q.lot, q.line)
            except ConfigError as exc:
                raise HTTPException(404, str(exc).removeprefix("--")) from None
            line = info.line_id
            end = end if q.until else (info.ended or now)
            start = parse_instant(q.since, end, "since") if q.since else info.started
        assert line is not None
        if start >= end:
            raise HTTPException(
                422, f"since {start.isoformat()} must be before until {end.isoformat()}"
            )
        try:
            data = load_shift(conn, line, start, end, q.lot)
        except ConfigError as exc:  # a line the database never heard of
            raise HTTPException(404, str(exc).removeprefix("--")) from None
        if q.lot is not None and not data.trays:
            raise HTTPException(404, f"lot {q.lot}: no production tray of line {line} between "
                                     f"{start.isoformat()} and {end.isoformat()}")  # fmt: skip
        stem = f"shift-{line}{f'-{q.lot}' if q.lot else ''}-{start:%Y%m%dT%H%M}"
        with tempfile.TemporaryDirectory(prefix="sqal-station-") as tmp:
            if as_csv:
                path = write_trays_csv(conn, Path(tmp) / "trays.csv", line, start, end, q.lot)
                return Made(path.read_bytes(), f"{stem}.csv")
            record = load_record(conn, line, start, end)
            context = report_context(data, record, mass_groups(data), zone)
            path = Path(tmp) / "shift.pdf"
            write_report(context, path, as_html=False)
            return Made(path.read_bytes(), f"{stem}.pdf")


async def report_response(request: Request, q: ReportQuery, as_csv: bool) -> Response:
    """The report as a download (PDF shown inline, CSV as an attachment)."""
    from views.command import plant_zone

    st = station_of(request)
    zone = plant_zone(q.tz) if q.tz else st.zone
    made = await asyncio.to_thread(make_report, st.cfg.dsn, q, zone, as_csv)
    kind, how = (
        ("text/csv; charset=utf-8", "attachment") if as_csv else ("application/pdf", "inline")
    )
    disposition = f'{how}; filename="{made.filename}"'
    return Response(made.body, media_type=kind, headers={"Content-Disposition": disposition})


@router.get("/report.pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}})  # fmt: skip
async def report_pdf(request: Request, q: Annotated[ReportQuery, Query()]) -> Response:
    """The shift report (``sqal report``) of a line's period or a lot, as a PDF."""
    return await report_response(request, q, as_csv=False)


@router.get("/report.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {}}}})  # fmt: skip
async def report_csv(request: Request, q: Annotated[ReportQuery, Query()]) -> Response:
    """The production trays the report counts, as CSV (``sqal report --csv``): time (UTC),
    device, sample, lot, decision, grade, defects, the mass judged on, its source and σ."""
    return await report_response(request, q, as_csv=True)
