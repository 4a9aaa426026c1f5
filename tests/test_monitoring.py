"""What a Prometheus and a Grafana of the compose stack scrape and alert on (#18 item 3).

No Docker engine here: the configs are parsed and checked against real services. The analyzer
and ingest run in this process, each on its own registry, and are scraped over HTTP; every
metric an alert rule names must be among what they serve (or ``up``, which Prometheus makes).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from analyzer.service import AnalyzerConfig, AnalyzerService
from embedded import Mosquitto, Postgres, free_port
from ingest.service import IngestConfig, IngestService
from sqal.metrics import MetricsServer
from sqal.wire import DeviceState, Kind, device_topic, encode
from tests.fix_pg import new_database
from tests.test_ingest_frames import drop_session, migrated, publish_all, status, wait_until

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS: dict[str, Any] = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
RULES: list[dict[str, Any]] = [
    rule
    for path in sorted((ROOT / "prometheus/rules").glob("*.yml"))
    for group in yaml.safe_load(path.read_text())["groups"]
    for rule in group["rules"]
]
GRAFANA_RULES: list[dict[str, Any]] = [
    rule
    for group in yaml.safe_load((ROOT / "grafana/provisioning/alerting/sqal.yaml").read_text())[
        "groups"
    ]
    for rule in group["rules"]
]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
MADE_BY_PROMETHEUS = {"up"}
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool",
    # aggregations, whose `by (…)` may stand between the name and its parenthesis
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords and labels left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end() :].lstrip().startswith("(") or m.group(0) in _PROMQL_WORDS:
            continue  # a function or an aggregation
        names.add(m.group(0))
    return names


def scrape(port: int) -> tuple[set[str], str]:
    """The names a ``/metrics`` declares (``# TYPE``) and serves, and its text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    served = set(re.findall(r"^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]", text, re.MULTILINE))
    return declared | served, text


class Stack:
    """An analyzer and an ingest worker in threads, each with its /metrics."""

    def __init__(self, broker: Mosquitto, dsn: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.broker = broker
        self.ingest_port, self.analyzer_port = free_port(), free_port()
        self.ingest = IngestService(
            IngestConfig(
                broker=broker.url,
                dsn=dsn,
                batch_rows=100,
                flush_s=0.05,
                client_id=f"mon-ingest-{tag}",
                metrics_port=self.ingest_port,
            )
        )
        self.analyzer = AnalyzerService(
            AnalyzerConfig(broker=broker.url, client_id=f"mon-analyzer-{tag}")
        )
        self.analyzer_server = MetricsServer(self.analyzer.registry, self.analyzer_port).start()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.ingest.run, args=(self.stop,), daemon=True),
            threading.Thread(target=self.analyzer.run, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        self.analyzer.stop()
        for t in self.threads:
            t.join(15)
        self.analyzer_server.stop()
        drop_session(self.broker.url, self.ingest.cfg.client_id)
        drop_session(self.broker.url, self.analyzer.cfg.client_id)


@pytest.fixture(scope="module")
def stack(broker: Mosquitto, pg: Postgres) -> Iterator[Stack]:
    with new_database(pg) as dsn:
        s = Stack(broker, migrated(dsn))
        try:
            assert wait_until(lambda: s.ingest.link.connected and s.analyzer.ready.is_set(), 20)
            yield s
        finally:
            s.close()


def test_the_metric_name_reader_finds_names_not_functions_or_labels() -> None:
    expr = (
        'sum by (line) (rate(a_total{decision="REJECT"}[15m])) / sum by (line) (rate(a_total'
        '[15m])) > on (line) max by (line) (b_max) and deriv(c[5m]) > 1e3 or up{job=~"x.*"} == 0'
    )
    assert metric_names(expr) == {"a_total", "b_max", "c", "up"}


def test_every_metric_an_alert_names_is_served_by_a_running_service(stack: Stack) -> None:
    names = MADE_BY_PROMETHEUS | scrape(stack.analyzer_port)[0] | scrape(stack.ingest_port)[0]
    assert RULES
    for rule in RULES:
        wanted = metric_names(rule["expr"])
        assert wanted, rule["alert"]
        assert wanted <= names, f"{rule['alert']} names {sorted(wanted - names)}, not served"


def test_each_service_serves_its_own_metrics_and_its_process_metrics(stack: Stack) -> None:
    analyzer, _ = scrape(stack.analyzer_port)
    ingest, _ = scrape(stack.ingest_port)
    assert not any(n.startswith("sqal_ingest_") for n in analyzer)
    assert not any(n.startswith("sqal_analyzer_") for n in ingest)
    for served in (analyzer, ingest):
        assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= served
    assert {"sqal_analyzer_decisions_total", "sqal_analyzer_reject_rate_max"} <= analyzer


def test_a_device_going_offline_shows_on_ingest_metrics(stack: Stack) -> None:
    line, device = f"mon{uuid.uuid4().hex[:6]}", "node-1"
    topic = device_topic(line, device, Kind.STATUS)
    series = f'sqal_ingest_device_online{{device="{device}",line="{line}"}}'
    now = datetime.now(UTC)
    publish_all(stack.broker.url, [(topic, encode(status(device, now)))])
    assert wait_until(lambda: f"{series} 1.0" in scrape(stack.ingest_port)[1], 20)
    publish_all(stack.broker.url, [(topic, encode(status(device, now, DeviceState.OFFLINE)))])
    assert wait_until(lambda: f"{series} 0.0" in scrape(stack.ingest_port)[1], 20)


def test_the_alerts_cover_what_the_issue_asks_for() -> None:
    names = {rule["alert"] for rule in RULES}
    assert {
        "SqalServiceDown",
        "SqalBacklogGrowing",
        "SqalDeadLetters",
        "SqalDeviceOffline",
        "SqalRejectRateHigh",
    } <= names
    for rule in RULES:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_prometheus_scrapes_the_ports_the_services_open_on_every_address() -> None:
    services = COMPOSE["services"]
    targets = {
        job["job_name"]: target
        for job in PROMETHEUS["scrape_configs"]
        for target in job["static_configs"][0]["targets"]
    }
    for name in ("analyzer", "ingest"):
        command = services[name]["command"]
        port = command[command.index("--metrics-port") + 1]
        assert command[command.index("--metrics-host") + 1] == "0.0.0.0"
        assert targets[f"sqal-{name}"] == f"{name}:{port}"
    down = next(r for r in RULES if r["alert"] == "SqalServiceDown")
    assert 'job=~"sqal-.*"' in down["expr"]


def test_prometheus_in_compose_reads_this_config_and_these_rules() -> None:
    prom = COMPOSE["services"]["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prom["volumes"])
    assert mounts["./prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert PROMETHEUS["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert prom["healthcheck"]["test"]
    assert ":latest" not in prom["image"]


def test_grafana_alerts_on_the_same_rules_through_the_provisioned_prometheus() -> None:
    datasources = [
        ds
        for path in (ROOT / "grafana/provisioning/datasources").glob("*.yaml")
        for ds in yaml.safe_load(path.read_text())["datasources"]
    ]
    prometheus = next(ds for ds in datasources if ds["type"] == "prometheus")
    assert prometheus["url"] == "http://prometheus:9090"
    by_title = {rule["title"]: rule for rule in GRAFANA_RULES}
    assert sorted(by_title) == sorted(rule["alert"] for rule in RULES)
    for rule in RULES:
        g = by_title[rule["alert"]]
        queries = {q["refId"]: q for q in g["data"]}
        assert g["condition"] in queries
        assert queries["A"]["datasourceUid"] == prometheus["uid"]
        assert queries["A"]["model"]["expr"] == rule["expr"]
        assert g["for"] == rule.get("for", "0s")
        assert g["labels"] == rule["labels"]
    assert len({rule["uid"] for rule in GRAFANA_RULES}) == len(GRAFANA_RULES)


def test_a_metrics_host_not_of_this_machine_is_one_error_line() -> None:
    port = free_port()
    run = subprocess.run(
        [sys.executable, "-m", "app", "ingest", "--metrics-host", "203.0.113.7",
         "--metrics-port", str(port), "--broker", "mqtt://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.splitlines() == [
        f"Error: cannot serve /metrics on 203.0.113.7:{port} (Cannot assign requested "
        "address); choose a free port with --metrics-port (or another --metrics-host)"
    ]
