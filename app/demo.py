"""``sqal demo``: the whole pipeline on this machine, from one command.

Brings up the embedded broker and database (reusing them if they already run under the data
directory), migrates, starts the analyzer, ingest and a simulated fleet as child processes of
the ``sqal`` CLI, shows a live summary, and at the end prints the evaluation against the
simulator's ground truth, where the data lives and example queries. Every process it started is
stopped by PID, on Ctrl-C too; the data stays.

Only the CLI runs the parts: this module starts ``python -m app <command>`` processes and
reads the broker and the database, so it imports none of the other packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import numpy as np
import psycopg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from embedded import free_port, port_is_free, stack
from embedded.process import ServiceProcess
from sqal.errors import ServiceError, SqalError
from sqal.mqtt import aiomqtt_client, client_id
from sqal.settings import DEFAULT_MQTT_PORT, DEFAULT_PG_PORT
from sqal.wire import DEAD_LETTERS, Kind, is_dead_letter_topic, kind_of, subscription

GRAFANA_DIR = Path(__file__).resolve().parent.parent / "grafana"
"""Provisioning and dashboards of a checkout, mounted by the Grafana command the demo prints."""
GRAFANA_IMAGE = "grafana/grafana-oss:11.6.0"
"""The image compose.yaml runs."""

DRAIN_QUIET_S = 3.0
"""After the fleet stops, wait until no result came for this long (the last joins time out)."""
DRAIN_MAX_S = 30.0

EXAMPLE_QUERIES = (
    "SELECT final_grade, count(*) FROM results GROUP BY 1 ORDER BY 1;",
    "SELECT time_bucket('1 minute', ts) AS minute, line_id, avg(final_score) "
    "FROM results GROUP BY 1, 2 ORDER BY 1 DESC LIMIT 10;",
    "SELECT decision, count(*) FROM results GROUP BY 1 ORDER BY 1;",
    "SELECT device_id, sample_id, final_grade, decision, p_reject, p_defects FROM results "
    "WHERE decision IN ('HOLD', 'REJECT') ORDER BY ts DESC LIMIT 10;",
)


@dataclass
class DemoOptions:
    data_dir: Path
    duration_s: float = 30.0
    lines: int = 2
    devices: int = 3
    rate_per_min: float = 60.0
    profile: str = "foie_gras_lobe_400g"
    seed: int | None = None
    faults: str = "realistic"
    scenario: str = "production"
    mqtt_port: int | None = None
    pg_port: int | None = None


@dataclass
class DemoState:
    """What the summary shows, updated from the broker and the database."""

    started: float = field(default_factory=time.monotonic)
    results: int = 0
    grades: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    frames: int = 0
    db_rows: int = 0
    last_result: float = 0.0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    frame_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=2000))

    def rate(self) -> float:
        now = time.monotonic()
        return sum(1 for t in self.recent if now - t <= 5.0) / 5.0


def _pick_port(wanted: int | None, default: int) -> int:
    if wanted is not None:
        return wanted
    return default if port_is_free(default) else free_port()


def _spawn(name: str, args: list[str], logs: Path) -> ServiceProcess:
    logs.mkdir(parents=True, exist_ok=True)
    out = (logs / f"{name}.log").open("ab")
    popen = subprocess.Popen(
        [sys.executable, "-m", "app", *args],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    return ServiceProcess("sqal", popen.pid, signal.SIGTERM, popen)


def _run_sqal(args: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          check=False, env={**os.environ, **(env or {})})  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise ServiceError(f"sqal {args[0]} {args[1] if len(args) > 1 else ''}: {last}")
    return done.stdout


def _table(live: DemoState, opts: DemoOptions, phase: str) -> Table:
    t = Table(title=f"SQAL demo: {phase}", show_header=False, min_width=60)
    elapsed = time.monotonic() - live.started
    total = max(live.results, 1)
    lat = np.percentile(list(live.latencies_ms), [50, 99]) if live.latencies_ms else (0.0, 0.0)
    mix = "  ".join(f"{g} {100 * live.grades[g] / total:4.1f}%" for g in ("A", "B", "C", "REJECT"))
    t.add_row("elapsed", f"{elapsed:5.1f} s of ~{opts.duration_s:g} s")
    t.add_row("fleet", f"{opts.lines} lines x {opts.devices} devices at {opts.rate_per_min:g}/min")
    t.add_row("samples/s", f"{live.rate():.1f}")
    t.add_row("results", f"{live.results:,}")
    t.add_row("grade mix", mix)
    t.add_row(
        "decisions",
        "  ".join(
            f"{d} {100 * live.decisions[d] / total:4.1f}%" for d in ("PASS", "HOLD", "REJECT")
        ),
    )
    t.add_row("frame → result", f"p50 {lat[0]:.1f} ms   p99 {lat[1]:.1f} ms")
    t.add_row("dead letters", ", ".join(f"{k} {v}" for k, v in live.dead.items()) or "0")
    t.add_row("result rows in DB", f"{live.db_rows:,}")
    return t


def _line(live: DemoState, phase: str) -> str:
    total = max(live.results, 1)
    lat = np.percentile(list(live.latencies_ms), [50, 99]) if live.latencies_ms else (0.0, 0.0)
    return (
        f"{phase}: {time.monotonic() - live.started:5.1f} s  {live.rate():5.1f} samples/s  "
        f"results {live.results}  A/B/C/REJECT "
        + "{}/{}/{}/{}".format(*(live.grades[g] for g in ("A", "B", "C", "REJECT")))
        + "  PASS/HOLD/REJECT "
        + "{}/{}/{}".format(*(live.decisions[d] for d in ("PASS", "HOLD", "REJECT")))
        + f"  hold {100 * live.decisions['HOLD'] / total:.1f} %  "
        f"latency p50 {lat[0]:.1f} p99 {lat[1]:.1f} ms  dead {sum(live.dead.values())}  "
        f"db rows {live.db_rows}"
    )


async def _watch(broker: str, live: DemoState, stop: asyncio.Event) -> None:
    """Follow frames, results and dead letters; latency = result arrival - last frame arrival."""
    async with aiomqtt_client(broker, client_id("sqal-demo")) as client:
        for flt in (*(subscription(k) for k in (Kind.TOF, Kind.SPECTRAL, Kind.RESULT)),
                    DEAD_LETTERS):  # fmt: skip
            await client.subscribe(flt, qos=0)
        async for msg in _until(client, stop):
            now = time.monotonic()
            topic = str(msg.topic)
            payload = msg.payload if isinstance(msg.payload, bytes) else b""
            kind = kind_of(topic)
            if is_dead_letter_topic(topic):
                with contextlib.suppress(ValueError, AttributeError):
                    live.dead[json.loads(payload).get("reason", "?")] += 1
                continue
            try:
                doc = json.loads(payload)
                key = (str(doc["device_id"]), str(doc["sample_id"]))
            except (ValueError, KeyError, TypeError):
                continue
            if kind in (Kind.TOF, Kind.SPECTRAL):
                live.frames += 1
                live.frame_seen[key] = now
            elif kind is Kind.RESULT:
                live.results += 1
                live.last_result = now
                live.recent.append(now)
                fusion = doc.get("fusion", {})
                live.grades[str(fusion.get("final_grade", "?"))] += 1
                live.decisions[str(fusion.get("decision", "?"))] += 1
                seen = live.frame_seen.pop(key, None)
                if seen is not None:
                    live.latencies_ms.append((now - seen) * 1000.0)


async def _until(client: aiomqtt.Client, stop: asyncio.Event) -> Any:
    it = aiter(client.messages)
    stopper = asyncio.create_task(stop.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if nxt in done:
                yield nxt.result()
            else:
                nxt.cancel()
                return
    finally:
        stopper.cancel()


def _count_results(dsn: str) -> int:
    """Result rows stored so far (-1 while the database does not answer)."""
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM results").fetchone()
    except psycopg.Error:
        return -1
    return int(row[0]) if row else 0


async def _drive(opts: DemoOptions, broker: str, dsn: str, sim: ServiceProcess,
                 console: Console, rows_before: int) -> DemoState:  # fmt: skip
    live = DemoState()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(broker, live, stop))
    phase = "running"
    last_line = 0.0
    with Live(_table(live, opts, phase), console=console, refresh_per_second=2,
              transient=not console.is_terminal) as screen:  # fmt: skip
        try:
            while True:
                await asyncio.sleep(0.5)
                if not console.is_terminal and time.monotonic() - last_line >= 5.0:
                    console.print(_line(live, phase), soft_wrap=True)  # a log, not a screen
                    last_line = time.monotonic()
                live.db_rows = await asyncio.to_thread(_count_results, dsn) - rows_before
                if phase == "running" and not sim.alive():
                    phase, drain_from = "draining", time.monotonic()
                if phase == "draining":
                    quiet = time.monotonic() - max(live.last_result, drain_from)
                    if quiet >= DRAIN_QUIET_S or time.monotonic() - drain_from > DRAIN_MAX_S:
                        break
                if watcher.done():
                    watcher.result()
                screen.update(_table(live, opts, phase))
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watcher
        live.db_rows = _count_results(dsn) - rows_before
        screen.update(_table(live, opts, "done"))
    return live


def run_demo(opts: DemoOptions, console: Console) -> dict[str, Any]:
    """Run the demo; returns the evaluation summary (also printed).

    Raises:
        SqalError: a service would not start, or a step failed.
    """
    data_dir = opts.data_dir.resolve()
    before = {r.name for r, ok in stack.status(data_dir) if ok}
    mqtt_port = _pick_port(opts.mqtt_port, DEFAULT_MQTT_PORT)
    pg_port = _pick_port(opts.pg_port, DEFAULT_PG_PORT)
    running = {r.name: r for r in stack.up(data_dir, mqtt_port, pg_port)}
    broker, dsn = running["mosquitto"].url, running["postgres"].url
    started_here = [r for name, r in running.items() if name not in before]
    seed = opts.seed if opts.seed is not None else int(time.time()) % 1_000_000
    console.print(f"broker {broker}   database {dsn}   seed {seed}")
    since = datetime.now(UTC)
    run_dir = data_dir / "demo" / time.strftime("%Y%m%dT%H%M%S")
    logs = run_dir / "logs"
    truth = run_dir / "truth.jsonl"
    children: list[ServiceProcess] = []
    try:
        _run_sqal(["db", "migrate", "--db", dsn])
        analyzer_args = ["analyzer", "--broker", broker, "--profile", opts.profile,
                         "--metrics-port", "0"]  # fmt: skip
        children.append(_spawn("analyzer", analyzer_args, logs))
        ingest_args = ["ingest", "--broker", broker, "--db", dsn, "--metrics-port", "0"]
        children.append(_spawn("ingest", ingest_args, logs))
        _start_station(broker, dsn, data_dir, logs, children, console)
        time.sleep(1.0)  # let both subscribe before the fleet's first tray
        for child in children:
            if not child.alive():
                raise ServiceError(f"a service exited at start; see {logs}")
        sim = _spawn("sim", [
            "sim", "--broker", broker, "--lines", str(opts.lines), "--devices", str(opts.devices),
            "--rate", f"{opts.rate_per_min:g}", "--duration", f"{opts.duration_s:g}",
            "--profile", opts.profile, "--seed", str(seed), "--truth", str(truth),
            "--faults", opts.faults, "--scenario", opts.scenario,
        ], logs)  # fmt: skip
        children.append(sim)
        asyncio.run(_drive(opts, broker, dsn, sim, console, _count_results(dsn)))
        for child in children:
            child.stop()
        eval_args = ["eval", "--truth", str(truth), "--db", dsn, "--since", since.isoformat()]
        report = json.loads(_run_sqal([*eval_args, "--json"]))
        until = datetime.now(UTC)
        steps = NextSteps(data_dir, run_dir, mqtt_port=running["mosquitto"].port,
                          pg_port=running["postgres"].port, dsn=dsn,
                          lines=_demo_lines(dsn, since), since=since, until=until,
                          grafana_dir=GRAFANA_DIR if GRAFANA_DIR.is_dir() else None,
                          stop_after=bool(started_here))  # fmt: skip
        _print_end(console, _run_sqal(eval_args), data_dir, truth, logs, steps)
        return dict(report)
    finally:
        for child in children:
            child.stop()
        for r in started_here:
            ServiceProcess(r.name, r.pid, stack.STOP_SIGNALS[r.name]).stop()
        if started_here:
            stack.forget(data_dir, [r.name for r in started_here])


DEMO_USER = "demo"
STATION_PORT = 8080


def _start_station(broker: str, dsn: str, data_dir: Path, logs: Path,
                   children: list[ServiceProcess], console: Console) -> None:  # fmt: skip
    """Start ``sqal station`` (8080, or a free port) with a ``demo`` user of the quality role
    and a fresh password; print where to sign in."""
    password = secrets.token_urlsafe(9)
    _run_sqal(["station", "user", "add", DEMO_USER, "--role", "quality", "--db", dsn],
              env={"SQAL_STATION_PASSWORD": password})  # fmt: skip
    port = _pick_port(None, STATION_PORT)
    args = ["station", "--broker", broker, "--db", dsn, "--port", str(port),
            "--data-dir", str(data_dir), "--client-id", f"sqal-station-demo-{port}"]  # fmt: skip
    children.append(_spawn("station", args, logs))
    url = f"http://127.0.0.1:{port}"
    console.print(f"station {url}   sign in as {DEMO_USER} / {password}", markup=False,
                  highlight=False, soft_wrap=True)  # fmt: skip


def _demo_lines(dsn: str, since: datetime) -> list[str]:
    """The line ids the demo's fleet produced results for (from the database)."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT DISTINCT line_id FROM results WHERE ts >= %s ORDER BY 1", (since,)
        ).fetchall()
    return [str(r[0]) for r in rows]


@dataclass(frozen=True)
class NextSteps:
    """What the demo used, for the commands it prints at the end (all of them runnable as is).

    Attributes:
        stop_after: the demo started the broker and the database and stops them at exit, so
            the commands start with ``sqal services up`` on the same ports and data.
        grafana_dir: the repository's ``grafana/`` folder, when this is a checkout.
    """

    data_dir: Path
    run_dir: Path
    mqtt_port: int
    pg_port: int
    dsn: str
    lines: list[str]
    since: datetime
    until: datetime
    grafana_dir: Path | None
    stop_after: bool

    def commands(self) -> list[str]:
        """The next steps, one shell command (or comment) a line."""
        data = shlex.quote(str(self.data_dir))
        ports = f"--mqtt-port {self.mqtt_port} --pg-port {self.pg_port}"
        up = f"sqal services up --data-dir {data} {ports}"
        why = "with this run's data" if self.stop_after else "still running: the demo found them up"
        out = [f"{up}    # the broker and the database, {why}"]
        if self.lines:
            first = self.lines[0]
            pdf = shlex.quote(str(self.run_dir / f"shift-{first}.pdf"))
            # Whole seconds, the end rounded up: the run's every result falls in the window.
            since = self.since.replace(microsecond=0).isoformat()
            until = (self.until.replace(microsecond=0) + timedelta(seconds=1)).isoformat()
            out.append(
                f"sqal report --line {first} --db {self.dsn} --since {since} --until {until} "
                f"--out {pdf}"
            )
            if len(self.lines) > 1:
                out.append(f"    # the other lines: --line {', '.join(self.lines[1:])}")
        out.append(
            f"sqal station --broker mqtt://127.0.0.1:{self.mqtt_port} --db {self.dsn} "
            f"--data-dir {data}    # the web station again, http://127.0.0.1:8080 (user demo)"
        )
        out.append(f"psql {self.dsn}")
        if self.grafana_dir is not None:
            g = self.grafana_dir
            out += [
                f"psql {self.dsn} -c 'CREATE ROLE grafana LOGIN IN ROLE sqal_reader'    # once",
                "docker run --rm --network host -e PG_HOST=127.0.0.1:"
                f"{self.pg_port} -e PG_DATABASE={urlsplit(self.dsn).path.lstrip('/')} "
                "-e PG_READER_USER=grafana -e PG_READER_PASSWORD=trusted -e PG_SSLMODE=disable "
                f"-v {shlex.quote(str(g / 'provisioning'))}:/etc/grafana/provisioning:ro "
                f"-v {shlex.quote(str(g / 'dashboards'))}:/var/lib/grafana/dashboards/sqal:ro "
                f"{GRAFANA_IMAGE}    # then http://127.0.0.1:3000, admin/admin, folder SQAL",
            ]
        out.append(f"sqal services down --data-dir {data}")
        return out


def _print_end(console: Console, evaluation: str, data_dir: Path, truth: Path, logs: Path,
               steps: NextSteps) -> None:  # fmt: skip
    def say(text: str = "") -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    say()
    say("sqal eval against the simulator's ground truth:")
    say(evaluation.rstrip())
    say()
    say(f"data:   {data_dir} (broker persistence, database cluster)")
    say(f"truth:  {truth}")
    say(f"logs:   {logs}")
    say("next:")
    for command in steps.commands():
        say(f"  {command}")
    say("queries (in psql):")
    for q in EXAMPLE_QUERIES:
        say(f"  {q}")


__all__ = ["DemoOptions", "SqalError", "run_demo"]
