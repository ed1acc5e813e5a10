"""The engine end to end with a real Celery worker (a worker thread of this process) on the real
Redis broker, real images in the real object store."""

from __future__ import annotations

import pytest

from executions.engine.recovery import execution_sweep
from executions.models import ExecutionStatus, StepStatus
from executions.services import execution_cancel, execution_retry, execution_start
from executions.tasks import step_run
from files.models import File
from tests.executions.conftest import node, open_image, wait_finished, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.timeout(180)]


def outputs_of(step) -> list[File]:
    ids = step.output_data["files"]
    by_id = {str(f.id): f for f in File.objects.filter(id__in=ids)}
    return [by_id[i] for i in ids]


def test_diamond_on_real_images(thread_worker, builtins, pipeline_of, jpeg_file, user):
    # given a diamond: resize -> (grayscale, threshold) -> side_by_side, on two 320x240 JPEGs
    pipeline = pipeline_of(
        [node("resize", "resize", width=160), node("gray", "grayscale"), node("bw", "threshold", level=100),
         node("board", "side_by_side", gap=10)],
        [{"from": "resize", "to": "gray"}, {"from": "resize", "to": "bw"}, {"from": "gray", "to": "board"},
         {"from": "bw", "to": "board", "outputs": [0]}])
    first, second = jpeg_file(320, 240), jpeg_file(320, 240, color=(10, 10, 240))
    # when it runs
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[first.id, second.id], user=user))
    # then it completed and every output is a real image in the object store with the right shape
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    steps = {s.node_id: s for s in execution.steps.all()}
    assert all(s.status == StepStatus.COMPLETED and s.attempts == 1 for s in steps.values())
    resized = [open_image(f) for f in outputs_of(steps["resize"])]
    assert [(i.size, i.mode) for i in resized] == [((160, 120), "RGB"), ((160, 120), "RGB")]
    assert [(open_image(f).size, open_image(f).mode) for f in outputs_of(steps["gray"])] == [((160, 120), "L")] * 2
    assert [open_image(f).mode for f in outputs_of(steps["bw"])] == ["1", "1"]
    # board got gray's two outputs and only bw's first: three 160px images and two 10px gaps
    board = outputs_of(steps["board"])
    assert len(board) == 1 and open_image(board[0]).size == (3 * 160 + 2 * 10, 120)
    assert steps["board"].input_data["inputs"] == steps["gray"].output_data["files"] + steps["bw"].output_data["files"][:1]
    assert execution.output_data == {"outputs": {"board": [str(board[0].id)]}}
    # and timing and resource usage were recorded for each step
    for step in steps.values():
        assert step.execution_time_ms is not None and step.started_at <= step.completed_at
        assert step.resource_usage["cpu_seconds"] >= 0 and step.resource_usage["peak_memory_bytes"] > 10_000_000
    # and the output files are tagged with the step that wrote them and owned by the run's user
    assert board[0].metadata["step_id"] == str(steps["board"].pk) and board[0].created_by == user


def test_failure_in_one_branch_fails_the_run_and_skips_dependents(thread_worker, builtins, pipeline_of, jpeg_file, user):
    # given a crop outside the image on one branch, a blur on the other
    pipeline = pipeline_of(
        [node("src", "passthrough"), node("crop", "crop", left=0, top=0, right=5000, bottom=10),
         node("after_crop", "grayscale"), node("blur", "blur", radius=1)],
        [{"from": "src", "to": "crop"}, {"from": "crop", "to": "after_crop"}, {"from": "src", "to": "blur"}])
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user))
    steps = {s.node_id: s for s in execution.steps.all()}
    # then crop failed with its cause, its dependent was skipped, the independent branch completed
    assert steps["crop"].status == StepStatus.FAILED and "not inside the 320x240 image" in steps["crop"].error_message
    assert steps["after_crop"].status == StepStatus.SKIPPED
    assert steps["blur"].status == StepStatus.COMPLETED
    # and the run failed with a message naming the node and the cause
    assert execution.status == ExecutionStatus.FAILED
    assert execution.error_message.startswith("node 'crop' (crop:1.0.0) failed: crop: crop box (0, 0, 5000, 10)")


def test_external_process_runner_follows_the_contract(thread_worker, contract_component, pipeline_of, jpeg_file, user,
                                                      tmp_path):
    # given an external component (a local executable speaking imageflow.step/1)
    pipeline = pipeline_of([{"id": "invert", "component": {"name": "invert-external", "version": "1.0.0"},
                             "parameters": {"done_marker": str(tmp_path / "done")}}])
    source = jpeg_file(64, 48, color=(255, 0, 0))
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[source.id], user=user))
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    step = execution.steps.get()
    # then its output file was stored from the output directory, inverted, with metrics and rusage
    (output,) = outputs_of(step)
    image = open_image(output)
    assert image.size == (64, 48) and image.getpixel((0, 0))[0] < 10 and image.getpixel((0, 0))[1] > 245
    assert output.original_name == "inverted-0.png" and step.output_data["metrics"] == {"images": 1}
    assert step.resource_usage["memory_scope"] == "external process"
    assert step.resource_usage["peak_memory_bytes"] > 1_000_000 and step.resource_usage["cpu_seconds"] > 0


def test_transient_failure_is_retried(thread_worker, contract_component, pipeline_of, jpeg_file, user, tmp_path):
    # given an external step that reports a temporary failure (exit 75) on its first attempt
    pipeline = pipeline_of([{"id": "flaky", "component": {"name": "invert-external", "version": "1.0.0"},
                             "parameters": {"tempfail_marker": str(tmp_path / "tempfail")}}])
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user))
    step = execution.steps.get()
    # then the second attempt succeeded
    assert execution.status == ExecutionStatus.COMPLETED and step.attempts == 2
    assert len(step.output_data["files"]) == 1


def test_transient_failures_give_up_after_the_retry_budget(thread_worker, engine_settings, contract_component,
                                                           pipeline_of, user, tmp_path):
    engine_settings.STEP_TRANSIENT_RETRY_BUDGET_SECONDS = 0
    pipeline = pipeline_of([{"id": "flaky", "component": {"name": "invert-external", "version": "1.0.0"},
                             "parameters": {"tempfail_marker": str(tmp_path / "tempfail")}}])
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[], user=user))
    step = execution.steps.get()
    assert step.status == StepStatus.FAILED and step.attempts == 1
    assert step.error_message.startswith("transient errors for 0s (retry budget 0s); gave up: TransientStepError")


def test_transient_retry_pause_doubles_up_to_the_cap_within_the_budget(settings):
    from executions.engine.lifecycle import _transient_retry_delay

    settings.STEP_RETRY_BACKOFF_SECONDS, settings.STEP_RETRY_BACKOFF_MAX_SECONDS = 2.0, 30.0
    settings.STEP_TRANSIENT_RETRY_BUDGET_SECONDS = 180.0
    # tries at t = 0, 2, 4, 8, 16, 32, 62, 92, ... while the errors have lasted under 180 s
    elapsed, tries = 0.0, [0.0]
    while (delay := _transient_retry_delay(elapsed=elapsed)) is not None:
        elapsed += delay
        tries.append(elapsed)
    assert tries == [0, 2, 4, 8, 16, 32, 62, 92, 122, 152, 182]


def test_step_time_limit(thread_worker, engine_settings, contract_component, pipeline_of, user, tmp_path):
    engine_settings.STEP_TIME_LIMIT_SECONDS = 1
    pipeline = pipeline_of([{"id": "slow", "component": {"name": "invert-external", "version": "1.0.0"},
                             "parameters": {"sleep_seconds": 30, "done_marker": str(tmp_path / "done")}}])
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[], user=user))
    step = execution.steps.get()
    assert step.status == StepStatus.FAILED and "time limit of 1s exceeded" in step.error_message
    assert not (tmp_path / "done").exists()


def test_cancel_mid_run_stops_the_running_step_and_starts_nothing_else(
        thread_worker, contract_component, builtins, pipeline_of, jpeg_file, user, tmp_path):
    # given a slow external step followed by a grayscale step
    pipeline = pipeline_of(
        [{"id": "slow", "component": {"name": "invert-external", "version": "1.0.0"},
          "parameters": {"sleep_seconds": 20, "done_marker": str(tmp_path / "done")}}, node("gray", "grayscale")],
        [{"from": "slow", "to": "gray"}])
    execution = execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user)
    slow = execution.steps.get(node_id="slow")
    wait_for(lambda: slow.__class__.objects.get(pk=slow.pk).status == StepStatus.RUNNING, what="slow step running")
    files_before = File.objects.count()
    # when the run is cancelled while the step runs
    execution_cancel(execution=execution, user=user)
    # then the worker stops the external process (heartbeat notices), discards its result
    wait_for(lambda: "of attempt 1 discarded" in _log_text(execution),
             timeout=30, what="the worker to give up the cancelled step")
    assert "step cancelled; process killed" in _log_text(execution)
    assert not (tmp_path / "done").exists()
    steps = {s.node_id: s for s in execution.steps.all()}
    assert steps["slow"].status == StepStatus.CANCELLED and steps["slow"].output_data is None
    assert steps["gray"].status == StepStatus.CANCELLED and steps["gray"].attempts == 0
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED and File.objects.count() == files_before


def _log_text(execution) -> str:
    from executions.log_models import ExecutionLogRecord

    return "\n".join(ExecutionLogRecord.objects.filter(execution_id=execution.pk).values_list("message", flat=True))


def test_retry_from_failure_reuses_completed_steps(thread_worker, contract_component, builtins, pipeline_of,
                                                   jpeg_file, user, tmp_path):
    # given a run whose external step fails because a resource is missing
    resource = tmp_path / "resource"
    pipeline = pipeline_of(
        [node("resize", "resize", width=100), node("gray", "grayscale"),
         {"id": "ext", "component": {"name": "invert-external", "version": "1.0.0"},
          "parameters": {"fail_unless_exists": str(resource)}}, node("board", "side_by_side")],
        [{"from": "resize", "to": "gray"}, {"from": "resize", "to": "ext"}, {"from": "gray", "to": "board"},
         {"from": "ext", "to": "board"}])
    failed = wait_finished(execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user))
    assert failed.status == ExecutionStatus.FAILED
    assert "node 'ext' (invert-external:1.0.0) failed: external process exited with status 1" in failed.error_message
    old = {s.node_id: s for s in failed.steps.all()}
    assert old["board"].status == StepStatus.SKIPPED
    # when the resource appears and the run is retried
    resource.write_text("ok")
    retry = wait_finished(execution_retry(execution=failed, user=user))
    # then the retry completed, reusing resize and gray (same files, not run again)
    assert retry.status == ExecutionStatus.COMPLETED, retry.error_message
    new = {s.node_id: s for s in retry.steps.all()}
    for reused in ("resize", "gray"):
        assert new[reused].reused_from_id == old[reused].pk and new[reused].attempts == 0
        assert new[reused].output_data["files"] == old[reused].output_data["files"]
    assert new["ext"].attempts == 1 and new["board"].attempts == 1 and new["ext"].reused_from_id is None
    assert open_image(outputs_of(new["board"])[0]).size == (200, 75)
    assert retry.retry_of_id == failed.pk


def test_duplicate_delivery_after_completion_changes_nothing(thread_worker, builtins, pipeline_of, jpeg_file, user):
    pipeline = pipeline_of([node("gray", "grayscale")])
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user))
    step = execution.steps.get()
    files_before = File.objects.count()
    # when the same step task is delivered again
    step_run.apply_async(args=[str(step.pk)])
    # then it is ignored: same outputs, one attempt, no new file
    wait_for(lambda: "already completed; delivery ignored" in _log_text(execution), what="the duplicate delivery")
    step_after = execution.steps.get()
    assert step_after.output_data == step.output_data and step_after.attempts == 1
    assert File.objects.count() == files_before


def _silent_run(nodes: list[tuple[str, list[str]]], *, user, inputs: list[str], silent_attempts: int):
    """Rows of a run whose first step's worker died an hour ago on another machine, and whose
    task message is gone (made with factories, so nothing was ever enqueued)."""
    from datetime import timedelta

    from django.utils import timezone

    from registry.models import Component
    from tests.factories import ComponentExecutionFactory, PipelineExecutionFactory, PipelineFactory

    long_ago = timezone.now() - timedelta(hours=1)
    execution = PipelineExecutionFactory(pipeline=PipelineFactory(created_by=user), status=ExecutionStatus.RUNNING,
                                         started_at=long_ago, input_data={"inputs": inputs})
    for index, (node_id, parents) in enumerate(nodes):
        component = Component.objects.get(name=node_id, version="1.0.0")
        ComponentExecutionFactory(
            execution=execution, component=component, node_id=node_id,
            status=StepStatus.RUNNING if index == 0 else StepStatus.PENDING,
            attempts=silent_attempts if index == 0 else 0, worker="gone-host:4242" if index == 0 else "",
            heartbeat_at=long_ago if index == 0 else None,
            input_data={"parameters": {"radius": 2} if node_id == "blur" else {}, "parents": parents,
                        "edges": [{"from": p, "to": node_id} for p in parents],
                        "inputs": inputs if not parents else None})
    return execution


def test_sweep_requeues_a_step_whose_worker_went_silent(thread_worker, builtins, jpeg_file, user):
    # given a running step whose worker stopped sending heartbeats and whose message is gone
    execution = _silent_run([("grayscale", [])], user=user, inputs=[str(jpeg_file().id)], silent_attempts=1)
    # when the periodic sweep runs
    assert execution_sweep() == {"stale": 1, "ready": 0, "finished": 0, "items_offered": 0}
    # then the step is taken over and the run completes
    wait_finished(execution)
    step = execution.steps.get()
    assert execution.status == ExecutionStatus.COMPLETED and step.attempts == 2 and step.worker != "gone-host:4242"
    assert open_image(File.objects.get(pk=step.output_data["files"][0])).mode == "L"


def test_sweep_fails_a_step_that_lost_its_worker_too_often(thread_worker, engine_settings, builtins, jpeg_file, user):
    engine_settings.STEP_MAX_ATTEMPTS = 2
    execution = _silent_run([("grayscale", []), ("blur", ["grayscale"])], user=user, inputs=[str(jpeg_file().id)],
                            silent_attempts=2)
    execution_sweep()
    wait_finished(execution)
    steps = {s.node_id: s for s in execution.steps.all()}
    assert steps["grayscale"].status == StepStatus.FAILED and steps["blur"].status == StepStatus.SKIPPED
    assert execution.status == ExecutionStatus.FAILED
    assert "worker lost 2 times (last gone-host:4242); giving up" in execution.error_message


def test_sweep_requeues_a_ready_step_whose_message_was_lost(thread_worker, engine_settings, builtins, jpeg_file, user):
    # given a run whose root step is pending but was never enqueued (rows made with factories)
    from registry.models import Component
    from tests.factories import ComponentExecutionFactory, PipelineExecutionFactory, PipelineFactory

    source = jpeg_file()
    execution = PipelineExecutionFactory(pipeline=PipelineFactory(created_by=user), status=ExecutionStatus.PENDING,
                                         input_data={"inputs": [str(source.id)]})
    ComponentExecutionFactory(execution=execution, component=Component.objects.get(name="grayscale"), node_id="gray",
                              input_data={"parameters": {}, "parents": [], "edges": [], "inputs": [str(source.id)]})
    # when it has waited longer than the timeout and the sweep runs
    engine_settings.STEP_HEARTBEAT_TIMEOUT_SECONDS = 0.3
    wait_for(lambda: execution_sweep() == {"stale": 0, "ready": 1, "finished": 0, "items_offered": 0}, timeout=10, interval=0.2, what="the sweep")
    # then the step runs and the run completes
    wait_finished(execution)
    assert execution.status == ExecutionStatus.COMPLETED and execution.steps.get().attempts == 1


def test_several_inputs_are_processed_concurrently_and_keep_their_order(thread_worker, engine_settings, builtins,
                                                                         pipeline_of, jpeg_file, user):
    engine_settings.STEP_IMAGE_CONCURRENCY = 3
    sources = [jpeg_file(400, 100), jpeg_file(100, 400), jpeg_file(200, 200), jpeg_file(300, 150)]
    execution = wait_finished(execution_start(pipeline=pipeline_of([node("fit", "resize", width=50, height=50)]),
                                              inputs=[s.id for s in sources], user=user))
    step = execution.steps.get()
    assert [open_image(f).size for f in outputs_of(step)] == [(50, 12), (12, 50), (50, 50), (50, 25)]
    assert [f.original_name for f in outputs_of(step)] == [
        "in-400x100-fit.jpg", "in-100x400-fit.jpg", "in-200x200-fit.jpg", "in-300x150-fit.jpg"]
