"""What the station's routers share: its config, the signed-in user, the role checks and the
:class:`Station` itself (config, feed, templates). :mod:`station.app` wires the routers on top of
it, so every import arrow points from the routers and the app down to here (issue #20).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from sqal import __version__
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
