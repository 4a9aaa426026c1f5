"""The station's web application: one FastAPI app per plant (issue #20).

``create_app`` wires the parts: the MQTT feed (:mod:`station.feed`), the pages
(:mod:`station.pages`), the live event stream (:mod:`station.events`) and the read API with
``/healthz`` and ``/metrics`` (:mod:`station.api`). Each part is a router; a later one (lots,
the shift report's API, more read endpoints) is one more ``include_router``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from sqal import __version__
from sqal.errors import StorageError
from sqal.metrics import Registry
from station.auth import CSRF_FIELD, Role, new_csrf
from station.feed import Feed, FeedConfig, Hub
from station.words import LANGUAGES, Language, number, translator
from station.zone import local_time, station_zone

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "sqal_station"
SESSION_MAX_AGE_S = 12 * 3600
"""A shift and a half: an operator signs in once per shift."""


@dataclass(frozen=True)
class StationConfig:
    """What ``sqal station`` is told.

    Attributes:
        secret_key: signs the session cookies; the same key across restarts keeps users
            signed in.
        secure_cookies: mark cookies ``Secure`` (sent over HTTPS only); off only for plain
            HTTP on loopback.
        session_expiry_s: how long the broker queues results for a station that went away.
        stale_after_s: a line without a result for this long is shown as stale.
        tz: the plant's time zone (an IANA name) for the times pages show and reports print;
            ``None``: this machine's.
    """

    broker: str
    dsn: str
    secret_key: str
    host: str = "127.0.0.1"
    port: int = 8080
    secure_cookies: bool = True
    client_id: str = "sqal-station"
    session_expiry_s: int = 300
    rate_window_s: float = 600.0
    stale_after_s: float = 10.0
    tz: str | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class User:
    """The signed-in user, from the session."""

    name: str
    role: Role
    language: str = "en"


class NeedLogin(Exception):  # noqa: N818  (control flow, not an error: redirects to /login)
    """No signed-in user: a page redirects to the sign-in form."""


class Forbidden(Exception):  # noqa: N818
    """Signed in, but the role may not: 403."""

    def __init__(self, role: Role) -> None:
        self.role = role


class CsrfRefused(Exception):  # noqa: N818
    """A form without the session's CSRF token: 403."""


class Station:
    """What the routers share: the config, the feed and the templates."""

    def __init__(self, cfg: StationConfig) -> None:
        self.cfg = cfg
        self.zone, self.zone_name = station_zone(cfg.tz)
        self.registry = Registry("station")
        self.hub = Hub()
        self.feed = Feed(
            FeedConfig(cfg.broker, cfg.dsn, cfg.client_id, cfg.session_expiry_s,
                       timedelta(seconds=cfg.rate_window_s)),
            self.hub,
            self.registry,
        )  # fmt: skip
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.requests = self.registry.counter(
            "requests", "HTTP requests answered, by status class.", "status"
        )
        self.rechecks = self.registry.counter("rechecks", "Re-check answers recorded.")
        self.sign_ins = self.registry.counter(
            "sign_ins", "Sign-in attempts, by outcome.", "outcome"
        )
        self.registry.healthy = self._healthy

    def _healthy(self) -> tuple[bool, str]:
        broker = "up" if self.feed.sub.connected else "down"
        db = "up" if self.feed.db_ok else "down"
        return self.feed.sub.connected and self.feed.db_ok, f"broker {broker}, database {db}"

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        user = session_user(request)
        lang = page_language(request)
        zone = self.zone

        def when(t: datetime, with_date: bool = True) -> str:
            return local_time(t, zone, with_date)

        return self.templates.TemplateResponse(
            request,
            name,
            {
                "t": translator(lang),
                "n": number(lang),
                "when": when,
                "lang": lang,
                "languages": LANGUAGES,
                "user": user,
                "csrf": csrf_token(request),
                "csrf_field": CSRF_FIELD,
                "version": __version__,
                **context,
            },
            status_code=status_code,
        )


def stop_streams(app: FastAPI) -> None:
    """End the open event streams, so a server stopping need not wait for them (any thread)."""
    station: Station = app.state.station
    station.hub.close()


def station_of(request: Request) -> Station:
    st: Station = request.app.state.station
    return st


def session_user(request: Request) -> User | None:
    s = request.session
    try:
        return User(str(s["user"]), Role(s["role"]), str(s.get("lang", "en")))
    except (KeyError, ValueError):
        return None


def page_language(request: Request) -> str:
    """The signed-in user's language; before signing in, the browser's first choice if the
    station speaks it (``Accept-Language``), else English."""
    user = session_user(request)
    if user is not None:
        return user.language if user.language in LANGUAGES else Language.EN
    first = request.headers.get("accept-language", "").split(",")[0].strip().lower()
    return Language.FR if first.startswith("fr") else Language.EN


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (the sign-in form has one too)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = new_csrf()
    return token


def requires(role: Role) -> Callable[[Request], User]:
    """A dependency: the signed-in user, if their role may do what ``role`` may."""

    def dependency(request: Request) -> User:
        user = session_user(request)
        if user is None:
            raise NeedLogin
        if not user.role.may(role):
            raise Forbidden(user.role)
        return user

    return dependency


def create_app(cfg: StationConfig, *, start_feed: bool = True) -> FastAPI:
    """The station's app. ``start_feed=False`` serves pages without MQTT (tests of the API)."""
    from station import api, events, pages, records, reports

    station = Station(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        station.hub.bind(asyncio.get_running_loop())
        if start_feed:
            station.feed.start()
        try:
            yield
        finally:
            if start_feed:
                await asyncio.to_thread(station.feed.stop)

    app = FastAPI(
        title="SQAL station",
        version=__version__,
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.station = station
    app.add_middleware(
        SessionMiddleware,
        secret_key=cfg.secret_key,
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
        https_only=cfg.secure_cookies,
    )

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        station.requests.inc(label=f"{response.status_code // 100}xx")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    _install_error_pages(app, station)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(pages.router)
    app.include_router(events.router)
    app.include_router(api.router)
    app.include_router(records.router)
    app.include_router(reports.router)
    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _install_error_pages(app: FastAPI, station: Station) -> None:
    """Every error is one clear message, JSON under /api, a page elsewhere; never a traceback."""

    def error(request: Request, status: int, message: str) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": message}, status_code=status)
        return station.render(request, "error.html", status, message=message)

    def words(request: Request, key: str, **values: object) -> str:
        """A message in the page's language; in English for the API (read by programs)."""
        return translator("en" if _wants_json(request) else page_language(request))(key, **values)

    @app.exception_handler(NeedLogin)
    async def need_login(request: Request, exc: NeedLogin) -> Response:
        if request.method != "GET":
            return error(request, 401, words(request, "error.sign_in"))
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        role = words(request, f"role.{exc.role.value}")
        return error(request, 403, words(request, "error.forbidden", role=role))

    @app.exception_handler(CsrfRefused)
    async def csrf(request: Request, exc: CsrfRefused) -> Response:
        return error(request, 403, words(request, "error.csrf"))

    @app.exception_handler(StorageError)
    async def storage(request: Request, exc: StorageError) -> Response:
        log.warning("station: %s", exc)
        return error(request, 503, words(request, "error.storage", detail=exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p not in ("query", "body", "path"))
        return error(request, 422, f"{where}: {first['msg']}" if where else str(first["msg"]))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> Response:
        log.error("station: a bug answering %s %s", request.method, request.url.path,
                  exc_info=exc)  # fmt: skip
        return error(request, 500, words(request, "error.internal"))
