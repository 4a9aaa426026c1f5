"""The pipeline benchmark's outputs: step aggregation, the stdout table, the PNG, py-spy tops."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def _get(d: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        d = d.get(key) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread (min, max) over the repeats of one offered load."""
    fields = [
        "completed_per_s", "latency_sub_ms.p50", "latency_sub_ms.p99", "latency_db_ms.p50",
        "latency_db_ms.p99", "drain_s", "publish_late_p99_ms", "offered_achieved_per_s",
    ]  # fmt: skip
    first = runs[0]
    out: dict[str, Any] = {
        "label": first["label"],
        "offered_per_s": first["offered_per_s"],
        "repeats": len(runs),
        "lost_total": sum(r["lost"] for r in runs),
        # Loss is never excused; lag is judged by the majority of repeats, since other work on
        # the machine can stall one repeat (see loadavg_1m and publish_late_p99_ms per run).
        "zero_loss": all(r["zero_loss"] for r in runs),
        "bounded_lag": 2 * sum(r["bounded_lag"] for r in runs) > len(runs),
    }
    out["sustainable"] = out["zero_loss"] and out["bounded_lag"]
    for f in fields:
        vals = [v for r in runs if (v := _get(r, f)) is not None]
        out[f] = (
            {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
            if vals
            else None
        )
    for group in ("cpu_ms_per_sample", "rss_mb_max", "queue_max"):
        keys = sorted({k for r in runs for k in r[group]})
        out[group] = {k: statistics.median(r[group].get(k, 0.0) for r in runs) for k in keys}
    out["runs"] = runs
    return out


def _m(x: dict[str, float] | None, fmt: str = "{:.0f}") -> str:
    if x is None:
        return "-"
    med = fmt.format(x["median"])
    if x["max"] == x["min"]:
        return med
    return f"{med} ({fmt.format(x['min'])}-{fmt.format(x['max'])})"


def table(steps: list[dict[str, Any]]) -> str:
    """One line per offered load: medians with (min-max) over repeats."""
    head = (
        f"{'step':<10}{'offered/s':>10}{'done/s':>20}{'lost':>6}{'sub p50 ms':>24}"
        f"{'sub p99 ms':>24}{'db p50 ms':>20}{'db p99 ms':>22}"
        "  cpu ms/sample a|i|mq|pg|gen   RSS MB a|i  queue a|i  verdict"
    )
    lines = [head]
    for s in steps:
        cpu = s["cpu_ms_per_sample"]
        rss = s["rss_mb_max"]
        q = s["queue_max"]
        a_cpu = sum(v for k, v in cpu.items() if k.startswith("analyzer"))
        i_cpu = sum(v for k, v in cpu.items() if k.startswith("ingest"))
        gen = cpu.get("publishers", 0.0) + cpu.get("tap", 0.0)  # the bench's own load generator
        a_rss = max((v for k, v in rss.items() if k.startswith("analyzer")), default=0.0)
        i_rss = max((v for k, v in rss.items() if k.startswith("ingest")), default=0.0)
        verdict = "ok" if s["sustainable"] else ("LOSS" if not s["zero_loss"] else "lag")
        lines.append(
            f"{s['label']:<10}{s['offered_per_s']:>10.0f}{_m(s['completed_per_s']):>20}"
            f"{s['lost_total']:>6}{_m(s['latency_sub_ms.p50'], '{:.1f}'):>24}"
            f"{_m(s['latency_sub_ms.p99'], '{:.1f}'):>24}"
            f"{_m(s['latency_db_ms.p50']):>20}{_m(s['latency_db_ms.p99']):>22}"
            f"  {a_cpu:5.2f}|{i_cpu:5.2f}|{cpu.get('mosquitto', 0):4.2f}|"
            f"{cpu.get('postgres', 0):4.2f}|{gen:4.2f}    {a_rss:4.0f}|{i_rss:4.0f}"
            f"  {q.get('analyzer', 0):4.0f}|{q.get('ingest', 0):4.0f}  {verdict}"
        )
    return "\n".join(lines)


def plot(steps: list[dict[str, Any]], limits: dict[str, Any], path: Path) -> None:
    """Throughput vs offered load, and latency percentiles vs offered load (log axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = [s for s in steps if s["label"] == "single"]
    if not single:
        return
    x = np.array([s["offered_per_s"] for s in single])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))

    def series(key: str) -> tuple[np.ndarray, np.ndarray]:
        med = np.array([s[key]["median"] if s[key] else np.nan for s in single])
        err = np.array(
            [[s[key]["median"] - s[key]["min"], s[key]["max"] - s[key]["median"]]
             if s[key] else [0, 0] for s in single]
        ).T  # fmt: skip
        return med, err

    med, err = series("completed_per_s")
    ax1.errorbar(x, med, yerr=err, marker="o", label="completed (result row in DB)")
    ax1.plot(x, x, "k--", lw=0.8, label="offered")
    onehop = limits.get("onehop_msgs_per_s", {}).get("median")
    if onehop:
        ax1.axhline(onehop / 2, color="tab:red", lw=0.8, label="one-hop QoS 1 limit / 2 frames")
    for s in single:
        if not s["sustainable"]:
            verdict = "loss" if not s["zero_loss"] else "lag"
            ax1.annotate(verdict, (s["offered_per_s"], s["completed_per_s"]["median"]))
    ax1.set(xscale="log", yscale="log", xlabel="offered samples/s", ylabel="samples/s",
            title="Throughput")  # fmt: skip
    ax1.legend(fontsize=8)
    for key, style in (
        ("latency_sub_ms.p50", "o-"), ("latency_sub_ms.p99", "o--"),
        ("latency_db_ms.p50", "s-"), ("latency_db_ms.p99", "s--"),
    ):  # fmt: skip
        med, err = series(key)
        ax2.errorbar(x, med, yerr=err, fmt=style, label=key.replace("latency_", ""))
    ax2.axhline(20, color="grey", lw=0.8, label="20 ms target (p99 at 200/s)")
    ax2.set(xscale="log", yscale="log", xlabel="offered samples/s", ylabel="ms",
            title="Last frame published -> result")  # fmt: skip
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pyspy_binary() -> str | None:
    """The ``py-spy`` executable: the dev extra's, beside this interpreter, else on ``PATH``.

    None when neither exists (a venv set up without the dev extra): the profile step is then
    skipped with one line saying so, never a traceback.
    """
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def pyspy_start(
    exe: str, pid: int, seconds: float, out: Path, rate_hz: int = 100
) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``pid`` in raw (collapsed stack) format, not pausing the target."""
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate",
           str(rate_hz), "--format", "raw", "--nonblocking", "--output", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _func(frame: str) -> str:
    """``name (path:line)`` → ``name (file.py)``: one entry per function, any line."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


WAITING = (
    "Client._loop (mqtt/client.py)",  # paho's network thread blocked in select()
    "Condition.wait (threading.py)",
    "Event.wait (threading.py)",
    "Connection.wait (psycopg/connection.py)",  # waiting for the server
    "EpollSelector.select (selectors.py)",
    "PollSelector.select (selectors.py)",
)
"""Own-time frames that are a thread waiting (py-spy shows Python frames only, so the native
``select``/``poll`` under them is attributed here). Excluded from the busy total."""
OWN_CODE = ("analyzer/", "ingest/", "storage/", "wire/", "sqal/", "mqtt/", "psycopg/", "pydantic/")


def pyspy_top(path: Path, n: int = 12) -> dict[str, Any]:
    """Top functions by own (self) and inclusive share of the busy (non-waiting) samples.

    Inclusive shares list only frames of SQAL's packages and its MQTT / database / model
    libraries: the CLI and thread entry frames above them would fill the list at ~100 %.
    """
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = waiting = 0
    if not path.exists():
        return {"samples": 0, "waiting_share": None, "self": [], "inclusive": []}
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [_func(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        if frames[-1] in WAITING:
            waiting += count
            continue
        own[frames[-1]] += count
        for f in set(frames):
            entry = any(x in f for x in ("command.py", "cli.py", "__main__.py"))
            if not entry and any(f"({p}" in f or f"/{p}" in f for p in OWN_CODE):
                incl[f] += count
    busy = max(total - waiting, 1)
    return {
        "samples": total,
        "waiting_share": round(waiting / max(total, 1), 3),
        "self": [(f, round(100.0 * c / busy, 1)) for f, c in own.most_common(n)],
        "inclusive": [(f, round(100.0 * c / busy, 1)) for f, c in incl.most_common(n)],
    }
