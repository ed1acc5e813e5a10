"""One JSON error shape for every API failure, DRF or not:

    {"type": "validation_error", "title": "Invalid input.", "status": 400,
     "detail": "definition: node 'resize' ...", "errors": {"field": ["message", ...]}}

`type` is a stable machine-readable code, `title` a short human summary of that code, `detail`
the specific explanation, `errors` the per-field messages (empty when the error is not about
fields). Nested field errors are flattened into dotted paths (`inputs.0`, `definition.nodes`).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from imageflow.exceptions import ConflictError

from .problems import is_api_path, problem

logger = logging.getLogger(__name__)

NON_FIELD_KEY = "non_field_errors"

class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than allowed."
    default_code = "payload_too_large"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The resource is not in a state that allows this."
    default_code = "conflict"


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail -> {"dotted.path": ["message", ...]}."""
    result: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            for sub_key, messages in flatten_errors(value, path).items():
                result.setdefault(sub_key, []).extend(messages)
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            result.setdefault(prefix or NON_FIELD_KEY, []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                if item in ({}, []):
                    continue
                path = f"{prefix}.{index}" if prefix else str(index)
                for sub_key, messages in flatten_errors(item, path).items():
                    result.setdefault(sub_key, []).extend(messages)
    else:
        result.setdefault(prefix or NON_FIELD_KEY, []).append(str(detail))
    return result


def _summary(errors: dict[str, list[str]]) -> str:
    parts = []
    for key, messages in list(errors.items())[:5]:
        label = "" if key == NON_FIELD_KEY else f"{key}: "
        parts.append(label + " ".join(messages))
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more if parts else "Invalid input."


def dag_errors_to_fields(dag_errors: list[dict[str, Any]], *, prefix: str = "definition") -> dict[str, list[str]]:
    """The engine's DAG problems ({node, field, message}) as per-field messages that name the node."""
    result: dict[str, list[str]] = {}
    for item in dag_errors:
        field_path = item.get("field") or ""
        key = f"{prefix}.{field_path.lstrip('.')}" if field_path else prefix
        node = item.get("node")
        message = item.get("message", "")
        result.setdefault(key, []).append(f"node {node!r}: {message}" if node else message)
    return result


def django_validation_error_fields(exc: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {(NON_FIELD_KEY if key == "__all__" else key): [str(m) for m in msgs]
                for key, msgs in exc.message_dict.items()}
    return {NON_FIELD_KEY: [str(m) for m in exc.messages]}


def _too_big_detail() -> str:
    from django.conf import settings

    return f"The request body may be at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."


def _dag_error_class():
    from imageflow.exceptions import DagValidationError

    return DagValidationError


def _view_name(context: dict) -> str:
    return context.get("view").__class__.__name__ if context.get("view") else "API view"


def api_exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: every exception of an API view becomes the error shape."""
    headers: dict[str, str] = {}
    if isinstance(exc, _dag_error_class()):
        errors = dag_errors_to_fields(exc.errors)
        body = problem(status_code=400, type_="validation_error", detail=_summary(errors), errors=errors)
        set_rollback()
        return Response(body, status=400)
    if isinstance(exc, DjangoValidationError):
        errors = django_validation_error_fields(exc)
        body = problem(status_code=400, type_="validation_error", detail=_summary(errors), errors=errors)
        set_rollback()
        return Response(body, status=400)
    if isinstance(exc, ConflictError):
        exc = Conflict(str(exc) or Conflict.default_detail)
    elif isinstance(exc, RequestDataTooBig):
        # Django's own body limit (DATA_UPLOAD_MAX_MEMORY_SIZE = API_JSON_MAX_BYTES), reached where
        # the ASGI limit did not run first (WSGI, the test client).
        exc = PayloadTooLarge(_too_big_detail())
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, exceptions.APIException):
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        elif exc.status_code == 503:  # a service the view depends on said so itself
            from imageflow.outages import retry_after_seconds

            headers["Retry-After"] = str(retry_after_seconds())
        if isinstance(exc, exceptions.ValidationError):
            errors = flatten_errors(exc.detail)
            body = problem(status_code=exc.status_code, type_="validation_error", detail=_summary(errors),
                           errors=errors)
        else:
            detail = exc.detail
            code = detail.code if hasattr(detail, "code") else exc.default_code
            body = problem(status_code=exc.status_code, type_=str(code), detail=str(detail))
        set_rollback()
        return Response(body, status=exc.status_code, headers=headers)

    from imageflow.outages import outage_body, retry_after_seconds, unavailable_service

    service = unavailable_service(exc)
    if service is not None:
        logger.warning("%s unavailable in %s: %s", service, _view_name(context), exc)
        set_rollback()
        return Response(outage_body(service), status=503, headers={"Retry-After": str(retry_after_seconds())})
    logger.exception("unhandled error in %s", _view_name(context))
    set_rollback()
    return Response(problem(status_code=500, type_="server_error", detail="An unexpected error occurred; it has been logged."),
                    status=500)


# --- Plain Django views (outside DRF) under /api/ and the project-wide handlers -----------------

def api_not_found(request, *args, **kwargs) -> JsonResponse:
    """The catch-all of /api/: an unknown URL answers in the error shape, also with DEBUG on."""
    body = problem(status_code=404, type_="not_found", detail=f"No API endpoint at {request.path}.")
    return JsonResponse(body, status=404)


def handler404(request, exception=None):
    if is_api_path(request):
        return api_not_found(request)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    import sys

    from imageflow.outages import outage_response, unavailable_service

    exc = sys.exc_info()[1]
    service = unavailable_service(exc) if exc is not None else None
    if service is not None:  # an outage raised outside a view (inside a middleware)
        return outage_response(request, service)
    if is_api_path(request):
        body = problem(status_code=500, type_="server_error", detail="An unexpected error occurred; it has been logged.")
        return JsonResponse(body, status=500)
    from django.views.defaults import server_error

    return server_error(request)


class ApiErrorMiddleware:
    """Exceptions of plain Django views under /api/ answer in the error shape even with DEBUG
    on (Django's debug pages would otherwise replace handler404/handler500)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (is_api_path(request) and response.status_code in (404, 405, 500)
                and not response.get("Content-Type", "").startswith("application/json")):
            # Django's own 404 (no URL matched) / 405 / debug pages, not produced by an API view.
            status_code = response.status_code
            type_ = {404: "not_found", 405: "method_not_allowed", 500: "server_error"}[status_code]
            detail = {404: f"No API endpoint at {request.path}.",
                      405: f'Method "{request.method}" not allowed.',
                      500: "An unexpected error occurred; it has been logged."}[status_code]
            replacement = JsonResponse(problem(status_code=status_code, type_=type_, detail=detail), status=status_code)
            if response.has_header("Allow"):
                replacement["Allow"] = response["Allow"]
            return replacement
        return response

    def process_exception(self, request, exception):
        if not is_api_path(request):
            return None
        if isinstance(exception, Http404):
            return JsonResponse(problem(status_code=404, type_="not_found", detail=str(exception) or "Not found."),
                                status=404)
        if isinstance(exception, DjangoPermissionDenied):
            return JsonResponse(problem(status_code=403, type_="permission_denied", detail="Permission denied."),
                                status=403)
        if isinstance(exception, RequestDataTooBig):
            return JsonResponse(problem(status_code=413, type_="payload_too_large", detail=_too_big_detail()),
                                status=413)
        logger.exception("unhandled error at %s", request.path)
        return JsonResponse(problem(status_code=500, type_="server_error",
                                    detail="An unexpected error occurred; it has been logged."), status=500)
