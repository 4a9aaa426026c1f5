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
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from sqal import __version__
from sqal.errors import StorageError
from station.base import (
    HERE,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    CsrfRefused,
    Forbidden,
    NeedLogin,
    Station,
    StationConfig,
    page_language,
)
from station.words import translator

log = logging.getLogger(__name__)


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
