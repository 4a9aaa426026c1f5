"""The ``sqal record``, ``sqal capture info`` and ``sqal replay`` commands."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from capture.record import RecordStats, record
from capture.replay import Remap, ReplayStats, replay
from capture.summary import render, summarise
from sqal.settings import load_settings

Broker = Annotated[
    str | None, typer.Option("--broker", help="Broker URL [env SQAL_BROKER].", show_default=False)
]


def _status(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{text}\x1b[K")
        sys.stderr.flush()


def record_command(
    out: Annotated[Path, typer.Option("--out", help="Capture file to create.")],
    topic: Annotated[
        list[str], typer.Option("--topic", help="Topic filter to record; repeat for more.")
    ],
    broker: Broker = None,
    duration: Annotated[
        float | None, typer.Option("--duration", min=0, help="Stop after this many seconds.")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Stop after this many messages.")
    ] = None,
    rotate_mb: Annotated[
        float | None, typer.Option("--rotate-mb", min=0.001, help="Start a new file past M MiB.")
    ] = None,
    gzip: Annotated[bool, typer.Option("--gzip", help="Compress the capture with gzip.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Record MQTT traffic (topic, QoS, retain, MQTT 5 properties, payload) to a capture file."""
    settings = load_settings(broker=broker)

    def progress(s: RecordStats) -> None:
        _status(f"recording: {s.messages:,} messages, {s.bytes / 1e6:.1f} MB")

    stats = asyncio.run(
        record(settings.broker, topic, out, duration_s=duration, count=count,
               rotate_mb=rotate_mb, compress=gzip, on_progress=progress)
    )  # fmt: skip
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    files = [str(p) for p in stats.files]
    doc = {
        "files": files,
        "messages": stats.messages,
        "bytes": stats.bytes,
        "elapsed_s": round(stats.elapsed_s, 3),
        "stopped_by": stats.stopped_by,
    }
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        typer.echo(
            f"recorded {stats.messages:,} messages ({stats.bytes:,} bytes) in "
            f"{stats.elapsed_s:.1f} s to {', '.join(files)}; stopped by {stats.stopped_by}"
        )


def capture_info_command(
    files: Annotated[list[Path], typer.Argument(help="Capture file(s), in order.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a capture's duration, messages and bytes per topic, and rate."""
    summary = summarise(files)
    typer.echo(json.dumps(summary.as_dict()) if as_json else render(summary))


def replay_command(
    files: Annotated[list[Path], typer.Argument(help="Capture file(s), in order.")],
    broker: Broker = None,
    speed: Annotated[
        float, typer.Option("--speed", help="Time factor: 2 plays twice as fast.")
    ] = 1.0,
    max_rate: Annotated[
        bool, typer.Option("--max-rate", help="Ignore the timing; publish as fast as possible.")
    ] = False,
    loop: Annotated[int, typer.Option("--loop", min=1, help="Play the capture N times.")] = 1,
    remap: Annotated[
        list[str] | None,
        typer.Option("--remap", help="Replace topic levels OLD=NEW (e.g. L1=L9); repeatable."),
    ] = None,
    topic: Annotated[
        list[str] | None, typer.Option("--topic", help="Replay only matching topics; repeatable.")
    ] = None,
    qos: Annotated[int | None, typer.Option("--qos", help="Publish with this QoS.")] = None,
    retain: Annotated[
        str,
        typer.Option(
            "--retain",
            help="drop: skip retained messages (device configs, statuses), so a live device "
            "keeps its config; keep: republish them retained (into a fresh broker).",
        ),
    ] = "drop",
    fresh_ids: Annotated[
        bool,
        typer.Option(
            "--fresh-ids",
            help="Give each tray a new sample_id (the same for its frames, weight and result; "
            "new per run and loop), so a pipeline that has seen the capture scores it again.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Publish a capture again on its original schedule; report lateness p50/p99.

    Frames keep their recorded sample ids unless --fresh-ids: an analyzer or database that has
    seen them takes them for duplicates and produces nothing.
    """
    settings = load_settings(broker=broker)
    remaps = [Remap.parse(r) for r in remap or []]
    if (remaps or loop > 1) and not fresh_ids:
        # --remap aims a capture at a live pipeline; a second loop repeats the first's trays.
        sys.stderr.write(
            "Warning: frames keep their recorded sample ids: a pipeline that has seen these "
            "trays (or an earlier loop) ignores them as duplicates and gives no results; "
            "--fresh-ids gives each tray a new one\n"
        )

    def progress(s: ReplayStats) -> None:
        _status(f"replaying: {s.published:,} published")

    stats = replay(files, settings.broker, speed=speed, max_rate=max_rate, loops=loop,
                   remaps=remaps, topics=topic or [], qos=qos, retain=retain,
                   fresh_ids=fresh_ids, on_progress=progress)  # fmt: skip
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    doc = {
        "published": stats.published,
        "samples": stats.samples,
        "fresh_ids": stats.renamed,
        "skipped": stats.skipped,
        "corrupt_records": stats.corrupt,
        "torn_files": stats.torn_files,
        "elapsed_s": round(stats.elapsed_s, 3),
        "schedule_s": round(stats.schedule_s, 3),
        "lateness_p50_ms": round(stats.lateness(50), 3),
        "lateness_p99_ms": round(stats.lateness(99), 3),
        "rate_per_s": round(stats.published / stats.elapsed_s, 1) if stats.elapsed_s else 0.0,
    }
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        fresh = f", {stats.renamed:,} under fresh sample ids" if fresh_ids else ""
        typer.echo(
            f"published {stats.published:,} ({stats.skipped:,} skipped, {stats.corrupt} corrupt"
            f"{fresh}) in {stats.elapsed_s:.3f} s; lateness p50 {doc['lateness_p50_ms']} ms, "
            f"p99 {doc['lateness_p99_ms']} ms"
        )
