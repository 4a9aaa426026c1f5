"""The pipeline benchmark's harness (issue 8): a tiny real step, and its pure pieces.

No timed assertions: the step checks accounting (every offered sample has its result row and
both frame rows, nothing dead-lettered) and the shape of the JSON the benchmark writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.load import Load, render_pool, sample_id, uid_of
from bench.onehop import c_client_rate, c_clients_missing
from bench.pipeline import publish_configs, start_single, stop_services, targets, write_outputs
from bench.pipeline_report import aggregate, pyspy_binary, pyspy_top, table
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


def test_pyspy_is_none_when_neither_beside_python_nor_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert pyspy_binary() is None
    (tmp_path / "py-spy").write_text("#!/bin/sh\n")
    (tmp_path / "py-spy").chmod(0o755)
    assert pyspy_binary() == str(tmp_path / "py-spy")


def test_every_capacity_is_a_ratio_of_each_denominator() -> None:
    limits = {
        "c_clients_msgs_per_s": {"median": 30_000},
        "onehop_msgs_per_s": {"median": 10_000},
        "copy_mixed_rows_per_s": {"median": 15_000},
    }
    step = {"label": "single", "offered_per_s": 1000.0, "completed_per_s": {"median": 990.0},
            "cpu_ms_per_sample": {"analyzer": 0.5, "ingest": 0.3}, "latency_sub_ms.p99": None,
            "rss_mb_max": {"ingest": 100.0}, "sustainable": True}  # fmt: skip
    result = {"limits": limits, "steps": [step], "scale_out": [dict(step, label="scale-out")],
              "capacity_per_s": 1000.0}  # fmt: skip
    lines = targets(result)
    assert lines[0].startswith("denominators: C broker 30,000 msg/s, paho 10,000 msg/s")
    by_name = {line[:26].strip(): line for line in lines}
    # 1,000 samples/s = 3,000 messages and rows per second
    assert "0.100 / C broker   0.300 / paho   0.200 / COPY" in by_name["sustainable capacity"]
    assert "0.100 / C broker" in by_name["scale-out (2 + 2)"]
    # 0.3 ms of ingest CPU per sample: 10,000 rows/s on one core
    assert (
        "10,000 rows/s    0.333 / C broker   1.000 / paho   0.667 / COPY"
        in (by_name["ingest ceiling (1 core)"])
    )
    assert "2,000 samples/s    0.200 / C broker" in by_name["analyzer ceiling (1 core)"]
    # a denominator not measured (no C clients) shows as "-", the others still print
    del limits["c_clients_msgs_per_s"]
    assert "     - / C broker   0.300 / paho" in targets(result)[1]


def test_c_clients_carry_every_message_through_a_private_broker(
    private_broker: Mosquitto,
) -> None:
    if c_clients_missing() is not None:
        pytest.skip("mosquitto-clients are not installed")
    assert c_client_rate(private_broker.host, private_broker.port, 300) > 0
