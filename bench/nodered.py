"""Node-RED as the peer of ``sqal ingest`` (issue 21 item 3): installed, configured, run.

The flow users pick for this job: ``mqtt in`` (QoS 1, a persistent session) → a ``join`` node
of 500 messages or 0.2 s → one multi-row ``INSERT … ON CONFLICT DO NOTHING`` into
``tof_frames``. The INSERT goes through node-red-contrib-postgresql when npm serves it, else
through a function node holding a ``pg`` pool (the package that node wraps), with the same SQL.

Node-RED is never a dependency of SQAL: :func:`install` puts ``node-red@4`` into a temporary
folder with ``npm install --prefix``; the settings file (JavaScript, as Node-RED wants) and the
flow (JSON) are written there too, and :class:`NodeRed` starts and stops the one ``node``
process by its PID. Nothing here imports SQAL's services.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_RED = "node-red@4"
PG = "pg@8"
CONTRIB = "node-red-contrib-postgresql"
JOIN_COUNT = 500
JOIN_TIMEOUT_S = 0.2
TOF_FILTER = "sqal/v1/+/+/tof"

ID = {
    name: f"5ca1ab1e{i:08x}"
    for i, name in enumerate(("tab", "broker", "in", "join", "insert", "pgconf", "pgsql"))
}
"""Node ids in Node-RED's own form (16 hex digits). Not words: Node-RED reads any property whose
value equals a node's id as a reference to it, so an id ``join`` beside ``"type": "join"`` is a
"circular config node dependency" and the flow does not start."""

TOF_COLUMNS = (
    "ts", "line_id", "device_id", "sample_id", "seq", "v", "layout", "distance_mm",
    "target_status", "signal_per_spad", "ambient_per_spad", "range_sigma_mm", "reflectance_pct",
    "ranging_hz", "integration_ms", "sensor_temp_c",
)  # fmt: skip
"""The ``tof_frames`` columns the flow fills: those of a wire frame without a histogram (the
bench's frames carry none), matrices flattened row-major as ``storage.rows`` does."""

_BUILD_INSERT = """\
// One multi-row INSERT for the joined messages (msg.payload: the array of whole messages).
const COLS = %(columns)s;
const params = [];
const tuples = [];
for (const m of msg.payload) {
    const f = m.payload;
    const base = params.length;
    tuples.push("(" + COLS.map((_, j) => "$" + (base + j + 1)).join(",") + ")");
    params.push(f.ts, m.topic.split("/")[2], f.device_id, f.sample_id, f.seq, f.v, f.layout,
        f.distance_mm.flat(), f.target_status.flat(), f.signal_per_spad.flat(),
        f.ambient_per_spad.flat(), f.range_sigma_mm.flat(), f.reflectance_pct.flat(),
        f.ranging_hz ?? null, f.integration_ms ?? null, f.sensor_temp_c ?? null);
}
const sql = "INSERT INTO tof_frames (" + COLS.join(", ") + ") VALUES " + tuples.join(", ")
    + " ON CONFLICT DO NOTHING";
"""

_RUN_WITH_PG = """\
context.get("pool").query(sql, params).then(() => node.done(), (err) => node.error(err, msg));
return null;
"""

_HAND_TO_CONTRIB = """\
msg.query = sql;
msg.params = params;
return msg;
"""


class PeerUnavailableError(Exception):
    """Node-RED cannot run here: node or npm missing, or the install failed (the message says)."""


@dataclass(frozen=True)
class Database:
    """Where the flow writes: a PostgreSQL reachable without a password (the bench's own)."""

    host: str
    port: int
    name: str
    user: str


@dataclass(frozen=True)
class Install:
    """A Node-RED installed under ``folder`` (``folder/node_modules``).

    Attributes:
        contrib: True when node-red-contrib-postgresql installed and the flow uses it; False
            when the flow's function node runs the INSERT with ``pg``.
    """

    folder: Path
    contrib: bool
    version: str

    @property
    def red_js(self) -> Path:
        return self.folder / "node_modules" / "node-red" / "red.js"


def missing_tool() -> str | None:
    """``node`` or ``npm`` when one is not on ``PATH``, else None."""
    return next((t for t in ("node", "npm") if shutil.which(t) is None), None)


def install(folder: Path, timeout_s: float = 600.0) -> Install:
    """``npm install --prefix FOLDER node-red@4 pg@8`` and, if npm serves it, the PostgreSQL node.

    Raises:
        PeerUnavailableError: node or npm is missing, or Node-RED itself did not install.
    """
    if (tool := missing_tool()) is not None:
        raise PeerUnavailableError(f"{tool} is not on PATH")
    folder.mkdir(parents=True, exist_ok=True)

    def npm(*packages: str) -> subprocess.CompletedProcess[str]:
        cmd = ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund",
               "--loglevel=error", *packages]  # fmt: skip
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                  check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            msg = f"npm install {' '.join(packages)} took over {timeout_s:.0f} s"
            raise PeerUnavailableError(msg) from None

    contrib = npm(NODE_RED, PG, CONTRIB).returncode == 0
    if not contrib:
        done = npm(NODE_RED, PG)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise PeerUnavailableError(f"npm install {NODE_RED} failed: {tail}")
    package = folder / "node_modules" / "node-red" / "package.json"
    version = str(json.loads(package.read_text())["version"])
    return Install(folder, contrib, version)


def flow(broker_port: int, client_id: str, db: Database, contrib: bool) -> list[dict[str, Any]]:
    """The flow as Node-RED stores it (``flows.json``): a tab, its nodes and config nodes.

    Args:
        broker_port: the loopback Mosquitto's port.
        client_id: the MQTT client id; with ``cleansession`` false the broker keeps the session
            (and queues QoS 1 messages) under it while Node-RED is away.
        contrib: the INSERT through node-red-contrib-postgresql's ``postgresql`` node, else in
            the function node through the ``pg`` pool made by its ``initialize`` code.
    """
    build = _BUILD_INSERT % {"columns": json.dumps(list(TOF_COLUMNS))}
    pool = {"host": db.host, "port": db.port, "database": db.name, "user": db.user}
    nodes: list[dict[str, Any]] = [
        {"id": ID["tab"], "type": "tab", "label": "sqal peer", "disabled": False, "info": ""},
        {
            "id": ID["broker"],
            "type": "mqtt-broker",
            "name": "bench broker",
            "broker": "127.0.0.1",
            "port": str(broker_port),
            "clientid": client_id,
            "autoConnect": True,
            "usetls": False,
            "protocolVersion": "4",
            "keepalive": "60",
            "cleansession": False,
            # Not unsubscribing on stop keeps the session's subscription, so a backlog
            # queued while Node-RED is down is delivered when it comes back.
            "autoUnsubscribe": False,
            "birthTopic": "",
            "closeTopic": "",
            "willTopic": "",
        },
        {
            "id": ID["in"],
            "type": "mqtt in",
            "z": ID["tab"],
            "name": "tof frames",
            "topic": TOF_FILTER,
            "qos": "1",
            "datatype": "json",
            "broker": ID["broker"],
            "nl": False,
            "rap": True,
            "rh": 0,
            "inputs": 0,
            "wires": [[ID["join"]]],
        },
        {
            "id": ID["join"],
            "type": "join",
            "z": ID["tab"],
            "name": f"{JOIN_COUNT} or {JOIN_TIMEOUT_S} s",
            "mode": "custom",
            "build": "array",
            "property": "",
            "propertyType": "full",
            "key": "topic",
            "joiner": "\\n",
            "joinerType": "str",
            "accumulate": False,
            "timeout": str(JOIN_TIMEOUT_S),
            "count": str(JOIN_COUNT),
            "reduceRight": False,
            "wires": [[ID["insert"]]],
        },
    ]
    insert: dict[str, Any] = {
        "id": ID["insert"], "type": "function", "z": ID["tab"], "name": "multi-row INSERT",
        "outputs": 1, "timeout": 0, "noerr": 0, "libs": [], "wires": [[]],
    }  # fmt: skip
    if contrib:
        insert.update(func=build + _HAND_TO_CONTRIB, initialize="", finalize="")
        insert["wires"] = [[ID["pgsql"]]]
        nodes.append(insert)
        nodes.append({
            "id": ID["pgconf"], "type": "postgreSQLConfig", "name": "bench db",
            "host": db.host, "hostFieldType": "str", "port": str(db.port), "portFieldType": "num",
            "database": db.name, "databaseFieldType": "str", "ssl": "false",
            "sslFieldType": "bool", "max": "10", "maxFieldType": "num", "idle": "1000",
            "idleFieldType": "num", "connectionTimeout": "10000",
            "connectionTimeoutFieldType": "num", "user": db.user, "userFieldType": "str",
            "password": "", "passwordFieldType": "str",
        })  # fmt: skip
        nodes.append({
            # {{{ }}}: Mustache without HTML escaping; older versions of the node take the
            # query only from its template, newer ones also from msg.query.
            "id": ID["pgsql"], "type": "postgresql", "z": ID["tab"], "name": "tof_frames",
            "query": "{{{ msg.query }}}", "postgreSQLConfig": ID["pgconf"], "split": False,
            "rowsPerMsg": "1", "outputs": 1, "wires": [[]],
        })  # fmt: skip
    else:
        insert.update(
            func=build + _RUN_WITH_PG,
            initialize=f'context.set("pool", new (global.get("pg").Pool)({json.dumps(pool)}));',
            finalize='const pool = context.get("pool"); if (pool) { pool.end(); }',
        )
        nodes.append(insert)
    return nodes


def settings_js(port: int, user_dir: Path) -> str:
    """Node-RED's settings file: loopback only, no editor, no telemetry, warnings only.

    ``functionGlobalContext`` hands the ``pg`` module installed beside Node-RED to the function
    node (``global.get("pg")``), the documented way for modules not loaded per node.
    """
    values = {
        "uiHost": "127.0.0.1",
        "uiPort": port,
        "userDir": str(user_dir),
        "flowFile": "flows.json",
        "credentialSecret": False,
        "httpAdminRoot": "/admin",
        "disableEditor": True,
        "diagnostics": {"enabled": False, "ui": False},
        "runtimeState": {"enabled": False, "ui": False},
        "telemetry": {"enabled": False, "updateNotification": False},
        "externalModules": {"autoInstall": False, "palette": {"allowInstall": False}},
        "logging": {"console": {"level": "warn", "metrics": False, "audit": False}},
    }
    body = ",\n".join(f"    {k}: {json.dumps(v)}" for k, v in values.items())
    return (
        "// Written by python -m bench.peer for one run; deleted with its folder.\n"
        "module.exports = {\n"
        f"{body},\n"
        '    functionGlobalContext: { pg: require("pg") },\n'
        "};\n"
    )


@dataclass
class NodeRed:
    """One Node-RED process: settings and flow written under ``install.folder``, run by PID."""

    install: Install
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def write(self, nodes: list[dict[str, Any]]) -> Path:
        """Write ``settings.js`` and ``user/flows.json``; returns the settings file."""
        user = self.install.folder / "user"
        user.mkdir(exist_ok=True)
        (user / "flows.json").write_text(json.dumps(nodes, indent=1))
        settings = self.install.folder / "settings.js"
        settings.write_text(settings_js(self.port, user))
        return settings

    def start(self, timeout_s: float = 60.0) -> None:
        """Start ``node red.js --settings …`` and wait for its admin API to answer.

        Raises:
            RuntimeError: it exited or did not answer within ``timeout_s`` (its log says why).
        """
        settings = self.install.folder / "settings.js"
        cmd = ["node", str(self.install.red_js), "--settings", str(settings)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.install.folder, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Node-RED exited ({self.proc.returncode}); see {self.log}")
            try:
                url = f"http://127.0.0.1:{self.port}/admin/settings"
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"Node-RED did not answer on port {self.port}; see {self.log}")

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM by PID (Node-RED closes its nodes, the MQTT session stays), SIGKILL late."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL by PID, as a crash would."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
