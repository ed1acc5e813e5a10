"""Workflows saved in the admin go through workflow_create / workflow_replace (the API's
services): param defaults are checked against their types on the field, edges that close a
cycle are refused naming the nodes by name, and a valid page becomes a new version. Apply never
answers a 500: every refusal of workflow_apply is an admin message."""

from __future__ import annotations

import re

import pytest

from executions.models import PipelineExecution
from imageflow.audit.models import AuditEntry
from registry.models import Workflow, WorkflowEdge, WorkflowNode, WorkflowParam, WorkflowVersion
from registry.workflow_services import workflow_create
from tests.admin.pages import admin_url, errors_of, form_of
from tests.registry.conftest import sample_document

pytestmark = pytest.mark.django_db


def _index_of(data: dict, prefix: str, field: str, value: str) -> int:
    for key, found in data.items():
        match = re.fullmatch(rf"{prefix}-(\d+)-{field}", key)
        if match and found == value:
            return int(match.group(1))
    raise AssertionError(f"no {prefix} row with {field}={value!r}")


def _add_row(data: dict, prefix: str, **fields) -> dict:
    index = int(data[f"{prefix}-TOTAL_FORMS"])
    data = {**data, f"{prefix}-TOTAL_FORMS": str(index + 1)}
    data.update({f"{prefix}-{index}-{name}": value for name, value in fields.items()})
    return data


def _rows(workflow: Workflow) -> tuple:
    return (list(WorkflowNode.objects.filter(workflow=workflow).order_by("key").values()),
            list(WorkflowEdge.objects.filter(workflow=workflow).order_by("pk").values()),
            list(WorkflowParam.objects.filter(workflow=workflow).order_by("key").values()))


@pytest.fixture
def workflow(staff_user):
    created, _ = workflow_create(user=staff_user, data=sample_document())
    return created


def test_an_int_param_with_default_big_is_refused_on_its_field(staff_client, workflow):
    # given the workflow's page with the int param's default set to "big"
    url = admin_url(Workflow, "change", workflow.pk)
    data = form_of(staff_client, url)
    index = _index_of(data, "params", "key", "sentences")
    before = _rows(workflow)
    # when it is saved
    response = staff_client.post(url, {**data, f"params-{index}-default_value": "big"})
    # then the error is on that field, with the API's wording, and nothing changed
    assert response.status_code == 200
    params_formset = next(f for f in response.context["inline_admin_formsets"] if f.formset.prefix == "params")
    assert params_formset.formset.forms[index].errors["default_value"] == [
        "does not parse as int: 'big' is not an integer."]
    workflow.refresh_from_db()
    assert workflow.version == 1 and _rows(workflow) == before
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 1


def test_a_new_workflow_with_a_bad_default_is_not_stored(staff_client):
    data = _add_row({**form_of(staff_client, admin_url(Workflow, "add")), "name": "Counting"}, "params",
                    key="times", value_type="int", default_value="big", metadata="null")
    response = staff_client.post(admin_url(Workflow, "add"), data)
    assert response.status_code == 200
    assert "does not parse as int: 'big' is not an integer." in errors_of(response)
    assert not Workflow.objects.exists() and not WorkflowParam.objects.exists()


def test_an_edge_closing_a_cycle_is_refused_naming_the_nodes_by_name(staff_client, workflow):
    url = admin_url(Workflow, "change", workflow.pk)
    nodes = {n.key: n for n in workflow.nodes.all()}
    before = _rows(workflow)
    data = _add_row(form_of(staff_client, url), "edges", parent_node=str(nodes["post"].pk),
                    child_node=str(nodes["fetch"].pk), handoff_data="null")
    response = staff_client.post(url, data)
    assert response.status_code == 200
    assert ("These edges make a cycle: 'Fetch page' -> 'Summarize text' -> 'Post to chat' -> 'Fetch page'."
            in errors_of(response))
    assert "'fetch'" not in errors_of(response)  # nodes are named by name, not key
    workflow.refresh_from_db()
    assert workflow.version == 1 and _rows(workflow) == before


def test_a_workflow_stored_with_a_cycle_stays_editable_with_a_warning(staff_client, staff_user):
    # given a workflow with a loop, stored through the API's service (imported loops are kept)
    looped, _ = workflow_create(user=staff_user, data=sample_document(params=[], edges=[
        {"parent": "fetch", "child": "summarize", "handoff_data": None},
        {"parent": "summarize", "child": "fetch", "handoff_data": None}]))
    url = admin_url(Workflow, "change", looped.pk)
    # when it is renamed in the admin
    response = staff_client.post(url, {**form_of(staff_client, url), "name": "Looped"}, follow=True)
    # then the rename is saved, and staff are told why it cannot be applied
    looped.refresh_from_db()
    assert (looped.name, looped.version) == ("Looped", 2)
    assert [str(m) for m in response.context["messages"]][0] == (
        "Looped has a cycle: 'Fetch page' -> 'Summarize text' -> 'Fetch page'. It is stored (as the API stores "
        "imported loops) but cannot be applied until an edge of the cycle is removed.")


def test_an_edge_joining_a_node_to_itself_is_refused_on_the_field(staff_client, workflow):
    url = admin_url(Workflow, "change", workflow.pk)
    fetch = workflow.nodes.get(key="fetch")
    data = _add_row(form_of(staff_client, url), "edges", parent_node=str(fetch.pk), child_node=str(fetch.pk),
                    handoff_data="null")
    response = staff_client.post(url, data)
    assert response.status_code == 200
    assert "an edge cannot join node 'Fetch page' to itself." in errors_of(response)
    assert WorkflowEdge.objects.filter(workflow=workflow).count() == 2


def test_the_cycle_check_leaves_out_a_node_deleted_in_the_same_save(staff_client, workflow):
    url = admin_url(Workflow, "change", workflow.pk)
    nodes = {n.key: n for n in workflow.nodes.all()}
    data = form_of(staff_client, url)
    summarize = _index_of(data, "nodes", "id", str(nodes["summarize"].pk))
    data = _add_row({**data, f"nodes-{summarize}-DELETE": "on"}, "edges", parent_node=str(nodes["post"].pk),
                    child_node=str(nodes["fetch"].pk), handoff_data="null")
    response = staff_client.post(url, data)
    assert response.status_code == 302, errors_of(response)
    workflow.refresh_from_db()
    assert workflow.version == 2
    assert sorted(workflow.nodes.values_list("key", flat=True)) == ["fetch", "post"]
    assert [(e.parent_node.key, e.child_node.key) for e in workflow.edges.select_related("parent_node", "child_node")] \
        == [("post", "fetch")]


def test_a_valid_page_is_saved_by_the_service_as_a_new_version(staff_client, staff_user, workflow):
    url = admin_url(Workflow, "change", workflow.pk)
    data = form_of(staff_client, url)
    assert "created_by" not in data and "version" not in data
    data = _add_row({**data, "name": "Summarize and archive"}, "nodes", order_index="3", node_type="tool",
                    name="Archive summary", parameters='{"bucket": "news"}')
    data = _add_row(data, "params", key="bucket", value_type="string", default_value="news", metadata="null")
    response = staff_client.post(url, data)
    assert response.status_code == 302, errors_of(response)
    workflow.refresh_from_db()
    assert (workflow.name, workflow.version) == ("Summarize and archive", 2)
    # the new node got its key from its name, as in the API
    snapshot = WorkflowVersion.objects.get(workflow=workflow, version=2).snapshot
    assert [n["key"] for n in snapshot["nodes"]] == ["fetch", "summarize", "post", "archive-summary"]
    assert [p["key"] for p in snapshot["params"]] == ["bucket", "sentences", "url"]
    entry = AuditEntry.objects.filter(object_id=workflow.pk).latest("created_at")
    assert (entry.action, entry.source, entry.actor, entry.extra["version"]) == ("update", "admin", staff_user, 2)


def test_an_unchanged_page_makes_no_new_version(staff_client, workflow):
    url = admin_url(Workflow, "change", workflow.pk)
    response = staff_client.post(url, form_of(staff_client, url))
    assert response.status_code == 302, errors_of(response)
    workflow.refresh_from_db()
    assert workflow.version == 1 and WorkflowVersion.objects.filter(workflow=workflow).count() == 1


# --- Apply -------------------------------------------------------------------------------------

def _bad_default(user):
    created, _ = workflow_create(user=user, data=sample_document(params=[
        {"key": "sentences", "value_type": "int", "required": False, "default_value": "3", "metadata": None}]))
    # A default stored before defaults were checked, or written around the services.
    WorkflowParam.objects.filter(workflow=created).update(default_value="big")
    version = WorkflowVersion.objects.get(workflow=created)
    version.snapshot["params"][0]["default_value"] = "big"
    version.save()
    return created


def _document(**overrides):
    return lambda user: workflow_create(user=user, data=sample_document(**overrides))[0]


NODE = {"key": "resize", "node_type": "resize", "name": "Make small", "order_index": 0}

APPLY_REFUSALS = [
    # (case, how the workflow is made, what the message says)
    ("required param without a value", _document(),
     "not applied: params.url: required (string); no value given and no default."),
    ("stored default that does not parse", _bad_default,
     "not applied: params.sentences: int: the stored default does not parse: 'big' is not an integer. Give a value or correct the default."),
    ("cycle", _document(params=[], edges=[
        {"parent": "fetch", "child": "summarize", "handoff_data": None},
        {"parent": "summarize", "child": "fetch", "handoff_data": None}]),
     "not applied: edges: the workflow has a cycle: 'Fetch page' -> 'Summarize text' -> 'Fetch page'; "
     "only acyclic workflows can be applied."),
    ("no nodes", _document(params=[], nodes=[], edges=[]), "not applied: nodes: the workflow has no nodes to run."),
    ("unregistered component", _document(params=[], edges=[], nodes=[
        {"key": "sharp", "node_type": "component", "name": "Sharpen", "order_index": 0,
         "parameters": {"component": {"name": "sharpenn", "version": "1.0.0"}}}]),
     "not applied: node 'Sharpen': component sharpenn:1.0.0 is not registered."),
    ("component parameter of the wrong type (the engine's DAG check)", _document(params=[], edges=[], nodes=[
        {**NODE, "parameters": {"width": "800px"}}]),
     "not applied: node 'Make small': nodes[0].parameters.width: '800px' is not of type 'integer'"),
]


@pytest.mark.parametrize("case, make, message", APPLY_REFUSALS, ids=[c[0] for c in APPLY_REFUSALS])
def test_apply_reports_every_refusal_of_the_service_as_a_message(staff_client, staff_user, builtins,
                                                                 case, make, message):
    workflow = make(staff_user)
    response = staff_client.post(admin_url(Workflow, "changelist"), {
        "action": "apply_with_defaults", "_selected_action": [str(workflow.pk)]}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert shown == [f"{workflow.name}: {message}"], shown
    assert not PipelineExecution.objects.exists()


def test_apply_of_a_valid_workflow_starts_a_run(staff_client, staff_user, builtins):
    workflow, _ = workflow_create(user=staff_user, data=sample_document(params=[], edges=[], nodes=[
        {**NODE, "parameters": {"width": 64}}]))
    response = staff_client.post(admin_url(Workflow, "changelist"), {
        "action": "apply_with_defaults", "_selected_action": [str(workflow.pk)]}, follow=True)
    execution = PipelineExecution.objects.get()
    assert (execution.workflow_id, execution.workflow_version, execution.created_by) == (workflow.pk, 1, staff_user)
    assert [str(m) for m in response.context["messages"]] == [
        f"{workflow.name} v1: execution {execution.pk} started."]
