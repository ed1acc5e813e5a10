"""Who is acting, and through which door (API, admin, command), for the audit log.

The middleware keeps the current request in a context variable. DRF authenticates inside the
view and then sets `request._request.user`, so reading `request.user` when an audit entry is
written gives the token- or session-authenticated user alike."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_current_request: contextvars.ContextVar[Any] = contextvars.ContextVar("imageflow_audit_request", default=None)
_explicit: contextvars.ContextVar["Actor | None"] = contextvars.ContextVar("imageflow_audit_actor", default=None)


@dataclass(frozen=True)
class Actor:
    user: Any
    source: str


@contextlib.contextmanager
def acting(*, user: Any, source: str) -> Iterator[None]:
    """Attribute audit entries written inside the block to `user` via `source`."""
    token = _explicit.set(Actor(user=user, source=source))
    try:
        yield
    finally:
        _explicit.reset(token)


def current_actor() -> Actor:
    explicit = _explicit.get()
    if explicit is not None:
        return explicit
    request = _current_request.get()
    if request is None:
        return Actor(user=None, source="system")
    user = getattr(request, "user", None)
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    source = "admin" if request.path.startswith("/admin/") else "api"
    return Actor(user=user, source=source)


class AuditContextMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)
