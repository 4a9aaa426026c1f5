"""``/metrics`` (Prometheus, by ``prometheus_client``) and ``/healthz`` of one service.

One :class:`Registry` per service, each on its own ``CollectorRegistry``: tests run several
services in one process, and each scrape must show one service's series only. Every registry
also carries the client library's process, platform and GC collectors (``process_cpu_seconds_
total``, ``process_resident_memory_bytes``, ``process_start_time_seconds``, ``python_info``, …).

The thin classes below keep SQAL's own calls (``inc(label=…)``, ``value()``, ``total()``) over
``prometheus_client``'s metrics, so the services' per-message path and the tests read the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from sqal.errors import ServiceError

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
DEFAULT_METRICS_HOST = "127.0.0.1"
"""Where ``--metrics-host`` binds unless told: this machine only. A Prometheus in another
container needs ``0.0.0.0`` (compose.yaml sets it)."""

# A counter's `_created` series says when the process started counting, which
# `process_start_time_seconds` already says once: without this, every counter series is doubled.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

Labels = str | tuple[str, ...]
"""A metric's label name(s); a one-label metric takes a plain string as its value too."""


def _names(label: Labels | None) -> tuple[str, ...]:
    if label is None:
        return ()
    return (label,) if isinstance(label, str) else label


def _values(label: Labels) -> tuple[str, ...]:
    return (label,) if isinstance(label, str) else label


class Counter:
    """A monotonically rising count, optionally split by label(s)."""

    def __init__(
        self, name: str, help_text: str, label: Labels | None, registry: CollectorRegistry
    ) -> None:
        # Its samples are named ``…_total`` whether or not the name says so.
        self.name = name if name.endswith("_total") else f"{name}_total"
        self.labels = _names(label)
        self._metric = prometheus_client.Counter(name, help_text, self.labels, registry=registry)
        self._registry = registry

    def inc(self, amount: float = 1.0, label: Labels = "") -> None:
        if self.labels:
            self._metric.labels(*_values(label)).inc(amount)
        else:
            self._metric.inc(amount)

    def value(self, label: Labels = "") -> float:
        labels = dict(zip(self.labels, _values(label), strict=True)) if self.labels else None
        found = self._registry.get_sample_value(self.name, labels)
        return 0.0 if found is None else found

    def total(self) -> float:
        """The sum over every label value."""
        return sum(
            s.value
            for family in self._metric.collect()
            for s in family.samples
            if s.name == self.name
        )


class Gauge:
    """A value read when scraped (a callable), or set by the service; optionally labelled."""

    def __init__(
        self,
        name: str,
        help_text: str,
        registry: CollectorRegistry,
        read: Callable[[], float] | None = None,
        label: Labels | None = None,
    ) -> None:
        self.name, self.labels = name, _names(label)
        self._metric = prometheus_client.Gauge(name, help_text, self.labels, registry=registry)
        self._registry = registry
        if read is not None:
            self._metric.set_function(read)

    def set(self, value: float, label: Labels = "") -> None:
        if self.labels:
            self._metric.labels(*_values(label)).set(value)
        else:
            self._metric.set(value)

    def value(self, label: Labels = "") -> float:
        labels = dict(zip(self.labels, _values(label), strict=True)) if self.labels else None
        found = self._registry.get_sample_value(self.name, labels)
        return 0.0 if found is None else found


class Histogram:
    """Cumulative buckets, sum and count."""

    def __init__(
        self, name: str, help_text: str, buckets: tuple[float, ...], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self._metric = prometheus_client.Histogram(
            name, help_text, buckets=buckets, registry=registry
        )
        self._registry = registry

    def observe(self, value: float) -> None:
        self._metric.observe(value)

    @property
    def count(self) -> int:
        return int(self._registry.get_sample_value(f"{self.name}_count") or 0)


class Registry:
    """The metrics of one service (named ``sqal_<service>_<name>``), and its health verdict."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.collector = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.collector)
        PlatformCollector(registry=self.collector)
        GCCollector(registry=self.collector)
        self.healthy: Callable[[], tuple[bool, str]] = lambda: (True, "ok")

    def _name(self, name: str) -> str:
        return f"sqal_{self.service}_{name}"

    def counter(self, name: str, help_text: str, label: Labels | None = None) -> Counter:
        return Counter(self._name(name), help_text, label, self.collector)

    def gauge(
        self,
        name: str,
        help_text: str,
        read: Callable[[], float] | None = None,
        label: Labels | None = None,
    ) -> Gauge:
        return Gauge(self._name(name), help_text, self.collector, read, label)

    def histogram(
        self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    ) -> Histogram:
        return Histogram(self._name(name), help_text, buckets, self.collector)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an HTTP ``Accept`` header: (body, content type)."""
        encode, content_type = choose_encoder(accept)
        return encode(self.collector), content_type


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``host:port``, served from a daemon thread."""

    def __init__(self, registry: Registry, port: int, host: str = DEFAULT_METRICS_HOST) -> None:
        """Bind the port now (serving starts with :meth:`start`).

        Raises:
            ServiceError: the port is taken or not ours to bind, or the host is not an address
                of this machine, naming it.
        """
        reg = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, ctype = reg.render(self.headers.get("Accept", ""))
                    code = 200
                elif self.path == "/healthz":
                    ok, why = reg.healthy()
                    body, code, ctype = f"{why}\n".encode(), 200 if ok else 503, "text/plain"
                else:
                    body, code, ctype = b"not found\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes are not news

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:  # EADDRINUSE mostly; EACCES below 1024; EADDRNOTAVAIL, EAI_*
            raise ServiceError(
                f"cannot serve /metrics on {host}:{port} ({exc.strerror or exc}); "
                "choose a free port with --metrics-port (or another --metrics-host)"
            ) from None
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"metrics-{registry.service}", daemon=True
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever: never if not started
            self._server.shutdown()
        self._server.server_close()
