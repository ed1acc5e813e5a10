"""Every admin change form, add and change page of every registered ModelAdmin, is posted with
bad input (what the API refuses, or what no one may write by hand): the page answers with the
error (or 403 where the admin is read-only) and no row of any model in the admin changes."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from django.contrib import admin

from registry.models import CARRIER_PIPELINE_CATEGORY, Workflow
from registry.services import pipeline_create
from registry.workflow_services import workflow_create
from tests import factories
from tests.admin.pages import admin_url, errors_of, form_of, snapshot
from tests.admin.test_pipelines import BAD_DEFINITIONS, RESIZE_THEN_GRAY
from tests.registry.conftest import sample_document

pytestmark = pytest.mark.django_db

Overrides = Callable[[Any, dict], dict]


def _rows(prefix: str, data: dict, **fields) -> dict:
    """An extra inline row of `prefix` in the posted data."""
    index = int(data[f"{prefix}-TOTAL_FORMS"])
    return {f"{prefix}-TOTAL_FORMS": str(index + 1), **{f"{prefix}-{index}-{k}": v for k, v in fields.items()}}


def _param_row(data: dict, key: str) -> int:
    return next(int(k.split("-")[1]) for k, v in data.items() if k.startswith("params-") and k.endswith("-key")
                and v == key)


def _workflow(user=None):
    created, _ = workflow_create(user=user or factories.StaffFactory(), data=sample_document())
    return created


def _closing_edge(obj: Workflow, data: dict) -> dict:
    nodes = {n.key: n for n in obj.nodes.all()}
    return _rows("edges", data, parent_node=str(nodes["post"].pk), child_node=str(nodes["fetch"].pk),
                 handoff_data="null")


def _group():
    from django.contrib.auth.models import Group

    return Group.objects.create(name="editors")


def _token():
    from rest_framework.authtoken.models import Token, TokenProxy

    return TokenProxy.objects.get(pk=Token.objects.create(user=factories.UserFactory()).pk)


def _subscription():
    from executions.webhooks import webhook_subscription_create

    return webhook_subscription_create(url="https://example.com/hook", events=["execution.failed"],
                                       user=factories.StaffFactory())


def _delivery():
    return _subscription().deliveries.create(event="execution.failed", event_key="x:execution.failed")


def _trigger():
    from executions.triggers import trigger_create

    staff = factories.StaffFactory()
    return trigger_create(user=staff, name="on uploads",
                          pipeline=pipeline_create(name="triggered", definition=RESIZE_THEN_GRAY, created_by=staff))


def _schedule():
    from executions.schedules import schedule_create

    staff = factories.StaffFactory()
    image = factories.FileFactory(created_by=staff)
    return schedule_create(user=staff, name="hourly", cron="0 * * * *", inputs=[str(image.pk)],
                           pipeline=pipeline_create(name="scheduled", definition=RESIZE_THEN_GRAY, created_by=staff))


def _definition(definition: dict) -> Overrides:
    return lambda obj, data: {"name": data.get("name") or "bad", "definition": json.dumps(definition)}


# model label -> (maker of an existing row, bad add inputs, bad change inputs), each input a
# (what is wrong, overrides of the page's own values, text the page must show or None)
CASES: dict[str, tuple[Callable[[], Any], list, list]] = {
    "accounts.user": (factories.UserFactory, [
        ("passwords differ", lambda o, d: {"username": "newbie", "password1": "Secret-pass-1",
                                           "password2": "Secret-pass-2", "usable_password": "true"}, None),
        ("username with spaces", lambda o, d: {"username": "a b!", "password1": "Secret-pass-1",
                                               "password2": "Secret-pass-1", "usable_password": "true"}, None),
    ], [
        ("empty username", lambda o, d: {"username": ""}, None),
        ("email that is not one", lambda o, d: {"email": "not-an-email"}, None),
    ]),
    "auth.group": (_group,
                   [("empty name", lambda o, d: {"name": ""}, None)],
                   [("empty name", lambda o, d: {"name": ""}, None)]),
    "authtoken.tokenproxy": (_token,
                             [("no user", lambda o, d: {"user": ""}, None),
                              ("unknown user", lambda o, d: {"user": "00000000-0000-0000-0000-000000000000"}, None)],
                             [("no user", lambda o, d: {"user": ""}, None)]),
    "registry.component": (factories.ComponentFactory, [
        ("invalid input schema", lambda o, d: {"name": "sharpen", "version": "1", "docker_image": "x:1",
                                               "runner": "container", "input_schema": '{"type": "nope"}'},
         "invalid JSON Schema"),
        ("unknown runner", lambda o, d: {"name": "sharpen", "version": "1", "docker_image": "x:1",
                                         "runner": "teleport"}, None),
        ("resources not an object", lambda o, d: {"name": "sharpen", "version": "1", "docker_image": "x:1",
                                                  "runner": "container", "resource_requirements": "[1]"},
         "must be an object"),
    ], [
        ("invalid input schema", lambda o, d: {"input_schema": '{"type": "nope"}'}, "invalid JSON Schema"),
        ("name and version of another component", lambda o, d: {"name": "resize", "version": "1.0.0"}, None),
    ]),
    "registry.pipeline": (lambda: pipeline_create(name="good", definition=RESIZE_THEN_GRAY,
                                                  created_by=factories.StaffFactory()), [
        *[(case, _definition(definition), message) for case, definition, message in BAD_DEFINITIONS],
        ("no name", lambda o, d: {"name": "", "definition": json.dumps(RESIZE_THEN_GRAY)}, None),
        ("reserved category", lambda o, d: {"name": "x", "definition": json.dumps(RESIZE_THEN_GRAY),
                                            "category": CARRIER_PIPELINE_CATEGORY}, "is reserved"),
        ("definition that is not JSON", lambda o, d: {"name": "x", "definition": "{nodes:"}, None),
    ], [
        *[(case, _definition(definition), message) for case, definition, message in BAD_DEFINITIONS],
        ("reserved category", lambda o, d: {"category": CARRIER_PIPELINE_CATEGORY}, "is reserved"),
    ]),
    "registry.pipelineversion": (lambda: factories.PipelineFactory().versions.create(
        version=1, name="p", definition=RESIZE_THEN_GRAY), [
        ("forged version", lambda o, d: {"version": "2", "definition": "{}"}, None)], [
        ("forged definition", lambda o, d: {"definition": '{"nodes": []}', "version": "9"}, None)]),
    "registry.workflow": (_workflow, [
        ("int param with default big", lambda o, d: {"name": "Counting", **_rows(
            "params", d, key="times", value_type="int", default_value="big", metadata="null")},
         "does not parse as int: 'big' is not an integer."),
        ("no name", lambda o, d: {"name": ""}, None),
        ("node parameters not an object", lambda o, d: {"name": "x", **_rows(
            "nodes", d, order_index="0", node_type="tool", name="Fetch", parameters="[1, 2]")},
         "must be an object or null."),
        ("metadata not an object", lambda o, d: {"name": "x", "metadata": "[1]"}, "must be an object or null."),
    ], [
        ("edge closing a cycle", _closing_edge, "These edges make a cycle: 'Fetch page' -> 'Summarize text' -> "
                                                "'Post to chat' -> 'Fetch page'."),
        ("int param with default big", lambda o, d: {f"params-{_param_row(d, 'sentences')}-default_value": "big"},
         "does not parse as int: 'big' is not an integer."),
        ("param of an unknown type", lambda o, d: {f"params-{_param_row(d, 'sentences')}-value_type": "decimal"},
         None),
        ("two params with one key", lambda o, d: _rows("params", d, key="url", value_type="string",
                                                      default_value="", metadata="null"), None),
        ("stale version", lambda o, d: {"based_on_version": "0", "name": "renamed"}, "changed while you edited it"),
    ]),
    "registry.workflownode": (factories.WorkflowNodeFactory, [
        ("a node by hand", lambda o, d: {"node_type": "tool", "name": "x"}, None)], [
        ("rename by hand", lambda o, d: {"name": "renamed"}, None)]),
    "registry.workflowedge": (factories.WorkflowEdgeFactory, [
        ("an edge by hand", lambda o, d: {"handoff_data": "{}"}, None)], [
        ("handoff by hand", lambda o, d: {"handoff_data": '{"forged": true}'}, None)]),
    "registry.workflowparam": (factories.WorkflowParamFactory, [
        ("a param by hand", lambda o, d: {"key": "x", "value_type": "int", "default_value": "big"}, None)], [
        ("default big by hand", lambda o, d: {"value_type": "int", "default_value": "big"}, None)]),
    "registry.workflowversion": (factories.WorkflowVersionFactory, [
        ("a version by hand", lambda o, d: {"version": "9", "snapshot": "{}"}, None)], [
        ("forged snapshot", lambda o, d: {"snapshot": "{}"}, None)]),
    "registry.workflowaccess": (factories.WorkflowAccessFactory, [
        ("an access by hand", lambda o, d: {"kind": "read", "version": "1"}, None)], [
        ("forged kind", lambda o, d: {"kind": "apply"}, None)]),
    "registry.tag": (factories.TagFactory, [("blank name", lambda o, d: {"name": "   "}, None)],
                     [("blank name", lambda o, d: {"name": " "}, None)]),
    "executions.pipelineexecution": (lambda: factories.PipelineExecutionFactory(
        status="failed", error_message="real", input_data={"inputs": []}), [
        ("a run by hand", lambda o, d: {"status": "completed"}, None)], [
        ("forged output_data", lambda o, d: {"output_data": '{"outputs": {"x": ["forged"]}}'}, None),
        ("forged error_message", lambda o, d: {"error_message": "all fine"}, None),
        ("forged input_data", lambda o, d: {"input_data": '{"inputs": ["forged"]}'}, None),
        ("forged status", lambda o, d: {"status": "completed"}, None),
    ]),
    "executions.componentexecution": (factories.ComponentExecutionFactory, [
        ("a step by hand", lambda o, d: {"node_id": "x", "status": "completed"}, None)], [
        ("forged output_data", lambda o, d: {"output_data": '{"outputs": ["forged"]}'}, None),
        ("forged status", lambda o, d: {"status": "completed"}, None),
    ]),
    # Triggers and webhooks (executions/automation_admin.py): edited through their services.
    "executions.webhooksubscription": (_subscription, [
        ("unknown event", lambda o, d: {"url": "https://example.com/h", "events": "run.exploded"}, None),
        ("not an http URL", lambda o, d: {"url": "ftp://example.com/h", "events": "execution.failed"}, None),
    ], [
        ("no events", lambda o, d: {"events": []}, None),
        ("short secret", lambda o, d: {"secret": "short"}, "At least 16 characters."),
    ]),
    "executions.webhookdelivery": (_delivery, [
        ("a delivery by hand", lambda o, d: {"status": "delivered"}, None)], [
        ("forged status", lambda o, d: {"status": "delivered", "attempts": "9"}, None)]),
    "executions.trigger": (_trigger, [
        ("batch size 0", lambda o, d: {"name": "t", "pipeline": str(o.pipeline_id), "batch_size": "0",
                                       "batch_window_seconds": "60", "parameters": "{}"}, None),
        ("parameters that do not validate", lambda o, d: {"name": "t", "pipeline": str(o.pipeline_id),
                                                          "batch_size": "1", "batch_window_seconds": "60",
                                                          "parameters": '{"resize": {"width": 0}}'}, None),
    ], [
        ("MIME type that is not one", lambda o, d: {"match_mime_type": "jpeg"}, "A MIME type"),
    ]),
    "executions.pipelineschedule": (_schedule, [
        ("cron that is not one", lambda o, d: {"name": "s", "pipeline": str(o.pipeline_id), "cron": "every day",
                                               "timezone": "UTC", "inputs": json.dumps(o.inputs),
                                               "parameters": "{}", "catch_up": "latest"}, "Five fields"),
        ("no inputs", lambda o, d: {"name": "s", "pipeline": str(o.pipeline_id), "cron": "0 * * * *",
                                    "timezone": "UTC", "inputs": "[]", "parameters": "{}", "catch_up": "latest"},
         "Name at least one input file."),
    ], [
        ("unknown time zone", lambda o, d: {"timezone": "Mars/Olympus"}, "Not an IANA time zone"),
    ]),
    "executions.triggerfile": (lambda: _trigger().matches.create(file=factories.FileFactory()), [
        ("a match by hand", lambda o, d: {"status": "started"}, None)], [
        ("forged status", lambda o, d: {"status": "started"}, None)]),
    "files.file": (factories.FileFactory, [
        ("a file by hand", lambda o, d: {"storage_path": "uploads/x.jpg", "file_size": "10", "checksum": "ab"},
         None)], [
        ("forged checksum", lambda o, d: {"checksum": "0" * 64}, None),
        ("forged storage path", lambda o, d: {"storage_path": "uploads/elsewhere.jpg"}, None),
    ]),
    "orgs.organization": (factories.OrganizationFactory, [
        ("slug that is not one", lambda o, d: {"name": "Acme", "slug": "not a slug!"}, None)], [
        ("slug that is not one", lambda o, d: {"slug": "bad slug!"}, None),
        ("slug of another organization", lambda o, d: {"slug": factories.OrganizationFactory().slug}, None),
    ]),
    "orgs.membership": (factories.MembershipFactory, [
        ("unknown role", lambda o, d: {"organization": str(factories.OrganizationFactory().pk),
                                       "user": str(factories.UserFactory().pk), "role": "owner"}, None)], [
        ("unknown role", lambda o, d: {"role": "owner"}, None),
        ("member twice", lambda o, d: {"user": str(factories.MembershipFactory(
            organization=o.organization).user_id)}, None),
    ]),
    "accounts.apitoken": (factories.ApiTokenFactory, [
        ("a token by hand", lambda o, d: {"name": "mine", "scopes": "admin"}, None)], [
        ("forged scopes", lambda o, d: {"scopes": "admin", "revoked_at": ""}, None)]),
    "audit.auditentry": (factories.AuditEntryFactory, [
        ("an entry by hand", lambda o, d: {"action": "delete"}, None)], [
        ("forged action", lambda o, d: {"action": "delete", "object_repr": "forged"}, None)]),
}

REGISTERED = sorted(admin.site._registry, key=lambda m: m._meta.label_lower)


def test_every_registered_admin_has_bad_input_cases_for_its_add_and_change_pages():
    labels = {m._meta.label_lower for m in REGISTERED}
    assert labels == set(CASES), (labels ^ set(CASES))
    assert all(add and change for _, add, change in CASES.values())


def _walk():
    for model in REGISTERED:
        label = model._meta.label_lower
        make, add_cases, change_cases = CASES.get(label, (None, [], []))
        for view, cases in (("add", add_cases), ("change", change_cases)):
            for case, overrides, shown in cases:
                yield pytest.param(model, view, overrides, shown, id=f"{label}-{view}-{case}")


def _may(model, view: str, request) -> bool:
    model_admin = admin.site._registry[model]
    return model_admin.has_add_permission(request) if view == "add" else model_admin.has_change_permission(request)


@pytest.mark.parametrize("model, view, overrides, shown", list(_walk()))
def test_bad_input_on_every_admin_form_stores_nothing(staff_client, staff_user, rf, builtins,
                                                      model, view, overrides, shown):
    # given an existing row (the change page edits it; the add page must leave it alone too)
    make = CASES[model._meta.label_lower][0]
    obj = make()
    url = admin_url(model, "add") if view == "add" else admin_url(model, "change", obj.pk)
    request = rf.get("/")
    request.user = staff_user
    allowed = _may(model, view, request)
    page = form_of(staff_client, url) if allowed or view == "change" else {}
    data = {**page, **overrides(obj, page)}
    before = snapshot()
    # when the page is posted with the bad input
    response = staff_client.post(url, data)
    # then the page says what is wrong (or the admin refuses to write here at all)
    if allowed:
        assert response.status_code == 200, (response.status_code, response.get("Location"))
        errors = errors_of(response)
        assert errors or "errornote" in response.content.decode()
        if shown:
            assert shown in errors, errors
    else:
        assert response.status_code == 403
    # and no row of any model in the admin changed
    assert snapshot() == before
