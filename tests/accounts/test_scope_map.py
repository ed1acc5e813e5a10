"""Every API endpoint maps to a scope, generated from the URL configuration, so a new endpoint is
covered the day it is added; and every DRF view takes tokens through ApiTokenAuthentication, the
one place the scope is checked."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authentication import TokenAuthentication
from rest_framework.views import APIView

from imageflow.accounts.authentication import ApiTokenAuthentication
from imageflow.accounts.models import TokenScope
from imageflow.accounts.scopes import required_scope

UNSAFE = ("post", "put", "patch", "delete")


def api_endpoints():
    """(route, url name, view class, methods) of every URL under /api/v1/."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern

    for route, pattern in walk(get_resolver().url_patterns):
        if not route.startswith("api/v1/"):
            continue
        view = getattr(pattern.callback, "cls", None)
        actions = getattr(pattern.callback, "actions", None)
        if actions:
            methods = sorted(actions)
        elif view is not None:
            methods = sorted(m for m in view.http_method_names if m != "options" and hasattr(view, m))
        else:  # a plain Django view (the event stream): GET only
            methods = ["get"]
        yield route, pattern.name, view, methods


def scope_map() -> dict[tuple[str, str], str]:
    return {(name, method): required_scope(method=method, url_name=name)
            for _, name, _, methods in api_endpoints() for method in methods}


def test_every_api_endpoint_has_a_name_and_maps_to_a_scope():
    endpoints = list(api_endpoints())
    assert len(endpoints) > 40  # the walk found the API, not an empty list
    for route, name, _, methods in endpoints:
        assert name, f"{route} has no URL name, which the scope rule is keyed by"
        for method in methods:
            assert required_scope(method=method, url_name=name) in TokenScope.values


def test_reads_need_read_and_the_exceptions_are_exactly_these():
    mapping = scope_map()
    assert all(scope == "read" for (name, method), scope in mapping.items() if method not in UNSAFE)
    unsafe = {key: scope for key, scope in mapping.items() if key[1] in UNSAFE}
    assert {key for key, scope in unsafe.items() if scope == "run"} == {
        ("pipeline-run", "post"), ("workflow-apply", "post"), ("execution-cancel", "post"),
        ("execution-retry", "post"), ("webhook-delivery-redeliver", "post")}
    assert {key for key, scope in unsafe.items() if scope == "read"} == {
        ("workflow-similar-to", "post"), ("ws-ticket", "post"), ("token", "delete"), ("token", "post")}
    assert {key for key, scope in unsafe.items() if scope == "admin"} == {
        ("api-token-list", "post"), ("api-token-detail", "delete")}
    # and the plain writes are writes
    for key in [("pipeline-detail", "patch"), ("file-list", "post"), ("workflow-version-restore", "post"),
                ("component-detail", "delete"), ("pipeline-clone", "post")]:
        assert mapping[key] == "write", key


def test_every_drf_view_that_takes_tokens_checks_scopes():
    for route, name, view, _ in api_endpoints():
        if view is None or not issubclass(view, APIView):
            continue
        classes = list(view.authentication_classes)
        assert not any(issubclass(c, TokenAuthentication) for c in classes), f"{route}: plain TokenAuthentication"
        if name in {"token", "object-events"}:  # a password exchange; a shared secret of its own
            continue
        assert ApiTokenAuthentication in classes, f"{route} ({name}) does not take API tokens"
