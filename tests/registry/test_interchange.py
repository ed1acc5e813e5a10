"""Export/import round trips (JSON, YAML, commands) and n8n import with the graph intact."""

import json
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from imageflow.audit.models import AuditEntry
from registry import interchange
from registry.models import Pipeline, Workflow, WorkflowEdge
from registry.workflow_selectors import workflow_document
from registry.workflow_services import workflow_create
from tests.registry.conftest import sample_document

pytestmark = pytest.mark.django_db
N8N = Path(__file__).parent / "data" / "n8n_support_triage.json"


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_export_import_export_is_identical(api, fmt):
    created = api.post("/api/v1/workflows/", sample_document(), format="json").json()
    first = api.get(f"/api/v1/workflows/{created['id']}/export/?as={fmt}")
    assert first.status_code == 200
    text = first.content.decode()
    if fmt == "yaml":
        assert first["Content-Type"].startswith("application/yaml") and yaml.safe_load(text)["format"] == "imageflow.workflow"
    imported = api.post("/api/v1/workflows/import/", {"format": "imageflow", "document": text}, format="json")
    assert imported.status_code == 201, imported.json()
    new_id = imported.json()["workflow"]["id"]
    assert new_id != created["id"]
    second = api.get(f"/api/v1/workflows/{new_id}/export/?as={fmt}").content.decode()
    assert second == text


def test_commands_round_trip_through_files(tmp_path, user):
    workflow, _ = workflow_create(user=user, data=sample_document())
    out = tmp_path / "wf.yaml"
    call_command("export_workflow", str(workflow.pk), "--format", "yaml", "--output", str(out))
    stdout = StringIO()
    call_command("import_workflow", str(out), "--user", user.username, stdout=stdout)
    new = Workflow.objects.exclude(pk=workflow.pk).get()
    assert workflow_document(new) == workflow_document(workflow)
    assert "3 nodes, 2 edges, 2 params" in stdout.getvalue()
    assert AuditEntry.objects.get(object_id=new.pk, action="import").source == "command"
    again = tmp_path / "again.json"
    call_command("export_workflow", str(new.pk), "--output", str(again))
    call_command("export_workflow", str(workflow.pk), "--output", str(tmp_path / "orig.json"))
    assert again.read_text() == (tmp_path / "orig.json").read_text()


def test_import_command_rejects_bad_document_and_stores_nothing(tmp_path, user):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "imageflow.workflow", "format_version": 1,
                               "workflow": {**sample_document(), "edges": [{"parent": "fetch", "child": "x"}]}}))
    with pytest.raises(CommandError, match="edges.0.child"):
        call_command("import_workflow", str(bad), "--user", user.username)
    assert Workflow.objects.count() == 0


def test_n8n_document_imports_with_its_graph_intact(api):
    response = api.post("/api/v1/workflows/import/", {"format": "n8n", "document": json.loads(N8N.read_text())},
                        format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    workflow = body["workflow"]
    nodes = {n["key"]: n for n in workflow["nodes"]}
    # every step is a node (the sticky note is not), typed agent/tool/trigger
    assert set(nodes) == {"ticket-webhook", "when-called-by-another-workflow", "classify-ticket", "openai-chat-model",
                          "is-urgent", "alert-slack", "log-to-sheet"}
    assert nodes["classify-ticket"]["node_type"] == "agent" and nodes["ticket-webhook"]["node_type"] == "trigger"
    assert nodes["alert-slack"]["node_type"] == "tool"
    assert nodes["alert-slack"]["parameters"] == {"channel": "#support-urgent", "text": "=Urgent: {{ $json.output.summary }}"}
    # every connection is an edge, with its n8n connection type and output index kept
    edges = {(e["parent"], e["child"]): e["handoff_data"] for e in workflow["edges"]}
    assert set(edges) == {("ticket-webhook", "classify-ticket"), ("openai-chat-model", "classify-ticket"),
                          ("classify-ticket", "is-urgent"), ("is-urgent", "alert-slack"), ("is-urgent", "log-to-sheet")}
    assert edges[("is-urgent", "log-to-sheet")] == {"n8n": [{"type": "main", "output": 1, "input": 0}]}
    assert edges[("openai-chat-model", "classify-ticket")]["n8n"][0]["type"] == "ai_languageModel"
    assert WorkflowEdge.objects.filter(workflow_id=workflow["id"]).count() == 5
    # sub-workflow inputs became typed params
    assert {(p["key"], p["value_type"]) for p in workflow["params"]} == {("priority_threshold", "float"), ("team", "string")}
    assert workflow["tags"] == ["ai", "support"]
    # what could not be mapped is reported and kept
    reasons = " | ".join(f"{u['path']}: {u['reason']}" for u in body["unmapped"])
    assert "sticky note" in reasons and "Ghost Node" in reasons and "credentials" in reasons and "settings" in reasons
    kept = workflow["metadata"]["n8n"]
    assert kept["notes"][0]["name"] == "Sticky Note"
    assert kept["nodes"]["alert-slack"]["type"] == "n8n-nodes-base.slack"
    assert kept["nodes"]["log-to-sheet"]["other"] == {"notesInFlow": True}
    assert kept["workflow"]["settings"] == {"executionOrder": "v1"}


def test_n8n_garbage_is_a_400(api):
    response = api.post("/api/v1/workflows/import/", {"format": "n8n", "document": {"nodes": "nope"}}, format="json")
    assert response.status_code == 400 and Workflow.objects.count() == 0
    response = api.post("/api/v1/workflows/import/", {"format": "imageflow", "document": "a: [unclosed"}, format="json")
    assert response.status_code == 400


def test_pipeline_export_import_round_trip(api, user):
    from registry.models import Component

    Component.objects.create(name="blur", version="1.0.0", docker_image="x", runner="builtin",
                             input_schema={"type": "object", "properties": {"radius": {"type": "number"}}})
    pipeline = Pipeline.objects.create(name="p", description="d", created_by=user, category="img",
                                       definition={"nodes": [{"id": "b", "component": {"name": "blur", "version": "1.0.0"},
                                                              "parameters": {"radius": 2}}], "edges": []})
    exported = api.get(f"/api/v1/pipelines/{pipeline.pk}/export/").json()
    assert exported["pipeline"]["category"] == "img"
    created = api.post("/api/v1/pipelines/import/", exported, format="json")
    assert created.status_code == 201, created.json()
    again = api.get(f"/api/v1/pipelines/{created.json()['id']}/export/").json()
    assert again == exported
    assert interchange.dump(again, fmt="yaml") == interchange.dump(exported, fmt="yaml")
