"""Settings: flags, then ``SQAL_*`` environment variables, then one-machine defaults.

The CLI builds :class:`Settings` once, passing only the flags the user gave as init kwargs, so
they outrank the environment. Services take it as an argument; nothing builds it at import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sqal.errors import ConfigError

DEFAULT_MQTT_PORT = 1883
DEFAULT_PG_PORT = 5432


class Settings(BaseSettings):
    """Everything a SQAL process can be told, with defaults that work on one machine."""

    model_config = SettingsConfigDict(env_prefix="SQAL_", extra="forbid", frozen=True)

    broker: str = f"mqtt://127.0.0.1:{DEFAULT_MQTT_PORT}"
    db: SecretStr = SecretStr(f"postgresql://sqal@127.0.0.1:{DEFAULT_PG_PORT}/sqal")
    data_dir: Path = Path(".sqal")
    log_format: Literal["text", "json"] = "text"
    """``text`` for a terminal, ``json`` (one object per line) for a log collector."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    station_secret: SecretStr | None = None
    """Signs the station's session cookies (``sqal station``); else a key kept in
    ``data_dir/station.secret``, made on first use."""
    station_password: SecretStr | None = None
    """The password ``sqal station user add`` sets, instead of asking (scripts, compose)."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def load_settings(**flags: Any) -> Settings:
    """Build settings from the flags given (``None`` means not given) and the environment.

    Raises:
        ConfigError: an environment value or flag does not validate.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"setting {key}: {err['msg']}") from None


def redact_dsn(dsn: str) -> str:
    """A PostgreSQL DSN fit for a log line: its password left out, whichever form it has.

    ``postgresql://user:secret@host:5432/db`` → ``postgresql://user@host:5432/db``;
    ``host=h user=u password=secret`` → ``host=h user=u``.
    """
    if "://" not in dsn:
        return re.sub(r"\s*\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", "", dsn).strip()
    try:
        parts = urlsplit(dsn)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(a DSN that does not parse)"
    user = f"{parts.username}@" if parts.username else ""
    query = re.sub(r"(^|&)password=[^&]*", "", parts.query).lstrip("&")
    return urlunsplit((parts.scheme, f"{user}{host}", parts.path, query, ""))


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where an MQTT broker listens: ``mqtt://[user[:password]@]host[:port]`` (or ``mqtts``)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse a broker URL.

    Raises:
        ConfigError: the URL does not parse (an unclosed ``[``), the scheme is not
            ``mqtt``/``mqtts``, or the host or port is missing or bad.
    """
    try:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    except ValueError as exc:  # an unclosed [ of an IPv6 host, a bad character after ://
        raise ConfigError(
            f"broker URL {url!r} is malformed ({exc}); expected mqtt://HOST[:PORT], "
            "e.g. mqtt://127.0.0.1:1883 or mqtt://[::1]:1883"
        ) from None
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"broker URL {url!r}: port must be a number 1-65535") from None
    if not parts.hostname:
        raise ConfigError(f"broker URL {url!r}: no host")
    tls = parts.scheme in ("mqtts", "ssl")
    return BrokerUrl(
        host=parts.hostname,
        port=port or (8883 if tls else DEFAULT_MQTT_PORT),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def parse_aware_time(
    text: str, flag: str, expected: str = "an ISO time, e.g. 2026-11-27T08:00+00:00"
) -> datetime:
    """An ISO 8601 time with its UTC offset, as given for ``flag``.

    Raises:
        ConfigError: not an ISO time, or no offset (a shift report or an eval window must not
            depend on the machine's time zone).
    """
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected {expected}") from None
    if value.tzinfo is None:
        raise ConfigError(f"{flag} {text!r}: add a UTC offset, e.g. {text}+00:00")
    return value
