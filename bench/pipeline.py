"""End-to-end capacity of one box (issue 8): fleet → Mosquitto → analyzer + ingest → TimescaleDB.

In one run, against a private Mosquitto and PostgreSQL + TimescaleDB:

1. Limits (the denominators): one-hop QoS 1 messages/s (``bench.onehop``, 1.3 KB) and raw
   binary COPY rows/s of ToF, spectral and result rows into the same hypertables
   (``bench.ingest.raw_copy``, the writer's encoders, no idempotency).
2. Sweep: ``python -m app analyzer`` and ``python -m app ingest`` as subprocesses, offered
   loads rising to ``--max-load`` from pre-rendered frames (``bench.load``), ``--repeats``
   times each; per step the figures of ``bench.sweep``. The sustainable capacity is the
   highest load whose every repeat lost nothing and kept the DB p99 under ``--lag-bound-s``.
3. Profile: py-spy on the analyzer and ingest at the capacity (top functions, self and
   inclusive, % of non-idle samples).
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
from bench.pipeline_report import aggregate, plot, pyspy_start, pyspy_top, table  # noqa: E402
from bench.sweep import Rig, run_step  # noqa: E402
from embedded import free_port, start_mosquitto, start_postgres  # noqa: E402
from sqal.mqtt import client_id, paho_client  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
LOADS = (50, 200, 500, 1000, 2000, 4000)
SERVER = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
"""As bench.ingest (the COPY denominator): the disk is not what this box is sized by here."""


def measure_limits(broker_url: str, admin_dsn: str, repeats: int, onehop_n: int,
                   copy_rows: int) -> dict[str, Any]:  # fmt: skip
    """One-hop QoS 1 msg/s and raw COPY rows/s per table: medians and spreads."""
    from bench.ingest import decode_rows, messages, new_db, raw_copy
    from bench.onehop import onehop_rate
    from ingest.batching import DEFAULT_BATCH_ROWS

    def stats(vals: list[float]) -> dict[str, Any]:
        return {"median": round(statistics.median(vals)), "min": round(min(vals)),
                "max": round(max(vals)), "runs": [round(v) for v in vals]}  # fmt: skip

    onehop_rate(broker_url, 2000)  # warm-up
    out = {"onehop_msgs_per_s": stats([onehop_rate(broker_url, onehop_n) for _ in range(repeats)])}
    oh = out["onehop_msgs_per_s"]
    print(
        f"one-hop QoS 1, 1300 B    {oh['median']:>9,} msg/s  (min {oh['min']:,}, max {oh['max']:,})"
    )
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


def profile(rig: Rig, rate: float, seconds: float, folder: Path) -> dict[str, Any]:
    """py-spy on every service while a step at ``rate`` runs."""
    spies = {s.name: (pyspy_start(s.pid, seconds, folder / f"{s.name}.pyspy"), s)
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


def targets(result: dict[str, Any]) -> list[str]:
    lim, steps = result["limits"], [s for s in result["steps"] if s["label"] == "single"]
    cap = result["capacity_per_s"]
    lines = [f"sustainable capacity      {cap:,.0f} samples/s (target >= 2,000)"]
    if lim:
        onehop = lim["onehop_msgs_per_s"]["median"]
        lines.append(f"capacity / one-hop        {cap / onehop:.3f} (samples/s over one-hop "
                     f"{onehop:,} msg/s; target >= 0.15)")  # fmt: skip
        if steps:
            # Per-sample CPU at the busiest step (fixed per-batch costs are spread thinnest
            # there): one core's worth of it is each service's ceiling on this machine.
            top = max(steps, key=lambda s: s["completed_per_s"]["median"])
            cpu = top["cpu_ms_per_sample"]
            a_ms = sum(v for k, v in cpu.items() if k.startswith("analyzer"))
            i_ms = sum(v for k, v in cpu.items() if k.startswith("ingest"))
            raw = lim["copy_mixed_rows_per_s"]["median"]
            ceiling = 3 * 1000.0 / i_ms if i_ms else float("nan")
            lines.append(
                f"ingest ceiling (1 core)   {ceiling:,.0f} rows/s ({i_ms:.2f} ms CPU/sample at "
                f"{top['offered_per_s']:.0f}/s), {ceiling / raw:.2f} x raw COPY {raw:,} rows/s "
                "(target >= 0.7)"
            )
            lines.append(
                f"analyzer ceiling (1 core) {1000.0 / a_ms:,.0f} samples/s ({a_ms:.2f} ms "
                f"CPU/sample at {top['offered_per_s']:.0f}/s)"
            )
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
        if args.profile_s > 0:
            # Profile where it hurts: the first load the pipeline did not sustain, if any.
            failed = [s["offered_per_s"] for s in result["steps"] if not s["sustainable"]]
            at = args.profile_load or (failed[0] if failed else cap or loads[0])
            result["profile"] = prof = profile(rig, at, args.profile_s, args.out)
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
