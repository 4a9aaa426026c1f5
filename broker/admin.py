"""``sqal mosquitto add-device|add-service``: credentials and ACL of the plant broker.

Who may do what (docs/security.md); verified against Mosquitto 2.0.11 by
``tests/test_security_broker.py``:

- A device's MQTT user name is ``LINE/DEVICE``. Mosquitto's ``pattern`` lines substitute the
  whole user name for ``%u``, slash included, so ``pattern write sqal/v1/%u/tof`` grants
  exactly ``sqal/v1/LINE/DEVICE/tof``: one set of lines serves every device, and no device can
  name another's topic. (Mosquitto refuses pattern matches for names holding ``+`` or ``#``;
  ids never do.) Patterns also apply to service users, yielding three-level topics such as
  ``sqal/v1/ingest/tof`` that no SQAL filter (``sqal/v1/+/+/tof``) matches.
- A denied PUBLISH is acknowledged (MQTT 5: reason 0x87) and dropped; a denied subscription is
  granted but nothing is delivered on it (Mosquitto checks ``read`` per message). A last will on
  a topic its client may not write is not published.
- Passwords are stored as Mosquitto 2.0's PBKDF2-SHA512 hash (``$7$`` lines, what
  ``mosquitto_passwd`` writes), computed here so no ``mosquitto_passwd`` binary is needed where
  the file is made (the compose stack's init container). ``kill -HUP`` makes the broker re-read
  the password and ACL files and disconnect clients whose credentials no longer match.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

import typer

from sqal.devices import Target
from sqal.errors import ConfigError
from sqal.wire.enums import Kind
from sqal.wire.topics import (
    DEAD_LETTERS,
    EVERYTHING,
    LOTS,
    ROOT,
    dead_letter_topic,
    device_acl_pattern,
    subscription,
)

DEFAULT_PASSWORD_FILE = Path("/etc/mosquitto/sqal/passwd")
DEFAULT_ACL_FILE = Path("/etc/mosquitto/sqal/acl")
MIN_PASSWORD_CHARS = 12
GENERATED_PASSWORD_BYTES = 24
"""192 random bits, 32 URL-safe characters: typed once into a device's provisioning."""
PBKDF2_ITERATIONS = 1000
"""Mosquitto checks a password once per CONNECT; ``mosquitto_passwd`` 2.0 uses 101. At 1,000 a
check costs ~1.3 ms of CPU (hashlib, a 2-core box): a fleet reconnecting at once stays cheap."""
PBKDF2_SALT_BYTES = 12
PBKDF2_HASH_ID = 7
"""Mosquitto's id for PBKDF2-SHA512 (``$7$``); 6 is a single SHA512, which it still reads."""

SQAL_COMMENT = "# sqal:"
"""Comments this module writes start so; they are regenerated, never accumulated."""

Access = Literal["read", "write", "readwrite"]


class Service(StrEnum):
    """Service users, one per SQAL process kind."""

    ANALYZER = "analyzer"
    INGEST = "ingest"
    RECORD = "record"
    CONFIG = "config"
    CALIBRATE = "calibrate"
    SIMULATOR = "simulator"
    MONITOR = "monitor"
    OPERATOR = "operator"
    STATION = "station"
    REDRIVE = "redrive"


@dataclass(frozen=True, slots=True)
class AclRule:
    """One ACL line: ``topic|pattern ACCESS FILTER``."""

    access: Access
    topic: str

    def line(self, keyword: Literal["topic", "pattern"]) -> str:
        return f"{keyword} {self.access} {self.topic}"


def _own(kind: Kind) -> str:
    # %u is the device's whole user name, LINE/DEVICE: this is sqal/v1/LINE/DEVICE/kind.
    return device_acl_pattern(kind)


DEVICE_RULES: tuple[AclRule, ...] = (
    AclRule("write", _own(Kind.TOF)),
    AclRule("write", _own(Kind.SPECTRAL)),
    # A node relaying its line's checkweigher (or a checkweigher with a device login).
    AclRule("write", _own(Kind.WEIGHT)),
    AclRule("write", _own(Kind.STATUS)),  # retained, and the last will's topic
    AclRule("read", _own(Kind.CONFIG)),
)
"""Every device: its own frames, weights and status out, its own config in; never result or
config out."""

SERVICE_RULES: dict[Service, tuple[AclRule, ...]] = {
    Service.ANALYZER: (
        AclRule("read", subscription(Kind.TOF)),
        AclRule("read", subscription(Kind.SPECTRAL)),
        AclRule("read", subscription(Kind.WEIGHT)),  # a line's checkweigher: fill decisions
        AclRule("read", subscription(Kind.CONFIG)),
        AclRule("read", LOTS),  # each line's open lot, stamped on its results
        AclRule("write", subscription(Kind.RESULT)),
        AclRule("write", dead_letter_topic("analyzer")),
    ),
    Service.INGEST: (
        AclRule("read", subscription(Kind.TOF)),
        AclRule("read", subscription(Kind.SPECTRAL)),
        AclRule("read", subscription(Kind.WEIGHT)),
        AclRule("read", subscription(Kind.RESULT)),
        AclRule("read", subscription(Kind.STATUS)),
        AclRule("read", subscription(Kind.CONFIG)),
        AclRule("read", LOTS),
        AclRule("read", subscription(Kind.RECHECK)),
        AclRule("read", DEAD_LETTERS),
        AclRule("write", dead_letter_topic("ingest")),
        AclRule("read", "$SYS/broker/#"),  # dropped-message counters (tests/chaos)
    ),
    # Everything SQAL, nothing else a shared broker may carry.
    Service.RECORD: (AclRule("read", EVERYTHING),),
    # `sqal config set` reads the retained config (to keep a calibration) before publishing.
    Service.CONFIG: (AclRule("readwrite", subscription(Kind.CONFIG)),),
    # `sqal calibrate`: the device's held config in, its ToF and spectral frames of the fixture
    # in, the config with the new calibration out (--weights/--reference: config only).
    Service.CALIBRATE: (
        AclRule("readwrite", subscription(Kind.CONFIG)),
        AclRule("read", subscription(Kind.TOF)),
        AclRule("read", subscription(Kind.SPECTRAL)),
    ),
    # `sqal sim`: a whole simulated fleet through one user, each device as a real one behaves
    # (its frames, status and last will out; its retained config, which it also seeds, in).
    Service.SIMULATOR: (
        AclRule("write", subscription(Kind.TOF)),
        AclRule("write", subscription(Kind.SPECTRAL)),
        AclRule("write", subscription(Kind.WEIGHT)),  # sqal sim --checkweigher
        AclRule("write", subscription(Kind.STATUS)),
        AclRule("readwrite", subscription(Kind.CONFIG)),
    ),
    # Health checks and exporters: the broker's own counters, no SQAL traffic.
    Service.MONITOR: (AclRule("read", "$SYS/broker/#"),),
    # `sqal lot start|end|show`: the lines' lots in and out; the devices' configs in (the
    # product of a lot defaults to the profile the line's devices run).
    Service.OPERATOR: (
        AclRule("readwrite", LOTS),
        AclRule("read", subscription(Kind.CONFIG)),
    ),
    # `sqal station`: results, device status and dead letters in (the live line view); the
    # operators' re-check answers out (ingest stores them).
    Service.STATION: (
        AclRule("read", subscription(Kind.RESULT)),
        AclRule("read", subscription(Kind.STATUS)),
        AclRule("read", DEAD_LETTERS),
        AclRule("write", subscription(Kind.RECHECK)),
    ),
    # `sqal dead redrive`: a dead letter back on its original topic, whatever its kind (never
    # retained, so publishing no state over what devices and operators hold); reads nothing.
    Service.REDRIVE: (
        *(AclRule("write", subscription(k)) for k in Kind),
        AclRule("write", LOTS),
    ),
}


@dataclass
class AclFile:
    """A Mosquitto ACL file as blocks.

    Attributes:
        anonymous: lines before the first ``user`` line that are not patterns (they apply to
            anonymous clients, which production refuses anyway).
        patterns: every ``pattern`` line; Mosquitto applies them to all users wherever they are.
        users: ``user`` name → its lines (``topic`` rules and the operator's comments), in order.
    """

    anonymous: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    users: dict[str, list[str]] = field(default_factory=dict)


def parse_acl(text: str) -> AclFile:
    """Split an ACL file into blocks, dropping the comments :func:`render_acl` writes.

    An operator's comment stays with the line after it (a comment above ``user x`` is x's).
    """
    acl = AclFile()
    current: list[str] = acl.anonymous
    comments: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(SQAL_COMMENT):
            continue
        if line.startswith("#"):
            comments.append(line)
        elif line.startswith("user "):
            current = acl.users.setdefault(line[len("user ") :].strip(), [])
            current += comments
        elif line.startswith("pattern "):
            current += comments
            acl.patterns.append(" ".join(line.split()))
        else:
            current += [*comments, line]
        if not line.startswith("#"):
            comments = []
    current += comments
    return acl


def render_acl(acl: AclFile) -> str:
    """The ACL file's text; ``parse_acl(render_acl(a)) == a``."""
    out = [
        f"{SQAL_COMMENT} Mosquitto ACL (docs/security.md); kept by `sqal mosquitto",
        f"{SQAL_COMMENT} add-device|add-service`. Reload the broker after an edit: kill -HUP PID.",
        *acl.anonymous,
        "",
        f"{SQAL_COMMENT} Devices: user name LINE/DEVICE; %u is substituted whole, so each line",
        f"{SQAL_COMMENT} below grants {ROOT}/LINE/DEVICE/<kind> of the connected device only.",
        *acl.patterns,
    ]
    for user, lines in acl.users.items():
        out += ["", f"user {user}", *lines]
    return "\n".join(out) + "\n"


def with_device_rules(acl: AclFile) -> tuple[AclFile, list[str]]:
    """The ACL with exactly :data:`DEVICE_RULES` as patterns; also the pattern lines removed.

    A pattern applies to every user, so any other one would widen what devices may do.
    """
    wanted = [r.line("pattern") for r in DEVICE_RULES]
    removed = [p for p in acl.patterns if p not in wanted]
    return AclFile(list(acl.anonymous), wanted, dict(acl.users)), removed


def with_service(acl: AclFile, service: Service) -> AclFile:
    """The ACL with ``service``'s block replaced by its rules (other users kept as they are)."""
    users = dict(acl.users)
    users[service.value] = [r.line("topic") for r in SERVICE_RULES[service]]
    return AclFile(list(acl.anonymous), list(acl.patterns), users)


def full_acl() -> str:
    """The ACL every device and service needs: ``mosquitto/acl`` is this text."""
    acl, _ = with_device_rules(AclFile())
    for service in Service:
        acl = with_service(acl, service)
    return render_acl(acl)


def write_atomic(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` with ``text`` in one step (a reader, such as the broker on SIGHUP, sees
    the old file or the new one), with ``mode``, keeping an existing file's owner and group
    where we may (root): the broker reads its files as its own user after dropping root."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, mode)
            with contextlib.suppress(FileNotFoundError, PermissionError):
                old = path.stat()
                os.fchown(fd, old.st_uid, old.st_gid)
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def update_acl(acl_file: Path, *services: Service) -> list[str]:
    """Ensure the device patterns (and ``services``' blocks) in ``acl_file``; create it if absent.

    Returns:
        Pattern lines removed because they were not SQAL's.
    """
    try:
        text = acl_file.read_text()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise ConfigError(f"ACL file {acl_file}: cannot read ({exc.strerror})") from None
    acl, removed = with_device_rules(parse_acl(text))
    for service in services:
        acl = with_service(acl, service)
    try:
        write_atomic(acl_file, render_acl(acl), 0o644)  # no secret in an ACL
    except OSError as exc:
        raise ConfigError(f"ACL file {acl_file}: cannot write ({exc.strerror})") from None
    return removed


def check_password(password: str, source: str = "--password") -> None:
    """Raises ConfigError naming ``source`` when ``password`` cannot be a broker password."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigError(f"{source} must have at least {MIN_PASSWORD_CHARS} characters")
    if any(c in password for c in "\r\n\0"):
        raise ConfigError(f"{source} must not contain a line break or NUL")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """Mosquitto 2.0's password hash: ``$7$ITERATIONS$SALT$PBKDF2-SHA512``, base64 parts."""
    salt = secrets.token_bytes(PBKDF2_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    b64 = base64.b64encode
    return f"${PBKDF2_HASH_ID}${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(hashed: str, password: str) -> bool:
    """Whether ``password`` is the one behind a ``$7$`` hash (ours or ``mosquitto_passwd``'s)."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        want = base64.b64decode(digest, validate=True)
        got = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt, validate=True),
            int(iterations), len(want),
        )  # fmt: skip
    except ValueError:
        return False
    return kind == str(PBKDF2_HASH_ID) and secrets.compare_digest(got, want)


def set_password(password_file: Path, username: str, password: str) -> None:
    """Add or replace ``username``'s line in ``password_file`` (see :func:`set_passwords`)."""
    set_passwords(password_file, {username: password})


def set_passwords(password_file: Path, passwords: dict[str, str]) -> None:
    """Add or replace each user's line in ``password_file``; other lines stay as they are.

    The file is replaced atomically with mode 0600, so the broker, re-reading it on SIGHUP,
    never sees half of it.

    Raises:
        ConfigError: a user name cannot be in the file, or the file cannot be read or written.
    """
    for username in passwords:
        if ":" in username or any(c.isspace() for c in username):
            raise ConfigError(f"user name {username!r} must not hold ':' or white space")
    try:
        lines = password_file.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    except OSError as exc:
        raise ConfigError(f"password file {password_file}: cannot read ({exc.strerror})") from None
    kept = [line for line in lines if line.split(":", 1)[0] not in passwords]
    new = [f"{user}:{hash_password(password)}" for user, password in passwords.items()]
    text = "\n".join([*kept, *new]) + "\n"
    try:
        write_atomic(password_file, text, 0o600)
    except OSError as exc:
        raise ConfigError(f"password file {password_file}: cannot write ({exc.strerror})") from None


def _credentials(username: str, password_file: Path, password: str | None) -> tuple[str, bool]:
    if password is None:
        password, generated = secrets.token_urlsafe(GENERATED_PASSWORD_BYTES), True
    else:
        check_password(password)
        generated = False
    set_password(password_file, username, password)
    return password, generated


def _report(
    username: str,
    password: str,
    generated: bool,
    password_file: Path,
    acl_file: Path,
    removed: list[str],
    as_json: bool,
) -> None:
    doc = {
        "username": username,
        "url_username": quote(username, safe=""),
        "password": password if generated else None,
        "password_file": str(password_file),
        "acl_file": str(acl_file),
        "removed_patterns": removed,
    }
    if as_json:
        typer.echo(json.dumps(doc))
        return
    typer.echo(f"{username}: password set in {password_file}; ACL {acl_file} updated")
    typer.echo(f"in a broker URL: mqtts://{doc['url_username']}:PASSWORD@HOST:8883")
    for line in removed:
        typer.echo(f"removed foreign pattern (it applied to every device): {line}", err=True)
    if generated:
        typer.echo(f"password (shown once, store it now): {password}")
    typer.echo("apply: kill -HUP $(pidof mosquitto)")


PasswordFileOption = Annotated[
    Path,
    typer.Option("--password-file", help="Mosquitto password file (written 0600)."),
]
AclFileOption = Annotated[
    Path, typer.Option("--acl-file", help="Mosquitto ACL file (created if missing).")
]
PasswordOption = Annotated[
    str | None,
    typer.Option(
        "--password",
        help=f"Password to set (>= {MIN_PASSWORD_CHARS} chars); default: generate and print once.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def mosquitto_add_device_command(
    target: Annotated[str, typer.Argument(help="LINE/DEVICE; also the device's MQTT user name.")],
    password_file: PasswordFileOption = DEFAULT_PASSWORD_FILE,
    acl_file: AclFileOption = DEFAULT_ACL_FILE,
    password: PasswordOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give a device its broker credential and an ACL limited to its own topics."""
    dev = Target.parse(target)
    username = f"{dev.line}/{dev.device}"
    secret, generated = _credentials(username, password_file, password)
    removed = update_acl(acl_file)
    _report(username, secret, generated, password_file, acl_file, removed, as_json)


def mosquitto_add_service_command(
    service: Annotated[
        Service,
        typer.Argument(
            help="Service user: analyzer|ingest|record|config|calibrate|simulator|monitor|operator."
        ),
    ],
    password_file: PasswordFileOption = DEFAULT_PASSWORD_FILE,
    acl_file: AclFileOption = DEFAULT_ACL_FILE,
    password: PasswordOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give a SQAL service its broker credential and its ACL block."""
    secret, generated = _credentials(service.value, password_file, password)
    removed = update_acl(acl_file, service)
    _report(service.value, secret, generated, password_file, acl_file, removed, as_json)
