"""Scenario 8: the security matrix, generated from the OpenAPI schema.

Every operation of the schema (drf-spectacular's generator, the same document /api/schema/
serves) is called four ways: without credentials (401, except the public ones the schema marks
as needing none, and the schema, docs and health pages), as a non-staff user on another user's
object (404; components are the documented exception: a shared catalogue, readable by all, 403
for a non-staff write), with the session cookie but no CSRF token (403), and, as a control that
the matrix calls real objects, as their owner (never 404). The admin's changelist and add page
of every registered model redirect a non-staff user to the login page. The last test greps every
log file and every log record of the module for the API tokens the fixtures created.

API routes outside the schema (plain Django views under /api/v1/) are found by walking the URL
resolver, so a new one cannot slip past the anonymous check.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from pathlib import Path

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from registry import services as registry_services
from registry.workflow_services import workflow_create
from tests.factories import ComponentFactory, FileFactory, PipelineExecutionFactory, StaffFactory, UserFactory
from tests.reliability import report

pytestmark = [pytest.mark.django_db]

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1/"
# Public by design: the schema, its browsable docs and the health check (not in the schema).
PUBLIC_PAGES = ["/api/schema/", "/api/schema/?format=json", "/api/docs/", "/healthz"]
WRITE_METHODS = {"post", "put", "patch", "delete"}

# Every API token a fixture of this module created; the last test looks for each in the logs.
CREATED_TOKENS: set[str] = set()
TOKEN_IN_URL = re.compile(r"token=[0-9a-fA-F]{40}")


# --- the schema and the routes ------------------------------------------------------------------

@functools.cache
def schema() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def operations() -> list[tuple[str, str, dict]]:
    """(method, path template, operation) of every operation in the schema, deletes last (so an
    owner's control calls do not remove the object the others need)."""
    found = [(method, path, op) for path, ops in schema()["paths"].items() for method, op in ops.items()
             if method in {"get", "post", "put", "patch", "delete"}]
    return sorted(found, key=lambda item: (item[0] == "delete", item[1], item[0]))


def needs_no_credentials(op: dict) -> bool:
    """The schema says the operation takes no authentication at all (`auth=[]`: the token
    exchange). An operation listing `{}` beside a scheme still needs one (DRF answers 401)."""
    return not op.get("security")


def accepts_session(op: dict) -> bool:
    return any("cookieAuth" in scheme for scheme in op.get("security") or [])


def _route_text(pattern) -> str | None:
    text = str(pattern.pattern)
    return None if text.startswith("^") else text  # regex patterns are the routers' (in the schema)


def api_routes_outside_schema() -> list[str]:
    """Path templates of routes under /api/v1/ that the schema does not list."""
    documented = set(schema()["paths"])
    found: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            text = _route_text(pattern)
            if text is None:
                continue
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + text)
            elif isinstance(pattern, URLPattern):
                path = "/" + prefix + text
                template = re.sub(r"<(?:\w+:)?pk>", "{id}", path)
                template = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", template)
                if template.startswith(API) and template not in documented:
                    found.append(template)

    walk(get_resolver().url_patterns, "")
    return sorted(set(found))


# --- users, tokens and one object of each kind ----------------------------------------------------

def token_client(user) -> tuple[APIClient, str]:
    key = Token.objects.get_or_create(user=user)[0].key
    CREATED_TOKENS.add(key)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client, key


@pytest.fixture(autouse=True, scope="module")
def module_log_records():
    """Every log record emitted while this module runs, formatted (the module's captured logs)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                lines.append(self.format(record))
            except Exception:  # a record whose arguments do not format: keep its raw parts
                lines.append(f"{record.msg!r} {record.args!r}")

    handler = Keep(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(min(previous, logging.INFO))
    yield lines
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture
def world(db, settings):
    """User A owns one object of each kind; B is another non-staff user."""
    # The object-store event endpoint is off (404) unless configured; on, it is in the matrix.
    settings.OBJECT_EVENTS_TOKEN = "matrix-object-events-token-0123456789"
    owner, other = UserFactory(), UserFactory()
    component = ComponentFactory(name="matrix-resize", version="1.0.0", runner="builtin",
                                 input_schema={"type": "object", "properties": {"width": {"type": "integer"}}})
    definition = {"nodes": [{"id": "shrink", "component": {"name": component.name, "version": component.version},
                             "parameters": {"width": 8}}], "edges": []}
    pipeline = registry_services.pipeline_create(name="A's pipeline", definition=definition, created_by=owner)
    execution = PipelineExecutionFactory(pipeline=pipeline, created_by=owner)
    file = FileFactory(created_by=owner)
    workflow, _ = workflow_create(user=owner, data={"name": "A's workflow", "nodes": [
        {"key": "fetch", "node_type": "tool", "name": "Fetch"}], "edges": [], "params": []})
    from executions.schedules import schedule_create
    from executions.triggers import trigger_create
    from executions.webhooks import webhook_subscription_create
    from imageflow.accounts.services import api_token_create

    subscription = webhook_subscription_create(url="https://example.com/hook", events=["execution.failed"],
                                               user=owner)
    delivery = subscription.deliveries.create(event="execution.failed", event_key=f"{execution.pk}:execution.failed")
    trigger = trigger_create(user=owner, pipeline=pipeline, name="A's trigger")
    schedule = schedule_create(user=owner, pipeline=pipeline, name="A's schedule", cron="0 * * * *",
                               inputs=[str(file.pk)])
    token = api_token_create(user=owner, name="A's token", scopes=["read"]).token
    return {"owner": owner, "other": other, "ids": {
        "pipelines": pipeline.pk, "executions": execution.pk, "files": file.pk, "workflows": workflow.pk,
        "components": component.pk, "webhooks": subscription.pk, "webhook-deliveries": delivery.pk,
        "triggers": trigger.pk, "schedules": schedule.pk, "tokens": token.pk}}


def concrete(template: str, ids: dict) -> str | None:
    """The template with A's object of the path's kind as {id} (version 1 for {version}, {a},
    {b}); None when the path takes no id."""
    if "{id}" not in template:
        return None
    kind = template[len(API):].split("/", 1)[0]
    path = template.replace("{id}", str(ids[kind]))
    for name in ("version", "a", "b"):
        path = path.replace("{" + name + "}", "1")
    return path


def call(client, method: str, path: str):
    """One call of the operation; a write carries an empty JSON object (the checks under test
    come before any body validation)."""
    if method not in WRITE_METHODS:
        return client.get(path)
    return getattr(client, method)(path, "{}", content_type="application/json")


def problem_shape(response) -> dict:
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "errors"}, body
    assert body["status"] == response.status_code, body
    return body


# --- the matrix -------------------------------------------------------------------------------------

def test_every_operation_without_credentials_is_401(world):
    anonymous = APIClient()
    answers: Counter = Counter()
    public: list[str] = []
    for method, template, op in operations():
        path = concrete(template, world["ids"]) or template
        response = call(anonymous, method, path)
        if needs_no_credentials(op):
            public.append(f"{method.upper()} {template}")
            assert response.status_code < 500 and response.status_code != 401, (method, path, response.status_code)
            continue
        assert response.status_code == 401, (method, path, response.status_code, response.content[:300])
        assert problem_shape(response)["type"] in {"not_authenticated", "authentication_failed"}
        assert response.has_header("WWW-Authenticate"), (method, path)
        answers[401] += 1

    # Routes outside the schema (plain Django views) are checked the same way; a token in the
    # URL is refused, not read (and must never reach a log: see the last test).
    outside = api_routes_outside_schema()
    _, key = token_client(world["owner"])
    for template in outside:
        path = concrete(template, world["ids"]) or template
        for url in (path, f"{path}?token={key}"):
            response = anonymous.get(url)
            assert response.status_code == 401, (url, response.status_code, response.content[:300])
            problem_shape(response)
            answers[401] += 1

    for url in PUBLIC_PAGES:
        response = Client().get(url)
        assert response.status_code == 200, (url, response.status_code)
        public.append(f"GET {url}")

    total = len(operations())
    report.record(8, f"{total} operations in the schema + {len(outside)} route(s) outside it: "
                     f"{answers[401]} anonymous calls → 401 in the error shape, "
                     f"{len(public)} public ({len(PUBLIC_PAGES)} schema/docs/health pages → 200)")


def test_every_id_taking_operation_on_another_users_object_is_404(world):
    from django.db import connection

    other, _ = token_client(world["other"])
    owner, _ = token_client(world["owner"])
    id_taking = [(m, t, op) for m, t, op in operations() if "{id}" in t]
    assert {t[len(API):].split("/", 1)[0] for _, t, _ in id_taking} == set(world["ids"]), \
        "a new kind of object in the schema: give the matrix one of it"

    def counts() -> dict[str, int]:
        with connection.cursor() as cursor:
            tables = connection.introspection.table_names(cursor)
            cursor.execute(" UNION ALL ".join(f"SELECT '{t}', count(*) FROM \"{t}\"" for t in tables))
            return dict(cursor.fetchall())

    before = counts()
    answers: Counter = Counter()
    for method, template, _op in id_taking:
        path = concrete(template, world["ids"])
        response = call(other, method, path)
        if template.startswith(f"{API}components/"):
            # The documented exception: the catalogue is shared; writes are for staff.
            expected = 200 if method == "get" else 403
        else:
            expected = 404
        assert response.status_code == expected, (method, path, response.status_code, response.content[:300])
        if expected != 200:
            problem_shape(response)
        answers[expected] += 1
    assert counts() == before, "a refused call changed a table"

    # Control: the same calls as the owner find the object (so the 404s above are about
    # ownership, not about a wrong id).
    owner_answers: Counter = Counter()
    for method, template, _op in id_taking:
        if template.startswith(f"{API}components/"):
            continue
        path = concrete(template, world["ids"])
        response = call(owner, method, path)
        assert response.status_code != 404 and response.status_code < 500, \
            (method, path, response.status_code, response.content[:300])
        owner_answers[response.status_code] += 1

    report.record(8, f"{len(id_taking)} id-taking operations as another non-staff user: {answers[404]} → 404, "
                     f"components (shared catalogue): {answers[200]} reads → 200, {answers[403]} writes → 403; "
                     f"tables unchanged; as the owner none 404 ({sum(owner_answers.values())} calls)")


def admin_pages() -> list[str]:
    urls = [reverse("admin:index")]
    for model in admin.site._registry:
        meta = model._meta
        urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_add"))
    return urls


def test_admin_redirects_non_staff_to_login(world):
    pages = admin_pages()
    non_staff = Client()
    non_staff.force_login(world["other"])
    for url in pages:
        response = non_staff.get(url)
        assert response.status_code == 302, (url, response.status_code)
        assert response["Location"].startswith(reverse("admin:login")), (url, response["Location"])

    # Control: staff reach the same pages (the list is of real pages, not of 404s).
    staff = Client()
    staff.force_login(StaffFactory())
    reached = Counter()
    for url in pages:
        response = staff.get(url)
        assert response.status_code in (200, 403), (url, response.status_code)  # 403: the model has no add page
        reached[response.status_code] += 1
    report.record(8, f"{len(pages)} admin pages (index, changelist and add page of {len(admin.site._registry)} "
                     f"models) → 302 to login for non-staff; staff: {reached[200]} → 200, {reached[403]} → 403")


def test_session_writes_without_csrf_token_are_403(world):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(world["owner"])
    # Control: the session authenticates reads.
    assert browser.get(f"{API}pipelines/").status_code == 200

    writes = [(m, t) for m, t, op in operations() if m in WRITE_METHODS and accepts_session(op)]
    refused = 0
    for method, template in writes:
        path = concrete(template, world["ids"]) or template
        response = call(browser, method, path)
        assert response.status_code == 403, (method, path, response.status_code, response.content[:300])
        assert "CSRF" in problem_shape(response)["detail"], response.json()
        refused += 1

    # Control: the same session with a CSRF token gets through (the 403s are the CSRF check).
    secret = "c" * 32
    browser.cookies["csrftoken"] = secret
    response = browser.post(f"{API}pipelines/{world['ids']['pipelines']}/clone/", {}, content_type="application/json",
                            HTTP_X_CSRFTOKEN=secret)
    assert response.status_code == 201, response.content[:300]
    token_only = sum(1 for m, _, op in operations() if m in WRITE_METHODS and not accepts_session(op))
    report.record(8, f"{refused} writes authenticated by the session cookie without a CSRF token → 403 "
                     f"(with the token: 201); {token_only} write(s) not session-authenticated (token exchange)")


# --- no token in any log (runs last in this module) ----------------------------------------------

def leaked_tokens(text: str, tokens: set[str]) -> list[str]:
    found = [f"token {key[:6]}…" for key in tokens if key in text]
    found += [f"'{match[:12]}…'" for match in TOKEN_IN_URL.findall(text)]
    return found


def test_zz_no_token_in_any_log_file(module_log_records):
    # The detector finds what it looks for (else an empty result would prove nothing).
    probe = "0123456789abcdef0123456789abcdef01234567"
    assert leaked_tokens(f"GET /ws/executions/1/?token={probe} 101", {probe}) == [f"token {probe[:6]}…",
                                                                                   f"'token={probe[:6]}…'"]
    assert CREATED_TOKENS, "the matrix created no tokens: nothing was checked"
    files = sorted((ROOT / "var" / "log").glob("*.log"))
    leaks: dict[str, list[str]] = {}
    for path in files:
        found = leaked_tokens(path.read_text(errors="replace"), CREATED_TOKENS)
        if found:
            leaks[str(path.relative_to(ROOT))] = found
    found = leaked_tokens("\n".join(module_log_records), CREATED_TOKENS)
    if found:
        leaks["log records of this module"] = found
    assert not leaks, leaks
    report.record(8, f"0 of {len(CREATED_TOKENS)} API tokens (and no token=<40 hex>) in {len(files)} log files "
                     f"of var/log and {len(module_log_records)} log records of the run")
