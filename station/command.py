"""``sqal station`` (serve the web app), ``sqal station user add`` and ``sqal station token add``.

The typer-annotated functions the CLI registers (app/cli.py).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from sqal.errors import ConfigError, ServiceError
from sqal.settings import load_settings, parse_broker_url
from station.auth import Role, check_name, check_password, hash_password, new_token
from station.words import Language

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
SECRET_FILE = "station.secret"

Db = Annotated[
    str | None, typer.Option("--db", metavar="DSN", help="PostgreSQL DSN [env SQAL_DB].")
]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secret_key(data_dir: Path, given: str | None) -> str:
    """The session-signing key: ``SQAL_STATION_SECRET``, else ``data_dir/station.secret``
    (256 random bits, made on first use, mode 0600).

    Raises:
        ConfigError: the key file cannot be read or written.
    """
    if given:
        if len(given) < 32:
            raise ConfigError("SQAL_STATION_SECRET: use at least 32 characters")
        return given
    path = data_dir / SECRET_FILE
    try:
        if path.is_file():
            return path.read_text().strip()
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        return key
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot keep the station's key ({exc.strerror or exc})"
        ) from None


def station_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free).")
    ] = DEFAULT_PORT,
    broker: Annotated[
        str | None, typer.Option("--broker", metavar="URL", help="Broker URL [env SQAL_BROKER].")
    ] = None,
    db: Db = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where the session key is kept [env SQAL_DATA_DIR]."),
    ] = None,
    secure_cookies: Annotated[
        bool | None,
        typer.Option(
            "--secure-cookies/--insecure-cookies",
            help="Mark session cookies Secure (HTTPS only). Default: secure unless --host is a "
            "loopback address (plain HTTP on this machine); behind a TLS proxy keep secure.",
            show_default=False,
        ),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(
            "--client-id",
            help="MQTT client id; a restart within minutes finds its session by it "
            "[sqal-station-HOST]; give each station process its own.",
        ),
    ] = None,
    stale_after: Annotated[
        float,
        typer.Option(
            "--stale-after", min=1.0, help="Seconds without a result before a line view says stale."
        ),
    ] = 10.0,
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz",
            metavar="ZONE",
            help="The plant's time zone for the times pages show and reports print (IANA name, "
            "e.g. Europe/Paris) [default: this machine's].",
        ),
    ] = None,
) -> None:
    """The station: a web app at the line (live line views, the HOLD queue, a read API).

    Reads MQTT for live results, device status and dead letters, and the database for history;
    users sign in (sqal station user add) and the read API takes a token (sqal station token
    add). /healthz and /metrics are on the same port.
    """
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from station.app import create_app
    from station.base import StationConfig, stop_streams
    from views.command import plant_zone

    if tz is not None:
        plant_zone(tz)  # an unknown zone is one Error: line before anything starts

    settings = load_settings(broker=broker, db=db, data_dir=data_dir)
    parse_broker_url(settings.broker)
    secret = settings.station_secret.get_secret_value() if settings.station_secret else None
    cfg = StationConfig(
        broker=settings.broker,
        dsn=settings.db.get_secret_value(),
        secret_key=secret_key(settings.data_dir, secret),
        host=host,
        port=port,
        secure_cookies=secure_cookies if secure_cookies is not None else not _is_loopback(host),
        client_id=client_id or f"sqal-station-{socket.gethostname()[:20]}",
        stale_after_s=stale_after,
        tz=tz,
    )
    sock = listen(host, port)
    cfg = replace(cfg, port=int(sock.getsockname()[1]))
    app = create_app(cfg)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            stop_streams(app)  # open event streams never end by themselves
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="warning", access_log=False, log_config=None,
                            timeout_graceful_shutdown=5)  # fmt: skip
    log.info("station listening on %s (broker %s)", cfg.url, parse_broker_url(cfg.broker))
    Server(config).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so a taken port is one line, not uvicorn's exit.

    Raises:
        ServiceError: the port is taken or not ours, or the host is no address of this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServiceError(
            f"station: cannot listen on {host}:{port} ({exc.strerror or exc}); choose --port "
            "or --host"
        ) from None
    return sock


def user_add_command(
    name: Annotated[str, typer.Argument(help="User name: 1-64 of A-Z a-z 0-9 _ . @ -.")],
    role: Annotated[
        Role, typer.Option("--role", help="viewer, operator (acknowledge, re-check) or quality.")
    ],
    lang: Annotated[
        Language | None,
        typer.Option(
            "--lang",
            help="The pages' language, en or fr (the user can switch on the page) [en for a new "
            "user; kept for an existing one].",
            show_default=False,
        ),
    ] = None,
    db: Db = None,
) -> None:
    """Add a station user, or give an existing one a new role and password.

    The password comes from SQAL_STATION_PASSWORD, else it is asked for twice.
    """
    from storage import station as storage

    check_name(name)
    settings = load_settings(db=db)
    if settings.station_password is not None:
        password = settings.station_password.get_secret_value()
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    hashed = hash_password(check_password(password))
    with storage.session(settings.db.get_secret_value(), "cannot store the user") as conn:
        added = storage.put_user(conn, name, role.value, hashed, lang.value if lang else None)
        user = storage.get_user(conn, name)
    language = user.language if user else "en"
    typer.echo(f"{'added' if added else 'updated'} {name} ({role.value}, {language})")


def token_add_command(
    name: Annotated[str, typer.Argument(help="Who the token is for, e.g. erp or lims.")],
    db: Db = None,
) -> None:
    """Make a read-API token and print it once (the database keeps its hash only).

    Give it as `Authorization: Bearer TOKEN`. Adding a token under a name already used replaces
    (revokes) the old one.
    """
    from storage import station as storage

    check_name(name, "token name")
    settings = load_settings(db=db)
    token, digest = new_token()
    with storage.session(settings.db.get_secret_value(), "cannot store the token") as conn:
        storage.put_token(conn, name, digest)
    typer.echo(token)
