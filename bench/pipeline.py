"""End-to-end capacity of one box (issue 8): fleet → Mosquitto → analyzer + ingest → TimescaleDB.

In one run, against a private Mosquitto and PostgreSQL + TimescaleDB:

1. Limits (the denominators): one hop of QoS 1 1.3 KB messages through the broker with
   Mosquitto's C clients (the broker's limit) and with paho (the Python client's limit, both
   ``bench.onehop``), and raw binary COPY rows/s of ToF, spectral and result rows into the
   same hypertables (``bench.ingest.raw_copy``, the writer's encoders, no idempotency). Every
   capacity is printed as a ratio of each of the three.
2. Sweep: ``python -m app analyzer`` and ``python -m app ingest`` as subprocesses, offered
   loads rising to ``--max-load`` from pre-rendered frames (``bench.load``), ``--repeats``
   times each; per step the figures of ``bench.sweep``. The sustainable capacity is the
   highest load whose every repeat lost nothing and kept the DB p99 under ``--lag-bound-s``.
3. Profile: py-spy on the analyzer and ingest at the capacity (top functions, self and
   inclusive, % of non-idle samples); skipped with one line when py-spy is not installed.
4. Scale-out: two analyzers split by line filter and two ingest workers sharing
   ``$share/bench/…``, same zero-loss check.

Outputs a table on stdout, ``bench/out/pipeline.json`` and ``bench/out/pipeline.png``.

    python -m bench.pipeline [--max-load 4000] [--step-s 6] [--repeats 3] [--no-scale-out]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # services inherit it: one core each, as deployed

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import psycopg  # noqa: E402

from bench import services  # noqa: E402
from bench.common import cpu_name, git_sha, header  # noqa: E402
from bench.load import Load, Pool, render_pool  # noqa: E402
from bench.pipeline_report import (  # noqa: E402
    aggregate,
    plot,
    pyspy_binary,
    pyspy_start,
    pyspy_top,
    table,
)
from bench.sweep import Rig, run_step  # noqa: E402
from embedded import free_port, start_mosquitto, start_postgres  # noqa: E402
from sqal.mqtt import client_id, paho_client  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
LOADS = (50, 200, 500, 1000, 1500, 2000, 4000)
SERVER = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
"""As bench.ingest (the COPY denominator): the disk is not what this box is sized by here."""


def measure_limits(broker_url: str, admin_dsn: str, repeats: int, onehop_n: int,
                   copy_rows: int) -> dict[str, Any]:  # fmt: skip
    """The three denominators, medians and spreads: the broker's QoS 1 msg/s with Mosquitto's C
    clients, the same hop with paho (``bench.onehop``), and raw COPY rows/s per table."""
    from bench.ingest import decode_rows, messages, new_db, raw_copy
    from bench.onehop import c_client_rate, c_clients_missing, onehop_rate
    from ingest.batching import DEFAULT_BATCH_ROWS

    def stats(vals: list[float]) -> dict[str, Any]:
        return {"median": round(statistics.median(vals)), "min": round(min(vals)),
                "max": round(max(vals)), "runs": [round(v) for v in vals]}  # fmt: skip

    out: dict[str, Any] = {}
    host, port = broker_url.removeprefix("mqtt://").rsplit(":", 1)
    if (missing := c_clients_missing()) is None:
        c_client_rate(host, int(port), 2000)  # warm-up
        runs = [c_client_rate(host, int(port), onehop_n) for _ in range(repeats)]
        out["c_clients_msgs_per_s"] = c = stats(runs)
        print(f"C clients QoS 1, 1300 B  {c['median']:>9,} msg/s  (min {c['min']:,}, "
              f"max {c['max']:,}; mosquitto_pub -l -> mosquitto_sub)")  # fmt: skip
    else:
        print(f"C-client limit skipped: {missing} is not installed (mosquitto-clients)")
    onehop_rate(broker_url, 2000)  # warm-up
    out["onehop_msgs_per_s"] = stats([onehop_rate(broker_url, onehop_n) for _ in range(repeats)])
    oh = out["onehop_msgs_per_s"]
    print(f"paho one-hop QoS 1, 1300 B {oh['median']:>7,} msg/s  (min {oh['min']:,}, "
          f"max {oh['max']:,}; sqal.mqtt, MQTT 5)")  # fmt: skip
    dsn = new_db(admin_dsn, "bench_copy")
    rows = decode_rows(messages(copy_rows))
    subsets = {
        "tof_frames": [r for r in rows if r.table == "tof_frames"],
        "spectral_frames": [r for r in rows if r.table == "spectral_frames"],
        "results": [r for r in rows if r.table == "results"],
        "mixed": rows,
    }
    for name, subset in subsets.items():
        vals = []
        for _ in range(repeats):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE tof_frames, spectral_frames, results")
            vals.append(len(subset) / raw_copy(dsn, subset, DEFAULT_BATCH_ROWS))
        out[f"copy_{name}_rows_per_s"] = s = stats(vals)
        print(f"raw COPY {name:<16}{s['median']:>9,} rows/s (min {s['min']:,}, max {s['max']:,})")
    return out


def publish_configs(broker_url: str, pool: Pool) -> None:
    """Each simulated device's retained config (profile + calibration), as the fleet does."""
    client = paho_client(broker_url, client_id("bench-config"), persistent=False)
    infos = [client.publish(t, p, qos=1, retain=True) for t, p in pool.configs]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def start_single(
    rig: Rig, analyzer_src: Path | None = None, ingest_src: Path | None = None
) -> None:
    rig.analyzers = [services.analyzer("analyzer", rig.broker_url, rig.log_dir, src=analyzer_src)]
    rig.ingests = [services.ingest("ingest", rig.broker_url, rig.dsn, rig.log_dir, src=ingest_src)]
    for s in rig.services:
        s.wait_healthy()


def start_scale_out(rig: Rig, lines: list[str]) -> None:
    """Two analyzers splitting the lines, two ingest workers on one shared subscription."""
    half = (len(lines) + 1) // 2
    groups = [lines[:half], lines[half:]]
    rig.analyzers = [
        services.analyzer(f"analyzer-{i + 1}", rig.broker_url, rig.log_dir, lines=g)
        for i, g in enumerate(groups)
    ]
    rig.ingests = [
        services.ingest(f"ingest-{i + 1}", rig.broker_url, rig.dsn, rig.log_dir, shared="bench")
        for i in range(2)
    ]
    for s in rig.services:
        s.wait_healthy()


def stop_services(rig: Rig) -> None:
    for s in rig.services:
        s.stop()
        services.forget_session(rig.broker_url, s.client_id)
    rig.analyzers, rig.ingests = [], []


def wait_idle(rig: Rig, timeout_s: float = 60.0) -> None:
    """After an overloaded step: let the backlog drain so the next step starts clean."""
    deadline = time.monotonic() + timeout_s
    last = rig.received()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = rig.received()
        if now == last:
            return
        last = now


def sweep(
    rig: Rig, loads: list[float], args: argparse.Namespace, label: str, keep_going: bool = False
) -> list[Any]:
    steps = []
    for rate in loads:
        runs = []
        for _ in range(args.repeats):
            r = run_step(rig, rate, args.step_s, lag_bound_s=args.lag_bound_s, label=label)
            print(
                f"  {label} {rate:.0f}/s: {r['completed']}/{r['samples']} done, "
                f"db p99 {r['latency_db_ms']['p99']} ms, load {r['loadavg_1m']}",
                flush=True,
            )
            runs.append(r)
            if not r["sustainable"]:
                wait_idle(rig)
        step = aggregate(runs)
        steps.append(step)
        print(table([step]).splitlines()[1], flush=True)
        if not step["sustainable"] and not (args.keep_going or keep_going):
            break
    return steps


def profile(rig: Rig, exe: str, rate: float, seconds: float, folder: Path) -> dict[str, Any]:
    """py-spy (``exe``) on every service while a step at ``rate`` runs."""
    spies = {s.name: (pyspy_start(exe, s.pid, seconds, folder / f"{s.name}.pyspy"), s)
             for s in rig.services}  # fmt: skip
    time.sleep(0.5)
    step = run_step(rig, rate, seconds + 1.0, label="profile")
    out: dict[str, Any] = {"offered_per_s": rate, "step": step}
    for name, (proc, _) in spies.items():
        _, err = proc.communicate(timeout=seconds + 30)
        top = pyspy_top(folder / f"{name}.pyspy")
        if not top["samples"]:
            top["error"] = err.decode(errors="replace")[-300:]
        out[name] = top
    return out


def print_profile(prof: dict[str, Any]) -> None:
    for name, top in prof.items():
        if not isinstance(top, dict) or "self" not in top:
            continue
        if not top["samples"]:  # py-spy ran but could not sample (ptrace refused, say)
            print(f"py-spy {name}: no samples ({top.get('error', '').strip() or 'no output'})")
            continue
        print(f"py-spy {name} at {prof['offered_per_s']:.0f} samples/s: "
              f"{top['samples']} samples; top self %")  # fmt: skip
        for f, pct in top["self"][:10]:
            print(f"    {pct:5.1f} %  {f}")
        print("  top inclusive %")
        for f, pct in top["inclusive"][:10]:
            print(f"    {pct:5.1f} %  {f}")


def capacity(steps: list[dict[str, Any]]) -> float:
    ok = [s["offered_per_s"] for s in steps if s["sustainable"]]
    return max(ok) if ok else 0.0


MSGS_PER_SAMPLE = 3
"""A sample is three messages through the broker (ToF and spectral in, its result out) and
three rows (one per table): the unit a samples/s capacity is converted by to be set beside a
msg/s or rows/s denominator."""

DENOMINATORS = (
    ("c_clients_msgs_per_s", "C broker"),
    ("onehop_msgs_per_s", "paho"),
    ("copy_mixed_rows_per_s", "COPY"),
)
"""The limits every capacity is divided by: the broker with Mosquitto's C clients, the Python
client (paho) on the same hop, raw binary COPY of the same rows into the hypertables."""


def ratio_line(name: str, value: str, per_s: float, limits: dict[str, Any], note: str = "") -> str:
    """``name value  x / C broker  y / paho  z / COPY  note``; ``per_s`` in messages (= rows)/s."""
    cells = []
    for key, label in DENOMINATORS:
        den = limits.get(key, {}).get("median")
        cells.append(f"{per_s / den:6.3f} / {label}" if den else f"{'-':>6} / {label}")
    return f"{name:<26}{value:>22}   {'  '.join(cells)}{'  ' + note if note else ''}"


def targets(result: dict[str, Any]) -> list[str]:
    """Every capacity, in its own unit and as a ratio of each denominator (:data:`DENOMINATORS`)."""
    lim, steps = result["limits"], [s for s in result["steps"] if s["label"] == "single"]
    cap, k = result["capacity_per_s"], MSGS_PER_SAMPLE
    lines = []
    if lim:
        dens = [f"{label} {lim[key]['median']:,} {'rows' if 'copy' in key else 'msg'}/s"
                for key, label in DENOMINATORS if key in lim]  # fmt: skip
        lines.append(f"denominators: {', '.join(dens)} (a sample = {k} messages = {k} rows)")
    lines.append(ratio_line("sustainable capacity", f"{cap:,.0f} samples/s", k * cap, lim,
                            "(target >= 2,000 samples/s)"))  # fmt: skip
    if result["scale_out"]:
        out = capacity(result["scale_out"])
        lines.append(ratio_line("scale-out (2 + 2)", f"{out:,.0f} samples/s", k * out, lim))
    if steps:
        # Per-sample CPU at the busiest step (fixed per-batch costs are spread thinnest
        # there): one core's worth of it is each service's ceiling on this machine.
        top = max(steps, key=lambda s: s["completed_per_s"]["median"])
        cpu = top["cpu_ms_per_sample"]
        a_ms = sum(v for kk, v in cpu.items() if kk.startswith("analyzer"))
        i_ms = sum(v for kk, v in cpu.items() if kk.startswith("ingest"))
        at = f"{top['offered_per_s']:.0f}/s"
        if i_ms:
            rows = k * 1000.0 / i_ms
            note = f"({i_ms:.2f} ms CPU/sample at {at}; target >= 0.5 x COPY)"
            lines.append(
                ratio_line("ingest ceiling (1 core)", f"{rows:,.0f} rows/s", rows, lim, note)
            )
        if a_ms:
            samples = 1000.0 / a_ms
            note = f"({a_ms:.2f} ms CPU/sample at {at})"
            value = f"{samples:,.0f} samples/s"
            lines.append(ratio_line("analyzer ceiling (1 core)", value, k * samples, lim, note))
    s200 = [s for s in steps if s["offered_per_s"] == 200]
    if s200 and s200[0]["latency_sub_ms.p99"]:
        lines.append(f"p99 frame -> result       {s200[0]['latency_sub_ms.p99']['median']:.1f} ms "
                     "at 200 samples/s (target <= 20 ms)")  # fmt: skip
    rss = max((v for s in result["steps"] for v in s["rss_mb_max"].values()), default=0.0)
    lines.append(f"max service RSS           {rss:.0f} MB (target <= 200 MB)")
    return lines


def storage_per_sample(dsn: str) -> dict[str, float]:
    """Bytes on disk per stored sample (table + indexes) of each hypertable, for DB sizing."""
    out: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM results").fetchone()
        n = int(row[0]) if row else 0
        for table in ("tof_frames", "spectral_frames", "results"):
            size = conn.execute("SELECT hypertable_size(%s::regclass)", (table,)).fetchone()
            out[table] = round(int(size[0] or 0) / max(n, 1)) if size else 0.0
    return out


def write_outputs(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``pipeline.json`` (everything measured) and ``pipeline.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    doc, png = out / "pipeline.json", out / "pipeline.png"
    doc.write_text(json.dumps(result, indent=1, default=float))
    plot(result["steps"] + result["scale_out"], result["limits"], png)
    return doc, png


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--max-load", type=float, default=4000.0, help="highest offered samples/s")
    ap.add_argument("--loads", default=",".join(map(str, LOADS)), help="offered samples/s steps")
    ap.add_argument("--step-s", type=float, default=6.0, help="seconds per step")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per step (median, spread)")
    ap.add_argument("--lag-bound-s", type=float, default=2.0, help="DB p99 bound for 'sustained'")
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes")
    ap.add_argument("--lines", type=int, default=4)
    ap.add_argument("--devices-per-line", type=int, default=2)
    ap.add_argument("--pool", type=int, default=48, help="rendered samples per device")
    ap.add_argument("--profile-s", type=float, default=8.0, help="py-spy seconds (0: skip)")
    ap.add_argument("--profile-load", type=float, default=0.0, help="samples/s while profiling")
    ap.add_argument("--no-limits", action="store_true", help="skip the one-hop/COPY limits")
    ap.add_argument("--no-scale-out", action="store_true", help="skip the scale-out steps")
    ap.add_argument("--keep-going", action="store_true", help="sweep past a failing step")
    ap.add_argument("--onehop-messages", type=int, default=20_000)
    ap.add_argument("--copy-rows", type=int, default=30_000)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--analyzer-src", type=Path, help="folder with a patched analyzer/ (A/B)")
    ap.add_argument("--ingest-src", type=Path, help="folder with a patched ingest/ (A/B)")
    args = ap.parse_args(argv)
    loads = [float(x) for x in args.loads.split(",") if float(x) <= args.max_load]
    print(header("pipeline"))
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="sqal-bench-pipeline-"))
    folder.chmod(0o755)
    pg = start_postgres(folder / "pg", free_port(), extra_settings=SERVER)
    mq = start_mosquitto(folder / "mqtt", free_port())
    load: Load | None = None
    rig: Rig | None = None
    result: dict[str, Any] = {
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "git": git_sha(),
            "loadavg_before": os.getloadavg(),
        },
        "command": " ".join(["python -m bench.pipeline", *(argv or sys.argv[1:])]),
        "limits": {},
        "steps": [],
        "scale_out": [],
        "profile": None,
    }
    try:
        if not args.no_limits:
            result["limits"] = measure_limits(mq.url, pg.dsn("postgres"), args.repeats,
                                              args.onehop_messages, args.copy_rows)  # fmt: skip
        from bench.ingest import new_db

        dsn = new_db(pg.dsn("postgres"), "bench_pipeline")
        pool = render_pool(args.lines, args.devices_per_line, args.pool)
        publish_configs(mq.url, pool)
        load = Load(pool, args.publishers)
        load.connect(mq.url)
        rig = Rig(mq.url, mq.process.pid, dsn, pg.process.pid, load, args.out / "logs")
        start_single(rig, args.analyzer_src, args.ingest_src)
        run_step(rig, 50, 2.0, label="warmup")
        print(table([]))
        result["steps"] = sweep(rig, loads, args, "single")
        cap = capacity(result["steps"])
        result["capacity_per_s"] = cap
        spy = pyspy_binary()
        if args.profile_s > 0 and spy is None:
            print("profile skipped: py-spy is not installed (it comes with the dev extra: "
                  "make setup, or pip install -c constraints.txt -e '.[dev]')")  # fmt: skip
        elif args.profile_s > 0 and spy is not None:
            # Profile where it hurts: the first load the pipeline did not sustain, if any.
            failed = [s["offered_per_s"] for s in result["steps"] if not s["sustainable"]]
            at = args.profile_load or (failed[0] if failed else cap or loads[0])
            result["profile"] = prof = profile(rig, spy, at, args.profile_s, args.out)
            print_profile(prof)
        if not args.no_scale_out:
            stop_services(rig)
            start_scale_out(rig, pool.lines)
            run_step(rig, 50, 2.0, label="warmup")
            # The single-process capacity and the next load up: does splitting carry it?
            at_cap = [x for x in loads if x >= cap][:1] if cap else loads[:1]
            above = [x for x in loads if x > (at_cap or [0.0])[0]][:1]
            result["scale_out"] = sweep(rig, at_cap + above, args, "scale-out", keep_going=True)
        result["storage_bytes_per_sample"] = sb = storage_per_sample(dsn)
        print(f"stored per sample        {sum(sb.values()):,.0f} B on disk ({sb})")
    finally:
        if rig is not None:
            for s in rig.services:
                s.stop()
        if load is not None:
            load.close()
        mq.stop()
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    write_outputs(result, args.out)
    print(table(result["steps"] + result["scale_out"]))
    for line in targets(result):
        print(line)
    print(f"wrote {args.out / 'pipeline.json'}, {args.out / 'pipeline.png'} "
          f"in {result['elapsed_s']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
