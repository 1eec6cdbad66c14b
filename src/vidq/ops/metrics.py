"""Prometheus metrics (prometheus_client).

Two kinds, so that several API processes never give wrong counters:

- Job families are *derived from the job store at scrape time* (``JobFamilies``, a
  custom collector): submitted, finished and attempts counters, the queue-wait and run-time
  histograms (``vidq/store/counters.py``, purged rows included through the rollup), and
  the queue depth, running and live-worker gauges. Every API process answers the same
  fleet-wide values; aggregate them with ``max``, not ``sum``.
- HTTP families (``HttpMetrics``) and a worker's own families (``WorkerMetrics``) count
  what one process did; Prometheus tells processes apart by their scrape target, and
  ``sum`` adds them up.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidq.catalog import POOLS
from vidq.store.base import MetricStore, Samples
from vidq.store.counters import ATTEMPTS, FINISHED, GPU, QUEUE_WAIT, RUN, SUBMITTED
from vidq.store.statements import DURATION_BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Upper bounds (seconds) of the HTTP duration buckets: prometheus_client's defaults.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Where a request whose path matched no route is counted (raw paths are never labels).
UNMATCHED = "unmatched"

_COUNTERS = (
    (SUBMITTED, "Requests submitted.", ("model", "pool", "tier")),
    (FINISHED, "Requests finished, by final state (a failure an admin retried counts).",
     ("pool", "state")),
    (ATTEMPTS, "Attempts that ended, by outcome: completed, failed or retried.",
     ("pool", "outcome")),
    (GPU, "Seconds engines ran on GPU slots, recorded as each attempt ends (users: "
     "GET /admin/usage).", ("pool", "model")),
)  # fmt: skip
_HISTOGRAMS = (
    (QUEUE_WAIT, "Seconds from submit to the claim of a request's last attempt."),
    (RUN, "Seconds a request's last attempt ran (completed or failed)."),
)


class JobFamilies(Collector):
    """The job families, read from the store on every scrape (four queries)."""

    def __init__(self, store: MetricStore) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        samples = self.store.job_samples()
        states = self.store.pool_states()
        workers = self.store.live_workers()
        yield from _counters(samples)
        yield from _histograms(samples)
        depth = GaugeMetricFamily("vidq_queue_depth", "Queued requests.", labels=["pool"])
        running = GaugeMetricFamily("vidq_jobs_running", "Running requests.", labels=["pool"])
        alive = GaugeMetricFamily(
            "vidq_workers_alive", "Workers seen in the last minute.", labels=["pool"]
        )
        for pool in sorted(set(POOLS) | set(states) | set(workers)):
            by_state = states.get(pool, {})
            queued = sum(n for state, n in by_state.items() if state.queued)
            depth.add_metric([pool], queued)
            running.add_metric([pool], sum(n for s, n in by_state.items() if s.value == "RUNNING"))
            alive.add_metric([pool], workers.get(pool, 0))
        yield from (depth, running, alive)


def _by_family(samples: Samples, family: str) -> Iterator[tuple[dict[str, str], float]]:
    for (name, labels), value in sorted(samples.items()):
        if name == family:
            yield json.loads(labels), value


def _counters(samples: Samples) -> Iterator[Metric]:
    for family, doc, label_names in _COUNTERS:
        metric = CounterMetricFamily(family, doc, labels=list(label_names))
        for labels, value in _by_family(samples, family):
            metric.add_metric([labels[n] for n in label_names], value)
        yield metric


def _histograms(samples: Samples) -> Iterator[Metric]:
    for family, doc in _HISTOGRAMS:
        metric = HistogramMetricFamily(family, doc, labels=["pool"])
        counts = dict((k["pool"], v) for k, v in _by_family(samples, f"{family}_count"))
        sums = dict((k["pool"], v) for k, v in _by_family(samples, f"{family}_sum"))
        buckets: dict[str, dict[str, float]] = {}
        for labels, value in _by_family(samples, f"{family}_bucket"):
            buckets.setdefault(labels["pool"], {})[labels["le"]] = value
        for pool in sorted(counts):
            seen = buckets.get(pool, {})
            cumulative = [(repr(b), seen.get(repr(b), 0.0)) for b in DURATION_BUCKETS]
            cumulative.append(("+Inf", counts[pool]))
            metric.add_metric([pool], cumulative, sums.get(pool, 0.0))
        yield metric


class HttpMetrics(Collector):
    """Requests served by this process, by route template, method and status, and their
    durations. Counted on the event loop only (one thread: plain numbers, no locks, about a
    microsecond a request, which the status fast path needs) and read at scrape time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        # per (route, method): a count per bucket of HTTP_BUCKETS, one over the last, the sum
        self._durations: dict[tuple[str, str], list[float]] = {}
        registry.register(self)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        durations = self._durations.get((route, method))
        if durations is None:
            durations = self._durations[(route, method)] = [0.0] * (len(HTTP_BUCKETS) + 2)
        durations[bisect.bisect_left(HTTP_BUCKETS, seconds)] += 1  # le: seconds <= bound
        durations[-1] += seconds

    def collect(self) -> Iterable[Metric]:
        # dict() and list() copy in one step under the GIL: safe while the loop counts
        requests = CounterMetricFamily(
            "vidq_http_requests", "HTTP requests answered by this API process.",
            labels=["route", "method", "status"],
        )  # fmt: skip
        for (route, method, status), n in sorted(dict(self._requests).items()):
            requests.add_metric([route, method, str(status)], n)
        yield requests
        histogram = HistogramMetricFamily(
            "vidq_http_request_duration_seconds", "Seconds to answer an HTTP request.",
            labels=["route", "method"],
        )  # fmt: skip
        for (route, method), counts in sorted(dict(self._durations).items()):
            counts = list(counts)
            buckets, seen = [], 0.0
            for bound, count in zip(HTTP_BUCKETS, counts, strict=False):
                seen += count
                buckets.append((repr(bound), seen))
            buckets.append(("+Inf", seen + counts[len(HTTP_BUCKETS)]))
            histogram.add_metric([route, method], buckets, counts[-1])
        yield histogram


class HttpMetricsMiddleware:
    """Times every HTTP request and counts it under its route template (the status fast
    path, which answers before it, counts its polls itself)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.observe(route, scope["method"], status[0], time.perf_counter() - started)


class WorkerMetrics:
    """What this process's workers did (``vidq worker --metrics-port``; the in-process
    workers of ``vidq serve`` report through the API's ``/metrics``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "vidq_worker_attempts", "Attempts this process's workers ended, by outcome.",
            ["pool", "outcome"], registry=registry,
        )  # fmt: skip
        self.busy = Gauge(
            "vidq_worker_busy", "Jobs this process's workers are running now.", ["pool"],
            registry=registry,
        )  # fmt: skip
        self.startup = Gauge(
            "vidq_worker_startup_seconds",
            "Seconds from a worker slot's start until it was ready to claim (its engines "
            "loaded; with --warmup, a first generation run).",
            ["slot"], registry=registry,
        )  # fmt: skip
        self.engine_up = Gauge(
            "vidq_worker_engine_up",
            "1 while a worker slot's engine can serve, 0 while the worker holds it down (its "
            "backend unreachable, or its child failing to start) and probes it.",
            ["slot", "engine"], registry=registry,
        )  # fmt: skip
        self._lock = threading.Lock()

    def attempt(self, pool: str, outcome: str) -> None:
        self.attempts.labels(pool, outcome).inc()


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(registry)


def serve_worker_metrics(
    registry: CollectorRegistry,
    port: int,
    host: str = "0.0.0.0",
    unhealthy: Callable[[], str | None] | None = None,
) -> None:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread, and
    ``/health``: 200 ``{"status": "ok"}``, or 503 with why ``unhealthy()`` says the worker
    is not (a Kubernetes readiness probe). Every other path is 404."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            scraped: Iterable[bytes] = metrics_app(environ, start_response)
            return scraped
        if path == "/health":
            why = unhealthy() if unhealthy is not None else None
            status = "200 OK" if why is None else "503 Service Unavailable"
            body = json.dumps({"status": "ok"} if why is None else {"status": "unhealthy",
                                                                     "detail": why})  # fmt: skip
        else:
            status, body = "404 Not Found", json.dumps({"detail": "not found"})
        start_response(status, [("Content-Type", "application/json")])
        return [body.encode()]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
            pass

    server = make_server(host, port, app, server_class=Server, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, name="vidq-metrics", daemon=True).start()
