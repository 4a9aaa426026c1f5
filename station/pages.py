"""The station's pages: sign-in, the line views, the HOLD queue, the quality pages.

Server-rendered (Jinja2, ``station/templates``); the line view's live parts are drawn by
``static/line.js`` from the event stream. Every form carries the session's CSRF token and every
POST checks it first (403 otherwise); nothing is written without a signed-in operator.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import FormData

from sqal.errors import ConfigError
from sqal.profiles import Profile, load_profile
from sqal.wire import (
    ID_PATTERN,
    Decision,
    DeviceTopic,
    Kind,
    Recheck,
    RecheckAnswer,
    device_topic,
    encode,
)
from station.auth import CSRF_FIELD, DUMMY_HASH, Role, csrf_matches, new_csrf, verify_password
from station.base import CsrfRefused, User, page_language, requires, station_of
from station.evidence import Evidence, evidence, height_colour
from station.reports import ReportQuery, report_response
from station.words import LANGUAGES, decision_words, defect_words, page_words, translator
from station.zone import offset_minutes
from storage import station as db
from storage.rows import recheck_row

router = APIRouter()

Viewer = Annotated[User, Depends(requires(Role.VIEWER))]
Operator = Annotated[User, Depends(requires(Role.OPERATOR))]
Quality = Annotated[User, Depends(requires(Role.QUALITY))]

HOLD_SHOWN = 30
"""Held trays one page of the queue shows, oldest first, each with its evidence."""
HOLD_LOOKBACK = timedelta(days=7)
DOUBLE_SUBMIT = timedelta(seconds=30)
"""The same answer from the same user for the same tray within this is one answer."""
QUALITY_DAYS = 30


async def checked_form(request: Request) -> FormData:
    """The posted form, if it carries the session's CSRF token.

    Raises:
        CsrfRefused: it does not.
    """
    form = await request.form()
    given = form.get(CSRF_FIELD)
    if not csrf_matches(request.session.get("csrf"), given if isinstance(given, str) else None):
        raise CsrfRefused
    return form


def _profile(name: str | None) -> Profile | None:
    try:
        return load_profile(name) if name else None
    except ConfigError:
        return None


def _safe_next(target: str | None) -> str:
    """Only a path of this site (no ``//host``): an open redirect would lend our name."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


# --- signing in ----------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/") -> Response:
    return station_of(request).render(request, "login.html", next=_safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    st = station_of(request)
    form = await checked_form(request)
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/")))

    def check() -> db.UserRow | None:
        with db.session(st.cfg.dsn, "cannot check the sign-in") as conn:
            user = db.get_user(conn, name)
            ok, rehashed = verify_password(user.password_hash if user else DUMMY_HASH, password)
            if user is not None and ok and rehashed is not None:
                db.set_password_hash(conn, name, rehashed)
            return user if ok else None

    user = await asyncio.to_thread(check)
    if user is None:
        st.sign_ins.inc(label="refused")
        t = translator(page_language(request))
        return st.render(request, "login.html", 401, next=target, failed=t("login.failed"),
                         username=name)  # fmt: skip
    st.sign_ins.inc(label="ok")
    request.session.clear()  # a new session: no fixation of one set before signing in
    request.session.update(
        {"user": user.name, "role": user.role, "lang": user.language, "csrf": new_csrf()}
    )
    return RedirectResponse(target, status_code=303)


@router.post("/language")
async def language(request: Request, user: Viewer) -> Response:
    """Switch the signed-in user's language: stored for them, and in the session at once."""
    st = station_of(request)
    form = await checked_form(request)
    lang = str(form.get("lang", ""))
    target = _safe_next(str(form.get("next", "/")))
    if lang not in LANGUAGES:
        return st.render(request, "error.html", 422, message=f"lang: {', '.join(LANGUAGES)}")

    def store() -> bool:
        with db.session(st.cfg.dsn, "cannot store the language") as conn:
            return db.set_language(conn, user.name, lang)

    await asyncio.to_thread(store)  # a user removed since signing in: the session still switches
    request.session["lang"] = lang
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    await checked_form(request)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# --- the lines ---------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def lines(request: Request, user: Viewer) -> Response:
    st = station_of(request)
    now = datetime.now(UTC)
    with st.feed.lock:
        rows = [
            {"line": ln, "rates": st.feed.board.rates(ln, now),
             "alarms": len(st.feed.board.line_alarms(ln)),
             "devices": len(st.feed.board.line(ln).devices)}
            for ln in sorted(st.feed.board.lines) if ln
        ]  # fmt: skip
    return st.render(request, "lines.html", lines=rows)


LIVE_KEYS = (
    "live.live", "live.stale", "live.broker_down", "live.no_data", "live.station_down",
    "live.db_down", "device.online", "device.offline", "device.unknown", "alarm.device_offline",
    "alarm.reject_rate", "alarm.dead_letters", "alarm.detail.device_offline",
    "alarm.detail.reject_rate", "alarm.detail.dead_letters", "alarm.ack", "alarm.acked",
    "alarm.cleared", "line.no_alarms", "line.limit", "line.window",
)  # fmt: skip
"""The words line.js shows: it gets codes and figures from the stream."""


def _words_for_page(language: str) -> dict[str, Any]:
    """What line.js shows, in the user's language."""
    t = translator(language)
    return {"t": {k: t(k) for k in LIVE_KEYS}, **page_words(language)}


@router.get("/lines/{line}", response_class=HTMLResponse)
async def line_view(request: Request, user: Viewer, line: str) -> Response:
    st = station_of(request)
    if not _is_line(line):
        t = translator(user.language)
        return st.render(request, "error.html", 404, message=t("error.no_line", line=line))
    page = {
        "line": line,
        "stale_after_s": st.cfg.stale_after_s,
        "may_ack": user.role.may(Role.OPERATOR),
        "words": _words_for_page(user.language),
        "lang": user.language,
        "tz": st.zone_name,
        "tz_offset_min": offset_minutes(st.zone),
    }
    return st.render(request, "line.html", line=line, page_json=json.dumps(page))


def _is_line(text: str) -> bool:
    import re

    return re.fullmatch(ID_PATTERN, text) is not None and text != "_dead"


def _tray_evidence(
    conn: Any, row: dict[str, Any], line: str
) -> tuple[Evidence | None, Profile | None]:
    profile = _profile(row.get("profile"))
    stored = db.stored_tof(conn, line, row["device_id"], row["sample_id"], row["ts"])
    if profile is None:
        return None, None
    if stored is None:
        cal = db.device_calibration(conn, line, row["device_id"], row["ts"])
        return evidence(row, None, cal, profile), profile
    tof = (stored.distance_mm, stored.target_status, stored.layout)
    return evidence(row, tof, stored.calibration, profile), profile


@router.get("/lines/{line}/trays/{device}/{sample_id}", response_class=HTMLResponse)
async def tray(
    request: Request, user: Viewer, line: str, device: str, sample_id: str, ts: AwareDatetime
) -> Response:
    """The selected tray's evidence, an HTML fragment the line view inserts."""
    st = station_of(request)

    def load() -> tuple[dict[str, Any] | None, Evidence | None]:
        with db.session(st.cfg.dsn, "cannot read the tray") as conn:
            row = db.one_result(conn, line, device, sample_id, ts)
            if row is None:
                return None, None
            return row, _tray_evidence(conn, row, line)[0]

    row, ev = await asyncio.to_thread(load)
    if row is None:
        return st.render(request, "fragment_missing.html", 404, sample_id=sample_id)
    doc = _tray_doc(row, user.language)
    return st.render(request, "evidence.html", row=doc, ev=ev, colour=height_colour)


def _tray_doc(row: dict[str, Any], language: str) -> dict[str, Any]:
    return {
        **row,
        "reasons": defect_words(list(row.get("defects") or []), language),
        "decision_words": decision_words(row.get("decision"), language),
    }


# --- alarms -------------------------------------------------------------------------------


@router.post("/alarms/{alarm_id}/ack")
async def ack_alarm(request: Request, user: Operator, alarm_id: int) -> Response:
    st = station_of(request)
    form = await checked_form(request)

    def store(aid: int, who: str, at: datetime) -> bool:
        with db.session(st.cfg.dsn, "cannot store the acknowledgement") as conn:
            return db.ack_alarm(conn, aid, who, at)

    done = await asyncio.to_thread(st.feed.ack, alarm_id, user.name, store)
    if not done:
        t = translator(user.language)
        return st.render(request, "error.html", 404, message=t("error.no_alarm", id=alarm_id))
    return RedirectResponse(_safe_next(str(form.get("next", "/"))), status_code=303)


# --- the HOLD queue -----------------------------------------------------------------------


class RecheckForm(BaseModel):
    """A re-check as the HOLD queue's form posts it."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    line: Annotated[str, Field(pattern=rf"^{ID_PATTERN}$")]
    device: Annotated[str, Field(pattern=rf"^{ID_PATTERN}$")]
    sample_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
    result_ts: AwareDatetime
    answer: RecheckAnswer
    mass_g: Annotated[float, Field(gt=0, le=100_000)] | None = None
    note: Annotated[str, Field(max_length=1000)] | None = None

    @field_validator("mass_g", "note", mode="before")
    @classmethod
    def _blank(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v


@router.get("/hold", response_class=HTMLResponse)
async def hold(request: Request, user: Viewer, line: str | None = None) -> Response:
    st = station_of(request)
    since = datetime.now(UTC) - HOLD_LOOKBACK

    def load() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with db.session(st.cfg.dsn, "cannot read the HOLD queue") as conn:
            rows = db.hold_queue(conn, [line] if line else None, since, HOLD_SHOWN)
            held = []
            for r in rows:
                ev, _ = _tray_evidence(conn, r, r["line_id"])
                held.append({"row": _tray_doc(r, user.language), "ev": ev})
            recent = db.latest_rechecks(conn, [line] if line else None, 10)
        return held, recent

    held, recent = await asyncio.to_thread(load)
    done = request.session.pop("flash", None)
    return st.render(request, "hold.html", held=held, recent=recent, line=line, flash=done,
                     may_answer=user.role.may(Role.OPERATOR), colour=height_colour)  # fmt: skip


@router.post("/hold/recheck")
async def recheck(request: Request, user: Operator) -> Response:
    """Record an operator's answer: stored, then published (non-retained) for ingest."""
    st = station_of(request)
    form = await checked_form(request)
    try:
        f = RecheckForm.model_validate({k: v for k, v in form.items() if isinstance(v, str)})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        return st.render(request, "error.html", 422, message=f"{where}: {err['msg']}")

    def store() -> tuple[str, Recheck | None]:
        with db.session(st.cfg.dsn, "cannot store the re-check") as conn:
            row = db.one_result(conn, f.line, f.device, f.sample_id, f.result_ts)
            if row is None:
                return "missing", None
            now = datetime.now(UTC)
            rc = Recheck(device_id=f.device, sample_id=f.sample_id, ts=now,
                         result_ts=f.result_ts, answer=f.answer,
                         decision=Decision(row["decision"] or "HOLD"), mass_g=f.mass_g,
                         note=f.note, user=user.name)  # fmt: skip
            values = recheck_row(DeviceTopic(f.line, f.device, Kind.RECHECK), rc)
            if db.same_recheck_since(conn, values, now - DOUBLE_SUBMIT):
                return "repeat", None
            db.insert_recheck(conn, values)
            return "stored", rc

    outcome, rc = await asyncio.to_thread(store)
    t = translator(user.language)
    if outcome == "missing":
        key, ts = f"{f.line}/{f.device}/{f.sample_id}", f.result_ts.isoformat()
        return st.render(request, "error.html", 404, message=t("error.no_result", key=key, ts=ts))
    if rc is not None:
        # QoS 1; paho queues it while the broker is away. The row is stored already, and
        # ingest's copy of it inserts nothing (same key, same content).
        st.feed.sub.publish(device_topic(f.line, f.device, Kind.RECHECK), encode(rc))
        st.rechecks.inc()
    answer = t(f"answer.{f.answer.value}")
    request.session["flash"] = t("hold.recorded", sample=f.sample_id, answer=answer)
    back = f"/hold?line={quote(f.line)}" if form.get("from_line") else "/hold"
    return RedirectResponse(back, status_code=303)


# --- quality ------------------------------------------------------------------------------


@router.get("/quality", response_class=HTMLResponse)
async def quality(request: Request, user: Quality) -> Response:
    from views.rechecks import evaluate_rechecks

    st = station_of(request)
    since = datetime.now(UTC) - timedelta(days=QUALITY_DAYS)

    def load() -> tuple[list[dict[str, Any]], list[str]]:
        with db.session(st.cfg.dsn, "cannot read the re-checks") as conn:
            return db.recheck_rows(conn, since), db.known_lines(conn, since)

    rows, known = await asyncio.to_thread(load)
    rep = evaluate_rechecks(rows)
    return st.render(request, "quality.html", rep=rep, days=QUALITY_DAYS, lines=known)


@router.get("/quality/report.pdf")
async def shift_report(
    request: Request, user: Quality, q: Annotated[ReportQuery, Query()]
) -> Response:
    """The shift report (``sqal report``) of a line, as a PDF to print."""
    return await report_response(request, q, as_csv=False)
