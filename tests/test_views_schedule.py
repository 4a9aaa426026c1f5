"""Shift reports on a schedule: boundaries in the plant's time across DST, the loop on a fake
clock, one ``--once`` run against the database, and the systemd units."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import typer
import yaml
from typer.testing import CliRunner

from sqal.errors import ConfigError, StorageError
from tests.views_data import build_shift, fill
from views.command import report_schedule_command
from views.schedule import Shifts, report_name, run_once, run_schedule

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
PARIS = ZoneInfo("Europe/Paris")
H = timedelta(hours=1)
GRACE = timedelta(minutes=5)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def paris(at: str = "06:00", every: timedelta = 8 * H) -> Shifts:
    return Shifts.parse(at, every, PARIS)


def test_three_shifts_start_at_six_fourteen_and_twenty_two_local() -> None:
    s = paris()
    assert [t.isoformat("minutes") for t in s.times_of_day()] == ["06:00", "14:00", "22:00"]
    # winter: Paris is UTC+1
    assert s.on(date(2026, 1, 15)) == [
        utc("2026-01-15T05:00"), utc("2026-01-15T13:00"), utc("2026-01-15T21:00"),
    ]  # fmt: skip
    # a boundary is its own last and the previous shift's end; next is strictly after
    assert s.last(utc("2026-01-15T05:00")) == utc("2026-01-15T05:00")
    assert s.next(utc("2026-01-15T05:00")) == utc("2026-01-15T13:00")
    assert s.ending(utc("2026-01-15T05:00")) == (utc("2026-01-14T21:00"), utc("2026-01-15T05:00"))
    # summer: UTC+2
    assert s.next(utc("2026-07-01T11:59")) == utc("2026-07-01T12:00")
    assert s.last(utc("2026-07-01T03:59")) == utc("2026-06-30T20:00")


def test_the_night_shift_lasts_seven_hours_in_spring_and_nine_in_autumn() -> None:
    s = paris()
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 22:00 CET → 06:00 CEST
    start, end = s.ending(s.next(utc("2026-03-28T22:00")))
    assert (start, end) == (utc("2026-03-28T21:00"), utc("2026-03-29T04:00"))
    assert end - start == 7 * H
    assert s.ending(s.next(end)) == (end, utc("2026-03-29T12:00"))
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 22:00 CEST → 06:00 CET
    start, end = s.ending(s.next(utc("2026-10-24T21:00")))
    assert (start, end) == (utc("2026-10-24T20:00"), utc("2026-10-25T05:00"))
    assert end - start == 9 * H


def test_a_boundary_in_the_gap_comes_at_the_old_offset_and_a_repeated_one_once() -> None:
    s = paris("02:30", 24 * H)
    # 02:30 does not exist on 2026-03-29: 02:30 CET = 01:30Z = 03:30 CEST
    assert s.on(date(2026, 3, 29)) == [utc("2026-03-29T01:30")]
    # 02:30 happens twice on 2026-10-25: the first (CEST, UTC+2) counts, once
    assert s.on(date(2026, 10, 25)) == [utc("2026-10-25T00:30")]
    assert s.next(utc("2026-10-25T00:30")) == utc("2026-10-26T01:30")
    # hourly shifts: 02:00 and 03:00 wall time fall on the same instant in the gap, kept once
    hourly = paris("00:00", H).on(date(2026, 3, 29))
    assert len(hourly) == len(set(hourly)) == 23


@pytest.mark.parametrize(
    ("at", "every", "message"),
    [
        ("6:00", 8 * H, "--at '6:00'"),
        ("24:00", 8 * H, "--at '24:00'"),
        ("06:00", 7 * H, "--every 7:00:00"),
        ("06:00", timedelta(seconds=90), "--every"),
    ],
)
def test_shift_times_that_cannot_be_kept_are_config_errors(
    at: str, every: timedelta, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Shifts.parse(at, every, PARIS)


def test_a_report_is_named_from_line_lot_and_the_shift_start_in_plant_time() -> None:
    start = utc("2026-03-28T21:00")
    assert report_name("line1", None, start, PARIS) == "line1-20260328-2200.pdf"
    assert report_name("line1", "L-42", start, UTC) == "line1-L-42-20260328-2100.pdf"


def test_the_loop_reports_each_shift_after_its_grace_and_survives_a_failed_one(
    tmp_path: Path,
) -> None:
    """A fake clock that the fake sleep advances: no real time passes."""
    now = [utc("2026-03-28T12:00")]
    periods: list[tuple[datetime, datetime]] = []
    slept: list[float] = []

    class StopLoopError(Exception):
        pass

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += timedelta(seconds=seconds)

    def step(start: datetime, end: datetime) -> None:
        assert now[0] >= end + timedelta(minutes=5)
        periods.append((start, end))
        if len(periods) == 2:
            raise StorageError("the database is away")  # logged; the loop goes on
        if len(periods) == 4:
            raise StopLoopError

    beat = tmp_path / "alive"
    with pytest.raises(StopLoopError):
        run_schedule(paris(), step, timedelta(minutes=5), lambda: now[0], sleep, beat)
    assert periods == [
        (utc("2026-03-28T05:00"), utc("2026-03-28T13:00")),
        (utc("2026-03-28T13:00"), utc("2026-03-28T21:00")),
        (utc("2026-03-28T21:00"), utc("2026-03-29T04:00")),  # the 7-hour night
        (utc("2026-03-29T04:00"), utc("2026-03-29T12:00")),
    ]
    assert max(slept) <= 60
    assert beat.is_file()


def test_once_reports_the_latest_shift_that_ended_a_grace_ago() -> None:
    got: list[tuple[datetime, datetime]] = []
    s = paris()
    period = run_once(s, lambda a, b: got.append((a, b)), utc("2026-01-15T05:04"), GRACE)
    assert period == (utc("2026-01-14T13:00"), utc("2026-01-14T21:00"))
    assert run_once(s, lambda a, b: None, utc("2026-01-15T05:05"), GRACE)[1] == utc(
        "2026-01-15T05:00"
    )
    assert got == [period]


def cli(*args: str) -> object:
    app = typer.Typer()
    app.command()(report_schedule_command)
    return CliRunner().invoke(app, list(args))


def test_once_writes_the_shift_report_named_after_the_line_and_shift(
    fresh_db: str, tmp_path: Path
) -> None:
    fill(fresh_db, build_shift())  # L1 from 06:00 to 08:00 UTC on 2026-03-02: 07:00-09:00 Paris
    out = tmp_path / "reports"
    result = cli(
        "--db", fresh_db, "--line", "L1", "--out-dir", str(out), "--tz", "Europe/Paris",
        "--at", "06:00", "--every", "8h", "--once", "--before", "2026-03-02T13:10:00+00:00",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    # the 06:00-14:00 Paris shift (05:00-13:00 UTC), named by its start in Paris time
    assert sorted(p.name for p in out.iterdir()) == ["L1-20260302-0600.pdf"]
    assert (out / "L1-20260302-0600.pdf").read_bytes().startswith(b"%PDF")
    assert "wrote " + str(out / "L1-20260302-0600.pdf") in result.output  # type: ignore[attr-defined]


def test_before_without_once_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("--line", "L1", "--out-dir", str(tmp_path), "--before", "8h")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert isinstance(result.exception, ConfigError)  # type: ignore[attr-defined]


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text(encoding="utf-8"))
    return parser


def test_systemd_timer_fires_after_each_paris_shift_and_the_service_runs_once() -> None:
    timer = _unit("sqal-shift-report@.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* 06,14,22:05:00 Europe/Paris"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    service = _unit("sqal-shift-report@.service")
    assert service["Service"]["Type"] == "oneshot"
    command = service["Service"]["ExecStart"].split()
    assert command[:2] == ["/usr/local/bin/sqal", "report-schedule"]
    args = dict(zip(command[2::2], command[3::2], strict=False))
    # the service's shifts are the timer's, its grace the timer's 5 minutes past each boundary
    assert {k: args[k] for k in ("--line", "--at", "--every", "--grace", "--tz")} == {
        "--line": "%i", "--at": "06:00", "--every": "8h", "--grace": "5m",
        "--tz": "Europe/Paris",
    }  # fmt: skip
    assert "--once" in command
    assert args["--out-dir"] == "/var/lib/sqal/reports"
    # the options parse with the real command
    cli_args = [a.replace("%i", "line1") for a in command[2:]]
    app = typer.Typer()
    app.command()(report_schedule_command)
    ctx = typer.main.get_command(app).make_context("x", cli_args)
    assert ctx.params["once"] is True


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_verify_and_the_calendar_is_what_the_docs_say(tmp_path: Path) -> None:
    # verify an instance (line1) of each template, with ExecStart pointing at this checkout's
    # sqal (verify checks that the command exists); any warning ("…, ignoring") fails too
    sqal = Path(shutil.which("sqal", path=str(Path(sys.executable).parent)) or "sqal")
    names = []
    for unit in sorted(UNITS.iterdir()):
        name = unit.name.replace("@.", "@line1.")
        text = unit.read_text(encoding="utf-8").replace("/usr/local/bin/sqal", str(sqal))
        (tmp_path / name).write_text(text, encoding="utf-8")
        names.append(str(tmp_path / name))
    assert len(names) == 2
    check = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True
    )
    assert (check.returncode, check.stderr) == (0, "")
    out = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=3", "--base-time=2026-03-28 12:00 UTC",
         "*-*-* 06,14,22:05:00 Europe/Paris"],
        capture_output=True, text=True, check=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert "2026-03-28 21:05:00 UTC" in out.stdout  # 22:05 CET
    assert "2026-03-29 04:05:00 UTC" in out.stdout  # 06:05 CEST, after the night of 7 hours


def test_the_compose_scheduler_runs_the_command_with_the_heartbeat_its_check_reads() -> None:
    svc = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))["services"][
        "report-scheduler"
    ]
    assert svc["entrypoint"] == ["sqal", "report-schedule"]
    app = typer.Typer()
    app.command()(report_schedule_command)
    ctx = typer.main.get_command(app).make_context("x", list(svc["command"]))
    assert ctx.params["once"] is False
    assert str(ctx.params["out_dir"]) in {v.split(":")[1] for v in svc["volumes"]}
    assert str(ctx.params["heartbeat"]) in " ".join(svc["healthcheck"]["test"])
    assert svc["restart"] == "unless-stopped"
