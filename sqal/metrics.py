"""Counters, gauges and histograms for ``/metrics`` (Prometheus text format 0.0.4) and ``/healthz``.

One :class:`Registry` per service. Updates are plain attribute arithmetic under one lock, cheap
enough for the per-message path; the HTTP server renders on request from its own thread.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

from sqal.errors import ServiceError

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in pairs)
    return f"{{{inner}}}" if inner else ""


class Counter:
    """A monotonically rising count, optionally split by one label."""

    def __init__(self, name: str, help_text: str, label: str | None = None) -> None:
        self.name, self.help, self.label = name, help_text, label
        self._values: dict[str, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, label: str = "") -> None:
        with self._lock:
            self._values[label] = self._values.get(label, 0.0) + amount

    def value(self, label: str = "") -> float:
        return self._values.get(label, 0.0)

    def total(self) -> float:
        return sum(self._values.values())

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for label, v in sorted(self._values.items()):
            pairs = [(self.label, label)] if self.label else []
            out.append(f"{self.name}{_labels(pairs)} {v:g}")
        if not self._values and not self.label:
            out.append(f"{self.name} 0")
        return out


class Gauge:
    """A value read when rendered (a callable), or set by the service."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> None:
        self.name, self.help, self._read = name, help_text, read
        self._value = 0.0

    def set(self, value: float) -> None:
        self._value = value

    def value(self) -> float:
        return self._read() if self._read is not None else self._value

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {self.value():g}",
        ]


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus expects."""

    def __init__(
        self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    ) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value

    @property
    def count(self) -> int:
        return sum(self._counts)

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip(self.buckets, self._counts, strict=False):
            running += n
            out.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        running += self._counts[-1]
        out.append(f'{self.name}_bucket{{le="+Inf"}} {running}')
        out.append(f"{self.name}_sum {self._sum:g}")
        out.append(f"{self.name}_count {running}")
        return out


Metric = Counter | Gauge | Histogram
_M = TypeVar("_M", Counter, Gauge, Histogram)


class Registry:
    """The metrics of one service, and its health verdict."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._metrics: list[Metric] = []
        self.healthy: Callable[[], tuple[bool, str]] = lambda: (True, "ok")

    def counter(self, name: str, help_text: str, label: str | None = None) -> Counter:
        return self._add(Counter(f"sqal_{self.service}_{name}", help_text, label))

    def gauge(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> Gauge:
        return self._add(Gauge(f"sqal_{self.service}_{name}", help_text, read))

    def histogram(
        self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    ) -> Histogram:
        return self._add(Histogram(f"sqal_{self.service}_{name}", help_text, buckets))

    def _add(self, metric: _M) -> _M:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for m in self._metrics:
            lines += m.render()
        return "\n".join(lines) + "\n"


class MetricsServer:
    """``/metrics`` and ``/healthz`` on a loopback port, served from a daemon thread."""

    def __init__(self, registry: Registry, port: int, host: str = "127.0.0.1") -> None:
        """Bind the port now (serving starts with :meth:`start`).

        Raises:
            ServiceError: the port is taken or not ours to bind, naming it.
        """
        reg = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, code = reg.render().encode(), 200
                    ctype = "text/plain; version=0.0.4; charset=utf-8"
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
        except OSError as exc:  # EADDRINUSE mostly; EACCES for a port below 1024
            raise ServiceError(
                f"cannot serve /metrics on {host}:{port} ({exc.strerror or exc}); "
                "choose a free port with --metrics-port"
            ) from None
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"metrics-{registry.service}", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever: never if not started
            self._server.shutdown()
        self._server.server_close()
