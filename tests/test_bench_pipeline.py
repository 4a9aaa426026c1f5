"""The pipeline benchmark's harness (issue 8): a tiny real step, and its pure pieces.

No timed assertions: the step checks accounting (every offered sample has its result row and
both frame rows, nothing dead-lettered) and the shape of the JSON the benchmark writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from bench.load import Load, render_pool, sample_id, uid_of
from bench.pipeline import publish_configs, start_single, stop_services, write_outputs
from bench.pipeline_report import aggregate, pyspy_top, table
from bench.sweep import Rig, run_step
from embedded import Mosquitto, Postgres
from sqal.wire import Kind, SpectralFrame, TofFrame, decode, parse_topic
from storage.migrate import migrate


def test_rewritten_sample_id_keeps_both_frames_valid_and_paired() -> None:
    pool = render_pool(lines=1, devices_per_line=1, per_device=2)
    t = pool.templates[0]
    new = sample_id(t, 12_345)
    assert len(new) == len(t.sid)
    assert uid_of(new) == 12_345
    tof = decode(parse_topic(t.tof_topic), t.tof.replace(t.sid, new, 1))
    spec = decode(parse_topic(t.spectral_topic), t.spectral.replace(t.sid, new, 1))
    assert isinstance(tof, TofFrame)
    assert isinstance(spec, SpectralFrame)
    assert tof.sample_id == spec.sample_id == new.decode()
    assert parse_topic(t.tof_topic).kind is Kind.TOF
    assert [topic.rsplit("/", 1)[1] for topic, _ in pool.configs] == ["config"]


def test_pyspy_top_shares_self_and_inclusive_time(tmp_path: Path) -> None:
    raw = tmp_path / "a.pyspy"
    raw.write_text(
        "run (analyzer/service.py:10);score (analyzer/fusion.py:5) 30\n"
        "run (analyzer/service.py:11);decode (sqal/wire/codec.py:7) 10\n"
    )
    top = pyspy_top(raw)
    assert top["samples"] == 40
    assert top["self"][0] == ("score (analyzer/fusion.py)", 75.0)
    assert ("run (analyzer/service.py)", 100.0) in top["inclusive"]


def test_small_step_loses_nothing_and_writes_wellformed_json(
    private_broker: Mosquitto, fresh_db: str, pg: Postgres, tmp_path: Path
) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrate(conn)
    pool = render_pool(lines=2, devices_per_line=1, per_device=4)
    publish_configs(private_broker.url, pool)
    load = Load(pool, n_pub=1)
    try:
        load.connect(private_broker.url)
        rig = Rig(private_broker.url, private_broker.process.pid, fresh_db, pg.process.pid,
                  load, tmp_path / "logs")  # fmt: skip
        start_single(rig)
        try:
            step = run_step(rig, 20.0, 3.0, lag_bound_s=30.0)
        finally:
            stop_services(rig)
    finally:
        load.close()
    assert step["samples"] == 60
    assert step["completed"] == 60
    assert step["lost"] == 0
    assert step["missing_tof_rows"] == step["missing_spectral_rows"] == 0
    assert step["dead_letters"] == 0
    assert step["results_at_subscriber"] == 60
    assert step["zero_loss"]
    assert step["cpu_ms_per_sample"]["analyzer"] > 0
    assert step["rss_mb_max"]["ingest"] > 0
    agg = aggregate([step])
    assert "single" in table([agg])
    result: dict[str, Any] = {
        "machine": {}, "command": "test", "limits": {}, "steps": [agg], "scale_out": [],
        "profile": None, "capacity_per_s": 20.0,
    }  # fmt: skip
    doc, png = write_outputs(result, tmp_path / "out")
    back = json.loads(doc.read_text())
    assert back["steps"][0]["runs"][0]["completed"] == 60
    assert back["steps"][0]["latency_db_ms.p99"]["median"] > 0
    assert png.stat().st_size > 1000
