"""Prometheus metrics of the daemon (seed 000), rendered from a snapshot of its counters.

The daemon does not keep live prometheus_client metric objects: its counters are persisted in
the state file so that ``reaper metrics`` can print the same text without a running daemon.
So the exposition is built from a :class:`MetricsSnapshot` by a custom collector registered in
a registry of its own (never the process-global ``REGISTRY``, which would also export Python
process and GC metrics and make two renderings of one snapshot differ).

Counters follow prometheus_client (and OpenMetrics): a counter family ``reaper_x`` is exposed
as the sample ``reaper_x_total``. ``reaper_processes_killed_total`` keeps seed 000's name;
seed 000's ``reaper_cpu_recovered_percent`` counter appears as
``reaper_cpu_recovered_percent_total``.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = structlog.get_logger(__name__)

SCAN_DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the scan-duration histogram; +Inf is implied."""

PRIORITIES = ("critical", "high", "medium", "low")

METRIC_NAMES = (
    "reaper_processes_monitored",
    "reaper_rogue_processes_detected",
    "reaper_processes_killed_total",
    "reaper_cpu_recovered_percent",
    "reaper_scan_duration_seconds",
    "reaper_protected_skips_total",
    "reaper_health_check_up",
    "reaper_last_scan_timestamp_seconds",
)


@dataclass(frozen=True)
class MetricsSnapshot:
    """Every value the exposition shows; built by the daemon from its persisted state."""

    processes_monitored: int = 0
    rogue_by_priority: Mapping[str, int] = field(default_factory=dict)
    killed_total: int = 0
    cpu_recovered_total: float = 0.0
    scan_duration_buckets: tuple[int, ...] = (0,) * len(SCAN_DURATION_BUCKETS)
    """Non-cumulative count per bucket of SCAN_DURATION_BUCKETS, then one for +Inf."""
    scan_duration_count: int = 0
    scan_duration_sum: float = 0.0
    protected_skips: Mapping[str, int] = field(default_factory=dict)
    health_up: Mapping[str, bool] = field(default_factory=dict)
    last_scan_timestamp: float | None = None


def bucket_index(seconds: float) -> int:
    """Index of the (non-cumulative) bucket a scan of ``seconds`` falls into."""
    for index, bound in enumerate(SCAN_DURATION_BUCKETS):
        if seconds <= bound:
            return index
    return len(SCAN_DURATION_BUCKETS)


class SnapshotCollector:
    """A prometheus_client collector that renders whatever ``source()`` returns now."""

    def __init__(self, source: Callable[[], MetricsSnapshot]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        snap = self._source()
        yield _gauge(
            "reaper_processes_monitored",
            "Processes seen by the last scan",
            snap.processes_monitored,
        )
        rogue = GaugeMetricFamily(
            "reaper_rogue_processes_detected",
            "Rogue processes found by the last scan, by rule priority",
            labels=["priority"],
        )
        for priority in PRIORITIES:
            rogue.add_metric([priority], snap.rogue_by_priority.get(priority, 0))
        yield rogue
        yield CounterMetricFamily(
            "reaper_processes_killed",
            "Processes killed since the daemon's state was created",
            value=snap.killed_total,
        )
        yield CounterMetricFamily(
            "reaper_cpu_recovered_percent",
            "Sum of the CPU% of the processes killed (100 = one core)",
            value=snap.cpu_recovered_total,
        )
        yield _histogram(snap)
        skips = CounterMetricFamily(
            "reaper_protected_skips",
            "Rogue processes left alone because a protection covers them, by protection",
            labels=["protection"],
        )
        for protection, count in sorted(snap.protected_skips.items()):
            skips.add_metric([protection], count)
        yield skips
        health = GaugeMetricFamily(
            "reaper_health_check_up",
            "1 if the health check's last run succeeded, else 0",
            labels=["name"],
        )
        for name, up in sorted(snap.health_up.items()):
            health.add_metric([name], 1 if up else 0)
        yield health
        if snap.last_scan_timestamp is not None:
            yield _gauge(
                "reaper_last_scan_timestamp_seconds",
                "When the last scan finished (Unix time)",
                snap.last_scan_timestamp,
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _histogram(snap: MetricsSnapshot) -> HistogramMetricFamily:
    cumulative: list[tuple[str, float]] = []
    running = 0
    bounds = [*(repr(float(b)) for b in SCAN_DURATION_BUCKETS), "+Inf"]
    counts = list(snap.scan_duration_buckets) + [0] * (
        len(bounds) - len(snap.scan_duration_buckets)
    )
    for bound, count in zip(bounds, counts, strict=True):
        running += count
        cumulative.append((bound, running))
    return HistogramMetricFamily(
        "reaper_scan_duration_seconds",
        "Duration of one daemon scan (one reap mission over this host)",
        buckets=cumulative,
        sum_value=snap.scan_duration_sum,
    )


def registry_for(source: Callable[[], MetricsSnapshot]) -> CollectorRegistry:
    """A registry of its own holding only the daemon's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(source))
    return registry


def exposition(snapshot: MetricsSnapshot) -> bytes:
    """The Prometheus text exposition of ``snapshot`` (what the endpoint serves)."""
    return generate_latest(registry_for(lambda: snapshot))


REQUEST_TIMEOUT_SECONDS = 5.0
"""How long one connection may take to send its request: an idle client is dropped after it."""


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_SECONDS  # StreamRequestHandler sets it on the socket

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes every 15 s would flood the daemon log through stderr; structlog instead.
        log.debug("metrics_request", request=format % args)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per connection, so a slow or idle client never stalls the next scrape.

    The threads are daemon threads and ``server_close`` does not wait for them: stopping the
    daemon never waits on a client (each one ends at its socket timeout anyway).
    """

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or hung up: not worth a traceback on stderr.
        log.debug("metrics_request_failed", client=str(client_address), exc_info=True)


class MetricsServer:
    """Serves the exposition on ``host:port`` at exactly ``path``; anything else is a 404.

    prometheus_client's ``start_http_server`` answers every path with the metrics, so this
    wraps its WSGI app to serve only the configured one, on a thread of its own.
    """

    def __init__(
        self,
        source: Callable[[], MetricsSnapshot],
        *,
        port: int,
        path: str = "/metrics",
        host: str = "127.0.0.1",
    ) -> None:
        self.path = path
        self._registry = registry_for(source)
        self._server: WSGIServer = make_server(
            host, port, self._app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="reaper-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics_serving", url=f"http://127.0.0.1:{self.port}{self.path}")
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") != self.path or environ.get("REQUEST_METHOD") not in (
            "GET",
            "HEAD",
        ):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"Not Found\n"]
        body = generate_latest(self._registry)
        start_response(
            "200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))]
        )
        return [body]
