"""A request id that follows a request into its log lines and into the run it starts.

`RequestIdMiddleware` takes the caller's `X-Request-ID` (a load balancer's or a client's) when it
is a plain token of at most 128 characters, or makes one, puts it on the response and in a
context variable for the time of the request. `RequestIdLogFilter` copies it onto every log record
(`record.request_id`, "-" outside a request), so text and JSON lines carry it. `execution_start`
stores it on the run (`input_data["request_id"]`) and the log shipper adds it to the `extra` of
every shipped record of that run (executions/logstore/shipping.py), so the id of the API call that
started a run finds the run's log records, its steps' included.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

HEADER = "X-Request-ID"
_SAFE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("imageflow_request_id", default=None)


def current_request_id() -> str | None:
    return _current.get()


def accepted_request_id(value: str | None) -> str:
    """The caller's id when it is safe to log and store (no spaces, quotes or control characters
    that could forge a log line), a new one otherwise."""
    if value and _SAFE.match(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        request_id = accepted_request_id(request.headers.get(HEADER))
        request.request_id = request_id
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response[HEADER] = request_id
        return response


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = _current.get() or "-"
        return True
