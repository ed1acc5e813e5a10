"""Items: a map step over many images runs as items any worker takes, streamed along map -> map
edges, with per-item failure policies, retry of the failed items only, crash safety and
cancellation per item. Real broker, real workers (a thread worker, or a separate prefork worker
of two processes), real object store."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db.models import Q

from executions.engine import item_statements
from executions.models import ComponentExecution, ExecutionStatus, FileLineage, StepItem, StepStatus
from executions.services import execution_cancel, execution_retry, execution_start
from files.models import File
from tests.executions.conftest import ProcessWorker, _purge_queue, node, open_image, wait_finished, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _steps(execution) -> dict[str, ComponentExecution]:
    return {s.node_id: s for s in execution.steps.all()}


def _items(step) -> list[StepItem]:
    return list(StepItem.objects.filter(step=step).order_by("index"))


def _chain(pipeline_of, *nodes, on_item_error=None):
    pipeline = pipeline_of(list(nodes), [{"from": a["id"], "to": b["id"]} for a, b in zip(nodes, nodes[1:])])
    if on_item_error:
        pipeline.definition = {**pipeline.definition, "on_item_error": on_item_error}
        pipeline.save(update_fields=["definition"])
    return pipeline


@pytest.fixture
def two_process_worker(transactional_db, engine_settings):
    workers = []

    def start(**env):
        _purge_queue()
        worker = ProcessWorker(extra_env={"STEP_CACHE_ENABLED": "false", **env})
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
    _purge_queue()


def test_a_map_step_fans_out_over_items_that_two_processes_run_at_once(two_process_worker, builtins, pipeline_of,
                                                                       jpeg_file, user):
    # given a worker of two processes and items of 2 images
    two_process_worker(STEP_ITEM_BATCH="2")
    sources = [jpeg_file(640, 480 + i) for i in range(12)]
    pipeline = _chain(pipeline_of, node("blur", "blur", radius=6), node("gray", "grayscale"))
    # when one run takes the 12 images
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[s.id for s in sources], user=user),
                              timeout=120)
    steps = _steps(execution)
    assert execution.status == ExecutionStatus.COMPLETED
    # then each step ran as 6 items of 2 images, on both processes, overlapping in time
    blur_items = _items(steps["blur"])
    assert [len(i.inputs) for i in blur_items] == [2] * 6 and steps["blur"].item_count == 6
    assert steps["blur"].items_completed == 6 and steps["gray"].items_completed == 6
    assert len({i.worker for i in blur_items}) == 2
    overlapping = [(a.index, b.index) for a in blur_items for b in blur_items
                   if a.worker != b.worker and a.started_at < b.completed_at and b.started_at < a.completed_at]
    assert overlapping, [(i.worker, i.started_at, i.completed_at) for i in blur_items]
    # and the step's outputs keep the order of the inputs, each derived from its input by its item
    outputs = [File.objects.get(pk=f) for f in steps["gray"].output_data["files"]]
    assert [open_image(f).size for f in outputs] == [(640, 480 + i) for i in range(12)]
    assert all(open_image(f).mode == "L" for f in outputs)
    blurred = steps["blur"].output_data["files"]
    for position, output in enumerate(outputs):
        edge = FileLineage.objects.get(file=output)
        assert str(edge.derived_from_id) == blurred[position]
        assert edge.item.step_id == steps["gray"].pk and edge.item.index == position // 2
    assert execution.output_data["outputs"] == {"gray": [str(f.id) for f in outputs]}


def test_the_child_item_runs_as_soon_as_its_parent_item_is_done(thread_worker, engine_settings, builtins, pipeline_of,
                                                                jpeg_file, user):
    engine_settings.STEP_ITEM_BATCH = 1
    sources = [jpeg_file(200 + i, 150) for i in range(5)]
    pipeline = _chain(pipeline_of, node("a", "grayscale"), node("b", "blur", radius=1), node("c", "thumbnail", size=64))
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[s.id for s in sources], user=user))
    steps = _steps(execution)
    assert execution.status == ExecutionStatus.COMPLETED
    first, last = _items(steps["a"]), _items(steps["c"])
    # the first image reached the last step before the last image left the first step
    assert last[0].completed_at < first[-1].started_at
    # item i of a step took exactly the outputs of item i of its parent
    for parent, child in zip(_items(steps["a"]), _items(steps["b"])):
        assert child.inputs == parent.outputs and child.waiting == 0
    assert [open_image(File.objects.get(pk=f)).size for f in steps["c"].output_data["files"]] == [
        (64, round(150 * 64 / (200 + i))) for i in range(5)]


def _crop_pipeline(pipeline_of, on_item_error):
    # crop needs a 200x200 image: the 100x100 inputs fail
    return _chain(pipeline_of, node("crop", "crop", left=0, top=0, right=200, bottom=200), node("gray", "grayscale"),
                  on_item_error=on_item_error)


def test_continue_skips_the_failed_items_downstream_and_finishes_the_rest(thread_worker, engine_settings, builtins,
                                                                          pipeline_of, jpeg_file, user):
    engine_settings.STEP_ITEM_BATCH = 1
    good, small, good2 = jpeg_file(320, 240), jpeg_file(100, 100), jpeg_file(300, 300)
    execution = wait_finished(execution_start(pipeline=_crop_pipeline(pipeline_of, "continue"),
                                              inputs=[good.id, small.id, good2.id], user=user))
    steps = _steps(execution)
    # the run completed with the two good images, and lists the failed item by input with its error
    assert execution.status == ExecutionStatus.COMPLETED
    assert [i.status for i in _items(steps["crop"])] == ["completed", "failed", "completed"]
    assert [i.status for i in _items(steps["gray"])] == ["completed", "skipped", "completed"]
    assert (steps["crop"].items_failed, steps["gray"].items_skipped, steps["gray"].items_completed) == (1, 1, 2)
    assert len(execution.output_data["outputs"]["gray"]) == 2
    [failed] = execution.output_data["failed_items"]
    assert failed["node"] == "crop" and failed["inputs"] == [str(small.id)] and failed["item"] == 1
    assert "crop box (0, 0, 200, 200) is not inside the 100x100 image" in failed["error"]
    assert execution.output_data["items_failed"] == 1 and execution.output_data["items_skipped"] == 1

    # when it is retried, only the failed and skipped items run again; the others are reused
    files_before = File.objects.count()
    retry = wait_finished(execution_retry(execution=execution, user=user))
    again = _steps(retry)
    crop_items = _items(again["crop"])
    assert [i.status for i in crop_items] == ["completed", "failed", "completed"]
    old_crop = _items(steps["crop"])
    assert crop_items[0].reused_from_id == old_crop[0].pk and crop_items[2].reused_from_id == old_crop[2].pk
    assert crop_items[1].reused_from_id is None and crop_items[1].attempts == 1
    assert again["gray"].output_data["files"] == steps["gray"].output_data["files"]
    assert File.objects.count() == files_before  # nothing ran again that had completed


def test_continue_fails_the_run_when_every_item_failed(thread_worker, engine_settings, builtins, pipeline_of,
                                                       jpeg_file, user):
    engine_settings.STEP_ITEM_BATCH = 1
    execution = wait_finished(execution_start(pipeline=_crop_pipeline(pipeline_of, "continue"),
                                              inputs=[jpeg_file(100, 100).id, jpeg_file(120, 90).id], user=user))
    steps = _steps(execution)
    assert execution.status == ExecutionStatus.FAILED
    assert steps["crop"].status == StepStatus.FAILED and steps["gray"].status == StepStatus.SKIPPED
    assert steps["crop"].error_message.startswith("every item failed (2 of 2); first: item 0: crop: crop box")


def test_fail_fails_the_run_naming_the_node_the_input_and_the_cause(thread_worker, engine_settings, builtins,
                                                                    pipeline_of, jpeg_file, user):
    engine_settings.STEP_ITEM_BATCH = 1
    small = jpeg_file(100, 100)
    inputs = [jpeg_file(320, 240).id, small.id] + [jpeg_file(300, 300).id for _ in range(4)]
    execution = wait_finished(execution_start(pipeline=_crop_pipeline(pipeline_of, None), inputs=inputs, user=user))
    steps = _steps(execution)
    assert execution.status == ExecutionStatus.FAILED
    assert execution.error_message.startswith("node 'crop' (crop:1.0.0) failed: crop: crop box (0, 0, 200, 200) "
                                              "is not inside the 100x100 image (item 1, inputs in-100x100.jpg")
    assert str(small.id) in execution.error_message
    # nothing of the run is left to run
    assert not StepItem.objects.filter(execution=execution, status__in=["pending", "running"]).exists()
    assert steps["gray"].status in {StepStatus.CANCELLED, StepStatus.SKIPPED}


def test_sigkill_of_a_worker_mid_item_runs_that_item_again_and_only_it(two_process_worker, builtins, pipeline_of,
                                                                       jpeg_file, user):
    worker = two_process_worker(STEP_ITEM_BATCH="1")
    sources = [jpeg_file(160, 120 + i) for i in range(6)]
    pipeline = _chain(pipeline_of, node("wait", "passthrough", sleep_seconds=1.5), node("gray", "grayscale"))
    execution = execution_start(pipeline=pipeline, inputs=[s.id for s in sources], user=user)
    # when the process running an item is killed mid-item
    running = wait_for(lambda: StepItem.objects.filter(execution=execution, status="running",
                                                       step__node_id="wait").first(), timeout=30, what="a running item")
    os.kill(int(running.worker.rpartition(":")[2]), signal.SIGKILL)
    execution = wait_finished(execution, timeout=120)
    # then the run completed, that item ran twice and every other item once
    assert execution.status == ExecutionStatus.COMPLETED
    steps = _steps(execution)
    attempts = {i.index: i.attempts for i in _items(steps["wait"])}
    assert attempts[running.index] == 2
    assert all(count == 1 for index, count in attempts.items() if index != running.index)
    assert all(i.attempts == 1 for i in _items(steps["gray"]))
    # and each image has exactly one output
    outputs = steps["gray"].output_data["files"]
    assert len(set(outputs)) == 6
    assert File.objects.filter(metadata__step_id=str(steps["gray"].pk)).count() == 6
    worker.stop()


def test_a_duplicate_completion_of_an_item_changes_nothing(engine_settings, builtins, pipeline_of, jpeg_file, user):
    # given a run whose items were made (no worker: the test claims them itself)
    from executions.engine.fanout import step_items_start
    from django.utils import timezone

    engine_settings.STEP_ITEM_BATCH = 1
    engine_settings.ITEM_DRAINS_PER_RUN = 0
    execution = execution_start(pipeline=pipeline_of([node("gray", "grayscale")]),
                                inputs=[jpeg_file().id, jpeg_file().id], user=user)
    step = execution.steps.get()
    step_items_start(step.pk)
    # two claims take two different items, lowest index first
    first = item_statements.item_claim(execution_id=execution.pk, now=timezone.now(), worker="a:1", steps=[step.pk])
    second = item_statements.item_claim(execution_id=execution.pk, now=timezone.now(), worker="b:2", steps=[step.pk])
    assert (first.item.index, second.item.index) == (0, 1)
    assert item_statements.item_claim(execution_id=execution.pk, now=timezone.now(), worker="c:3",
                                      steps=[step.pk]) is None
    # the first completion wins, its duplicate does not count again
    won, _, counts = item_statements.item_complete(item=first.item, now=timezone.now(), outputs=first.item.inputs,
                                                   metrics={}, execution_time_ms=1)
    assert won and counts.completed == 1
    again, _, none = item_statements.item_complete(item=first.item, now=timezone.now(), outputs=[], metrics={},
                                                   execution_time_ms=1)
    assert not again and none is None
    step.refresh_from_db()
    assert step.items_completed == 1 and StepItem.objects.get(pk=first.item.pk).outputs == first.item.inputs
    # and an item whose claim was taken over cannot complete with its old attempt
    StepItem.objects.filter(pk=second.item.pk).update(attempts=2)
    assert not item_statements.item_complete(item=second.item, now=timezone.now(), outputs=[], metrics={},
                                             execution_time_ms=1)[0]


def test_cancel_mid_fan_out_leaves_no_item_running(two_process_worker, builtins, pipeline_of, jpeg_file, user):
    two_process_worker(STEP_ITEM_BATCH="1")
    sources = [jpeg_file(64, 64) for _ in range(10)]
    pipeline = _chain(pipeline_of, node("wait", "passthrough", sleep_seconds=1.0), node("gray", "grayscale"))
    execution = execution_start(pipeline=pipeline, inputs=[s.id for s in sources], user=user)
    wait_for(lambda: StepItem.objects.filter(execution=execution, status="completed").exists(), timeout=30,
             what="a completed item")
    execution_cancel(execution=execution, user=user)
    cancelled_at = time.monotonic()
    # within a few heartbeats nothing of the run runs, and no item completes after the cancel
    wait_for(lambda: not StepItem.objects.filter(execution=execution, status__in=["pending", "running"]).exists(),
             timeout=10, what="no item pending or running")
    completed = StepItem.objects.filter(execution=execution, status="completed").count()
    time.sleep(max(0.0, 2.5 - (time.monotonic() - cancelled_at)))
    assert StepItem.objects.filter(execution=execution, status="completed").count() == completed
    assert StepItem.objects.filter(execution=execution, status="cancelled").count() == 20 - completed
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED
    assert not File.objects.filter(Q(metadata__execution_id=str(execution.pk)),
                                   ~Q(id__in=[f for i in StepItem.objects.filter(execution=execution, status="completed")
                                              for f in i.outputs])).exists()


def test_many_inputs_start_as_one_step_row_and_run_as_items_in_order(thread_worker, engine_settings, builtins,
                                                                     pipeline_of, jpeg_file, user):
    engine_settings.STEP_ITEM_BATCH = 8
    source = jpeg_file(32, 32)
    # 300 file rows (one real object: passthrough reads none)
    extra = File.objects.bulk_create([File(storage_path=source.storage_path, original_name=f"n{i}.jpg", file_size=source.file_size,
                                           mime_type=source.mime_type, checksum=source.checksum, created_by=user)
                                      for i in range(299)])
    inputs = [source.id] + [f.id for f in extra]
    execution = execution_start(pipeline=pipeline_of([node("pass", "passthrough")]), inputs=inputs, user=user)
    assert ComponentExecution.objects.filter(execution=execution).count() == 1
    execution = wait_finished(execution)
    step = execution.steps.get()
    assert step.item_count == 38 and step.items_completed == 38
    assert step.output_data["files"] == [str(i) for i in inputs]


def test_a_gpu_step_is_routed_to_the_gpu_queue_and_only_its_workers_take_it(transactional_db, engine_settings,
                                                                             settings, builtins, pipeline_of,
                                                                             jpeg_file, user):
    from registry.models import Component, ComponentKind

    from tests.executions.conftest import CONTAINER_TEMPLATE

    gpu_queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-gpu"
    settings.STEP_QUEUE_ROUTES = {"gpu": gpu_queue}
    Component.objects.create(name="invert-gpu", version="1.0.0", docker_image="example/invert:1", runner="container",
                             kind=ComponentKind.MAP, resource_requirements={"gpu": 1},
                             input_schema={"type": "object", "properties": {
                                 "operation": {"type": "string", "default": "invert"}}})
    pipeline = _chain(pipeline_of, node("small", "resize", width=64), node("infer", "invert-gpu"),
                      node("gray", "grayscale"))
    _purge_queue()
    env = {"STEP_CACHE_ENABLED": "false", "STEP_ITEM_BATCH": "1", "CONTAINER_COMMAND_TEMPLATE": CONTAINER_TEMPLATE}
    cpu = ProcessWorker(concurrency=1, extra_env=env)
    gpu = ProcessWorker(concurrency=1, extra_env=env, queues=[gpu_queue])
    try:
        execution = execution_start(pipeline=pipeline, inputs=[jpeg_file(160, 120).id, jpeg_file(120, 90).id],
                                    user=user)
        steps = _steps(execution)
        assert steps["infer"].input_data["queue"] == gpu_queue and "queue" not in steps["small"].input_data
        execution = wait_finished(execution, timeout=120)
        assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
        workers = {node_id: {item.worker.rpartition(":")[2] for item in _items(step)}
                   for node_id, step in _steps(execution).items()}
        assert workers["infer"] <= {str(pid) for pid in gpu.child_pids()}
        assert workers["small"] | workers["gray"] <= {str(pid) for pid in cpu.child_pids()}
    finally:
        cpu.stop()
        gpu.stop()
        _purge_queue()
        from imageflow.celery import app

        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(gpu_queue)
