"""`GET /healthz` and `GET /readyz`: can this process reach the database, Redis, the object store and search?

200 when every dependency answers, 503 otherwise. No authentication needed: load balancers and
orchestrators call it, and they get only `{"status": "ok"}` or `{"status": "unavailable"}`. The
details (which dependency is down, its error text with hosts and ports, timings) are shown to
staff only, by session or API token (`Authorization: Token <key>`): they map the deployment for
anyone who can reach the URL. Each check has a short timeout so a dead dependency makes the
answer slow by at most a few seconds.

`GET /livez` touches no dependency: 200 while the process serves. Orchestrators restart a process
whose liveness fails, which would not bring a database back; they stop routing to one whose
readiness (`/readyz`, the same answer as `/healthz`) fails. `ProbeMiddleware` answers the three
probe paths (not `/healthz`, kept as it was) and `/metrics` first, before the `ALLOWED_HOSTS` check: a kubelet or a compose health
check calls them by the pod's address, not by a served host name.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

CHECK_TIMEOUT_SECONDS = 3.0


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_redis() -> None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
                                  socket_timeout=CHECK_TIMEOUT_SECONDS)
    try:
        if not client.ping():
            raise RuntimeError("PING did not answer PONG")
    finally:
        client.close()


def check_object_store() -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=settings.S3_ENDPOINT_URL, region_name=settings.S3_REGION,
        aws_access_key_id=settings.AWS_ACCESS_KEY_ID, aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, connect_timeout=CHECK_TIMEOUT_SECONDS,
                      read_timeout=CHECK_TIMEOUT_SECONDS, retries={"max_attempts": 1}),
    )
    client.head_bucket(Bucket=settings.S3_BUCKET)


def check_search() -> None:
    from imageflow.search import build_client

    client = build_client(timeout_seconds=CHECK_TIMEOUT_SECONDS, max_retries=0)
    try:
        client.info()
    finally:
        client.close()


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "object_store": check_object_store,
    "search": check_search,
}


def run_checks(checks: dict[str, Callable[[], None]] | None = None) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for name, check in (checks or CHECKS).items():
        started = time.perf_counter()
        try:
            check()
            results[name] = {"ok": True}
        except Exception as exc:  # any failure means "not reachable"; the message says why
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return results


@never_cache
def healthz(request):
    if request.method not in {"GET", "HEAD"}:
        from imageflow.api.problems import problem

        response = JsonResponse(problem(status_code=405, type_="method_not_allowed",
                                        detail=f'Method "{request.method}" not allowed.'), status=405)
        response["Allow"] = "GET, HEAD"
        return response
    results = run_checks()
    down = [name for name, result in results.items() if not result["ok"]]
    body = {"status": "ok" if not down else "unavailable"}
    if _is_staff(request):
        body.update(down=down, checks=results)
    return JsonResponse(body, status=503 if down else 200)


def _is_staff(request) -> bool:
    """The session user, or the user of an `Authorization: Token` header (as for the API)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user.is_active and user.is_staff
    parts = request.headers.get("Authorization", "").split()
    if len(parts) != 2 or parts[0].lower() != "token":
        return False
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=parts[1]).first()
    return token is not None and token.user.is_active and token.user.is_staff


@never_cache
def livez(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    return healthz(request)


class ProbeMiddleware:
    """First in MIDDLEWARE: the probe and metrics paths are answered without the Host check (a
    probe's Host is an address), sessions or CSRF; `readyz` details are still for staff tokens."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        from imageflow.metrics import metrics_view

        view = {"/livez": livez, "/readyz": readyz, "/metrics": metrics_view}.get(request.path_info)
        if view is None:
            return self.get_response(request)
        try:
            return view(request)
        except Exception as exc:  # what OutageMiddleware does for the other views
            from imageflow.outages import outage_response, unavailable_service

            service = unavailable_service(exc)
            if service is None:
                raise
            return outage_response(request, service)
