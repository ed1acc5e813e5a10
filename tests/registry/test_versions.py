"""Version snapshots and diffs over a real sequence of edits; restore; optimistic concurrency."""

import copy
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from imageflow.audit.models import AuditEntry
from registry.models import Workflow, WorkflowEdge, WorkflowNode, WorkflowParam, WorkflowVersion
from registry.versioning import diff_workflow_documents
from registry.workflow_selectors import workflow_document
from registry.workflow_services import (
    WorkflowVersionConflict,
    workflow_create,
    workflow_replace,
    workflow_restore,
)
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_create_stores_graph_and_version_one(user, document):
    # when
    workflow, created = workflow_create(user=user, data=document)
    # then
    assert created and workflow.version == 1
    assert WorkflowNode.objects.filter(workflow=workflow).count() == 3
    edge = WorkflowEdge.objects.get(workflow=workflow, parent_node__key="fetch")
    assert edge.child_node.key == "summarize" and edge.handoff_data == {"field": "html"}
    assert WorkflowParam.objects.get(workflow=workflow, key="sentences").default_value == "3"
    snapshot = WorkflowVersion.objects.get(workflow=workflow, version=1).snapshot
    assert snapshot == workflow_document(workflow)
    assert snapshot["tags"] == ["summaries", "web"]


def test_sequence_of_edits_makes_versions_with_exact_diffs(user, document):
    # given
    workflow, _ = workflow_create(user=user, data=document)
    v1 = workflow_document(workflow)
    # when: v2 renames a node and changes a param default; v3 adds a node + edge and drops a param
    edit = copy.deepcopy(v1)
    edit["nodes"][1]["name"] = "Summarize article"
    edit["params"][0]["default_value"] = "5"  # sentences (params sorted by key)
    workflow = workflow_replace(workflow=workflow, user=user, data=edit, based_on_version=1)
    edit3 = copy.deepcopy(edit)
    edit3["nodes"].append({"key": "translate", "node_type": "agent", "name": "Translate", "parameters": {"to": "ja"},
                           "order_index": 3})
    edit3["edges"].append({"parent": "summarize", "child": "translate", "handoff_data": None})
    edit3["params"] = [p for p in edit3["params"] if p["key"] != "url"]
    edit3["description"] = "Now with translation."
    workflow = workflow_replace(workflow=workflow, user=user, data=edit3, based_on_version=2)
    # then
    assert workflow.version == 3
    versions = {v.version: v.snapshot for v in WorkflowVersion.objects.filter(workflow=workflow)}
    assert set(versions) == {1, 2, 3}
    d12 = diff_workflow_documents(versions[1], versions[2])
    assert d12["nodes"]["changed"] == [{"id": "summarize",
                                        "fields": {"name": {"from": "Summarize text", "to": "Summarize article"}}}]
    assert d12["params"]["changed"] == [{"id": "sentences", "fields": {"default_value": {"from": "3", "to": "5"}}}]
    assert d12["nodes"]["added"] == [] and d12["edges"] == {"added": [], "removed": [], "changed": []}
    d23 = diff_workflow_documents(versions[2], versions[3])
    assert [n["key"] for n in d23["nodes"]["added"]] == ["translate"]
    assert d23["edges"]["added"] == [{"parent": "summarize", "child": "translate", "handoff_data": None}]
    assert [p["key"] for p in d23["params"]["removed"]] == ["url"]
    assert d23["fields"] == {"description": {"from": document["description"], "to": "Now with translation."}}
    # node ids survive edits (matched by key)
    assert WorkflowNode.objects.filter(workflow=workflow).count() == 4


def test_restore_creates_a_new_version_equal_to_the_old_one(user, document):
    workflow, _ = workflow_create(user=user, data=document)
    changed = copy.deepcopy(workflow_document(workflow))
    changed["nodes"] = changed["nodes"][:1]
    changed["edges"] = []
    workflow = workflow_replace(workflow=workflow, user=user, data=changed, based_on_version=1)
    # when
    workflow = workflow_restore(workflow=workflow, version=1, user=user)
    # then
    assert workflow.version == 3
    assert workflow_document(workflow) == WorkflowVersion.objects.get(workflow=workflow, version=1).snapshot
    v3 = WorkflowVersion.objects.get(workflow=workflow, version=3)
    assert v3.change == "restore" and v3.restored_from == 1
    assert AuditEntry.objects.filter(object_id=workflow.pk, action="restore").count() == 1


def test_stale_update_is_refused_and_changes_nothing(user, document):
    workflow, _ = workflow_create(user=user, data=document)
    workflow_replace(workflow=workflow, user=user, data={**document, "name": "first"}, based_on_version=1)
    # when: a second client still holds version 1
    with pytest.raises(WorkflowVersionConflict) as caught:
        workflow_replace(workflow=workflow, user=user, data={**document, "name": "second"}, based_on_version=1)
    # then
    assert caught.value.current == 2
    workflow.refresh_from_db()
    assert workflow.name == "first" and workflow.version == 2


def test_bad_graph_stores_nothing(user, document):
    bad = copy.deepcopy(document)
    bad["edges"].append({"parent": "fetch", "child": "nowhere"})
    bad["params"][1]["default_value"] = "three"
    with pytest.raises(ValidationError) as caught:
        workflow_create(user=user, data=bad)
    assert set(caught.value.message_dict) == {"edges.2.child", "params.1.default_value"}
    assert Workflow.objects.count() == 0 and WorkflowNode.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_updates_never_lose_one_silently(document):
    # given
    user = UserFactory()
    workflow, _ = workflow_create(user=user, data=document)
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def edit(name: str) -> None:
        try:
            barrier.wait(timeout=10)
            workflow_replace(workflow=Workflow.objects.get(pk=workflow.pk), user=user,
                             data={**document, "name": name}, based_on_version=1)
            results[name] = "saved"
        except WorkflowVersionConflict:
            results[name] = "conflict"
        finally:
            connection.close()

    # when
    threads = [threading.Thread(target=edit, args=(n,)) for n in ("alpha", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # then: exactly one is saved, the other is told it conflicted
    assert sorted(results.values()) == ["conflict", "saved"]
    winner = next(n for n, r in results.items() if r == "saved")
    workflow.refresh_from_db()
    assert workflow.name == winner and workflow.version == 2
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 2


def test_pipeline_versions_diff_endpoint(api):
    from registry.models import Component

    Component.objects.create(name="blur", version="1.0.0", docker_image="x", runner="builtin",
                             input_schema={"type": "object", "properties": {"radius": {"type": "number"}}})
    Component.objects.create(name="gray", version="1.0.0", docker_image="x", runner="builtin",
                             input_schema={"type": "object"})
    blur = {"id": "b", "component": {"name": "blur", "version": "1.0.0"}, "parameters": {"radius": 1}}
    created = api.post("/api/v1/pipelines/", {"name": "p", "definition": {"nodes": [blur], "edges": []}},
                       format="json").json()
    gray = {"id": "g", "component": {"name": "gray", "version": "1.0.0"}, "parameters": {}}
    changed = {"nodes": [{**blur, "parameters": {"radius": 3}}, gray], "edges": [{"from": "b", "to": "g"}]}
    assert api.patch(f"/api/v1/pipelines/{created['id']}/", {"definition": changed}, format="json").status_code == 200
    diff = api.get(f"/api/v1/pipelines/{created['id']}/versions/1/diff/2/").json()
    assert diff["nodes"]["added"] == [gray]
    assert diff["nodes"]["changed"] == [{"id": "b", "fields": {"parameters": {"from": {"radius": 1}, "to": {"radius": 3}}}}]
    assert diff["edges"]["added"] == [{"from": "b", "to": "g"}] and diff["identical"] is False
    assert api.get(f"/api/v1/pipelines/{created['id']}/versions/1/diff/5/").status_code == 404
