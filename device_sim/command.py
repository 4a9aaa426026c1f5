"""``sqal sim``: run a simulated fleet against a broker and write the ground truth.

The lead registers it with ``app.command("sim")(sim_command)``; ``python -m device_sim`` runs
it alone (tests kill that process to see the last will).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from device_sim.device import SimDevice
from device_sim.fleet import Counters, run_fleet
from device_sim.trays import DEFECTS
from sqal.errors import ConfigError, SqalError
from sqal.profiles import load_profile
from sqal.settings import load_settings, parse_broker_url


def _start_time(text: str | None) -> datetime:
    if text is None:
        now = datetime.now(UTC)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--start-time {text!r}: not an RFC 3339 time") from None
    if ts.tzinfo is None:
        raise ConfigError(f"--start-time {text!r}: needs a UTC offset (e.g. Z)")
    ts = ts.astimezone(UTC)
    if ts - now_utc() > MAX_START_AHEAD:
        raise ConfigError(
            f"--start-time {text!r} is more than a year from now; give a time before "
            f"{(now_utc() + MAX_START_AHEAD).date().isoformat()} (or none: now)"
        )
    return ts


MAX_START_AHEAD = timedelta(days=366)
"""How far ahead ``--start-time`` may be. Further, the device clocks run past datetime's year
9999 (the simulator hung there) and the analyzer and ingest dead-letter such frames anyway
(``--ts-window-hours``)."""


def now_utc() -> datetime:
    """The wall clock, aware UTC (one place to read it)."""
    return datetime.now(UTC)


def _check_run_fits(start: datetime, per_device: int, rate: float) -> None:
    """Refuse a run whose last tray would be stamped past datetime's maximum.

    Raises:
        ConfigError: ``--count`` / ``--duration`` at ``--rate`` runs past year 9999.
    """
    run_s = per_device * 60.0 / rate
    room_s = (datetime.max.replace(tzinfo=UTC) - start).total_seconds() - 86400.0
    if run_s > room_s:
        raise ConfigError(
            f"{per_device} trays at {rate:g}/min from {start.isoformat()} run past year 9999; "
            "give fewer trays (--count, --duration) or an earlier --start-time"
        )


def build_devices(
    lines: int,
    devices: int,
    rate: float,
    profile: str,
    seed: int,
    start: datetime,
    faults: str,
    fixture: str | None,
    defect_rate: float | None,
    scenario: str = "production",
    checkweigher_sigma_g: float | None = None,
) -> list[SimDevice]:
    """The fleet's devices: ``line{L}`` × ``line{L}-node{NN}``.

    ``defect_rate`` ``None``: the scenario's rate, from the profile. ``checkweigher_sigma_g``:
    every line has a checkweigher of this standard uncertainty, each node relays its weights.

    Raises:
        ConfigError: an unknown scenario.
    """
    if defect_rate is None:
        defect_rate = load_profile(profile).scenarios.get(scenario).defect_rate
    rates = {d: defect_rate for d in DEFECTS}
    out = []
    for li in range(lines):
        for di in range(devices):
            line = f"line{li + 1}"
            out.append(
                SimDevice(
                    line_id=line,
                    device_id=f"{line}-node{di + 1:02d}",
                    index=li * devices + di,
                    seed=seed,
                    profile=profile,
                    period_s=60.0 / rate,
                    start=start,
                    realistic_faults=faults == "realistic",
                    rates=rates,
                    fixture=fixture,  # type: ignore[arg-type]
                    scenario=scenario,
                    checkweigher_sigma_g=checkweigher_sigma_g,
                )
            )
    return out


def checkweigher_sigma_g(enabled: bool, sigma: float | None) -> float | None:
    """The simulated checkweigher's σ in g, ``None`` without ``--checkweigher``.

    Raises:
        ConfigError: ``--checkweigher-sigma`` without ``--checkweigher``, or not in (0, 100] g.
    """
    if not enabled:
        if sigma is not None:
            raise ConfigError("--checkweigher-sigma needs --checkweigher")
        return None
    if sigma is None:
        return DEFAULT_CHECKWEIGHER_SIGMA_G
    if not 0.0 < sigma <= MAX_CHECKWEIGHER_SIGMA_G:
        raise ConfigError(
            f"--checkweigher-sigma {sigma:g}: must be above 0 and at most "
            f"{MAX_CHECKWEIGHER_SIGMA_G:g} g"
        )
    return sigma


def _opt(
    flag: str, text: str, min: float | None = None, max: float | None = None
) -> typer.models.OptionInfo:
    info: typer.models.OptionInfo = typer.Option(flag, help=text, min=min, max=max)
    return info


Broker = Annotated[str | None, _opt("--broker", "Broker URL [env SQAL_BROKER].")]
Lines = Annotated[int, _opt("--lines", "Production lines.", min=1, max=100)]
Devices = Annotated[int, _opt("--devices", "Nodes per line.", min=1, max=200)]
Rate = Annotated[float, _opt("--rate", "Trays per minute per node (0.1-6000).")]
Count = Annotated[int | None, _opt("--count", "Trays per node, then stop.", min=1)]
Duration = Annotated[float | None, _opt("--duration", "Seconds to run (count = rate x S/60).")]
ProfileName = Annotated[str, _opt("--profile", "Product profile name (profiles/).")]
Seed = Annotated[int, _opt("--seed", "Same seed: same trays and measurements.", min=0)]
Truth = Annotated[Path | None, _opt("--truth", "Write the ground truth JSONL here.")]
Faults = Annotated[
    str, _opt("--faults", "Transport faults: none or realistic (docs/domain.md §7).")
]
StartTime = Annotated[
    str | None,
    _opt(
        "--start-time",
        "RFC 3339 start of the device clocks: byte-identical frames. At most a year from now.",
    ),
]
FixtureOpt = Annotated[
    str | None, _opt("--fixture", "Present empty, dark or white (calibration) instead of product.")
]
DefectRate = Annotated[
    float | None,
    _opt("--defect-rate", "Injection rate of each defect (0-0.1); default: the scenario's."),
]
ScenarioOpt = Annotated[
    str,
    _opt(
        "--scenario",
        "production: a filler set for the packers' rules, 0.3 % of each defect; stress: the "
        "first simulator's population, 3 % each (the profile's scenarios, docs/domain.md §7).",
    ),
]
DEFAULT_CHECKWEIGHER_SIGMA_G = 0.5
"""``--checkweigher-sigma`` when not given: a food checkweigher of 0.1 g steps reads to about
±0.5 g (1 σ) in motion on a line."""
MAX_CHECKWEIGHER_SIGMA_G = 100.0
Checkweigher = Annotated[
    bool,
    typer.Option(
        "--checkweigher",
        help="Each line has a checkweigher: every node also publishes one weight per tray (its "
        "true mass + N(0, sigma), 0.1 g steps) and announces it in its config.",
    ),
]
CheckweigherSigma = Annotated[
    float | None,
    _opt(
        "--checkweigher-sigma",
        f"The checkweigher's standard uncertainty in g (with --checkweigher; default "
        f"{DEFAULT_CHECKWEIGHER_SIGMA_G:g}).",
    ),
]
FactoryConfig = Annotated[
    bool,
    typer.Option(
        "--factory-config/--keep-config",
        help="Publish each node's config with a simulated factory calibration, or keep the "
        "retained one (after sqal calibrate).",
    ),
]


def sim_command(
    broker: Broker = None,
    lines: Lines = 1,
    devices: Devices = 1,
    rate: Rate = 30.0,
    count: Count = None,
    duration: Duration = None,
    profile: ProfileName = "foie_gras_lobe_400g",
    seed: Seed = 0,
    truth: Truth = None,
    faults: Faults = "none",
    start_time: StartTime = None,
    fixture: FixtureOpt = None,
    defect_rate: DefectRate = None,
    factory_config: FactoryConfig = True,
    scenario: ScenarioOpt = "production",
    checkweigher: Checkweigher = False,
    checkweigher_sigma: CheckweigherSigma = None,
) -> None:
    """Simulate ESP32 nodes (VL53L8CH + AS7341) publishing frames, with ground truth."""
    if faults not in ("none", "realistic"):
        raise ConfigError(f"--faults {faults!r}: must be none or realistic")
    if fixture not in (None, "empty", "dark", "white"):
        raise ConfigError(f"--fixture {fixture!r}: must be empty, dark or white")
    if not 0.1 <= rate <= 6000:
        raise ConfigError(f"--rate {rate:g}: must be between 0.1 and 6000 trays/min")
    if defect_rate is not None and not 0.0 <= defect_rate <= 0.1:
        raise ConfigError(f"--defect-rate {defect_rate:g}: must be between 0 and 0.1")
    if (count is None) == (duration is None):
        raise ConfigError("give exactly one of --count and --duration")
    if duration is not None and duration <= 0:
        raise ConfigError(f"--duration {duration:g}: must be positive")
    sigma_g = checkweigher_sigma_g(checkweigher, checkweigher_sigma)
    per_device = count if count is not None else max(1, math.floor(rate * (duration or 0) / 60.0))
    url = load_settings(broker=broker).broker
    parse_broker_url(url)
    load_profile(profile).scenarios.get(scenario)  # one line for an unknown one
    start = _start_time(start_time)
    _check_run_fits(start, per_device, rate)
    fleet = build_devices(
        lines, devices, rate, profile, seed, start, faults, fixture,
        defect_rate, scenario, sigma_g,
    )  # fmt: skip
    counters = Counters()
    console = Console(stderr=True)
    total = per_device * len(fleet)
    with contextlib.ExitStack() as stack:
        out: IO[str] | None = None
        if truth is not None:
            try:
                out = stack.enter_context(truth.open("w", encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"--truth {truth}: {exc.strerror}") from None
        progress = stack.enter_context(
            Progress(
                TextColumn("sim"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("trays"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
        )
        task = progress.add_task("sim", total=total)
        try:
            elapsed = asyncio.run(
                run_fleet(
                    fleet,
                    url,
                    per_device,
                    out,
                    counters,
                    lambda c: progress.update(task, completed=c.trays),
                    factory_config,
                )
            )
        except SqalError:
            raise
    table = Table(title=f"sqal sim: {len(fleet)} node(s), profile {profile}, seed {seed}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in (
        ("trays", counters.trays),
        ("messages published", counters.published),
        ("elapsed", f"{elapsed:.1f} s"),
        ("reconnects", counters.reconnects),
        ("lost while disconnected (queue full)", counters.dropped_queue),
        ("configs applied", counters.configs_applied),
        *((f"fault {k}", v) for k, v in sorted(counters.faults.items())),
    ):
        table.add_row(name, str(value))
    Console().print(table)
