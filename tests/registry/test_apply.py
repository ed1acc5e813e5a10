"""Apply: params validated against workflow_params (400 otherwise), then a tracked execution
pinned to the workflow version, run to completion by a real Celery worker; agent/tool nodes
through the HTTP runner (a local test server), component nodes as their component."""

import time

import pytest
from django.core.exceptions import ValidationError

from executions.models import ComponentExecution, ExecutionStatus, PipelineExecution
from executions.workflow_apply import resolve_params
from imageflow.audit.models import AuditEntry
from registry.models import Workflow
from registry.workflow_services import workflow_create
from tests.factories import UserFactory
from tests.registry.conftest import sample_document


def wait_finished(execution_id, timeout=60.0) -> PipelineExecution:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = PipelineExecution.objects.get(pk=execution_id)
        if execution.status in {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}:
            return execution
        time.sleep(0.1)
    raise AssertionError(f"execution {execution_id} did not finish in {timeout}s")


@pytest.mark.django_db
@pytest.mark.parametrize("params, field, message", [
    ({}, "params.url", "required"),
    ({"url": 42}, "params.url", "expected a string"),
    ({"url": "http://x", "sentences": "three"}, "params.sentences", "expected an integer"),
    ({"url": "http://x", "sentences": True}, "params.sentences", "expected an integer"),
    ({"url": "http://x", "colour": "red"}, "params.colour", "no param"),
])
def test_apply_with_missing_or_wrong_params_is_400_and_starts_nothing(api, params, field, message):
    created = api.post("/api/v1/workflows/", sample_document(), format="json").json()
    response = api.post(f"/api/v1/workflows/{created['id']}/apply/", {"params": params}, format="json")
    assert response.status_code == 400, response.json()
    errors = response.json()["errors"]
    assert field in errors and message in " ".join(errors[field])
    assert PipelineExecution.objects.count() == 0


def test_resolve_params_applies_typed_defaults():
    declared = [{"key": "n", "value_type": "int", "required": True, "default_value": "3"},
                {"key": "r", "value_type": "float", "required": False, "default_value": None},
                {"key": "on", "value_type": "bool", "required": False, "default_value": "false"},
                {"key": "cfg", "value_type": "json", "required": False, "default_value": '{"a": 1}'}]
    assert resolve_params(declared=declared, values={"r": 2}) == {"n": 3, "r": 2.0, "on": False, "cfg": {"a": 1}}
    with pytest.raises(ValidationError):
        resolve_params(declared=declared, values={"on": "yes"})


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_correct_apply_runs_to_completion_through_the_engine(registry_worker, agent_server):
    # given
    user = UserFactory()
    workflow, _ = workflow_create(user=user, data=sample_document())
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(user)
    # when
    response = api.post(f"/api/v1/workflows/{workflow.pk}/apply/", {"params": {"url": "https://example.org/a"}},
                        format="json")
    # then: accepted, pinned to the version, and run by the worker to completion
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["workflow_version"] == 1 and body["params"] == {"url": "https://example.org/a", "sentences": 3}
    execution = wait_finished(body["execution"])
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    assert execution.workflow_id == workflow.pk and execution.workflow_version == 1
    steps = {s.node_id: s for s in ComponentExecution.objects.filter(execution=execution)}
    assert set(steps) == {"fetch", "summarize", "post"}
    assert all(s.status == "completed" for s in steps.values())
    # the HTTP runner got the substituted parameters and the parent's output with the handoff data
    by_node = {r["node"]["key"]: r for r in agent_server.requests}
    assert by_node["fetch"]["parameters"] == {"url": "https://example.org/a"}
    assert by_node["summarize"]["inputs"]["fetch"]["handoff_data"] == {"field": "html"}
    assert by_node["summarize"]["inputs"]["fetch"]["output"]["node"] == "fetch"
    assert steps["post"].output_data["data"]["saw"]["summarize"]["node"] == "summarize"
    # counted and audited
    workflow.refresh_from_db()
    assert workflow.apply_count == 1
    assert AuditEntry.objects.filter(object_id=workflow.pk, action="apply").count() == 1


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_failing_http_node_fails_the_run_and_skips_its_children(registry_worker, agent_server):
    user = UserFactory()
    document = sample_document()
    document["nodes"][1]["parameters"]["fail"] = True
    workflow, _ = workflow_create(user=user, data=document)
    from executions.workflow_apply import workflow_apply

    execution, _ = workflow_apply(workflow=workflow, user=user, params={"url": "u"})
    execution = wait_finished(execution.pk)
    assert execution.status == ExecutionStatus.FAILED
    assert "summarize" in execution.error_message and "422" in execution.error_message
    assert ComponentExecution.objects.get(execution=execution, node_id="post").status == "skipped"
    # a retry of it stays in the workflow's history, pinned to the same version
    from executions.services import execution_retry

    retry = execution_retry(execution=execution, user=user)
    assert (retry.workflow_id, retry.workflow_version) == (workflow.pk, 1)
    assert wait_finished(retry.pk).status == ExecutionStatus.FAILED


@pytest.mark.django_db
def test_cyclic_workflow_cannot_be_applied(api):
    document = sample_document()
    document["edges"].append({"parent": "post", "child": "fetch"})
    created = api.post("/api/v1/workflows/", document, format="json").json()
    response = api.post(f"/api/v1/workflows/{created['id']}/apply/", {"params": {"url": "u"}}, format="json")
    assert response.status_code == 400 and "cycle" in response.json()["errors"]["edges"][0]
    assert Workflow.objects.get(pk=created["id"]).apply_count == 0


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_node_naming_a_registered_component_runs_as_that_component(registry_worker, agent_server):
    """A `resize` node runs the built-in resize on the input image; the agent after it gets
    the step's output through the HTTP runner."""
    import io

    from PIL import Image

    from executions.catalogue import builtin_components_register
    from files.models import File
    from files.services import file_read_bytes, file_store_bytes

    builtin_components_register()
    user = UserFactory()
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (10, 120, 200)).save(buffer, format="PNG")
    source = file_store_bytes(content=buffer.getvalue(), original_name="in.png", created_by=user, prefix="uploads")
    document = {
        "name": "Shrink then describe",
        "nodes": [{"key": "shrink", "node_type": "resize", "name": "Shrink",
                   "parameters": {"width": "{{params.width}}"}, "order_index": 0},
                  {"key": "describe", "node_type": "agent", "name": "Describe", "parameters": {}, "order_index": 1}],
        "edges": [{"parent": "shrink", "child": "describe"}],
        "params": [{"key": "width", "value_type": "int", "required": False, "default_value": "50"}],
    }
    workflow, _ = workflow_create(user=user, data=document)
    from executions.workflow_apply import workflow_apply

    execution, params = workflow_apply(workflow=workflow, user=user, params={}, inputs=[str(source.pk)])
    assert params == {"width": 50}
    execution = wait_finished(execution.pk)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    shrink = ComponentExecution.objects.select_related("component").get(execution=execution, node_id="shrink")
    assert shrink.component.name == "resize" and shrink.component.runner == "builtin"
    output = File.objects.get(pk=shrink.output_data["files"][0])
    assert Image.open(io.BytesIO(file_read_bytes(output))).size == (50, 25)
    describe = ComponentExecution.objects.select_related("component").get(execution=execution, node_id="describe")
    assert describe.component.name == "workflow-http"
    assert [r["node"]["key"] for r in agent_server.requests] == ["describe"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_transient_agent_errors_are_retried_and_a_workflow_without_history_still_applies(registry_worker, agent_server):
    """A 503 from the agent service is retried by the engine; a workflow whose rows were written
    without the services (no version snapshot) applies from its current rows."""
    from executions.workflow_apply import workflow_apply
    from tests.factories import WorkflowFactory, WorkflowNodeFactory

    agent_server.fail_next = 1
    user = UserFactory()
    workflow = WorkflowFactory(created_by=user)
    WorkflowNodeFactory(workflow=workflow, key="only", node_type="agent", name="Only", parameters={"x": 1})
    execution, _ = workflow_apply(workflow=workflow, user=user, params={})
    execution = wait_finished(execution.pk)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    step = ComponentExecution.objects.get(execution=execution, node_id="only")
    assert step.attempts == 2 and len(agent_server.requests) == 2  # the 503, then the answer
    assert step.output_data["data"]["parameters"] == {"x": 1}


@pytest.mark.django_db
def test_an_idempotency_key_reused_for_another_workflow_is_409_and_leaves_the_first_run_alone(api):
    # given a run applied with key k1
    first = api.post("/api/v1/workflows/", sample_document(), format="json").json()
    second = api.post("/api/v1/workflows/", sample_document(name="Another workflow"), format="json").json()
    applied = api.post(f"/api/v1/workflows/{first['id']}/apply/", {"params": {"url": "http://x"}}, format="json",
                       HTTP_IDEMPOTENCY_KEY="k1")
    assert applied.status_code == 202, applied.json()
    # when the same key applies the same workflow again, and then another workflow
    repeated = api.post(f"/api/v1/workflows/{first['id']}/apply/", {"params": {"url": "http://x"}}, format="json",
                        HTTP_IDEMPOTENCY_KEY="k1")
    clash = api.post(f"/api/v1/workflows/{second['id']}/apply/", {"params": {"url": "http://x"}}, format="json",
                     HTTP_IDEMPOTENCY_KEY="k1")
    # then the repeat is the same run, the clash is a 409, and the one run still belongs to the first
    assert repeated.status_code == 202 and repeated.json() == applied.json()
    assert clash.status_code == 409, clash.json()
    run = PipelineExecution.objects.get()
    assert str(run.workflow_id) == first["id"]


@pytest.mark.django_db
def test_each_user_applies_through_a_pipeline_of_their_own(api, user):
    # given a workflow applied by a staff member first
    from rest_framework.test import APIClient

    from tests.factories import StaffFactory

    created = api.post("/api/v1/workflows/", sample_document(), format="json").json()
    staff = APIClient()
    staff.force_authenticate(StaffFactory())
    assert staff.post(f"/api/v1/workflows/{created['id']}/apply/", {"params": {"url": "http://x"}},
                      format="json").status_code == 202
    # when its owner applies the same version
    response = api.post(f"/api/v1/workflows/{created['id']}/apply/", {"params": {"url": "http://x"}}, format="json")
    # then the owner's run goes through a pipeline the owner can see
    assert response.status_code == 202, response.json()
    run = PipelineExecution.objects.get(created_by=user)
    assert run.pipeline.created_by == user
    assert api.get(f"/api/v1/pipelines/{run.pipeline_id}/").status_code == 200


@pytest.mark.django_db
def test_carrier_pipelines_are_listed_only_when_their_category_is_asked_for(api, user):
    from registry.models import CARRIER_PIPELINE_CATEGORY, Pipeline

    # given a pipeline of the user's own, and a workflow the user applied (through a carrier pipeline)
    own = Pipeline.objects.create(name="mine", definition={"nodes": [], "edges": []}, created_by=user)
    created = api.post("/api/v1/workflows/", sample_document(), format="json").json()
    assert api.post(f"/api/v1/workflows/{created['id']}/apply/", {"params": {"url": "http://x"}},
                    format="json").status_code == 202
    carrier = PipelineExecution.objects.get(created_by=user).pipeline
    # then the pipeline list shows the user's pipelines, not the carrier
    listed = [p["id"] for p in api.get("/api/v1/pipelines/").json()["results"]]
    assert listed == [str(own.pk)]
    # and asking for the carriers' category lists it
    carriers = api.get(f"/api/v1/pipelines/?category={CARRIER_PIPELINE_CATEGORY}").json()["results"]
    assert [p["id"] for p in carriers] == [str(carrier.pk)]
    # and nobody can label a pipeline of theirs as a carrier
    response = api.put(f"/api/v1/pipelines/{own.pk}/labels/", {"category": CARRIER_PIPELINE_CATEGORY}, format="json")
    assert response.status_code == 400 and "reserved" in str(response.json())
