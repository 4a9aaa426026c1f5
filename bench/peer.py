"""``sqal ingest`` beside a peer users pick for the job: a Node-RED flow (issue 21 item 3).

Both drain the same backlog of ToF frames (8×8, ~2 KB, 16 devices on 2 lines) queued at a
private Mosquitto for their persistent sessions (QoS 1), into ``tof_frames`` of their own
migrated database on a private PostgreSQL + TimescaleDB. The flow is :mod:`bench.nodered`'s:
``mqtt in`` → ``join`` of 500 / 0.2 s → one multi-row ``INSERT … ON CONFLICT DO NOTHING``.

1. Drain, ``--repeats`` alternating runs (Node-RED first in odd runs, SQAL first in even ones):
   rows/s from the first stored row to the last, CPU s of the consumer and of PostgreSQL over
   that time, peak RSS (``VmHWM``), start-up s (process start to the first row).
2. Loss on kill -9: SIGKILL once a quarter of the backlog is stored, restart, wait until rows
   stop coming; frames published minus frames stored.
3. Bad input: one malformed frame (valid JSON, an 8×8 frame one zone short, which the table's
   ``CHECK`` refuses) among ``--bad-among`` good ones: what is stored, what is lost, where the
   bad one went.

Node-RED comes from npm into a temporary folder (:func:`bench.nodered.install`); without node or
npm, or when the install fails, the bench prints one line and exits 0.

With ``--workers N`` (2 by default) a third consumer, ``sqal ingest --workers N`` (its own
database and sessions), runs beside them: N processes on one shared group, the way one command
uses more than one core; its CPU and RSS are those of all its processes.

    python -m bench.peer [--frames 20000] [--repeats 3] [--bad-among 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from bench import nodered, services
from bench.common import header
from bench.ingest import SERVER, new_db, publish
from embedded import free_port, start_mosquitto, start_postgres
from embedded.process import ServiceProcess
from ingest.command import worker_client_ids
from sqal.wire import Kind, device_topic, encode
from tests.test_ingest_frames import tof_frame

SETTLE_S = 4.0
"""No new row for this long after the last one: a consumer is done (or has lost the rest)."""


FIRST_ROW_S = 60.0
"""A consumer that stores nothing for this long after its start is broken, not slow."""


class Consumer(Protocol):
    name: str
    dsn: str

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...
    def reset_session(self) -> None: ...
    @property
    def pid(self) -> int: ...


@dataclass
class SqalIngest:
    """``python -m app ingest`` with a fixed client id (so its session outlives it)."""

    name: str
    dsn: str
    broker_url: str
    log_dir: Path
    workers: int = 1
    service: services.Service | None = None

    def start(self) -> None:
        self.service = services.ingest(
            f"peer-{self.name.replace(' ', '')}", self.broker_url, self.dsn, self.log_dir,
            workers=self.workers,
        )  # fmt: skip
        self.service.wait_healthy()

    @property
    def pid(self) -> int:
        assert self.service is not None
        return self.service.pid

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()

    def kill(self) -> None:
        """SIGKILL, to the workers too: a crash of the whole command, not a stop."""
        if self.service is not None:
            for pid in services.children(self.pid):
                os.kill(pid, signal.SIGKILL)
            ServiceProcess(self.name, self.pid, signal.SIGTERM, self.service.proc).kill()

    def reset_session(self) -> None:
        """Drop the session and what it queued, then subscribe afresh (start once, stop)."""
        if self.service is not None:
            for cid in worker_client_ids(self.service.client_id, self.workers):
                services.forget_session(self.broker_url, cid)
        self.start()
        self.stop()


@dataclass
class NodeRedFlow:
    """The Node-RED flow, with its own client id and port."""

    name: str
    dsn: str
    red: nodered.NodeRed
    broker_port: int
    client_id: str

    def start(self) -> None:
        self.red.start()

    @property
    def pid(self) -> int:
        return self.red.pid

    def stop(self) -> None:
        self.red.stop()

    def kill(self) -> None:
        self.red.kill()

    def reset_session(self) -> None:
        """Drop the session and what it queued, then subscribe afresh."""
        nodered_session(self.broker_port, self.client_id, clean=True)
        nodered_session(self.broker_port, self.client_id)


def tof_messages(n: int, seed: int = 21) -> list[tuple[str, bytes]]:
    """n ToF frames of 16 devices on 2 lines, as ``(topic, payload)``."""
    rng = np.random.default_rng(seed)
    out = []
    for seq in range(n):
        dev, line = f"dev-{seq % 16:02d}", f"line-{seq % 2}"
        out.append((device_topic(line, dev, Kind.TOF), encode(tof_frame(dev, seq, rng))))
    return out


def one_zone_short(payload: bytes, seq: int) -> bytes:
    """The frame re-numbered to ``seq`` with one zone fewer in its fourth row: valid JSON, a
    plausible frame to a flow that does not check it, refused by ``tof_frames``' CHECK."""
    doc = json.loads(payload)
    doc["seq"] = seq
    doc["sample_id"] = doc["sample_id"][:-8] + f"{seq:08d}"
    doc["distance_mm"][3].pop()
    return json.dumps(doc, separators=(",", ":")).encode()


def nodered_session(port: int, cid: str, clean: bool = False) -> None:
    """The persistent session Node-RED's broker node will resume (MQTT 3.1.1, clean false);
    with ``clean``, the end of any session under ``cid``."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv311,
                    clean_session=clean)  # fmt: skip
    c.connect("127.0.0.1", port)
    c.loop_start()
    if not clean:
        c.subscribe(nodered.TOF_FILTER, qos=1)
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()


class Rows:
    """``count(*)`` of a consumer's ``tof_frames``, and PostgreSQL's CPU, polled."""

    def __init__(self, dsn: str, pg_pid: int) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pg_pid = pg_pid

    def count(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM tof_frames").fetchone()
        return int(row[0]) if row else 0

    def reset(self) -> None:
        self.conn.execute("TRUNCATE tof_frames, dead_letters")

    def dead_letters(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        return int(row[0]) if row else 0

    def stored(self, sample_id: str) -> bool:
        q = "SELECT 1 FROM tof_frames WHERE sample_id = %s"
        return self.conn.execute(q, (sample_id,)).fetchone() is not None

    def close(self) -> None:
        self.conn.close()


def wait_rows(rows: Rows, until: Callable[[int], bool], timeout_s: float = 300.0,
              settle_s: float = SETTLE_S) -> dict[str, Any]:  # fmt: skip
    """Poll every 0.1 s until ``until(count)`` or no new row for ``settle_s`` after the first.

    Returns the times (monotonic) of the first row and of the last change, and the count.
    """
    start = time.monotonic()
    first = last_change = None
    last = 0
    while time.monotonic() - start < timeout_s:
        n = rows.count()
        now = time.monotonic()
        if n != last:
            first = first or now
            last_change, last = now, n
        if until(n) or (last_change is not None and now - last_change > settle_s):
            break
        time.sleep(0.1)
    return {"first": first, "last": last_change, "count": last, "start": start}


def drain(c: Consumer, rows: Rows, n: int) -> dict[str, Any]:
    """Start ``c`` on its backlog of ``n`` frames and time it until all n are stored."""
    rows.reset()
    t0 = time.monotonic()
    c.start()
    # The first row: CPU is read from then on, so start-up costs are not counted as drain.
    probe = wait_rows(rows, lambda k: k > 0, timeout_s=FIRST_ROW_S)
    if probe["first"] is None:
        c.stop()
        raise RuntimeError(f"{c.name} stored nothing in {FIRST_ROW_S:.0f} s (see its log)")
    cpu0, pg0 = services.tree_cpu_s(c.pid), services.tree_cpu_s(rows.pg_pid)
    done = wait_rows(rows, lambda k: k >= n)
    cpu1, pg1 = services.tree_cpu_s(c.pid), services.tree_cpu_s(rows.pg_pid)
    # a command's processes together (sqal ingest --workers: the supervisor and its workers)
    hwm = sum(services.memory_mb(p, "VmHWM") for p in [c.pid, *services.children(c.pid)])
    c.stop()
    if done["count"] < n:
        raise RuntimeError(f"{c.name} stored {done['count']} of {n} frames")
    span = max(done["last"] - probe["first"], 1e-6)
    return {
        "rows": done["count"],
        "rows_per_s": (done["count"] - probe["count"]) / span,
        "cpu_s": cpu1 - cpu0,
        "pg_cpu_s": pg1 - pg0,
        "rss_mb": hwm,
        "startup_s": probe["first"] - t0,
        "loadavg_1m": os.getloadavg()[0],
    }


def kill_mid_drain(c: Consumer, rows: Rows, n: int) -> dict[str, Any]:
    """SIGKILL ``c`` once n/4 rows are stored, restart it, count what is stored in the end."""
    rows.reset()
    c.start()
    at = wait_rows(rows, lambda k: k >= n // 4)["count"]
    c.kill()
    try:
        c.start()
    except RuntimeError as exc:
        # Not a loss yet (what it did not acknowledge is still the broker's), but nothing more
        # is stored: reported as such, the hung process killed by its PID.
        c.kill()
        end = rows.count()
        return {"published": n, "stored_at_kill": at, "stored": end, "lost": n - end,
                "restart_failed": str(exc)}  # fmt: skip
    end = wait_rows(rows, lambda k: k >= n)["count"]
    c.stop()
    return {"published": n, "stored_at_kill": at, "stored": end, "lost": n - end}


def bad_input(c: Consumer, rows: Rows, good: int, bad_sid: str) -> dict[str, Any]:
    """Drain ``good`` frames and one malformed one; what is stored, lost, dead-lettered."""
    rows.reset()
    c.start()
    wait_rows(rows, lambda k: k >= good)
    c.stop()
    stored = rows.count()
    bad_stored = rows.stored(bad_sid)
    return {
        "good_published": good,
        "good_stored": stored - int(bad_stored),
        "good_lost": good - (stored - int(bad_stored)),
        "bad_stored": bad_stored,
        "dead_letters": rows.dead_letters(),
    }


def describe(name: str, r: dict[str, Any]) -> str:
    return (f"  {name:<10} {r['rows']:,} rows  {r['rows_per_s']:7,.0f} rows/s  "
            f"CPU {r['cpu_s']:5.2f} s  PostgreSQL CPU {r['pg_cpu_s']:5.2f} s  "
            f"peak RSS {r['rss_mb']:5.0f} MB  start {r['startup_s']:.1f} s  "
            f"load {r['loadavg_1m']:.1f}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=20_000, help="backlog of ToF frames per run")
    ap.add_argument("--repeats", type=int, default=3, help="alternating drain runs (median)")
    ap.add_argument("--bad-among", type=int, default=2_000, help="good frames around the bad one")
    ap.add_argument("--workers", type=int, default=2,
                    help="also run sqal ingest --workers N (1: the one process only)")  # fmt: skip
    args = ap.parse_args(argv)
    print(header("peer"))
    # SIGTERM (a timeout, ^C's cousin) unwinds through the finally blocks below, so every process
    # this bench started is stopped by its PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    folder = Path(tempfile.mkdtemp(prefix="sqal-bench-peer-"))
    folder.chmod(0o755)
    try:
        try:
            inst = nodered.install(folder / "node-red")
        except nodered.PeerUnavailableError as exc:
            print(f"peer skipped: {exc}; nothing to compare sqal ingest with")
            return
        run(args, folder, inst)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, folder: Path, inst: nodered.Install) -> None:
    how = "node-red-contrib-postgresql" if inst.contrib else (
        f"a function node with pg ({nodered.CONTRIB} did not install from npm)")  # fmt: skip
    print(f"Node-RED {inst.version}: mqtt in -> join {nodered.JOIN_COUNT} / "
          f"{nodered.JOIN_TIMEOUT_S} s -> INSERT ... ON CONFLICT DO NOTHING via {how}")  # fmt: skip
    pg = start_postgres(folder / "pg", free_port(), extra_settings=SERVER)
    mq = start_mosquitto(folder / "mqtt", free_port())
    consumers: list[Consumer] = []
    counters: dict[str, Rows] = {}
    try:
        admin = pg.dsn("postgres")
        red_db = new_db(admin, "peer_nodered")
        cid = f"bench-peer-nodered-{os.getpid()}"
        info = psycopg.conninfo.conninfo_to_dict(red_db)
        db = nodered.Database(str(info["host"]), int(str(info["port"])), str(info["dbname"]),
                              str(info["user"]))  # fmt: skip
        red = nodered.NodeRed(inst, free_port(), folder / "node-red.log")
        red.write(nodered.flow(mq.port, cid, db, inst.contrib))
        nodered_session(mq.port, cid)
        sqal = SqalIngest("sqal", new_db(admin, "peer_sqal"), mq.url, folder / "logs")
        sqal2 = SqalIngest(f"sqal x{args.workers}", new_db(admin, "peer_sqal2"), mq.url,
                           folder / "logs", workers=args.workers)  # fmt: skip
        ours = [sqal, sqal2] if args.workers > 1 else [sqal]
        for s in ours:
            s.start()  # creates its persistent sessions and subscriptions
            s.stop()
        consumers = [NodeRedFlow("node-red", red_db, red, mq.port, cid), *ours]
        counters = {c.name: Rows(c.dsn, pg.process.pid) for c in consumers}
        frames = tof_messages(args.frames)
        print(f"backlog {args.frames:,} ToF frames ({len(frames[0][1]):,} B each) per run, "
              f"QoS 1, persistent sessions; load {os.getloadavg()[0]:.1f}")  # fmt: skip

        drains: dict[str, list[dict[str, Any]]] = {c.name: [] for c in consumers}
        for i in range(args.repeats):
            publish(mq.port, frames)  # queued for both sessions
            print(f"run {i + 1}")
            for c in consumers if i % 2 == 0 else consumers[::-1]:
                r = drain(c, counters[c.name], args.frames)
                drains[c.name].append(r)
                print(describe(c.name, r), flush=True)

        publish(mq.port, frames)
        kills = {c.name: kill_mid_drain(c, counters[c.name], args.frames) for c in consumers}

        for c in consumers:  # a restart that failed leaves its backlog; start clean
            c.reset_session()
        good = frames[: args.bad_among]
        bad_seq = args.frames + 1
        bad = (good[0][0], one_zone_short(good[0][1], bad_seq))
        bad_sid = json.loads(bad[1])["sample_id"]
        mid = len(good) // 2
        publish(mq.port, [*good[:mid], bad, *good[mid:]])
        bads = {c.name: bad_input(c, counters[c.name], len(good), bad_sid) for c in consumers}
        summary(drains, kills, bads, args)
    finally:
        for c in consumers:
            c.stop()
        for rows in counters.values():
            rows.close()
        mq.stop()
        pg.stop()


def summary(drains: dict[str, list[dict[str, Any]]], kills: dict[str, dict[str, Any]],
            bads: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:  # fmt: skip
    def med(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in drains[name]))

    def spread(name: str, key: str) -> str:
        vals = [r[key] for r in drains[name]]
        return f"{min(vals):,.0f}-{max(vals):,.0f}"

    ours = [name for name in drains if name != "node-red"]
    print(f"median of {args.repeats:<12}{'node-red':>14}"
          + "".join(f" {name:>14}  {'/node-red':<9}" for name in ours))  # fmt: skip
    for key, label, fmt in (
        ("rows_per_s", "drain rows/s", "{:,.0f}"), ("cpu_s", "CPU s (drain)", "{:.2f}"),
        ("pg_cpu_s", "PostgreSQL CPU s", "{:.2f}"), ("rss_mb", "peak RSS MB", "{:.0f}"),
        ("startup_s", "start-up s", "{:.1f}"),
    ):  # fmt: skip
        a = med("node-red", key)
        cells = ""
        for name in ours:
            b = med(name, key)
            cells += f" {fmt.format(b):>14}  {(b / a if a else float('nan')):<9.2f}"
        print(f"{label:<22}{fmt.format(a):>14}{cells}")
    print(f"drain rows/s range    {spread('node-red', 'rows_per_s'):>14}"
          + "".join(f" {spread(name, 'rows_per_s'):>14}  {'':<9}" for name in ours))  # fmt: skip
    print("target: sqal ingest >= 2 x node-red's drain rows/s")
    for name, k in kills.items():
        head = f"kill -9 {name:<9} at {k['stored_at_kill']:,} stored: published {k['published']:,}"
        if "restart_failed" in k:
            print(f"{head}, RESTART FAILED ({k['restart_failed']}); stored {k['stored']:,}, "
                  f"{k['lost']:,} not stored")  # fmt: skip
        else:
            print(f"{head}, stored after restart {k['stored']:,}, lost {k['lost']:,}")
    for name, out in bads.items():
        if out["bad_stored"]:
            where = "stored"
        elif out["dead_letters"]:
            where = f"dead-lettered ({out['dead_letters']} dead letter)"
        else:
            where = "dropped, kept nowhere"
        print(f"bad input {name:<9} 1 malformed among {out['good_published']:,}: good stored "
              f"{out['good_stored']:,}, good lost {out['good_lost']:,}; "
              f"the bad frame {where}")  # fmt: skip


if __name__ == "__main__":
    main()
