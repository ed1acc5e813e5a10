"""Audit entries exist for every write path (API, admin, commands) of workflows, pipelines and
components, with who, when and before/after; the log is read-only in the admin and staff-only
in the API. Also the access log and usage counts."""

import pytest
from rest_framework.test import APIClient

from imageflow.audit.models import AuditEntry
from registry.models import Component, Pipeline, Workflow, WorkflowVersion
from tests.registry.conftest import sample_document

pytestmark = pytest.mark.django_db


def entries(obj_id):
    return list(AuditEntry.objects.filter(object_id=obj_id).order_by("created_at"))


def test_api_workflow_writes_are_audited_with_before_and_after(api, user):
    created = api.post("/api/v1/workflows/", sample_document(), format="json").json()
    api.put(f"/api/v1/workflows/{created['id']}/", {**sample_document(name="v2"), "version": 1}, format="json")
    api.post(f"/api/v1/workflows/{created['id']}/versions/1/restore/", {}, format="json")
    log = entries(created["id"])
    assert [e.action for e in log] == ["create", "update", "restore"]
    assert all(e.actor == user and e.source == "api" for e in log)
    assert log[0].before is None and log[0].after["name"] == "Summarize a web page"
    assert log[1].before["name"] == "Summarize a web page" and log[1].after["name"] == "v2"
    assert log[2].extra == {"version": 3, "restored_from": 1} and log[2].after["name"] == "Summarize a web page"


def _inline_management(prefix: str, total: int = 0, initial: int = 0) -> dict:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}


def test_admin_add_change_delete_of_a_workflow_make_versions_and_audit_entries(staff_client, staff_user):
    # when: added in the admin with one node
    data = {"name": "Admin made", "description": "", "category": "ops", "metadata": "null", "created_by": "",
            **_inline_management("nodes", total=1), **_inline_management("edges"), **_inline_management("params"),
            **_inline_management("versions"),
            "nodes-0-order_index": "0", "nodes-0-node_type": "agent", "nodes-0-name": "Think", "nodes-0-parameters": "{}"}
    response = staff_client.post("/admin/registry/workflow/add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    workflow = Workflow.objects.get(name="Admin made")
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 1
    created = entries(workflow.pk)[0]
    assert (created.action, created.source, created.actor) == ("create", "admin", staff_user)
    assert created.after["nodes"][0]["name"] == "Think"
    # when: renamed in the admin
    node = workflow.nodes.get()
    data.update({"name": "Admin renamed", "based_on_version": "1", **_inline_management("nodes", total=1, initial=1),
                 "nodes-0-id": str(node.pk), "nodes-0-workflow": str(workflow.pk),
                 **_inline_management("versions", total=1, initial=1),
                 "versions-0-id": str(workflow.versions.get().pk), "versions-0-workflow": str(workflow.pk)})
    response = staff_client.post(f"/admin/registry/workflow/{workflow.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    workflow.refresh_from_db()
    assert workflow.version == 2
    changed = entries(workflow.pk)[1]
    assert changed.action == "update" and changed.before["name"] == "Admin made" and changed.after["name"] == "Admin renamed"
    # when: deleted in the admin
    response = staff_client.post(f"/admin/registry/workflow/{workflow.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    deleted = entries(workflow.pk)[2]
    assert deleted.action == "delete" and deleted.source == "admin" and deleted.before["name"] == "Admin renamed"


def test_component_and_pipeline_writes_are_audited_through_api_and_admin(staff_user, staff_client):
    api = APIClient()
    api.force_authenticate(staff_user)
    response = api.post("/api/v1/components/", {
        "name": "sharpen", "version": "1.0.0", "docker_image": "example/sharpen:1", "runner": "container",
        "input_schema": {"type": "object"}, "output_schema": {"type": "object"}}, format="json")
    assert response.status_code == 201, response.json()
    component = Component.objects.get(name="sharpen")
    assert [(e.action, e.source) for e in entries(component.pk)] == [("create", "api")]
    definition = {"nodes": [{"id": "s", "component": {"name": "sharpen", "version": "1.0.0"}, "parameters": {}}],
                  "edges": []}
    response = api.post("/api/v1/pipelines/", {"name": "p1", "definition": definition}, format="json")
    assert response.status_code == 201, response.json()
    pipeline = Pipeline.objects.get(name="p1")
    # when: the pipeline is renamed in the admin
    response = staff_client.post(f"/admin/registry/pipeline/{pipeline.pk}/change/", {
        "name": "p1 renamed", "description": "", "definition": '{"nodes": [{"id": "s", "component": '
        '{"name": "sharpen", "version": "1.0.0"}, "parameters": {}}], "edges": []}', "version": "1",
        "created_by": str(staff_user.pk), "category": "demo",
        **_inline_management("versions", total=1, initial=1),
        "versions-0-id": str(pipeline.versions.get().pk), "versions-0-pipeline": str(pipeline.pk)})
    assert response.status_code == 302, response.content.decode()[:3000]
    log = entries(pipeline.pk)
    # the rename (pipeline_update) and the new category (pipeline_set_labels), as through the API
    assert [(e.action, e.source) for e in log] == [("create", "api"), ("update", "admin"), ("update", "admin")]
    assert log[1].before["name"] == "p1" and log[1].after["name"] == "p1 renamed" and log[1].actor == staff_user
    assert (log[2].before["category"], log[2].after["category"], log[2].actor) == ("", "demo", staff_user)
    # and the component deleted through the API
    assert api.delete(f"/api/v1/components/{component.pk}/").status_code in (204, 409)


def test_audit_log_is_staff_only_and_read_only(api, staff_user, staff_client, user):
    created = api.post("/api/v1/workflows/", sample_document(), format="json").json()
    assert api.get("/api/v1/audit-log/").status_code == 403
    staff = APIClient()
    staff.force_authenticate(staff_user)
    rows = staff.get(f"/api/v1/audit-log/?object_id={created['id']}").json()["results"]
    assert [(r["action"], r["actor_username"]) for r in rows] == [("create", user.username)]
    assert staff.post("/api/v1/audit-log/", {}, format="json").status_code == 405
    entry = AuditEntry.objects.get(object_id=created["id"])
    assert staff_client.get(f"/admin/audit/auditentry/{entry.pk}/change/").status_code == 200
    assert staff_client.post(f"/admin/audit/auditentry/{entry.pk}/change/", {"action": "delete"}).status_code == 403
    assert staff_client.post(f"/admin/audit/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk, action="create").exists()


def test_reads_are_logged_and_usage_is_aggregated(api, other_api, user):
    created = api.post("/api/v1/workflows/", sample_document(), format="json").json()
    for _ in range(3):
        api.get(f"/api/v1/workflows/{created['id']}/")
    api.get(f"/api/v1/workflows/{created['id']}/export/")
    api.post(f"/api/v1/workflows/{created['id']}/clone/", {"name": "copy"}, format="json")
    usage = api.get(f"/api/v1/workflows/{created['id']}/usage/").json()
    assert (usage["reads"], usage["exports"], usage["reuses"], usage["applies"]) == (3, 1, 1, 0)
    assert usage["distinct_users"] == 1
    listed = {w["name"]: w for w in api.get("/api/v1/workflows/").json()["results"]}
    assert listed["Summarize a web page"]["read_count"] == 3 and listed["Summarize a web page"]["reuse_count"] == 1
    assert listed["copy"]["reuse_count"] == 0
    assert other_api.get(f"/api/v1/workflows/{created['id']}/usage/").status_code == 404


def test_organization_change_outside_the_services_is_audited_without_a_new_version(user):
    from registry.workflow_selectors import workflow_document
    from registry.workflow_services import workflow_create, workflow_record_external_change
    from tests.factories import OrganizationFactory

    workflow, _ = workflow_create(user=user, data=sample_document())
    before = workflow_document(workflow)
    org = OrganizationFactory()
    Workflow.objects.filter(pk=workflow.pk).update(organization=org)
    workflow_record_external_change(workflow=workflow, user=user, before=before, organization_before=None)
    workflow.refresh_from_db()
    assert workflow.version == 1
    entry = entries(workflow.pk)[-1]
    assert entry.action == "update" and entry.after == {"organization": str(org.pk)} and entry.before == {"organization": None}


def test_admin_apply_action_validates_params_and_is_audited(staff_client, staff_user, user):
    from executions.models import PipelineExecution
    from registry.workflow_services import workflow_create

    needs_url, _ = workflow_create(user=user, data=sample_document())
    document = sample_document(name="Defaults only")
    document["params"][0]["default_value"] = "https://example.org"
    defaults_only, _ = workflow_create(user=user, data=document)
    response = staff_client.post("/admin/registry/workflow/", {
        "action": "apply_with_defaults", "_selected_action": [str(needs_url.pk), str(defaults_only.pk)]}, follow=True)
    assert response.status_code == 200
    text = " ".join(str(m) for m in response.context["messages"])
    assert "not applied: params.url" in text and "Defaults only v1: execution" in text
    execution = PipelineExecution.objects.get()
    assert execution.workflow_id == defaults_only.pk and execution.workflow_version == 1
    entry = AuditEntry.objects.get(action="apply")
    assert (entry.object_id, entry.source, entry.actor) == (defaults_only.pk, "admin", staff_user)
    assert entry.after == {"params": {"url": "https://example.org", "sentences": 3}}
