"""Prometheus metrics: `/metrics` on the web, a small exporter on each Celery worker.

prometheus-client runs in multiprocess mode when `PROMETHEUS_MULTIPROC_DIR` is set (the deploy
files set it; deploy/entrypoint.sh empties it at start): every uvicorn process and every Celery
pool process writes its counters and histograms to files there, and a scrape of any one process
sums them all. Without it (development), a process reports only its own.

Counted where they happen (any process):
- `imageflow_service_errors_total{service}`: errors `imageflow.outages` classifies as an outage of
  the object store, search, database, Redis or broker (a step's failed try, a 503);
- `imageflow_websocket_clients`: WebSocket connections open now (web);
- `imageflow_step_duration_seconds{component,status}`: a histogram of finished steps (workers;
  executions/metrics.py).
Read at scrape time by the collectors apps register with `register_scrape_collector` (runs and
steps by status, queue lengths, log backlog and shipping lag: executions/metrics.py), in the
scraping process only, so N processes do not count the same rows N times.

`/metrics` answers only `Authorization: Bearer <METRICS_TOKEN>`; with METRICS_TOKEN empty (the
development default) it is off (404). A token rather than an address rule: behind a load balancer
or an ingress every request comes from a private address.
"""

from __future__ import annotations

import atexit
import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

SERVICE_ERRORS = Counter("imageflow_service_errors_total",
                         "Errors classified as an outage of a service (imageflow/outages.py).", ["service"])
WEBSOCKET_CLIENTS = Gauge("imageflow_websocket_clients", "WebSocket connections open now.",
                          multiprocess_mode="livesum")

_scrape_collectors: list[Callable[[], Iterable[Metric]]] = []


def register_scrape_collector(collect: Callable[[], Iterable[Metric]]) -> None:
    """`collect()` yields metric families, computed when a scrape arrives (cheap reads only)."""
    if collect not in _scrape_collectors:
        _scrape_collectors.append(collect)


class _ScrapeTime(Collector):
    def collect(self) -> Iterable[Metric]:
        for collect in list(_scrape_collectors):
            try:
                yield from collect()
            except Exception:  # a dependency down must not take the other metrics with it
                logger.warning("metrics collector %s failed", getattr(collect, "__name__", collect), exc_info=True)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


_SCRAPE_TIME = _ScrapeTime()
_registered_in_default = False
_register_lock = threading.Lock()


def scrape_registry() -> CollectorRegistry:
    """What one scrape reports: every process's files (multiprocess mode) or this process's
    metrics, plus the scrape-time collectors."""
    global _registered_in_default
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_SCRAPE_TIME)
        return registry
    with _register_lock:
        if not _registered_in_default:
            REGISTRY.register(_SCRAPE_TIME)
            _registered_in_default = True
    return REGISTRY


def render() -> bytes:
    return generate_latest(scrape_registry())


def _mark_process_dead() -> None:
    # A livesum gauge of a process that exited would otherwise be summed forever.
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


atexit.register(_mark_process_dead)


def token_accepted(authorization: str, token: str) -> bool:
    scheme, _, value = authorization.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


def metrics_view(request):
    from django.conf import settings
    from django.http import HttpResponse

    if not settings.METRICS_TOKEN:
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    if not token_accepted(request.headers.get("Authorization", ""), settings.METRICS_TOKEN):
        response = HttpResponse("A metrics token is needed (Authorization: Bearer <METRICS_TOKEN>).\n",
                                status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    response = HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


class WebSocketClientsMiddleware:
    """ASGI: counts the WebSocket connections open through this process."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        WEBSOCKET_CLIENTS.inc()
        try:
            return await self.app(scope, receive, send)
        finally:
            WEBSOCKET_CLIENTS.dec()


def start_worker_exporter(port: int, *, host: str = "0.0.0.0") -> None:
    """The Celery worker's /metrics (same token as the web), served from a thread of the worker's
    main process; pool processes report through the multiprocess files."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from django.conf import settings
    from django.db import close_old_connections, connection

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] != "/metrics":
                return self._answer(404, b"Not found.\n", "text/plain")
            if not settings.METRICS_TOKEN:
                return self._answer(404, b"Not found.\n", "text/plain")
            if not token_accepted(self.headers.get("Authorization", ""), settings.METRICS_TOKEN):
                return self._answer(401, b"A metrics token is needed.\n", "text/plain")
            close_old_connections()
            try:
                body = render()
            finally:
                connection.close()  # this thread's connection, not kept between scrapes
            return self._answer(200, body, CONTENT_TYPE_LATEST)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # scrapes every 15 s would flood the log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-exporter", daemon=True).start()
    logger.info("worker metrics on http://%s:%d/metrics", host, server.server_address[1])
