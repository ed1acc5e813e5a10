"""Every model in the admin answers to staff and turns anonymous visitors away."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse

from registry.models import PipelineVersion
from tests import factories
from tests.admin.pages import form_fields

pytestmark = pytest.mark.django_db


def _automation(name: str):
    """A maker of tests/admin/test_every_form.py (rows made through the automation services)."""
    def make():
        from executions.catalogue import builtin_components_register
        from tests.admin import test_every_form

        builtin_components_register()  # their pipelines name built-ins
        return getattr(test_every_form, name)()
    return make


def _make(model):
    """One saved instance of `model`, so its change page has something to show."""
    makers = {
        "accounts.user": factories.UserFactory,
        "accounts.apitoken": factories.ApiTokenFactory,
        "auth.group": lambda: Group.objects.create(name="editors"),
        "registry.component": factories.ComponentFactory,
        "registry.pipeline": factories.PipelineFactory,
        "registry.pipelineversion": lambda: PipelineVersion.objects.create(
            pipeline=factories.PipelineFactory(), version=1, name="p", definition={"nodes": [], "edges": []}
        ),
        "registry.workflow": factories.WorkflowFactory,
        "registry.workflownode": factories.WorkflowNodeFactory,
        "registry.workflowedge": factories.WorkflowEdgeFactory,
        "registry.workflowparam": factories.WorkflowParamFactory,
        "executions.pipelineexecution": factories.PipelineExecutionFactory,
        "executions.componentexecution": factories.ComponentExecutionFactory,
        "files.file": factories.FileFactory,
        "orgs.organization": factories.OrganizationFactory,
        "orgs.membership": factories.MembershipFactory,
        "registry.tag": factories.TagFactory,
        "registry.workflowversion": factories.WorkflowVersionFactory,
        "registry.workflowaccess": factories.WorkflowAccessFactory,
        "audit.auditentry": factories.AuditEntryFactory,
        # automation (executions/automation_admin.py): made through their services, as their admin forms do
        "executions.webhooksubscription": _automation("_subscription"),
        "executions.webhookdelivery": _automation("_delivery"),
        "executions.trigger": _automation("_trigger"),
        "executions.triggerfile": lambda: _automation("_trigger")().matches.create(file=factories.FileFactory()),
        "executions.pipelineschedule": _automation("_schedule"),
    }
    label = model._meta.label_lower
    if label == "authtoken.tokenproxy":
        from rest_framework.authtoken.models import Token, TokenProxy

        token = Token.objects.create(user=factories.UserFactory())
        return TokenProxy.objects.get(pk=token.pk)
    return makers[label]()


REGISTERED = sorted(admin.site._registry, key=lambda m: m._meta.label_lower)
IDS = [m._meta.label_lower for m in REGISTERED]


def _url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_seed_model_is_in_the_admin():
    labels = set(IDS)
    for label in ["registry.component", "registry.pipeline", "registry.workflow", "registry.workflownode",
                  "registry.workflowedge", "registry.workflowparam", "executions.pipelineexecution",
                  "executions.componentexecution", "files.file", "accounts.user"]:
        assert label in labels


@pytest.mark.parametrize("model", REGISTERED, ids=IDS)
def test_changelist_search_and_change_pages_answer_staff(staff_client, model):
    obj = _make(model)
    assert staff_client.get(_url(model, "changelist")).status_code == 200
    assert staff_client.get(_url(model, "changelist") + "?q=x").status_code == 200
    response = staff_client.get(_url(model, "change", obj.pk))
    assert response.status_code == 200
    assert str(obj.pk) in response.content.decode() or str(obj) in response.content.decode()


@pytest.mark.parametrize("model", REGISTERED, ids=IDS)
def test_add_page_answers_staff_where_adding_is_allowed(staff_client, staff_user, rf, model):
    request = rf.get("/")
    request.user = staff_user
    expected = 200 if admin.site._registry[model].has_add_permission(request) else 403
    assert staff_client.get(_url(model, "add")).status_code == expected


@pytest.mark.parametrize("model", REGISTERED, ids=IDS)
def test_anonymous_visitor_is_sent_to_the_login_page(client, model):
    response = client.get(_url(model, "changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_json_fields_are_edited_pretty_printed(staff_client):
    component = factories.ComponentFactory(input_schema={"type": "object", "properties": {"w": {"type": "integer"}}})
    html = staff_client.get(_url(type(component), "change", component.pk)).content.decode()
    assert '{\n  &quot;properties&quot;: {\n    &quot;w&quot;' in html


def test_workflow_page_shows_nodes_edges_and_params_inline(staff_client):
    edge = factories.WorkflowEdgeFactory()
    factories.WorkflowParamFactory(workflow=edge.workflow, key="temperature")
    html = staff_client.get(_url(type(edge.workflow), "change", edge.workflow.pk)).content.decode()
    assert edge.parent_node.name in html and edge.child_node.name in html
    assert "temperature" in html
    assert "edges-TOTAL_FORMS" in html


def _queries_for(client, url):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_workflow_and_execution_pages_do_not_query_per_row(staff_client):
    # given a workflow with 2 edges and one with 8, a run with 2 steps and one with 8
    small, large = factories.WorkflowFactory(), factories.WorkflowFactory()
    for workflow, count in ((small, 2), (large, 8)):
        for _ in range(count):
            factories.WorkflowEdgeFactory(workflow=workflow)
    short, long = factories.PipelineExecutionFactory(), factories.PipelineExecutionFactory()
    for execution, count in ((short, 2), (long, 8)):
        for _ in range(count):
            factories.ComponentExecutionFactory(execution=execution)
    # then the page of the bigger one costs no more queries (after a warm-up request of each page
    # that fills per-process caches such as content types, and the page's DAG picture in the cache)
    workflow_url = lambda w: _url(type(w), "change", w.pk)  # noqa: E731
    _queries_for(staff_client, workflow_url(small))
    _queries_for(staff_client, workflow_url(large))
    assert _queries_for(staff_client, workflow_url(large)) == _queries_for(staff_client, workflow_url(small))
    execution_url = lambda e: _url(type(e), "change", e.pk)  # noqa: E731
    _queries_for(staff_client, execution_url(short))
    _queries_for(staff_client, execution_url(long))
    assert _queries_for(staff_client, execution_url(long)) == _queries_for(staff_client, execution_url(short))


def test_admin_save_over_a_newer_version_is_refused_not_silently_overwritten(staff_client, staff_user):
    from registry.models import Workflow
    from registry.workflow_services import workflow_update

    # given a staff member who opened the workflow page at version 1
    node = factories.WorkflowNodeFactory()
    workflow = node.workflow
    url = _url(Workflow, "change", workflow.pk)
    data = form_fields(staff_client.get(url).content.decode())
    assert data["based_on_version"] == "1"
    # and an API edit that made version 2 meanwhile
    workflow_update(workflow=workflow, user=staff_user, changes={"name": "edited through the API"}, based_on_version=1)
    # when the admin form is saved
    response = staff_client.post(url, {**data, "name": "edited in the admin"})
    # then it is refused with a clear message and the API edit stands
    assert response.status_code == 200
    assert "changed while you edited it" in response.content.decode()
    workflow.refresh_from_db()
    assert (workflow.name, workflow.version) == ("edited through the API", 2)
    # and a page loaded at the new version saves
    fresh = form_fields(staff_client.get(url).content.decode())
    saved = staff_client.post(url, {**fresh, "name": "edited in the admin"})
    assert saved.status_code == 302, saved.context["adminform"].form.errors if saved.context else saved
    workflow.refresh_from_db()
    assert workflow.name == "edited in the admin" and workflow.version == 3
