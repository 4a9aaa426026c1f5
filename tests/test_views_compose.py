"""compose.yaml, the Dockerfile and Grafana provisioning hang together (no Docker engine here).

Parsed and cross-checked: files mounted or copied exist, every long-running service has a health
check, SQAL_* names are Settings fields, service commands parse with the real CLI options, and
the provisioned data source and dashboard folder match what the compose file provides.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from typer.testing import CliRunner

from analyzer.command import analyzer_command
from app.cli import app
from broker.admin import Service
from broker.init import mosquitto_init_command, password_env
from device_sim.command import sim_command
from embedded import free_port
from ingest.command import ingest_command
from sqal.errors import BrokerError
from sqal.mqtt import paho_client
from sqal.settings import Settings
from storage.command import db_migrate_command
from tests.broker_conf import ACCEPTED, NOT_AUTHORIZED, Peer, connect, running

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def one_shot(name: str) -> bool:
    """A job that runs to completion: restart "no" and others wait for it to complete, or a
    tool run on demand (``docker compose run``, the "tools" profile)."""
    if SERVICES[name].get("profiles") == ["tools"] and SERVICES[name].get("restart") == "no":
        return True
    waited = any(
        isinstance(s.get("depends_on"), dict)
        and s["depends_on"].get(name, {}).get("condition") == "service_completed_successfully"
        for s in SERVICES.values()
    )
    return SERVICES[name].get("restart") == "no" and waited


def test_the_stack_has_the_services_of_the_issue() -> None:
    assert {"mosquitto", "timescaledb", "grafana", "analyzer", "ingest", "simulator"} <= set(
        SERVICES
    )
    assert SERVICES["simulator"]["profiles"] == ["sim"]
    assert SERVICES["timescaledb"]["image"].startswith("timescale/timescaledb:")


def test_every_file_mounted_or_copied_exists() -> None:
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    builds = [s["build"] for s in SERVICES.values() if "build" in s]
    assert set(builds) == {"."}  # one image, built by each service that runs it
    assert (ROOT / "Dockerfile").is_file()


def test_every_long_running_service_has_a_health_check() -> None:
    for name, svc in SERVICES.items():
        if one_shot(name):
            continue
        check = svc.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert check.get("test"), f"{name}: healthcheck without a test"
        assert not check.get("disable"), f"{name}: healthcheck disabled"


def test_sqal_environment_names_are_settings_fields() -> None:
    fields = {f"SQAL_{name.upper()}" for name in Settings.model_fields}
    for name, svc in SERVICES.items():
        env = svc.get("environment", {})
        names = set(env) if isinstance(env, dict) else {e.split("=")[0] for e in env}
        unknown = {n for n in names if n.startswith("SQAL_")} - fields
        assert not unknown, f"{name}: {sorted(unknown)} are not Settings fields {sorted(fields)}"
    assert {"SQAL_BROKER", "SQAL_DB"} <= set(SERVICES["ingest"]["environment"])


@pytest.mark.parametrize("name", ["broker-init", "migrate", "analyzer", "ingest", "simulator"])
def test_service_commands_parse_with_the_cli_options(name: str) -> None:
    cli = typer.Typer()
    db = typer.Typer()
    db.command("migrate")(db_migrate_command)
    cli.add_typer(db, name="db")
    mosquitto = typer.Typer()
    mosquitto.command("init")(mosquitto_init_command)
    cli.add_typer(mosquitto, name="mosquitto")
    cli.command("analyzer")(analyzer_command)
    cli.command("ingest")(ingest_command)
    cli.command("sim")(sim_command)
    group = typer.main.get_command(cli)
    assert isinstance(group, typer.core.TyperGroup)
    args = list(SERVICES[name]["command"])
    ctx = group.make_context("sqal", args.copy(), resilient_parsing=False)
    cmd_name, cmd, rest = group.resolve_command(ctx, args)
    assert cmd is not None, f"{name}: unknown command {cmd_name}"
    sub = cmd.make_context(cmd_name or "", rest, parent=ctx)  # raises on an unknown option
    if isinstance(cmd, typer.core.TyperGroup):
        _, leaf, leaf_args = cmd.resolve_command(sub, rest)
        assert leaf is not None
        leaf.make_context(args[1], leaf_args, parent=sub)


def test_health_checks_probe_the_metrics_port_each_service_opens() -> None:
    for name in ("analyzer", "ingest"):
        command = SERVICES[name]["command"]
        port = command[command.index("--metrics-port") + 1]
        assert f"127.0.0.1:{port}/healthz" in " ".join(SERVICES[name]["healthcheck"]["test"])


def test_grafana_provisioning_matches_the_compose_service() -> None:
    grafana = SERVICES["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    datasource_yaml = (ROOT / "grafana/provisioning/datasources/sqal.yaml").read_text("utf-8")
    for var in re.findall(r"\$\{(\w+)\}", datasource_yaml):
        assert var in grafana["environment"], f"grafana env lacks {var}"
    provider = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/sqal.yaml").read_text("utf-8")
    )["providers"][0]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert sorted(p.name for p in (ROOT / "grafana/dashboards").glob("*.json")) == [
        "sqal-fleet.json",
        "sqal-line-overview.json",
        "sqal-quality.json",
    ]
    # Grafana reads through a login of the read-only group role
    roles = (ROOT / "grafana/compose/initdb-roles.sh").read_text("utf-8")
    user = grafana["environment"]["PG_READER_USER"]
    assert f"CREATE ROLE {user} LOGIN PASSWORD :'reader_pw' IN ROLE sqal_reader" in roles


def directives(path: Path) -> dict[str, list[str]]:
    """A Mosquitto config's directives, name → values in order (comments and blanks dropped)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text("utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition(" ")
            found.setdefault(name, []).append(value.strip())
    return found


def test_compose_broker_keeps_the_security_and_limits_of_production() -> None:
    ours = directives(ROOT / "mosquitto/compose.conf")
    theirs = directives(ROOT / "mosquitto/production.conf")
    where = {  # paths inside the container and where logs go differ; nothing else may
        "password_file", "acl_file", "cafile", "certfile", "keyfile", "listener",
        "persistence_location", "log_dest",
        # Production binds client ids to users on both listeners; compose on the device
        # listener only: its simulated fleet runs several connections as one user on 1883.
        "use_username_as_clientid",
    }  # fmt: skip
    assert {k: v for k, v in ours.items() if k not in where} == {
        k: v for k, v in theirs.items() if k not in where
    }
    assert ours["allow_anonymous"] == ["false"]
    assert ours["listener"] == ["8883", "1883"]
    assert theirs["use_username_as_clientid"] == ["true", "true"]
    lines = (ROOT / "mosquitto/compose.conf").read_text().splitlines()
    bound = lines.index("use_username_as_clientid true")
    assert lines.index("listener 8883") < bound < lines.index("listener 1883")
    mosquitto = SERVICES["mosquitto"]
    assert "./mosquitto/compose.conf:/mosquitto/config/mosquitto.conf:ro" in mosquitto["volumes"]
    folder = SERVICES["broker-init"]["command"][2]
    assert f"broker-config:{folder}" in mosquitto["volumes"]
    for name in ("password_file", "acl_file", "cafile", "certfile", "keyfile"):
        assert ours[name][0].startswith(folder + "/"), name
    assert mosquitto["depends_on"]["broker-init"]["condition"] == "service_completed_successfully"


DOT_ENV = {
    name: f"{name.lower().replace('_', '-')}-test-only"
    for name in re.findall(r"^#?\s*(\w+)=", (ROOT / ".env.example").read_text("utf-8"), re.M)
}
"""An .env made from .env.example, as the README says: every variable set."""


def with_defaults(text: str) -> str:
    """A compose string interpolated as compose does with :data:`DOT_ENV` as .env: a required
    ``${VAR:?message}`` takes its value, ``${VAR:-default}`` its default, ``$$`` is ``$``."""
    text = re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: DOT_ENV[m.group(1)], text)
    return re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", text).replace("$$", "$")


def test_every_sqal_service_logs_in_as_its_own_broker_user() -> None:
    init_env = SERVICES["broker-init"]["environment"]
    for name, user in (("analyzer", "analyzer"), ("ingest", "ingest"), ("simulator", "simulator")):
        url = urlsplit(with_defaults(SERVICES[name]["environment"]["SQAL_BROKER"]))
        assert url.username == user, name
        assert url.password == with_defaults(init_env[password_env(Service(user))]), name
        assert (url.hostname, url.port) == ("mosquitto", 1883)
    assert set(init_env) == {password_env(s) for s in Service}


def test_the_compose_broker_runs_with_what_broker_init_writes(
    tmp_path: Path, peers: list[Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """broker-init's command as compose runs it (folder and owner aside), then the broker on
    mosquitto/compose.conf: each service's URL logs in and may do its job and no more."""
    init = SERVICES["broker-init"]
    args = [with_defaults(a) for a in init["command"]]
    folder = tmp_path / "sqal"
    args[2] = str(folder)
    args[args.index("--owner") + 1] = f"{os.getuid()}:{os.getgid()}"
    env = {k: with_defaults(v) for k, v in init["environment"].items()}
    done = CliRunner().invoke(app, args, env=env)
    assert done.exit_code == 0, done.output
    assert "passwords set: " + ", ".join(s.value for s in Service) in done.output
    assert (folder / "passwd").stat().st_mode & 0o777 == 0o600
    port, tls_port = free_port(), free_port()

    def url(service: str, tls: bool = False) -> str:
        parts = urlsplit(with_defaults(SERVICES[service]["environment"]["SQAL_BROKER"]))
        where = f"localhost:{tls_port}" if tls else f"127.0.0.1:{port}"
        return f"{'mqtts' if tls else 'mqtt'}://{parts.username}:{parts.password}@{where}"

    with running(ROOT / "mosquitto/compose.conf", folder, port, tls_port):
        with pytest.raises(BrokerError) as refused:
            paho_client(f"mqtt://127.0.0.1:{port}", "anonymous", persistent=False)
        assert refused.value.reason_code == NOT_AUTHORIZED
        ingest = connect(peers, url("ingest"), "sqal/v1/+/+/tof", "sqal/v1/+/+/result")
        sim = connect(peers, url("simulator"))
        analyzer = connect(peers, url("analyzer"))
        assert sim.publish("sqal/v1/L1/dev-01/tof", b"frame") in ACCEPTED
        assert sim.publish("sqal/v1/L1/dev-01/result", b"forged") == NOT_AUTHORIZED
        assert analyzer.publish("sqal/v1/L1/dev-01/result", b"scored") in ACCEPTED
        ingest.wait_for("sqal/v1/L1/dev-01/tof", b"frame")
        ingest.wait_for("sqal/v1/L1/dev-01/result", b"scored")
        assert ("sqal/v1/L1/dev-01/result", b"forged") not in ingest.received
        # Devices dial 8883: TLS against the CA broker-init made, for the names it was given.
        monkeypatch.setenv("SSL_CERT_FILE", str(folder / "certs/ca.crt"))
        over_tls = connect(peers, url("simulator", tls=True))
        assert over_tls.publish("sqal/v1/L1/dev-02/tof", b"tls") in ACCEPTED
        # The broker's health check, as compose runs it in the container.
        check = SERVICES["mosquitto"]["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        probe = check[1].replace("$$", "$").replace("-p 1883", f"-p {port}")
        health_env = {k: with_defaults(v) for k, v in SERVICES["mosquitto"]["environment"].items()}
        ran = subprocess.run(
            ["sh", "-c", probe], env={**os.environ, **health_env}, capture_output=True, timeout=15
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip().endswith(b"seconds")  # $SYS/broker/uptime
