"""The sqal CLI: help on every command, one-line errors, the embedded services."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import typer

from app import cli_docs
from app.cli import app, main
from embedded import free_port
from embedded.process import pid_alive

ROOT = Path(__file__).resolve().parent.parent
SQAL = [sys.executable, "-m", "app"]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def all_commands() -> list[list[str]]:
    """Every command path of the app, groups included (``[]`` is ``sqal`` itself)."""
    paths: list[list[str]] = []

    def walk(typer_app: typer.Typer, path: list[str]) -> None:
        paths.append(path)
        for cmd in typer_app.registered_commands:
            name = cmd.name or (cmd.callback.__name__ if cmd.callback else "")
            paths.append([*path, name.replace("_", "-")])
        for group in typer_app.registered_groups:
            assert group.typer_instance is not None
            assert group.name is not None
            walk(group.typer_instance, [*path, group.name])

    walk(app, [])
    return paths


def undocumented(typer_app: typer.Typer, prog: str) -> list[str]:
    """Commands and groups of ``typer_app`` whose help text (docstring or ``help=``) is empty.

    Read from the click tree, not from ``--help``: the help of a command without a docstring
    still has its usage and options, which a check on the printed text mistakes for a summary.
    """
    return [
        " ".join([prog, *path])
        for path, ctx in cli_docs.commands(typer_app, prog)
        if not (ctx.command.help or "").strip()
    ]


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "sqal")
def test_every_command_has_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main([*path, "--help"], capsys)
    assert code == 0
    assert "Usage:" in out
    helps = {tuple(p): (ctx.command.help or "").strip() for p, ctx in cli_docs.commands()}
    assert helps[tuple(path)], f"sqal {' '.join(path)} has no help text"
    first_words = " ".join(helps[tuple(path)].split()[:6])
    assert first_words in " ".join(out.split())  # --help prints that text


def test_the_click_tree_has_every_command() -> None:
    """The tree the help checks walk holds exactly the commands the app registers."""
    assert sorted(p for p, _ in cli_docs.commands()) == sorted(all_commands())
    assert undocumented(app, "sqal") == []


def test_the_help_check_flags_an_undocumented_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tiny = typer.Typer(help="Tiny.", rich_markup_mode=None, add_completion=False)

    @tiny.command()
    def documented() -> None:
        """Do a thing."""

    @tiny.command()
    def bare() -> None:
        pass

    group = typer.Typer(rich_markup_mode=None)
    group.command("inner")(documented)
    tiny.add_typer(group, name="grp")

    assert undocumented(tiny, "tiny") == ["tiny bare", "tiny grp"]
    # What the check on the printed text saw: usage, then the options block as a "summary".
    with pytest.raises(SystemExit):
        tiny(args=["bare", "--help"], prog_name="tiny")
    out = capsys.readouterr().out
    assert out.split("\n\n")[1].strip().startswith("Options:")


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [" ".join(p) for p in all_commands() if p and f"sqal {' '.join(p)}" not in readme]
    assert not missing, f"README.md lacks: {missing}"


def test_usage_error_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["services", "up", "--mqtt-port", "99999"], capsys)
    assert code == 2
    assert "--mqtt-port" in err
    assert "Traceback" not in err


def test_runtime_error_is_one_line_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_main(
            ["services", "up", "--data-dir", "/tmp/sqal-never", "--mqtt-port", str(port)], capsys
        )
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith(f"Error: port 127.0.0.1:{port} is taken")


def test_version_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["version", "--json"], capsys)
    info = json.loads(out)
    assert code == 0
    assert info["contract"] == "v1"
    assert info["timescaledb"] not in ("", "not installed")


def test_contract_export_writes_every_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(["contract", "export", "--out", str(tmp_path)], capsys)
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "tof.schema.json" in names
    assert len(out.splitlines()) == len(names)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="sqal-svc-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        subprocess.run([*SQAL, "services", "down", "--data-dir", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_services_up_status_down_round_trip(data_dir: Path) -> None:
    mqtt_port, pg_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQAL_")}
    up = subprocess.run(
        [*SQAL, "services", "up", "--data-dir", str(data_dir), "--json",
         "--mqtt-port", str(mqtt_port), "--pg-port", str(pg_port)],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    )  # fmt: skip
    urls = json.loads(up.stdout)
    assert urls["mosquitto"]["url"] == f"mqtt://127.0.0.1:{mqtt_port}"
    dsn = urls["postgres"]["url"]

    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mqtt_port), "-t", "t/#", "-C", "1",
         "-q", "1", "-W", "10"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(50):
            subprocess.run(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt_port), "-t", "t/x", "-q",
                 "1", "-m", "hello"],
                check=True,
            )  # fmt: skip
            try:
                out, _ = sub.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        sub.kill()
        sub.wait()
    assert out.strip() == "hello"

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
    assert row is not None

    status = subprocess.run(
        [*SQAL, "services", "status", "--data-dir", str(data_dir), "--json"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    assert all(s["running"] for s in json.loads(status.stdout).values())

    pids = [urls["mosquitto"]["pid"], urls["postgres"]["pid"]]
    down = subprocess.run(
        [*SQAL, "services", "down", "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    assert "stopped mosquitto" in down.stdout
    assert not any(pid_alive(pid) for pid in pids)
