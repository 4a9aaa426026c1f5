"""A private PostgreSQL + TimescaleDB cluster on a loopback port.

PostgreSQL refuses to run as root, so when SQAL runs as root the cluster runs as the
``postgres`` system user (created by Debian's package). That user must be able to reach the
data directory; when an ancestor folder is closed to it (``/root``, pytest's temp folders), the
cluster lives under ``/var/lib/sqal/clusters/`` instead and ``DATA_DIR/pg`` links to it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from embedded.ports import LOOPBACK, port_is_free, wait_for_port
from embedded.process import ServiceProcess
from sqal.errors import ServiceError

DATABASE = "sqal"
SUPERUSER = "sqal"
FALLBACK_ROOT = Path("/var/lib/sqal/clusters")


def pg_bindir() -> Path:
    """The newest installed PostgreSQL whose share dir holds the TimescaleDB extension.

    Raises:
        ServiceError: no PostgreSQL, or none with TimescaleDB.
    """
    versions = sorted(
        (int(p.name) for p in Path("/usr/lib/postgresql").glob("*") if p.name.isdigit()),
        reverse=True,
    )
    if not versions:
        raise ServiceError("PostgreSQL is not installed; run scripts/setup.sh (or make test)")
    for v in versions:
        if Path(f"/usr/share/postgresql/{v}/extension/timescaledb.control").exists():
            return Path(f"/usr/lib/postgresql/{v}/bin")
    raise ServiceError(
        f"TimescaleDB is not installed for PostgreSQL {versions[0]}; run scripts/setup.sh"
    )


def postgres_versions() -> tuple[str, str]:
    """(PostgreSQL version, TimescaleDB version available to it)."""
    bindir = pg_bindir()
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout
    pg = out.split()[2] if len(out.split()) > 2 else "unknown"
    control = Path(f"/usr/share/postgresql/{bindir.parent.name}/extension/timescaledb.control")
    m = re.search(r"default_version\s*=\s*'([^']+)'", control.read_text())
    return pg, m.group(1) if m else "unknown"


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError("running as root needs the 'postgres' system user") from None


def _reachable(path: Path, user: pwd.struct_passwd) -> bool:
    """True if ``user`` may traverse every ancestor of ``path`` (mode bits only)."""
    for folder in path.parents:
        st = folder.stat()
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == user.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _cluster_dir(data_dir: Path, user: pwd.struct_passwd | None) -> Path:
    """Where the cluster's files go; ``data_dir/pg`` (or a link to the fallback place)."""
    link = data_dir / "pg"
    if link.is_symlink() or user is None or _reachable(link, user):
        return link.resolve()
    digest = hashlib.sha1(str(link).encode()).hexdigest()[:12]
    target = FALLBACK_ROOT / digest
    target.mkdir(parents=True, exist_ok=True)
    for folder in (FALLBACK_ROOT.parent, FALLBACK_ROOT):
        folder.chmod(0o755)
    link.symlink_to(target)
    return target


def _run(cmd: list[str], user: pwd.struct_passwd | None, what: str) -> None:
    kwargs: dict[str, object] = {}
    if user is not None:
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise ServiceError(f"{what} failed: {last[-1] if last else done.returncode}")


SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": f"'{LOOPBACK}'",
    # No Unix socket: clients use TCP on loopback, and socket paths have a 107-byte limit.
    "unix_socket_directories": "''",
    "shared_preload_libraries": "'timescaledb'",
    "timescaledb.telemetry_level": "off",
    "max_connections": "100",
    "shared_buffers": "256MB",
    "logging_collector": "off",
}


@dataclass
class Postgres:
    """A running cluster with the ``sqal`` database and the TimescaleDB extension."""

    host: str
    port: int
    cluster_dir: Path
    process: ServiceProcess

    def dsn(self, database: str = DATABASE, user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.dsn()

    def stop(self) -> None:
        self.process.stop()


def init_cluster(cluster: Path, user: pwd.struct_passwd | None, bindir: Path) -> None:
    """``initdb`` a cluster with a trust-authenticated superuser ``sqal`` (loopback only)."""
    cluster.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(cluster, user.pw_uid, user.pw_gid)
    cluster.chmod(0o700)
    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(cluster),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ],
        user,
        "initdb",
    )


def start_postgres(
    data_dir: Path,
    port: int,
    host: str = LOOPBACK,
    extra_settings: dict[str, str] | None = None,
) -> Postgres:
    """Start (initialising on first use) a cluster under ``data_dir/pg``.

    Args:
        extra_settings: more ``postgresql.conf`` settings given as ``-c`` flags (tests turn
            ``fsync`` off).

    Raises:
        ServiceError: not installed, the port is taken, or the server did not come up.
    """
    bindir = pg_bindir()
    if not port_is_free(port, host):
        raise ServiceError(f"port {host}:{port} is taken; choose another with --pg-port")
    user = _server_user()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster = _cluster_dir(data_dir, user)
    if not (cluster / "PG_VERSION").exists():
        init_cluster(cluster, user, bindir)
    settings = {**SERVER_SETTINGS, "listen_addresses": f"'{host}'", **(extra_settings or {})}
    args = [str(bindir / "postgres"), "-D", str(cluster), "-p", str(port)]
    for key, value in settings.items():
        args += ["-c", f"{key}={value.strip(chr(39))}"]
    log_path = data_dir / "postgres.log"
    log = log_path.open("ab")
    kwargs: dict[str, object] = {}
    if user is not None:
        os.chown(log_path, user.pw_uid, user.pw_gid)
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    popen = subprocess.Popen(  # type: ignore[call-overload]
        args,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **kwargs,
    )
    log.close()
    proc = ServiceProcess("postgres", popen.pid, signal.SIGINT, popen)
    if not wait_for_port(port, host, timeout_s=30, alive=proc.alive):
        proc.stop()
        raise ServiceError(f"postgres did not start on {host}:{port}: {_last_error(log_path)}")
    pg = Postgres(host, port, cluster, proc)
    try:
        _prepare_database(pg)
    except ServiceError:
        proc.stop()
        raise
    return pg


def _prepare_database(pg: Postgres, timeout_s: float = 30.0) -> None:
    """Create the ``sqal`` database and the TimescaleDB extension if missing."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(pg.dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                ).fetchone()
                if not exists:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
            with psycopg.connect(pg.dsn(), autocommit=True, connect_timeout=5) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            return
        except psycopg.OperationalError as exc:
            # The port opens a moment before the server accepts logins ("starting up").
            if time.monotonic() > deadline:
                raise ServiceError(f"cannot prepare database {DATABASE!r}: {exc}") from None
            time.sleep(0.1)


def _last_error(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "FATAL" in ln or "ERROR" in ln]
    return (errors or lines or ["no log"])[-1]
