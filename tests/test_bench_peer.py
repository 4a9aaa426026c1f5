"""The peer bench (issue 21 item 3): Node-RED's flow and settings, and the skip without node.

No timed assertions and no npm install here: the flow is checked as Node-RED would load it
(ids, wires, the session settings a backlog needs, JavaScript that parses), the skip path runs
``python -m bench.peer`` with a PATH that holds git but no node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import nodered
from bench.peer import one_zone_short, tof_messages
from storage.tables import TOF

REPO = Path(__file__).resolve().parents[1]
DB = nodered.Database("127.0.0.1", 5432, "peer_nodered", "postgres")
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@pytest.mark.parametrize("contrib", [True, False])
def test_flow_is_wired_and_keeps_its_mqtt_session(contrib: bool) -> None:
    nodes = json.loads(json.dumps(nodered.flow(18830, "peer-cid", DB, contrib)))
    by_id = {n["id"]: n for n in nodes}
    assert len(by_id) == len(nodes), "duplicate node ids"
    # Node-RED takes any property value equal to a node id for a reference to that node
    for n in nodes:
        assert not {v for k, v in n.items() if k != "id" and isinstance(v, str)} & (
            by_id.keys() - {n.get("z"), n.get("broker"), n.get("postgreSQLConfig")}
        ), n
    for n in nodes:
        for out in n.get("wires", []):
            assert set(out) <= by_id.keys(), f"{n['id']} wires to a missing node"
        if "z" in n:
            assert by_id[n["z"]]["type"] == "tab"
    broker = next(n for n in nodes if n["type"] == "mqtt-broker")
    assert (broker["broker"], broker["port"], broker["clientid"]) == (
        "127.0.0.1",
        "18830",
        "peer-cid",
    )
    assert broker["cleansession"] is False
    assert broker["autoUnsubscribe"] is False
    mqtt_in = next(n for n in nodes if n["type"] == "mqtt in")
    assert (mqtt_in["topic"], mqtt_in["qos"], mqtt_in["broker"]) == (
        "sqal/v1/+/+/tof",
        "1",
        broker["id"],
    )
    join = by_id[mqtt_in["wires"][0][0]]
    assert (join["type"], join["count"], join["timeout"]) == ("join", "500", "0.2")
    assert (join["build"], join["propertyType"]) == ("array", "full")
    insert = by_id[join["wires"][0][0]]
    assert "ON CONFLICT DO NOTHING" in insert["func"]
    if contrib:
        (db_node,) = (by_id[w] for w in insert["wires"][0])
        assert db_node["type"] == "postgresql"
        conf = by_id[db_node["postgreSQLConfig"]]
        assert (conf["host"], conf["port"], conf["database"]) == (
            "127.0.0.1",
            "5432",
            "peer_nodered",
        )
    else:
        assert insert["wires"] == [[]]
        assert '"database": "peer_nodered"' in insert["initialize"]


def test_flow_fills_only_columns_tof_frames_has() -> None:
    assert set(nodered.TOF_COLUMNS) <= set(TOF.column_names)
    assert {"line_id", "device_id", "sample_id", "ts"} <= set(nodered.TOF_COLUMNS)
    func = next(n for n in nodered.flow(1, "c", DB, False) if n["type"] == "function")["func"]
    assert json.dumps(list(nodered.TOF_COLUMNS)) in func


@needs_node
@pytest.mark.parametrize("contrib", [True, False])
def test_function_node_javascript_parses(tmp_path: Path, contrib: bool) -> None:
    nodes = nodered.flow(1, "c", DB, contrib)
    func = next(n for n in nodes if n["type"] == "function")
    # Node-RED runs func as the body of an async function of (msg, node, context, global, ...).
    for name, code in (("func", func["func"]), ("init", func["initialize"]),
                       ("fin", func["finalize"])):  # fmt: skip
        path = tmp_path / f"{name}.js"
        path.write_text(f"async function f(msg, node, context, global) {{\n{code}\n}}\n")
        done = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr


@needs_node
def test_settings_file_is_a_module_on_loopback(tmp_path: Path) -> None:
    red = nodered.NodeRed(nodered.Install(tmp_path, False, "4.x"), 18999, tmp_path / "log")
    settings = red.write(nodered.flow(1883, "c", DB, False))
    text = settings.read_text()
    assert '"127.0.0.1"' in text
    assert "uiPort: 18999" in text
    done = subprocess.run(["node", "--check", str(settings)], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "user" / "flows.json").read_text())[0]["type"] == "tab"


def test_without_node_the_bench_prints_one_line_and_exits_0(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = shutil.which("git")
    assert git is not None
    (bin_dir / "git").symlink_to(git)  # the header names the commit
    env = {**os.environ, "PATH": str(bin_dir), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "bench.peer"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("# bench peer")
    assert lines[1:] == ["peer skipped: node is not on PATH; nothing to compare sqal ingest with"]


def test_install_refuses_without_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    (tmp_path / "node").symlink_to(node)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(nodered.PeerUnavailableError, match="npm is not on PATH"):
        nodered.install(tmp_path / "red")
    assert not (tmp_path / "red").exists()


def test_malformed_frame_is_json_one_zone_short() -> None:
    ((topic, good),) = tof_messages(1)
    bad = json.loads(one_zone_short(good, 99))
    assert bad["seq"] == 99
    assert bad["sample_id"].endswith("00000099")
    assert [len(r) for r in bad["distance_mm"]] == [8, 8, 8, 7, 8, 8, 8, 8]
    assert topic.endswith("/tof")
