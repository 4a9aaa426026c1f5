"""Random argv to every ``sqal`` command: never a traceback, exit 0, 1 or 2, never a hang (#18).

Cases are drawn from a seeded generator over the click tree (``app.cli_docs.commands``), so a
new command or option is fuzzed without touching this file. ``make test`` runs
``--cli-fuzz-count`` (default 300) cases; ``make soak`` runs thousands. A failure prints the
argv to reproduce with ``python -m app ARGV``.

Nothing reaches a network or a real server: ``--broker``, ``--db`` and ``--url`` only ever
name closed loopback ports (or malformed URLs), ``SQAL_BROKER``/``SQAL_DB`` point at them too,
and the commands run in a temporary working directory. The two commands whose job is to start
servers (``services up``, ``demo``) are fuzzed up to that point: their option checks run, the
start itself is replaced.
"""

from __future__ import annotations

import random
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from typer.core import TyperGroup

from app import cli_docs
from app.cli import main
from tests.test_cli import assert_one_error_line, run_main
from tests.test_cli_hostile_files import GOOD_HEADER, HOSTILE, record

CASE_TIMEOUT_S = 20
"""A case running longer is a hang (the slowest honest case imports matplotlib: ~3 s)."""


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released: refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pools:
    """Values a case draws from: hostile for any option, and safe ones where it must be."""

    def __init__(self, folder: Path) -> None:
        port = closed_port()
        self.broker = [f"mqtt://127.0.0.1:{port}", "mqtt://[::1", "mqtt://127.0.0.1:99999",
                       "http://127.0.0.1:1", "mqtts://u:p@127.0.0.1:1", "",
                       "mqtt://:1"]  # fmt: skip
        self.db = [f"postgresql://sqal@127.0.0.1:{port}/x", "postgresql://[::1", "host=",
                   "not a dsn", "", f"postgresql://127.0.0.1:{port}/x?sslmode=nope"]  # fmt: skip
        self.url = [f"http://127.0.0.1:{port}", "ftp://x", "http://[::1", "", "http://"]
        capture_dir = folder / "captures"
        capture_dir.mkdir()
        good = capture_dir / "good.sqalcap"
        good.write_bytes(GOOD_HEADER + record())
        hostile = []
        for name in ("qos-7", "list-header", "huge-offset", "bad-user-property"):
            path = capture_dir / f"{name}.sqalcap"
            path.write_bytes(HOSTILE[name][0])
            hostile.append(str(path))
        junk = folder / "junk.bin"
        junk.write_bytes(bytes(range(256)) * 4)
        empty = folder / "empty.txt"
        empty.write_text("")
        jsonl = folder / "lines.jsonl"
        jsonl.write_text('{"device_id": "d1", "sample_id": "s1", "grade": "A"}\n[1]\n')
        self.paths = [str(good), *hostile, str(junk), str(empty), str(jsonl), str(folder),
                      str(folder / "missing" / "file"), "/dev/null", "-", "."]  # fmt: skip
        self.any = [
            "", "0", "-1", "1", "2", "3", "7", "65536", "1e308", "-1e308", "nan", "inf", "-inf",
            "1e-300", "0.0000001", "99999999999999999999", "2.5", "999999999d", "99999999h",
            "0s", "30d", "12h", "x" * 300, "é☃", "a/#/b", "sqal/v1/+/+/tof", "L1/d1", "L1",
            "_dead/d1", "L1/", "/", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z", "2026-13-45", "A=B", "L1=L2", "x.y=z", "tof.layout=8",
            "spectral.gain=1e400", "tof.layout=", "none", "realistic", "stress", "production",
            "foie_gras_lobe_400g", "no_such_profile", "../../etc/passwd", "keep", "drop",
            "results", "tof_frames", "nobody", "root", "--", "-x", "--json",
        ]  # fmt: skip


def leaf_commands() -> list[tuple[list[str], list[object]]]:
    """(path, params) of every command that runs something (groups only dispatch)."""
    return [
        (path, list(ctx.command.params))
        for path, ctx in cli_docs.commands()
        if not isinstance(ctx.command, TyperGroup)
    ]


def value_for(opt: str, pools: Pools, rng: random.Random) -> str:
    if opt == "--broker":
        return rng.choice(pools.broker)
    if opt == "--db":
        return rng.choice(pools.db)
    if opt == "--url":
        return rng.choice(pools.url)
    if rng.random() < 0.3:
        return rng.choice(pools.paths)
    return rng.choice(pools.any)


def draw(
    commands: list[tuple[list[str], list[object]]], pools: Pools, rng: random.Random
) -> list[str]:
    """One argv: a command, some of its options with drawn values, sometimes junk."""
    path, params = rng.choice(commands)
    argv = list(path)
    names = set()
    for p in params:
        opt = p.opts[0]  # type: ignore[attr-defined]
        names.add(opt)
        required = bool(getattr(p, "required", False))
        if not required and rng.random() < 0.5:
            continue
        repeat = 1 + (rng.random() < 0.2) * rng.randint(1, 3)
        for _ in range(repeat):
            if p.param_type_name == "argument":  # type: ignore[attr-defined]
                argv.append(value_for(opt, pools, rng))
            elif getattr(p, "is_flag", False):
                argv.append(opt)
            else:
                argv += [opt, value_for(opt, pools, rng)]
    if rng.random() < 0.1:
        argv.insert(rng.randint(len(path), len(argv)), rng.choice(pools.any))
    # Options nobody drew still must not reach a real server: name closed ports explicitly.
    if "--broker" in names and "--broker" not in argv:
        argv += ["--broker", pools.broker[0]]
    if "--db" in names and "--db" not in argv:
        argv += ["--db", pools.db[0]]
    return argv


class Hung(Exception):  # noqa: N818 (what the test reports, not an error type of SQAL)
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hung


@pytest.fixture
def fuzz_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pools]:  # fmt: skip
    """A temporary working directory, closed default ports, servers never started."""
    import app.demo
    import embedded.stack

    pools = Pools(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SQAL_BROKER", pools.broker[0])
    monkeypatch.setenv("SQAL_DB", pools.db[0])
    monkeypatch.setenv("SQAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    monkeypatch.setattr(embedded.stack, "up", lambda *a, **k: [])
    monkeypatch.setattr(app.demo, "run_demo", lambda *a, **k: None)
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        yield pools
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_case(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str | None:
    """What went wrong with ``sqal ARGV``, or None."""
    signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT_S)
    try:
        main(argv)
        code: object = 0
    except SystemExit as exc:
        code = exc.code if exc.code is not None else 0
    except Hung:
        return f"hung for {CASE_TIMEOUT_S} s"
    except BaseException as exc:  # noqa: BLE001 (any escape is the finding this test reports)
        return f"raised {type(exc).__name__}: {exc}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    out, err = capsys.readouterr()
    if "Traceback" in out + err:
        return "printed a traceback: " + (out + err)[-300:]
    if code not in (0, 1, 2):
        return f"exit {code!r}: {err[-200:]}"
    if code == 1 and not out and "Error: " not in err:
        # A check may exit 1 with its finding on stdout (grafana build --check, services
        # status); a failure says why on stderr.
        return f"exit 1 with neither output nor an Error: line: {err[-200:]!r}"
    return None


def test_the_fuzz_draws_every_command(fuzz_env: Pools) -> None:
    """The generator reaches each command, so a new one is fuzzed without a change here."""
    commands = leaf_commands()
    rng = random.Random(0)
    drawn = [draw(commands, fuzz_env, rng) for _ in range(40 * len(commands))]
    missed = [p for p, _ in commands if not any(argv[: len(p)] == p for argv in drawn)]
    assert len(commands) > 20
    assert missed == []


def test_random_argv_never_gives_a_traceback_or_a_hang(
    fuzz_env: Pools, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    count = int(request.config.getoption("--cli-fuzz-count"))
    seed = int(request.config.getoption("--cli-fuzz-seed"))
    rng = random.Random(seed)
    commands = leaf_commands()
    found: list[str] = []
    for i in range(count):
        argv = draw(commands, fuzz_env, rng)
        problem = run_case(argv, capsys)
        if problem is not None:
            found.append(f"case {i}: sqal {' '.join(map(repr, argv))}: {problem}")
    assert not found, f"{len(found)} of {count} cases (seed {seed}):\n" + "\n".join(found[:30])


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["mosquitto", "certs", "--out", "{file}"], "--out {file}: cannot write"),
        (["mosquitto", "certs", "--out", "c", "--client", "x" * 70], "--client 'xxxx"),
        (["mosquitto", "certs", "--out", "c", "--client", "."], "--client '.'"),
        (["mosquitto", "certs", "--out", "c", "--host", "h" * 70], "--host 'hhhh"),
        (["mosquitto", "init", "{file}"], "{file}: cannot write"),
        (["mosquitto", "init", "m", "--host", "h" * 70], "--host 'hhhh"),
        (["contract", "export", "--out", "{file}"], "--out {file}: cannot write"),
        (["grafana", "push", "--url", "http://[::1", "--token", "t"], "--url 'http://[::1'"),
        (["grafana", "build", "--check", "--out", "x" * 300], "cannot read"),
        (["analyzer", "--ts-window-hours", "1e308"], "--ts-window-hours 1e+308"),
        (["ingest", "--ts-window-hours", "87601"], "--ts-window-hours 87601.0"),
        (["record", "--out", "r.sqalcap", "--topic", "t", "--rotate-mb", "1e308"], "--rotate-mb"),
    ],
    ids=lambda v: " ".join(v[:3]) if isinstance(v, list) else None,
)
def test_what_the_fuzz_found_is_one_error_line(
    argv: list[str], problem: str, fuzz_env: Pools, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Each raised (FileExistsError, cryptography's ValueError, OverflowError, ...)."""
    if argv[:2] == ["mosquitto", "init"]:  # past the check that some password is given
        monkeypatch.setenv("MQTT_PASSWORD_ANALYZER", "fuzz-password-1")
    file = tmp_path / "a-file"
    file.write_text("")
    argv = [a.replace("{file}", str(file)) for a in argv]
    if "--broker" not in argv and argv[0] in ("analyzer", "ingest", "record"):
        argv += ["--broker", fuzz_env.broker[0]]
    code, _, err = run_main(argv, capsys)
    assert problem.replace("{file}", str(file)) in assert_one_error_line(code, err)
