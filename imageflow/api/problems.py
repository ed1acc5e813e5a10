"""The body of every API error (the shape imageflow/api/errors.py documents) and which paths
answer in it. Kept apart from errors.py so the outage responses (imageflow/outages.py), the
health view and the request limits build it without importing DRF's exception handling."""

from __future__ import annotations

from typing import Any

TITLES = {
    400: "Invalid input.",
    401: "Authentication required.",
    403: "Permission denied.",
    404: "Not found.",
    405: "Method not allowed.",
    406: "Not acceptable.",
    409: "Conflict.",
    413: "Request entity too large.",
    415: "Unsupported media type.",
    429: "Too many requests.",
    500: "Internal server error.",
    503: "Service unavailable.",
}


def problem(*, status_code: int, type_: str, detail: str, errors: dict[str, list[str]] | None = None,
            title: str | None = None) -> dict[str, Any]:
    return {
        "type": type_,
        "title": title or TITLES.get(status_code, "Error."),
        "status": status_code,
        "detail": detail,
        "errors": errors or {},
    }


def is_api_path(request) -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"
