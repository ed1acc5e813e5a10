"""Which backing service an exception says is unavailable.

Every outage is answered as `503 Service Unavailable` with `Retry-After`, never as a 500: the
API's exception handler, the middleware of plain Django views and the 500 handler all ask
`unavailable_service(exc)`. The engine asks the same question to tell a transient step error
(retried within STEP_TRANSIENT_RETRY_BUDGET_SECONDS) from a failure.

The answer comes from the exception and the exceptions it was raised from (`__cause__`,
`__context__`), so a wrapper (django-redis' ConnectionInterrupted, the log shipper's
SearchUnavailable, Django's wrapped database errors) is recognized by what it wraps.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from imageflow.exceptions import ServiceUnavailable

logger = logging.getLogger(__name__)

LABELS = {
    "database": "database",
    "redis": "cache and progress store (Redis)",
    "broker": "task queue",
    "object_store": "object store",
    "search": "search server",
}

_S3_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "RequestTimeTooSkewed"}


def _classify_one(exc: BaseException) -> str | None:
    if isinstance(exc, ServiceUnavailable):
        return exc.service
    module = type(exc).__module__ or ""
    import botocore.exceptions as bex
    import redis.exceptions as rex
    from django.db import utils as db_utils
    from elastic_transport import ConnectionError as TransportConnectionError
    from elastic_transport import ConnectionTimeout
    from kombu.exceptions import OperationalError as KombuOperationalError

    if isinstance(exc, (db_utils.OperationalError, db_utils.InterfaceError)):
        return "database"
    if module.startswith(("psycopg", "psycopg_pool")) and type(exc).__name__ in {
            "OperationalError", "InterfaceError", "PoolTimeout", "TooManyRequests", "PoolClosed"}:
        return "database"
    if isinstance(exc, KombuOperationalError):
        return "broker"
    if isinstance(exc, (rex.ConnectionError, rex.TimeoutError)):
        return "redis"
    if module.startswith("django_redis") and type(exc).__name__ == "ConnectionInterrupted":
        return "redis"
    if isinstance(exc, (bex.EndpointConnectionError, bex.ConnectionClosedError, bex.ReadTimeoutError,
                        bex.ConnectTimeoutError)):
        return "object_store"
    if isinstance(exc, bex.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return "object_store" if status >= 500 or code in _S3_TRANSIENT_CODES else None
    if isinstance(exc, (TransportConnectionError, ConnectionTimeout)):
        return "search"
    if module.startswith(("elasticsearch", "elastic_transport")):
        status = getattr(exc, "status_code", None) or getattr(getattr(exc, "meta", None), "status", None) or 0
        return "search" if (isinstance(status, int) and (status >= 500 or status == 429)) else None
    return None


def unavailable_service(exc: BaseException) -> str | None:
    """The service ("database", "redis", "broker", "object_store", "search") whose outage `exc`
    reports, or None when it is not an outage."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        service = _classify_one(current)
        if service is not None:
            _count_outage_error(exc, service)
            return service
        current = current.__cause__ or current.__context__
    return None


def _count_outage_error(exc: BaseException, service: str) -> None:
    """`imageflow_service_errors_total{service}` (imageflow/metrics.py): once per error, however
    many callers classify the same exception."""
    if getattr(exc, "_imageflow_outage_counted", False):
        return
    try:
        exc._imageflow_outage_counted = True  # type: ignore[attr-defined]
    except AttributeError:  # an exception type with __slots__: counted every time it is asked about
        pass
    from imageflow.metrics import SERVICE_ERRORS

    SERVICE_ERRORS.labels(service=service).inc()


def retry_after_seconds() -> int:
    return max(1, int(getattr(settings, "OUTAGE_RETRY_AFTER_SECONDS", 5)))


def outage_detail(service: str) -> str:
    return f"The {LABELS.get(service, service)} is unavailable; try again in a few seconds."


def outage_body(service: str) -> dict:
    from imageflow.api.problems import problem

    body = problem(status_code=503, type_="service_unavailable", detail=outage_detail(service))
    body["service"] = service
    return body


def outage_response(request: HttpRequest, service: str) -> HttpResponse:
    """The 503 of a plain Django view: the API's JSON error shape under /api/ (and /healthz),
    a short text page elsewhere (the admin)."""
    from imageflow.api.problems import is_api_path

    logger.warning("%s unavailable during %s %s", service, request.method, request.path)
    if is_api_path(request):
        response: HttpResponse = JsonResponse(outage_body(service), status=503)
    else:
        response = HttpResponse(outage_detail(service) + "\n", status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(retry_after_seconds())
    return response


class OutageMiddleware:
    """The last middleware: an outage raised by any view (the admin's included) is a 503.

    Outages raised inside another middleware (a session saved while the database is down) reach
    `imageflow.api.errors.handler500`, which answers the same 503 (with DEBUG off; with DEBUG on
    Django shows its debug page there)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        service = unavailable_service(exception)
        return outage_response(request, service) if service else None
