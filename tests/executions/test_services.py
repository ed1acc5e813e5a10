"""executions.services and the engine's transitions without a worker: starting, idempotency,
guarded transitions, cancel, retry."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from executions import signals
from executions.engine.errors import InvalidTransition
from executions.engine.lifecycle import step_complete
from executions.engine.transitions import execution_transition, step_transition
from executions.models import ComponentExecution, ExecutionStatus, PipelineExecution, StepStatus
from executions.selectors import execution_progress
from executions.services import execution_cancel, execution_retry, execution_start
from files.models import File
from registry.dag import DagValidationError
from tests.executions.conftest import node
from tests.factories import FileFactory, UserFactory

DIAMOND_NODES = [node("resize", "resize", width=100), node("gray", "grayscale"), node("blur", "blur"),
                 node("board", "side_by_side")]
DIAMOND_EDGES = [{"from": "resize", "to": "gray"}, {"from": "resize", "to": "blur"},
                 {"from": "gray", "to": "board"}, {"from": "blur", "to": "board"}]


@pytest.fixture
def diamond(builtins, pipeline_of):
    return pipeline_of(DIAMOND_NODES, DIAMOND_EDGES)


def test_start_creates_pending_run_with_one_step_per_node_and_enqueues_roots_on_commit(
        diamond, user, django_capture_on_commit_callbacks):
    # given a diamond pipeline and a file of the user
    source = FileFactory(created_by=user)
    # when a run is started with a parameter override
    with django_capture_on_commit_callbacks() as callbacks:
        execution = execution_start(pipeline=diamond, inputs=[str(source.id)], parameters={"blur": {"radius": 7}},
                                    user=user)
    # then the run is pending at the pipeline's version, with everything the worker needs per step
    assert execution.status == ExecutionStatus.PENDING and execution.pipeline_version == diamond.version
    assert execution.created_by == user and execution.input_data["inputs"] == [str(source.id)]
    steps = {s.node_id: s for s in execution.steps.all()}
    assert set(steps) == {"resize", "gray", "blur", "board"}
    assert all(s.status == StepStatus.PENDING for s in steps.values())
    assert steps["resize"].input_data["inputs"] == [str(source.id)]
    assert steps["resize"].input_data["parameters"] == {"width": 100, "keep_aspect": True, "resample": "lanczos",
                                                        "auto_orient": True, "metadata": "strip_location"}
    assert steps["blur"].input_data["parameters"] == {"radius": 7, "auto_orient": True, "metadata": "strip_location"}
    assert steps["board"].input_data["parents"] == ["gray", "blur"] and steps["board"].input_data["inputs"] is None
    # and exactly one on-commit callback (enqueue of the root) was registered
    assert len(callbacks) >= 1


def test_start_snapshot_survives_later_pipeline_edits(diamond, user):
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    diamond.definition = {"nodes": [node("other", "grayscale")], "edges": []}
    diamond.save()
    assert sorted(execution.steps.values_list("node_id", flat=True)) == ["blur", "board", "gray", "resize"]


def test_start_refuses_invalid_definition_and_stores_nothing(builtins, pipeline_of, user):
    pipeline = pipeline_of([node("a", "resize", width=0)])
    with pytest.raises(DagValidationError) as caught:
        execution_start(pipeline=pipeline, inputs=[], user=user)
    assert caught.value.errors[0]["field"] == "nodes[0].parameters.width"
    assert PipelineExecution.objects.count() == 0 and ComponentExecution.objects.count() == 0


def test_start_refuses_unknown_override_node(diamond, user):
    with pytest.raises(DagValidationError):
        execution_start(pipeline=diamond, inputs=[], parameters={"nope": {}}, user=user)
    assert PipelineExecution.objects.count() == 0


@pytest.mark.parametrize("inputs, message", [
    ("not-a-list", "Must be a list of file ids."),
    (["xyz"], "Not a file id: xyz."),
])
def test_start_refuses_malformed_inputs(diamond, user, inputs, message):
    with pytest.raises(ValidationError) as caught:
        execution_start(pipeline=diamond, inputs=inputs, user=user)
    assert caught.value.message_dict == {"inputs": [message]}


def test_start_refuses_missing_and_foreign_files_alike_but_staff_may_use_any(diamond, user, staff_user):
    missing = uuid.uuid4()
    with pytest.raises(ValidationError) as caught:
        execution_start(pipeline=diamond, inputs=[str(missing)], user=user)
    assert caught.value.message_dict == {"inputs": [f"No such file: {missing}."]}
    # another user's file is answered as if it did not exist: ids cannot be probed
    foreign = FileFactory(created_by=UserFactory())
    with pytest.raises(ValidationError) as caught:
        execution_start(pipeline=diamond, inputs=[foreign.id], user=user)
    assert caught.value.message_dict == {"inputs": [f"No such file: {foreign.id}."]}
    assert PipelineExecution.objects.count() == 0
    assert execution_start(pipeline=diamond, inputs=[foreign.id], user=staff_user).input_data["inputs"] == [str(foreign.id)]


def test_same_idempotency_key_returns_the_same_run(diamond, user):
    first = execution_start(pipeline=diamond, inputs=[], user=user, idempotency_key="k-1")
    second = execution_start(pipeline=diamond, inputs=[], user=user, idempotency_key="k-1")
    other_user = execution_start(pipeline=diamond, inputs=[], user=UserFactory(), idempotency_key="k-1")
    assert first.pk == second.pk and other_user.pk != first.pk
    assert PipelineExecution.objects.count() == 2 and ComponentExecution.objects.count() == 8


@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_with_one_idempotency_key_create_one_run(builtins, pipeline_of, user):
    # given a pipeline and eight requests racing with the same key
    pipeline = pipeline_of(DIAMOND_NODES, DIAMOND_EDGES)
    barrier, results, errors = threading.Barrier(8), [], []

    def start():
        try:
            barrier.wait()
            results.append(execution_start(pipeline=pipeline, inputs=[], user=user, idempotency_key="race").pk)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then all got the same run and only one exists, with one set of steps
    assert errors == []
    assert len(set(results)) == 1 and PipelineExecution.objects.count() == 1
    assert ComponentExecution.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_concurrent_step_claims_have_exactly_one_winner(builtins, pipeline_of, user):
    # given a pending step and eight workers claiming it at the same moment
    execution = execution_start(pipeline=pipeline_of(DIAMOND_NODES, DIAMOND_EDGES), inputs=[], user=user)
    step_id = execution.steps.get(node_id="resize").pk
    barrier, wins = threading.Barrier(8), []

    def claim():
        try:
            step = ComponentExecution.objects.get(pk=step_id)
            barrier.wait()
            wins.append(step_transition(step=step, expected=StepStatus.PENDING, to=StepStatus.RUNNING, attempts=1))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_transitions_follow_the_table_and_a_finished_run_never_moves_back(diamond, user):
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    with pytest.raises(InvalidTransition):
        execution_transition(execution_id=execution.pk, expected=ExecutionStatus.COMPLETED, to=ExecutionStatus.RUNNING)
    assert execution_transition(execution_id=execution.pk, expected=ExecutionStatus.PENDING, to=ExecutionStatus.RUNNING)
    assert execution_transition(execution_id=execution.pk, expected=ExecutionStatus.RUNNING, to=ExecutionStatus.COMPLETED)
    # a late message expecting "running" loses
    assert not execution_transition(execution_id=execution.pk, expected=ExecutionStatus.RUNNING, to=ExecutionStatus.FAILED)
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED


def test_transitions_send_signals_after_commit(diamond, user, django_capture_on_commit_callbacks):
    received = []

    def on_execution(sender, **kwargs):
        received.append(("execution", kwargs["status"], kwargs["previous_status"]))

    def on_step(sender, **kwargs):
        received.append(("step", kwargs["node_id"], kwargs["status"], kwargs["previous_status"]))

    signals.execution_status_changed.connect(on_execution)
    signals.step_status_changed.connect(on_step)
    try:
        execution = execution_start(pipeline=diamond, inputs=[], user=user)
        step = execution.steps.get(node_id="resize")
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            step_transition(step=step, expected=StepStatus.PENDING, to=StepStatus.RUNNING)
            execution_transition(execution_id=execution.pk, expected=ExecutionStatus.PENDING, to=ExecutionStatus.RUNNING)
            assert received == []  # nothing before commit
        for callback in callbacks:
            callback()
    finally:
        signals.execution_status_changed.disconnect(on_execution)
        signals.step_status_changed.disconnect(on_step)
    assert received == [("step", "resize", "running", "pending"), ("execution", "running", "pending")]


def test_cancel_cancels_pending_and_running_steps_and_discards_a_late_result(diamond, user):
    # given a running run whose root step is running (claimed by attempt 1)
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    root = execution.steps.get(node_id="resize")
    step_transition(step=root, expected=StepStatus.PENDING, to=StepStatus.RUNNING, attempts=1)
    execution_transition(execution_id=execution.pk, expected=ExecutionStatus.PENDING, to=ExecutionStatus.RUNNING)
    # when it is cancelled
    execution_cancel(execution=execution, user=user)
    # then the run and every step are cancelled
    assert execution.status == ExecutionStatus.CANCELLED and execution.completed_at is not None
    assert set(execution.steps.values_list("status", flat=True)) == {StepStatus.CANCELLED}
    # and the worker's late result is refused and its output file deleted
    output = FileFactory(created_by=user)
    root.status = StepStatus.RUNNING
    kept = step_complete(step=root, attempt=1, output_data={"files": [str(output.id)]}, execution_time_ms=5,
                         resource_usage={}, created_files=[output])
    assert kept is False and not File.objects.filter(pk=output.pk).exists()
    root.refresh_from_db()
    assert root.status == StepStatus.CANCELLED and root.output_data is None
    # and cancelling again is refused
    with pytest.raises(ValidationError):
        execution_cancel(execution=execution, user=user)


def test_completion_of_a_taken_over_attempt_is_refused(diamond, user):
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    root = execution.steps.get(node_id="resize")
    step_transition(step=root, expected=StepStatus.PENDING, to=StepStatus.RUNNING, attempts=2)
    root.status = StepStatus.RUNNING
    assert not step_complete(step=root, attempt=1, output_data={"files": []}, execution_time_ms=1, resource_usage={})
    assert step_complete(step=root, attempt=2, output_data={"files": []}, execution_time_ms=1, resource_usage={})


def test_completion_removes_files_of_an_earlier_crashed_attempt(diamond, user):
    # given attempt 1 stored an output and died; attempt 2 stored its own
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    root = execution.steps.get(node_id="resize")
    step_transition(step=root, expected=StepStatus.PENDING, to=StepStatus.RUNNING, attempts=2)
    stray = FileFactory(created_by=user, metadata={"step_id": str(root.pk), "attempt": 1})
    kept = FileFactory(created_by=user, metadata={"step_id": str(root.pk), "attempt": 2})
    # when attempt 2 completes
    step_complete(step=root, attempt=2, output_data={"files": [str(kept.id)]}, execution_time_ms=1, resource_usage={})
    # then only attempt 2's file remains
    assert File.objects.filter(pk=kept.pk).exists() and not File.objects.filter(pk=stray.pk).exists()


def test_retry_requires_a_failed_or_cancelled_run(diamond, user):
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    with pytest.raises(ValidationError):
        execution_retry(execution=execution, user=user)


def test_retry_reuses_completed_steps_and_runs_the_rest(diamond, user, django_capture_on_commit_callbacks):
    # given a failed run where resize and gray completed, blur failed and board was skipped
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    steps = {s.node_id: s for s in execution.steps.all()}
    ComponentExecution.objects.filter(pk__in=[steps["resize"].pk, steps["gray"].pk]).update(
        status=StepStatus.COMPLETED, output_data={"files": ["f1"]})
    ComponentExecution.objects.filter(pk=steps["blur"].pk).update(status=StepStatus.FAILED)
    ComponentExecution.objects.filter(pk=steps["board"].pk).update(status=StepStatus.SKIPPED)
    PipelineExecution.objects.filter(pk=execution.pk).update(status=ExecutionStatus.FAILED)
    execution.refresh_from_db()
    # when it is retried
    with django_capture_on_commit_callbacks() as callbacks:
        retry = execution_retry(execution=execution, user=user)
    # then a new run reuses the completed steps and has the others pending
    new = {s.node_id: s for s in retry.steps.all()}
    assert retry.retry_of == execution and retry.status == ExecutionStatus.PENDING
    assert new["resize"].status == StepStatus.COMPLETED and new["resize"].reused_from_id == steps["resize"].pk
    assert new["gray"].output_data == {"files": ["f1"], "reused": True}
    assert new["blur"].status == StepStatus.PENDING and new["board"].status == StepStatus.PENDING
    assert new["blur"].reused_from_id is None
    assert len(callbacks) == 1  # blur is ready (its parent is reused); board waits
    progress = execution_progress(retry)
    assert (progress["completed"], progress["pending"], progress["total"], progress["percentage"]) == (2, 2, 4, 50.0)


def test_retrying_the_same_run_twice_returns_the_one_retry(diamond, user):
    # given a failed run
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    PipelineExecution.objects.filter(pk=execution.pk).update(status=ExecutionStatus.FAILED)
    ComponentExecution.objects.filter(execution=execution).update(status=StepStatus.SKIPPED)
    execution.refresh_from_db()
    # when it is retried twice (a double click, two admins)
    first = execution_retry(execution=execution, user=user)
    second = execution_retry(execution=execution, user=user)
    # then there is one retry, and both calls return it
    assert first.pk == second.pk
    assert PipelineExecution.objects.filter(retry_of=execution).count() == 1
