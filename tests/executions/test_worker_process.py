"""Engine behaviour that needs a separate worker process with two pool processes: parallel
branches, duplicate deliveries racing, and a pool process killed with SIGKILL mid-step."""

from __future__ import annotations

import os
import signal

import pytest

from executions.models import ComponentExecution, ExecutionStatus, StepStatus
from executions.services import execution_start
from executions.tasks import step_run
from files.models import File
from tests.executions.conftest import node, open_image, wait_finished, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.timeout(240)]


def test_independent_branches_run_in_parallel_on_two_processes(process_worker, builtins, pipeline_of, jpeg_file, user):
    # given two slow branches after a common root
    pipeline = pipeline_of(
        [node("root", "resize", width=200), node("left", "passthrough", sleep_seconds=1.5),
         node("right", "passthrough", sleep_seconds=1.5), node("join", "side_by_side")],
        [{"from": "root", "to": "left"}, {"from": "root", "to": "right"}, {"from": "left", "to": "join"},
         {"from": "right", "to": "join"}])
    # when the run executes on a worker with two pool processes
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[jpeg_file(400, 300).id], user=user))
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    steps = {s.node_id: s for s in execution.steps.all()}
    left, right = steps["left"], steps["right"]
    # then the branches overlapped in time, in different processes
    assert left.started_at < right.completed_at and right.started_at < left.completed_at
    assert left.worker != right.worker
    # and the join got both branches' (passed-through) images
    (board,) = File.objects.filter(id__in=steps["join"].output_data["files"])
    assert open_image(board).size == (400, 150)


def test_duplicate_deliveries_racing_run_a_step_once(process_worker, builtins, pipeline_of, jpeg_file, user):
    # given a run whose root step task is delivered three times at once
    pipeline = pipeline_of([node("slow", "passthrough", sleep_seconds=1.0), node("gray", "grayscale")],
                           [{"from": "slow", "to": "gray"}])
    execution = execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user)
    root = execution.steps.get(node_id="slow")
    step_run.apply_async(args=[str(root.pk)])
    step_run.apply_async(args=[str(root.pk)])
    wait_finished(execution)
    # then every step ran exactly once and produced one set of outputs
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    steps = {s.node_id: s for s in execution.steps.all()}
    assert steps["slow"].attempts == 1 and steps["gray"].attempts == 1
    assert File.objects.filter(metadata__step_id=str(steps["gray"].pk)).count() == 1
    assert len(steps["gray"].output_data["files"]) == 1


def test_pool_process_killed_mid_step_runs_the_step_again_elsewhere(process_worker, settings, builtins, pipeline_of,
                                                                     jpeg_file, user):
    # given a run whose first step takes a few seconds, run as whole steps (the same for an item:
    # tests/executions/test_items.py)
    settings.STEP_ITEMS_ENABLED = False
    pipeline = pipeline_of([node("slow", "passthrough", sleep_seconds=3), node("gray", "grayscale")],
                           [{"from": "slow", "to": "gray"}])
    execution = execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user)
    slow = execution.steps.get(node_id="slow")

    def running_worker():
        step = ComponentExecution.objects.get(pk=slow.pk)
        return step.worker if step.status == StepStatus.RUNNING else None

    worker = wait_for(running_worker, what="the slow step to run")
    pid = int(worker.rsplit(":", 1)[1])
    assert pid in process_worker.child_pids()
    # when the pool process running it is killed with SIGKILL
    os.kill(pid, signal.SIGKILL)
    # then the message is delivered again, the step is taken over and the run completes
    wait_finished(execution, timeout=90)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    steps = {s.node_id: s for s in execution.steps.all()}
    assert steps["slow"].attempts == 2 and steps["slow"].worker != worker
    # and there is exactly one output of the step after it
    assert steps["gray"].attempts == 1
    assert File.objects.filter(metadata__step_id=str(steps["gray"].pk)).count() == 1
