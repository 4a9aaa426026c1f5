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


def assert_one_error_line(code: int, err: str) -> str:
    """The CLI's failure contract: exit non-zero, one ``Error:`` line, no traceback."""
    assert code != 0
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "show"],
        ["config", "set", "L1/d1", "--profile", "foie_gras_lobe_400g"],
        ["record", "--topic", "sqal/v1/#", "--out", "never.sqalcap"],
        ["sim", "--count", "1"],
        ["analyzer"],
        ["ingest"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_malformed_broker_url_is_one_error_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """#18: ``mqtt://[::1`` made urlsplit raise a bare ValueError on every broker command."""
    code, _, err = run_main([*argv, "--broker", "mqtt://[::1"], capsys)
    line = assert_one_error_line(code, err)
    assert "'mqtt://[::1'" in line
    assert "mqtt://HOST[:PORT]" in line


@pytest.mark.parametrize(
    ("topic", "rule"),
    [
        ("a/#/b", "'#' must be a whole level and the last one"),
        ("a/b#", "'#' must be a whole level and the last one"),
        ("a/b+/c", "'+' must be a whole level"),
        ("", "must not be empty"),
    ],
)
def test_an_invalid_topic_filter_is_refused_before_connecting(
    topic: str, rule: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#18: paho raised ValueError at subscribe; now no broker is needed to fail (port 1)."""
    out = tmp_path / "never.sqalcap"
    code, _, err = run_main(
        ["record", "--topic", topic, "--out", str(out), "--broker", "mqtt://127.0.0.1:1"], capsys
    )
    line = assert_one_error_line(code, err)
    assert f"--topic {topic!r}" in line
    assert rule in line
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--line", "L1", "--since", "99999999h"],
        ["db", "retention", "--older-than", "999999999d"],
        ["db", "retention", "--older-than", "99999999999999999999999999999d"],
    ],
    ids=lambda a: " ".join(a[-2:]),
)
def test_an_age_past_datetime_range_is_refused_before_connecting(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """#18: OverflowError from datetime arithmetic; the DSN points at a closed port."""
    code, _, err = run_main([*argv, "--db", "postgresql://sqal@127.0.0.1:1/none"], capsys)
    line = assert_one_error_line(code, err)
    assert argv[-1] in line
    assert "at most 100 years" in line


def test_an_age_before_year_one_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(
        ["report", "--line", "L1", "--until", "0001-01-01T01:00:00+00:00", "--since", "2h",
         "--db", "postgresql://sqal@127.0.0.1:1/none"],
        capsys,
    )  # fmt: skip
    assert "before year 1" in assert_one_error_line(code, err)


@pytest.mark.parametrize(
    ("record", "want"),
    [
        ({"sample_id": "s1", "grade": "A"}, "truth.jsonl:2: no 'device_id' key"),
        ({"device_id": "d1", "grade": "A"}, "truth.jsonl:2: no 'sample_id' key"),
        ({"device_id": "d1", "sample_id": "s1"}, "truth.jsonl:2: no 'grade' key"),
        ({"device_id": "d1", "sample_id": "s1", "grade": "Z"}, "grade 'Z'; expected one of"),
    ],
)
def test_a_truth_line_without_a_required_key_names_file_line_and_key(
    record: dict[str, str], want: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#18: a KeyError traceback from evaluate(); blank lines still count for the number."""
    truth, results = tmp_path / "truth.jsonl", tmp_path / "results.jsonl"
    truth.write_text("\n" + json.dumps(record) + "\n")
    results.write_text("")
    code, _, err = run_main(["eval", "--truth", str(truth), "--results", str(results)], capsys)
    line = assert_one_error_line(code, err)
    assert want in line
    assert str(tmp_path) in line


@pytest.mark.parametrize(
    "argv",
    [
        ["--count", "1", "--start-time", "9999-12-31T23:59:59Z"],
        ["--count", "1", "--start-time", "2999-01-01T00:00:00Z"],
        ["--count", "100000000000", "--rate", "0.1", "--start-time", "2026-01-01T00:00:00Z"],
    ],
    ids=["year-9999", "centuries-ahead", "run-past-9999"],
)
def test_a_sim_run_past_datetime_max_is_refused(argv: list[str]) -> None:
    """#18: the simulator hung silently; now one line, before any broker (port 1) is asked."""
    run = subprocess.run(
        [*SQAL, "sim", *argv, "--broker", "mqtt://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    line = assert_one_error_line(run.returncode, run.stderr)
    assert "--start-time" in line or "past year 9999" in line


@pytest.mark.parametrize("service", ["analyzer", "ingest"])
def test_a_taken_metrics_port_is_one_error_line(service: str) -> None:
    """#18: the port is bound before the broker is asked, so a taken one fails at once."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [*SQAL, service, "--metrics-port", str(port), "--broker", "mqtt://127.0.0.1:1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    line = assert_one_error_line(run.returncode, run.stderr)
    assert f"127.0.0.1:{port}" in line
    assert "--metrics-port" in line
