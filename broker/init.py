"""``sqal mosquitto init``: a broker's whole credential folder in one idempotent step.

Made for the compose stack's ``broker-init`` container (compose.yaml), usable on a plant host
too. Writes, under one folder:

- ``passwd``: every service user whose password is in the environment, as
  ``MQTT_PASSWORD_<SERVICE>`` (``MQTT_PASSWORD_ANALYZER``...): passwords reach the container as
  environment, never as arguments. A service without one keeps what the file had (or no login);
  with none at all and no ``passwd`` yet the command fails, since the broker needs the file.
- ``acl``: the device patterns and every service's block (``mosquitto/acl``'s text for a new
  file; users it does not manage are kept).
- ``certs/``: the CA (kept when present, so devices keep trusting it) and a server certificate
  for ``--host`` names, renewed on every run.

``--owner UID:GID`` hands the folder to the broker's user (Mosquitto reads these files after
dropping root; the ``eclipse-mosquitto`` image's user is 1883:1883).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from broker.admin import JsonOption, Service, check_password, set_passwords, update_acl
from broker.certs import CA_DAYS, check_names, make_certs
from sqal.errors import ConfigError

PASSWORD_ENV_PREFIX = "MQTT_PASSWORD_"


def password_env(service: Service) -> str:
    """The environment variable holding ``service``'s password: ``MQTT_PASSWORD_ANALYZER``."""
    return PASSWORD_ENV_PREFIX + service.value.upper()


@dataclass(frozen=True, slots=True)
class InitReport:
    folder: Path
    passwords_set: tuple[str, ...]
    passwords_absent: tuple[str, ...]
    hosts: tuple[str, ...]
    new_ca: bool


def parse_owner(text: str) -> tuple[int, int]:
    """``UID:GID`` as numbers (names are not resolved: the broker's user lives in its image)."""
    uid, sep, gid = text.partition(":")
    if not (sep and uid.isdigit() and gid.isdigit()):
        raise ConfigError(f"--owner must be UID:GID in numbers, such as 1883:1883, not {text!r}")
    return int(uid), int(gid)


def init_broker_folder(
    folder: Path,
    hosts: list[str],
    env: Mapping[str, str],
    days: int,
    owner: tuple[int, int] | None = None,
    now: datetime | None = None,
) -> InitReport:
    """Write ``passwd``, ``acl`` and ``certs/`` under ``folder`` (see the module docstring).

    Every password is checked before any file is touched, so a bad one changes nothing.

    Raises:
        ConfigError: a password is too short or not URL-safe, or none is given while the folder
            has no ``passwd`` yet (the broker could not start: ``password_file`` must exist).
    """
    passwords = {s: env.get(password_env(s), "") for s in Service}
    for service, password in passwords.items():
        if password:
            check_password(password, password_env(service))
    if not any(passwords.values()) and not (folder / "passwd").is_file():
        names = ", ".join(password_env(s) for s in Service)
        raise ConfigError(
            f"no service password in the environment, so {folder}/passwd would not be written "
            f"and the broker could not start; set {names} (compose.yaml takes them from .env)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    given = {s.value: p for s, p in passwords.items() if p}
    if given:
        set_passwords(folder / "passwd", given)
    update_acl(folder / "acl", *Service)
    certs = make_certs(folder / "certs", hosts, days, [], now or datetime.now(UTC))
    if owner is not None:
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, *owner)
    return InitReport(
        folder,
        tuple(s.value for s, p in passwords.items() if p),
        tuple(s.value for s, p in passwords.items() if not p),
        tuple(hosts),
        certs.new_ca,
    )


def mosquitto_init_command(
    folder: Annotated[
        Path, typer.Argument(help="Folder for passwd, acl and certs/ (created if missing).")
    ],
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Broker DNS name or IP clients dial (TLS); repeatable."),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option("--owner", help="UID:GID to own the files (the broker's user)."),
    ] = None,
    days: Annotated[int, typer.Option("--days", help="Validity of the server certificate.")] = 730,
    as_json: JsonOption = False,
) -> None:
    """Write a broker's password file, ACL and TLS certificates; passwords from MQTT_PASSWORD_*."""
    if not 1 <= days <= CA_DAYS:
        raise ConfigError(f"--days must be 1-{CA_DAYS}")
    hosts = host or ["localhost", "127.0.0.1"]
    check_names(hosts, [])
    try:
        report = init_broker_folder(
            folder, hosts, os.environ, days, parse_owner(owner) if owner is not None else None
        )
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot write ({exc.strerror or exc})") from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "folder": str(report.folder),
                    "passwords_set": list(report.passwords_set),
                    "passwords_absent": list(report.passwords_absent),
                    "hosts": list(report.hosts),
                    "new_ca": report.new_ca,
                }
            )
        )
        return
    typer.echo(f"{report.folder}: passwd, acl and certs/ written")
    typer.echo(f"passwords set: {', '.join(report.passwords_set) or 'none'}")
    for name in report.passwords_absent:
        typer.echo(f"no {password_env(Service(name))}: {name} keeps its old password or none")
    typer.echo(
        f"{'new CA' if report.new_ca else 'kept CA'}; server certificate for {', '.join(hosts)}"
    )
