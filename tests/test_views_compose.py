"""compose.yaml, the Dockerfile and Grafana provisioning hang together (no Docker engine here).

Parsed and cross-checked: files mounted or copied exist, every long-running service has a health
check, SQAL_* names are Settings fields, service commands parse with the real CLI options, and
the provisioned data source and dashboard folder match what the compose file provides.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from analyzer.command import analyzer_command
from device_sim.command import sim_command
from ingest.command import ingest_command
from sqal.settings import Settings
from storage.command import db_migrate_command

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def one_shot(name: str) -> bool:
    """A job that runs to completion: restart "no" and others wait for it to complete."""
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
    assert builds == ["."]
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


@pytest.mark.parametrize("name", ["migrate", "analyzer", "ingest", "simulator"])
def test_service_commands_parse_with_the_cli_options(name: str) -> None:
    app = typer.Typer()
    db = typer.Typer()
    db.command("migrate")(db_migrate_command)
    app.add_typer(db, name="db")
    app.command("analyzer")(analyzer_command)
    app.command("ingest")(ingest_command)
    app.command("sim")(sim_command)
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    args = list(SERVICES[name]["command"])
    ctx = group.make_context("sqal", args.copy(), resilient_parsing=False)
    cmd_name, cmd, rest = group.resolve_command(ctx, args)
    assert cmd is not None, f"{name}: unknown command {cmd_name}"
    sub = cmd.make_context(cmd_name or "", rest, parent=ctx)  # raises on an unknown option
    if isinstance(cmd, typer.core.TyperGroup):
        _, leaf, leaf_args = cmd.resolve_command(sub, rest)
        assert leaf is not None
        leaf.make_context("migrate", leaf_args, parent=sub)


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


def test_compose_broker_keeps_the_limits_of_the_repository_configs() -> None:
    def limits(path: Path) -> dict[str, str]:
        keys = (
            "max_inflight_messages",
            "max_queued_messages",
            "max_queued_bytes",
            "persistent_client_expiration",
        )
        pairs = (line.split(None, 1) for line in path.read_text("utf-8").splitlines())
        return {p[0]: p[1].strip() for p in pairs if len(p) == 2 and p[0] in keys}

    ours = limits(ROOT / "grafana/compose/mosquitto.conf")
    assert len(ours) == 4
    assert ours == limits(ROOT / "mosquitto/production.conf")
