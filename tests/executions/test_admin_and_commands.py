"""Admin actions and management commands call the engine's services."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from executions.demo import DEMO_PIPELINE_NAME
from executions.models import ExecutionStatus, PipelineExecution, StepStatus
from executions.services import execution_start
from files.models import File
from registry.models import Component, Pipeline
from tests.executions.conftest import node, open_image, wait_finished
from tests.factories import FileFactory


def test_admin_cancel_action(staff_client, staff_user, builtins, pipeline_of):
    execution = execution_start(pipeline=pipeline_of([node("g", "grayscale")]), inputs=[], user=staff_user)
    response = staff_client.post(reverse("admin:executions_pipelineexecution_changelist"),
                                 {"action": "cancel_executions", "_selected_action": [str(execution.pk)]}, follow=True)
    assert response.status_code == 200
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED


def test_admin_retry_action_refuses_a_pending_run_and_retries_a_failed_one(staff_client, staff_user, builtins, pipeline_of):
    pending = execution_start(pipeline=pipeline_of([node("g", "grayscale")]), inputs=[], user=staff_user)
    failed = execution_start(pipeline=pipeline_of([node("g", "grayscale")]), inputs=[], user=staff_user)
    PipelineExecution.objects.filter(pk=failed.pk).update(status=ExecutionStatus.FAILED)
    failed.steps.update(status=StepStatus.FAILED)
    url = reverse("admin:executions_pipelineexecution_changelist")
    staff_client.post(url, {"action": "retry_executions", "_selected_action": [str(pending.pk), str(failed.pk)]})
    assert list(PipelineExecution.objects.filter(retry_of__isnull=False).values_list("retry_of", flat=True)) == [failed.pk]


def test_admin_run_action_shows_a_form_then_starts_a_run(staff_client, staff_user, builtins, pipeline_of):
    pipeline = pipeline_of([node("g", "grayscale")])
    source = FileFactory(created_by=staff_user)
    url = reverse("admin:registry_pipeline_changelist")
    form = staff_client.post(url, {"action": "run_pipelines", "_selected_action": [str(pipeline.pk)]})
    assert form.status_code == 200 and b'name="inputs"' in form.content
    staff_client.post(url, {"action": "run_pipelines", "_selected_action": [str(pipeline.pk)], "apply": "Run",
                            "inputs": f"{source.id}\n", "parameters": ""})
    execution = PipelineExecution.objects.get(pipeline=pipeline)
    assert execution.input_data["inputs"] == [str(source.id)] and execution.created_by == staff_user


def test_admin_run_action_reports_bad_inputs_and_starts_nothing(staff_client, builtins, pipeline_of):
    pipeline = pipeline_of([node("g", "grayscale")])
    response = staff_client.post(reverse("admin:registry_pipeline_changelist"), {
        "action": "run_pipelines", "_selected_action": [str(pipeline.pk)], "apply": "Run", "inputs": "nope"}, follow=True)
    assert b"Not a file id: nope." in response.content and PipelineExecution.objects.count() == 0


def test_register_builtin_components_is_idempotent(db):
    call_command("register_builtin_components", stdout=io.StringIO())
    Component.objects.filter(name="blur").update(description="changed")
    out = io.StringIO()
    call_command("register_builtin_components", stdout=out)
    assert "0 created, 1 updated, 16 in all" in out.getvalue()
    assert Component.objects.filter(runner="builtin", version="1.0.0").count() == 16
    assert Component.objects.get(name="blur").input_schema["properties"]["radius"]["default"] == 2


def test_load_demo_is_idempotent(user):
    call_command("load_demo", "--user", user.username, stdout=io.StringIO())
    call_command("load_demo", "--user", user.username, stdout=io.StringIO())
    assert Pipeline.objects.filter(name=DEMO_PIPELINE_NAME).count() == 1
    (demo,) = File.objects.filter(metadata__demo=True)
    assert (demo.metadata["width"], demo.metadata["height"]) == (1024, 768)


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_run_pipeline_command_runs_the_demo_to_completion(thread_worker, user):
    call_command("load_demo", "--user", user.username, stdout=io.StringIO())
    demo_file = File.objects.get(metadata__demo=True)
    out = io.StringIO()
    call_command("run_pipeline", DEMO_PIPELINE_NAME, "--input", str(demo_file.id), "--user", user.username, stdout=out,
                 stderr=io.StringIO())
    assert "Completed. Outputs:" in out.getvalue()
    execution = wait_finished(PipelineExecution.objects.get())
    board = File.objects.get(pk=execution.output_data["outputs"]["board"][0])
    # three 480x360 images side by side with 8px gaps
    assert open_image(board).size == (3 * 480 + 2 * 8, 360)


def test_run_pipeline_command_errors(builtins, user, pipeline_of, tmp_path):
    with pytest.raises(CommandError, match="No pipeline"):
        call_command("run_pipeline", "no-such", "--user", user.username)
    pipeline = pipeline_of([node("r", "resize", width=10)])
    with pytest.raises(CommandError, match="nodes\\[0\\].parameters.width"):
        call_command("run_pipeline", str(pipeline.pk), "--user", user.username, "--params", '{"r": {"width": -1}}')
    bad = tmp_path / "x.txt"
    bad.write_text("not an image")
    with pytest.raises(CommandError, match="x.txt"):
        call_command("run_pipeline", str(pipeline.pk), "--user", user.username, "--input", str(bad))
    assert PipelineExecution.objects.count() == 0
