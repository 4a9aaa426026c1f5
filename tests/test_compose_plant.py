"""A compose a plant can run (#18 item 7): passwords required, images it can get, pinned versions.

compose.yaml, the Dockerfile, .env.example, scripts/setup.sh and constraints.txt are parsed
(there is no Docker engine here); ``sqal mosquitto init`` runs for real.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import typer
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.cli import app
from broker.admin import Service
from broker.init import password_env

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "compose.yaml").read_text("utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
COMPOSE_CODE = "\n".join(ln for ln in COMPOSE_TEXT.splitlines() if not ln.lstrip().startswith("#"))
"""compose.yaml without its comments: what compose interpolates."""
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text("utf-8")
VARIABLE = re.compile(r"\$\{(\w+)(:[?-])?([^}]*)\}")


def example_variables() -> tuple[set[str], set[str]]:
    """.env.example's variables: (set to fill in, commented out as optional)."""
    required, optional = set(), set()
    for line in (ROOT / ".env.example").read_text("utf-8").splitlines():
        if m := re.fullmatch(r"(\w+)=", line):
            required.add(m.group(1))
        elif m := re.fullmatch(r"#(\w+)=.*", line):
            optional.add(m.group(1))
    return required, optional


def test_every_password_is_required_from_the_environment() -> None:
    used = VARIABLE.findall(COMPOSE_CODE)
    assert used
    for name, op, _ in used:
        if "PASSWORD" in name or "SECRET" in name:
            assert op == ":?", f"${{{name}}} in compose.yaml must be ${{{name}:?...}}"
        else:
            assert op == ":-", f"${{{name}}}: give a default or make it a required password"
    # no password, DSN or broker URL written out in the file
    for name, svc in SERVICES.items():
        for key, value in (svc.get("environment") or {}).items():
            if "PASSWORD" in key or "SECRET" in key:
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{name}: {key}={value}"
            if key in ("SQAL_BROKER", "SQAL_DB"):
                password = re.match(r"\w+://\w+:([^@]*)@", value)
                assert password, value
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", password.group(1)), value
    broker_users = {password_env(s) for s in Service}
    assert set(SERVICES["broker-init"]["environment"]) == broker_users


def test_env_example_lists_every_variable_and_env_stays_out_of_git() -> None:
    required, optional = example_variables()
    used = {name for name, op, _ in VARIABLE.findall(COMPOSE_CODE)}
    assert required == {name for name, op, _ in VARIABLE.findall(COMPOSE_CODE) if op == ":?"}
    assert required | optional == used
    text = (ROOT / ".env.example").read_text("utf-8").splitlines()
    for name in required | optional:  # each one explained by the comment above it
        at = next(i for i, line in enumerate(text) if re.match(rf"#?{name}=", line))
        assert text[at - 1].startswith("# "), name
    for name, _, default in VARIABLE.findall(COMPOSE_CODE):
        if name in optional:
            assert f"#{name}={default}" in text, f"{name}: .env.example shows another default"
    assert ".env" in (ROOT / ".gitignore").read_text("utf-8").split()
    for doc in ("README.md", "docs/operations.md"):
        assert "cp .env.example .env" in (ROOT / doc).read_text("utf-8"), doc


def test_no_service_needs_an_image_no_registry_has() -> None:
    built = {svc["image"] for svc in SERVICES.values() if "build" in svc}
    assert built == {"sqal:local"}
    for name, svc in SERVICES.items():
        image = svc["image"]
        if image in built:
            # each one builds it: `up` never tries to pull an image only another would build
            assert svc["build"] == ".", name
            assert svc["pull_policy"] == "build", name
        else:
            assert "build" not in svc, name
            repo, _, tag = image.rpartition(":")
            assert repo, f"{name}: {image} has no tag"
            assert tag not in ("", "latest"), f"{name}: pin {image} to a version"


def owned_dirs(user: str) -> set[str]:
    """Directories the Dockerfile makes ``user``'s (``install -d -o USER ... DIR...``)."""
    found: set[str] = set()
    for m in re.finditer(r"install -d ((?:-\w \S+ )*)(/\S+(?: /\S+)*)", DOCKERFILE):
        opts = m.group(1).split()
        if opts[opts.index("-o") + 1] == user:
            found.update(m.group(2).split())
    return found


def test_sqal_services_write_only_where_the_image_s_user_may() -> None:
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    user = users[-1]
    assert user == "sqal"
    assert re.search(rf"useradd [^\n]*\b{user}\b", DOCKERFILE)
    writable = owned_dirs(user)
    assert writable
    for name, svc in SERVICES.items():
        if svc["image"] != "sqal:local" or svc.get("user", user) in ("0", "0:0", "root"):
            continue
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source in COMPOSE["volumes"]:
                assert target in writable, f"{name}: {target} is not {user}'s in the image"


def test_the_report_service_writes_its_default_output_into_the_reports_volume() -> None:
    report = SERVICES["report"]
    assert report["entrypoint"] == ["sqal", "report"]
    assert report["profiles"] == ["tools"]
    assert f"reports:{report['working_dir']}" in report["volumes"]
    assert report["working_dir"] in owned_dirs("sqal")
    assert report["environment"]["SQAL_DB"].startswith("postgresql://grafana:")  # read-only
    # `docker compose run --rm report --line L1` parses, and its --out lands in working_dir
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    command = group.commands["report"]
    ctx = command.make_context("report", ["--line", "L1"])
    assert not Path(ctx.params["out"]).is_absolute()


def pip_installs(text: str) -> list[list[str]]:
    """The arguments of every ``pip install`` command in a shell script or Dockerfile."""
    joined = text.replace("\\\n", " ")
    return [
        shlex.split(m.group(1).split("&&")[0]) for m in re.finditer(r"pip install ([^\n]*)", joined)
    ]


def test_setup_and_the_image_install_the_project_with_the_constraints() -> None:
    setup = (ROOT / "scripts/setup.sh").read_text("utf-8")
    project = [a for a in pip_installs(setup) if any(x.startswith(".") for x in a)]
    assert project
    for args in project + pip_installs(DOCKERFILE):
        assert args[args.index("-c") + 1] == "constraints.txt", args
    # a changed pin re-runs the install (and nothing else does: the second run stays fast)
    stamp_check = next(ln for ln in setup.splitlines() if '"$stamp"' in ln and "-nt" in ln)
    assert "constraints.txt -nt" in stamp_check
    assert "pyproject.toml -nt" in stamp_check
    assert re.search(r"^COPY [^\n]*constraints\.txt", DOCKERFILE, re.M)
    done = subprocess.run(["bash", "-n", str(ROOT / "scripts/setup.sh")], capture_output=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text("utf-8").splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not NAME==VERSION"
            found[canonicalize_name(name)] = version
    return found


def needed(name: str, extras: frozenset[str], seen: set[str]) -> None:
    """Every distribution ``name[extras]`` pulls in, into ``seen`` (markers evaluated here)."""
    key = canonicalize_name(name)
    if key in seen:
        return
    seen.add(key)
    for text in metadata.requires(name) or []:
        req = Requirement(text)
        envs = [{"extra": e} for e in extras] or [{"extra": ""}]
        if req.marker is None or any(req.marker.evaluate(env) for env in envs):
            needed(req.name, frozenset(req.extras), seen)


def test_constraints_pin_every_package_sqal_needs_at_the_installed_version() -> None:
    pinned = pins()
    assert canonicalize_name("sqal") not in pinned
    seen: set[str] = set()
    needed("sqal", frozenset({"dev"}), seen)
    seen.discard("sqal")
    assert {"numpy", "paho-mqtt", "psycopg", "pytest", "typing-extensions"} <= seen
    assert seen - set(pinned) == set(), "unpinned: run make constraints"
    for name in seen:
        assert pinned[name] == metadata.version(name), f"{name}: pinned != installed"


def test_mosquitto_init_without_any_password_fails_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "broker"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTT_PASSWORD_")}
    cmd = [sys.executable, "-m", "app", "mosquitto", "init", str(folder)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: no service password in the environment")
    for service in Service:
        assert password_env(service) in lines[0]
    assert not folder.exists()  # nothing half-written

    # one password is enough for a broker that starts; a later run without any keeps the file
    with_one = {**env, "MQTT_PASSWORD_INGEST": "ingest-password-1"}
    first = subprocess.run(cmd, env=with_one, capture_output=True, text=True, timeout=60,
                           check=False)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert (folder / "passwd").read_text().startswith("ingest:")
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert "passwords set: none" in again.stdout
    assert (folder / "passwd").read_text().startswith("ingest:")
