"""Contracts (#15): a component's output is checked against its output_schema (a step, and an item
of a map step on its own share), and an external process gets the memory limit and the GPUs its
resource requirements ask for. Real external processes (tests/executions/contract_step.py), real
object store; the steps run in this process (conftest.run_here)."""

from __future__ import annotations

import time

import pytest

from executions.catalogue import BUILTIN_OUTPUT_SCHEMA
from executions.engine.contracts import output_check
from executions.engine.errors import StepFailure
from executions.engine.runners import RunResult
from executions.models import ExecutionStatus, StepItem, StepStatus
from executions.services import execution_start
from files.models import File
from registry.models import Component, ComponentKind, ComponentRunner
from tests.executions.conftest import node, run_here, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


def _external(name: str, *, kind=ComponentKind.MERGE, output_schema=None, resource_requirements=None) -> Component:
    return Component.objects.create(
        name=name, version="1.0.0", docker_image="example/invert:1", runner=ComponentRunner.CONTAINER, kind=kind,
        output_schema=output_schema, resource_requirements=resource_requirements,
        input_schema={"type": "object", "properties": {
            "operation": {"type": "string", "default": "invert"}, "allocate_mb": {"type": "integer"},
            "metrics": {"type": "object"}, "data": {}, "report_env": {"type": "array"}}})


def _run_one(pipeline_of, user, inputs, component: str, **parameters):
    execution = execution_start(pipeline=pipeline_of([node("ext", component, **parameters)]),
                                inputs=[f.id for f in inputs], user=user)
    step = execution.steps.get()
    run_here(step)
    step.refresh_from_db()
    execution.refresh_from_db()
    return execution, step


SCORED = {"type": "object", "required": ["metrics"], "properties": {
    "metrics": {"type": "object", "required": ["score"], "properties": {"score": {"type": "number"}}}}}


def test_a_step_whose_metrics_break_its_output_schema_fails_naming_the_field(engine_settings, pipeline_of,
                                                                             jpeg_file, user):
    # given an external merge component that declares a numeric metrics.score
    _external("scorer", output_schema=SCORED)
    source = jpeg_file()
    # when its process answers a string score
    execution, step = _run_one(pipeline_of, user, [source], "scorer", metrics={"score": "high"})
    # then the step fails naming the field and the rule, and the output it stored is gone
    assert step.status == StepStatus.FAILED and execution.status == ExecutionStatus.FAILED
    assert step.error_message == ("output of scorer:1.0.0 does not match its output_schema at metrics.score: "
                                  "'high' is not of type 'number'")
    assert list(File.objects.values_list("id", flat=True)) == [source.id]


def test_a_step_whose_output_meets_its_schema_completes_with_it(engine_settings, pipeline_of, jpeg_file, user):
    _external("scorer", output_schema=SCORED)
    execution, step = _run_one(pipeline_of, user, [jpeg_file()], "scorer", metrics={"score": 0.75})
    assert step.status == StepStatus.COMPLETED, step.error_message
    assert step.output_data["metrics"]["score"] == 0.75 and len(step.output_data["files"]) == 1


def test_a_missing_required_metric_is_named(engine_settings, pipeline_of, jpeg_file, user):
    _external("scorer", output_schema=SCORED)
    _, step = _run_one(pipeline_of, user, [jpeg_file()], "scorer")
    assert step.status == StepStatus.FAILED
    assert step.error_message.startswith("output of scorer:1.0.0 does not match its output_schema at "
                                         "metrics.score: 'score' is a required property")


LABELLED = {"type": "object", "properties": {"data": {"type": "array", "items": {
    "type": "object", "required": ["label"], "properties": {"label": {"type": "string"}}}}}}


def test_each_item_of_a_map_step_is_checked_on_its_own_share(engine_settings, pipeline_of, jpeg_file, user):
    # given a map component whose results must each have a label, two items of one image
    engine_settings.STEP_ITEM_BATCH = 1
    _external("labeller", kind=ComponentKind.MAP, output_schema=LABELLED)
    sources = [jpeg_file(64, 48), jpeg_file(48, 64)]
    # when each item answers one labelled result
    execution, step = _run_one(pipeline_of, user, sources, "labeller", data=[{"label": "cat"}])
    # then both items pass and the step's data joins their shares in order
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    assert step.item_count == 2 and step.output_data["data"] == [{"label": "cat"}, {"label": "cat"}]


def test_an_item_whose_share_breaks_the_schema_fails_its_step_naming_item_and_field(engine_settings, pipeline_of,
                                                                                    jpeg_file, user):
    engine_settings.STEP_ITEM_BATCH = 1
    _external("labeller", kind=ComponentKind.MAP, output_schema=LABELLED)
    sources = [jpeg_file(64, 48), jpeg_file(48, 64)]
    execution, step = _run_one(pipeline_of, user, sources, "labeller", data=[{"name": "cat"}])
    assert execution.status == ExecutionStatus.FAILED and step.status == StepStatus.FAILED
    first = StepItem.objects.get(step=step, index=0)
    assert first.status == StepStatus.FAILED
    assert first.error_message == ("output of labeller:1.0.0 does not match its output_schema at data[0].label: "
                                   "'label' is a required property")
    assert f"(item 0, inputs in-64x48.jpg ({sources[0].id}))" in step.error_message


def test_the_built_in_schema_is_what_the_built_in_runner_gives(builtins, pipeline_of, jpeg_file, user):
    # given the registered built-ins: their declared schema is the catalogue's
    assert Component.objects.get(name="resize").output_schema == BUILTIN_OUTPUT_SCHEMA
    # when a map and a passthrough step run, their outputs are checked against it and pass
    for component, parameters in (("resize", {"width": 32}), ("passthrough", {})):
        execution, step = _run_one(pipeline_of, user, [jpeg_file(), jpeg_file()], component, **parameters)
        assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    # and a result the built-in runner would never give is refused, naming the field
    resize = Component.objects.get(name="resize")
    with pytest.raises(StepFailure, match=r"at metrics\.decoded: 'two' is not of type 'integer'"):
        output_check(resize, RunResult(outputs=[], metrics={"decoded": "two"}))
    with pytest.raises(StepFailure, match=r"at metrics: 'decoded' is a required property|at metrics\.decoded"):
        output_check(resize, RunResult(outputs=[], metrics={"images": 1}))


# --- resources of external processes ---------------------------------------------------------------

def test_an_external_process_over_its_memory_limit_fails_with_a_clear_message(engine_settings, pipeline_of,
                                                                              jpeg_file, user):
    # given a component that may use 200 MiB
    _external("hungry", resource_requirements={"memory": "200Mi"})
    # when its process holds 400 MiB
    _, step = _run_one(pipeline_of, user, [jpeg_file()], "hungry", allocate_mb=400)
    # then the limit stopped it and the step says so
    assert step.status == StepStatus.FAILED
    assert step.error_message.startswith("external process ran out of memory: its limit is 200 MiB "
                                         "(resource_requirements.memory '200Mi'); exited with status 1: ")
    assert "MemoryError" in step.error_message


def test_an_external_process_within_its_memory_limit_completes(engine_settings, pipeline_of, jpeg_file, user):
    _external("hungry", resource_requirements={"memory": "200Mi"})
    _, step = _run_one(pipeline_of, user, [jpeg_file()], "hungry", allocate_mb=40)
    assert step.status == StepStatus.COMPLETED, step.error_message
    assert step.output_data["metrics"]["held_mb"] == 40
    assert step.resource_usage["peak_memory_bytes"] >= 40 * 1024 ** 2


def test_a_gpu_step_gets_the_workers_devices_and_another_step_none(engine_settings, pipeline_of, jpeg_file, user):
    # given a worker with two GPUs, a component asking for one and one asking for none
    engine_settings.WORKER_GPU_DEVICES = ["3", "5"]
    _external("on-gpu", resource_requirements={"gpu": 1})
    _external("on-cpu", resource_requirements={"cpu": 1})
    report = ["CUDA_VISIBLE_DEVICES"]
    _, gpu_step = _run_one(pipeline_of, user, [jpeg_file()], "on-gpu", report_env=report)
    _, cpu_step = _run_one(pipeline_of, user, [jpeg_file()], "on-cpu", report_env=report)
    # then the external processes saw exactly those devices
    assert gpu_step.output_data["data"] == {"env": {"CUDA_VISIBLE_DEVICES": "3"}}
    assert cpu_step.output_data["data"] == {"env": {"CUDA_VISIBLE_DEVICES": ""}}


def test_without_worker_gpu_devices_the_environment_is_left_alone(engine_settings, pipeline_of, jpeg_file, user,
                                                                  monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    engine_settings.WORKER_GPU_DEVICES = []
    _external("on-gpu", resource_requirements={"gpu": 1})
    _, step = _run_one(pipeline_of, user, [jpeg_file()], "on-gpu", report_env=["CUDA_VISIBLE_DEVICES"])
    assert step.output_data["data"] == {"env": {"CUDA_VISIBLE_DEVICES": "7"}}


# --- a step nobody can take ----------------------------------------------------------------------------

@pytest.fixture
def gpu_queue(settings):
    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-gpu"
    settings.STEP_QUEUE_ROUTES = {"gpu": queue}
    yield queue
    from imageflow.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def test_a_gpu_step_with_no_gpu_worker_is_reported_in_the_api_the_admin_and_the_metrics(
        engine_settings, builtins, pipeline_of, jpeg_file, user, staff_client, gpu_queue, settings):
    from django.urls import reverse

    from executions.engine.presence import live_queues, presence_key
    from tests.api.conftest import client_for
    from tests.executions.conftest import ProcessWorker, _purge_queue, wait_for

    _external("invert-gpu", kind=ComponentKind.MAP, resource_requirements={"gpu": 1})
    pipeline = pipeline_of([node("small", "resize", width=32), node("infer", "invert-gpu")],
                           [{"from": "small", "to": "infer"}])
    _purge_queue()
    # given a real worker that consumes only the default queue
    worker = ProcessWorker(concurrency=1, extra_env={"WORKER_PRESENCE_SECONDS": "1"})
    try:
        assert live_queues() == {settings.CELERY_TASK_DEFAULT_QUEUE: 1}
        # when a run's gpu step becomes ready after the step the worker can take
        execution = execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user)
        wait_for(lambda: execution.steps.get(node_id="small").status == StepStatus.COMPLETED, timeout=60,
                 what="the default queue's step")
        time.sleep(1.5)  # several presence intervals: the gpu step is still pending, nobody takes it
        infer = execution.steps.get(node_id="infer")
        assert infer.status == StepStatus.PENDING and infer.input_data["queue"] == gpu_queue
        # then the API says what it waits for, and only for that step
        detail = client_for(user).get(f"/api/v1/executions/{execution.pk}/").json()
        notes = {step["node_id"]: step["waiting_for"] for step in detail["steps"]}
        assert notes == {"small": None, "infer": (
            f"no live worker consumes queue '{gpu_queue}': the step waits until one does "
            f"(start one with `celery -A imageflow worker -Q {gpu_queue}`)")}
        # the admin's run page shows it
        page = staff_client.get(reverse("admin:executions_pipelineexecution_change", args=[execution.pk]))
        assert f"Step infer: no live worker consumes queue &#x27;{gpu_queue}&#x27;" in page.content.decode()
        # and the metric counts no consumer of the gpu queue, one of the default queue
        from executions.metrics import collect_queues

        families = {family.name: family for family in collect_queues()}
        consumers = {sample.labels["queue"]: sample.value for sample in families["imageflow_queue_consumers"].samples}
        assert consumers[gpu_queue] == 0 and consumers[settings.CELERY_TASK_DEFAULT_QUEUE] == 1
        # when a gpu worker starts, the step runs and the note is gone
        gpu = ProcessWorker(concurrency=1, queues=[gpu_queue], extra_env={"WORKER_PRESENCE_SECONDS": "1"})
        try:
            assert live_queues() == {settings.CELERY_TASK_DEFAULT_QUEUE: 1, gpu_queue: 1}
            wait_for(lambda: client_for(user).get(f"/api/v1/executions/{execution.pk}/").json()["steps"][1][
                "waiting_for"] is None, timeout=10, what="the note to go")
            execution = wait_finished(execution, timeout=90)
            assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
        finally:
            gpu.stop()
        # a stopped worker withdraws its queues at once
        assert live_queues() == {settings.CELERY_TASK_DEFAULT_QUEUE: 1}
    finally:
        worker.stop()
        _purge_queue()
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(presence_key())


# --- routing by cpu ------------------------------------------------------------------------------------

def test_routing_takes_gpu_then_memory_then_cores_and_cpu_only_where_a_route_is_set(settings):
    from executions.engine.queues import component_queue, cpu_cores

    settings.STEP_QUEUE_ROUTES = {"gpu": "q-gpu", "highmem": "q-mem", "highcpu": "q-cpu"}
    settings.STEP_HIGHMEM_BYTES, settings.STEP_HIGHCPU_CORES = 4 * 1024 ** 3, 8

    def queue(**needs):
        return component_queue(Component(name="c", version="1", resource_requirements=needs))

    assert queue(gpu=1, memory="16Gi", cpu=16) == "q-gpu"
    assert queue(memory="16Gi", cpu=16) == "q-mem"
    assert queue(memory="1Gi", cpu=16) == "q-cpu" and queue(cpu="8000m") == "q-cpu"
    assert queue(cpu=7.5) is None and queue(cpu="lots") is None and queue() is None
    assert (cpu_cores("500m"), cpu_cores(2), cpu_cores(True)) == (0.5, 2.0, None)
    # the default routes have no highcpu: a many-core component stays on the default queue
    settings.STEP_QUEUE_ROUTES = {"gpu": "q-gpu", "highmem": "q-mem"}
    assert queue(cpu=64) is None


def test_the_default_template_hands_the_memory_limit_to_docker(settings):
    from executions.engine.runners.container import build_command, memory_limit

    # (the setting as imageflow/settings.py defaults it)
    limited = Component(name="c", version="1", resource_requirements={"memory": "200Mi"})
    unlimited = Component(name="c", version="1", resource_requirements={"cpu": 1})
    assert build_command(image="ex/a:1", output_dir="/tmp/o", memory=memory_limit(limited)) == [
        "docker", "run", "--rm", "-i", "--memory", "209715200", "-v", "/tmp/o:/tmp/o", "ex/a:1"]
    assert build_command(image="ex/a:1", output_dir="/tmp/o", memory=memory_limit(unlimited))[4:6] == [
        "--memory", "0"]
