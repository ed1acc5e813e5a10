"""Runs and steps are read-only in the admin (no add, change or delete, as in the API); what
staff do with a run is a button or an action calling the engine's services, and each refusal
is a message. The live panel stays, with no stale status field under it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from executions.models import ComponentExecution, ExecutionStatus, PipelineExecution, StepStatus
from executions.services import execution_start
from tests import factories
from tests.admin.pages import admin_url, snapshot
from tests.executions.conftest import node

pytestmark = pytest.mark.django_db


def _page(client, execution) -> str:
    response = client.get(admin_url(PipelineExecution, "change", execution.pk))
    assert response.status_code == 200
    return response.content.decode()


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_the_run_page_shows_every_field_read_only_and_no_status_field_under_the_live_panel(staff_client):
    execution = factories.PipelineExecutionFactory(status="running", input_data={"inputs": [], "parameters": {}},
                                                   output_data={"outputs": {"g": ["f-1"]}}, error_message="boom")
    factories.ComponentExecutionFactory(execution=execution, node_id="g", status="running")
    html = _page(staff_client, execution)
    # the panel follows the run; the fields below it are text, not inputs
    assert 'id="live-progress"' in html and 'data-final-at-load="false"' in html
    for field in ("status", "input_data", "output_data", "error_message", "pipeline", "created_by", "started_at"):
        assert f'name="{field}"' not in html, field
    assert "field-status" not in html  # the panel says the status, and follows it
    assert "[running]" not in html and "Running" not in html  # nor the title, breadcrumbs or step labels
    assert "boom" in html and "&quot;outputs&quot;" in html
    assert 'name="_save"' not in html and 'name="steps-0-status"' not in html


@pytest.mark.parametrize("forged", [
    {"output_data": '{"outputs": {"g": ["forged"]}}'},
    {"error_message": "it was fine"},
    {"input_data": '{"inputs": ["forged"]}'},
    {"status": "completed"},
])
def test_a_forged_run_record_is_refused_and_nothing_changes(staff_client, forged):
    execution = factories.PipelineExecutionFactory(status="failed", error_message="real error",
                                                   input_data={"inputs": [], "parameters": {}})
    before = snapshot()
    response = staff_client.post(admin_url(PipelineExecution, "change", execution.pk),
                                 {"pipeline": str(execution.pipeline_id), "pipeline_version": "1", **forged})
    assert response.status_code == 403
    assert snapshot() == before


def test_runs_and_steps_cannot_be_added_or_deleted_by_hand(staff_client):
    step = factories.ComponentExecutionFactory()
    before = snapshot()
    for model, obj in ((PipelineExecution, step.execution), (ComponentExecution, step)):
        assert staff_client.get(admin_url(model, "add")).status_code == 403
        assert staff_client.post(admin_url(model, "add"), {"node_id": "x"}).status_code == 403
        assert staff_client.post(admin_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
        assert staff_client.post(admin_url(model, "change", obj.pk), {"status": "completed"}).status_code == 403
    actions = staff_client.get(admin_url(PipelineExecution, "changelist")).context["action_form"].fields["action"]
    assert [name for name, _ in actions.choices if name] == ["cancel_executions", "retry_executions",
                                                            "rerun_executions"]
    assert snapshot() == before


def test_a_pending_run_offers_cancel_and_its_button_cancels_it(staff_client, staff_user, builtins, pipeline_of):
    execution = execution_start(pipeline=pipeline_of([node("g", "grayscale")]), inputs=[], user=staff_user)
    html = _page(staff_client, execution)
    assert 'data-role="run-cancel"' in html and 'data-role="run-rerun"' in html
    assert 'data-role="run-retry"' not in html  # only a failed or cancelled run is retried
    response = staff_client.post(reverse("admin:executions_pipelineexecution_cancel", args=[execution.pk]), follow=True)
    assert response.redirect_chain[-1][0] == admin_url(PipelineExecution, "change", execution.pk)
    assert _messages(response) == [f'Execution <a href="{admin_url(PipelineExecution, "change", execution.pk)}">'
                                   f'{execution.pk}</a> cancelled.']
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED
    assert set(execution.steps.values_list("status", flat=True)) == {StepStatus.CANCELLED}
    # and a second cancel is a message, not a 500
    response = staff_client.post(reverse("admin:executions_pipelineexecution_cancel", args=[execution.pk]), follow=True)
    assert _messages(response) == [f"{execution.pk}: not cancelled: status: The execution is already cancelled."]


def test_retry_from_failure_reuses_completed_steps_and_opens_the_retry(staff_client, staff_user, builtins,
                                                                      pipeline_of):
    pipeline = pipeline_of([node("a", "grayscale"), node("b", "blur")], [{"from": "a", "to": "b"}])
    failed = execution_start(pipeline=pipeline, inputs=[], user=staff_user)
    PipelineExecution.objects.filter(pk=failed.pk).update(status=ExecutionStatus.FAILED)
    failed.steps.filter(node_id="a").update(status=StepStatus.COMPLETED, output_data={"outputs": []})
    failed.steps.filter(node_id="b").update(status=StepStatus.FAILED)
    assert 'data-role="run-retry"' in _page(staff_client, failed)
    response = staff_client.post(reverse("admin:executions_pipelineexecution_retry", args=[failed.pk]), follow=True)
    retry = PipelineExecution.objects.get(retry_of=failed)
    assert response.redirect_chain[-1][0] == admin_url(PipelineExecution, "change", retry.pk)
    assert dict(retry.steps.values_list("node_id", "status")) == {"a": StepStatus.COMPLETED, "b": StepStatus.PENDING}
    # asking again gives the same retry (the service retries a run once)
    staff_client.post(reverse("admin:executions_pipelineexecution_retry", args=[failed.pk]))
    assert PipelineExecution.objects.filter(retry_of=failed).count() == 1


def test_retry_of_a_pending_run_is_a_message(staff_client, staff_user, builtins, pipeline_of):
    pending = execution_start(pipeline=pipeline_of([node("g", "grayscale")]), inputs=[], user=staff_user)
    response = staff_client.post(reverse("admin:executions_pipelineexecution_retry", args=[pending.pk]), follow=True)
    assert response.status_code == 200
    assert _messages(response) == [f"{pending.pk}: not retried: status: Only a failed or cancelled execution can be "
                                   "retried, not pending."]
    assert PipelineExecution.objects.count() == 1


def test_rerun_starts_a_new_run_with_the_same_inputs_and_overrides(staff_client, staff_user, builtins, pipeline_of):
    source = factories.FileFactory(created_by=staff_user)
    pipeline = pipeline_of([node("r", "resize", width=10)])
    first = execution_start(pipeline=pipeline, inputs=[str(source.pk)], parameters={"r": {"width": 20}}, user=staff_user)
    other = factories.StaffFactory()
    staff_client.force_login(other)
    response = staff_client.post(reverse("admin:executions_pipelineexecution_rerun", args=[first.pk]), follow=True)
    rerun = PipelineExecution.objects.exclude(pk=first.pk).get()
    assert response.redirect_chain[-1][0] == admin_url(PipelineExecution, "change", rerun.pk)
    # the same inputs and overrides; the admin request that started it is recorded as its own
    assert {key: rerun.input_data[key] for key in ("inputs", "parameters")} == {
        "inputs": [str(source.pk)], "parameters": {"r": {"width": 20}}}
    assert rerun.input_data["request_id"] != first.input_data.get("request_id")
    assert (rerun.pipeline_id, rerun.created_by, rerun.retry_of) == (pipeline.pk, other, None)
    assert rerun.steps.get().input_data["parameters"]["width"] == 20


def test_rerun_that_the_service_refuses_is_a_message(staff_client, staff_user, builtins, pipeline_of):
    source = factories.FileFactory(created_by=staff_user)
    first = execution_start(pipeline=pipeline_of([node("g", "grayscale")]), inputs=[str(source.pk)], user=staff_user)
    source_id = source.pk
    source.delete()  # the input file is gone since
    response = staff_client.post(reverse("admin:executions_pipelineexecution_rerun", args=[first.pk]), follow=True)
    assert response.status_code == 200
    assert _messages(response) == [f"{first.pk}: not re-run: inputs: No such file: {source_id}."]
    assert PipelineExecution.objects.count() == 1


def test_bulk_rerun_and_cancel_actions_call_the_services(staff_client, staff_user, builtins, pipeline_of):
    pipeline = pipeline_of([node("g", "grayscale")])
    runs = [execution_start(pipeline=pipeline, inputs=[], user=staff_user) for _ in range(2)]
    url = admin_url(PipelineExecution, "changelist")
    staff_client.post(url, {"action": "cancel_executions", "_selected_action": [str(r.pk) for r in runs]})
    assert set(PipelineExecution.objects.values_list("status", flat=True)) == {ExecutionStatus.CANCELLED}
    staff_client.post(url, {"action": "rerun_executions", "_selected_action": [str(r.pk) for r in runs]})
    assert PipelineExecution.objects.filter(status=ExecutionStatus.PENDING).count() == 2


def test_buttons_are_post_only_and_need_the_permission_to_act_on_runs(client, staff_user, builtins, pipeline_of):
    from django.contrib.auth.models import Permission

    execution = execution_start(pipeline=pipeline_of([node("g", "grayscale")]), inputs=[], user=staff_user)
    viewer = factories.UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_pipelineexecution"))
    client.force_login(viewer)
    html = client.get(admin_url(PipelineExecution, "change", execution.pk)).content.decode()
    assert 'id="live-progress"' in html and "run-cancel" not in html
    assert client.post(reverse("admin:executions_pipelineexecution_cancel", args=[execution.pk])).status_code == 403
    client.force_login(staff_user)
    assert client.get(reverse("admin:executions_pipelineexecution_cancel", args=[execution.pk])).status_code == 405
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.PENDING
