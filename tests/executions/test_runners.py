"""Runners without a worker: every built-in operation on a real image in the object store (the
step service called directly), the external contract's refusals, and error classification."""

from __future__ import annotations

import botocore.exceptions
import pytest

from executions.engine.errors import StepFailure, TransientStepError, is_transient
from executions.models import StepStatus
from executions.services import execution_start
from files.models import File
from tests.executions.conftest import node, open_image, run_here


def run_single(pipeline_of, user, files, component: str, **params):
    execution = execution_start(pipeline=pipeline_of([node("op", component, **params)]),
                                inputs=[f.id for f in files], user=user)
    step = execution.steps.get()
    run_here(step)
    step.refresh_from_db()
    return step


@pytest.mark.parametrize("component, params, expected", [
    ("resize", {"width": 100}, [((100, 75), "RGB", "JPEG")]),
    ("resize", {"width": 100, "height": 100, "keep_aspect": False}, [((100, 100), "RGB", "JPEG")]),
    ("resize", {"height": 60}, [((80, 60), "RGB", "JPEG")]),
    ("grayscale", {}, [((320, 240), "L", "JPEG")]),
    ("blur", {"radius": 3}, [((320, 240), "RGB", "JPEG")]),
    ("sharpen", {}, [((320, 240), "RGB", "JPEG")]),
    ("edge_detect", {}, [((320, 240), "L", "JPEG")]),
    ("rotate", {"angle": 90}, [((240, 320), "RGB", "JPEG")]),
    ("rotate", {"angle": 45, "expand": False}, [((320, 240), "RGB", "JPEG")]),
    ("crop", {"left": 10, "top": 20, "right": 110, "bottom": 70}, [((100, 50), "RGB", "JPEG")]),
    ("thumbnail", {"size": 64}, [((64, 48), "RGB", "JPEG")]),
    ("convert", {"format": "PNG"}, [((320, 240), "RGB", "PNG")]),
    ("convert", {"format": "WEBP", "quality": 50}, [((320, 240), "RGB", "WEBP")]),
    ("threshold", {"level": 100}, [((320, 240), "1", "PNG")]),
])
def test_builtin_operation_on_a_real_image(builtins, pipeline_of, jpeg_file, user, component, params, expected):
    step = run_single(pipeline_of, user, [jpeg_file(320, 240)], component, **params)
    assert step.status == StepStatus.COMPLETED, step.error_message
    outputs = [open_image(File.objects.get(pk=i)) for i in step.output_data["files"]]
    assert [(o.size, o.mode, o.format) for o in outputs] == expected


def test_threshold_really_thresholds(builtins, pipeline_of, jpeg_file, user):
    step = run_single(pipeline_of, user, [jpeg_file(320, 240, color=(250, 250, 250))], "threshold", level=128)
    image = open_image(File.objects.get(pk=step.output_data["files"][0]))
    assert set(image.getdata()) == {255}


def test_merge_operations_take_several_inputs(builtins, pipeline_of, jpeg_file, user):
    a, b = jpeg_file(100, 50), jpeg_file(60, 80, color=(0, 0, 255))
    board = run_single(pipeline_of, user, [a, b], "side_by_side", direction="vertical", gap=5)
    assert open_image(File.objects.get(pk=board.output_data["files"][0])).size == (100, 50 + 5 + 80)
    blend = run_single(pipeline_of, user, [a, b], "composite", alpha=1.0)
    blended = open_image(File.objects.get(pk=blend.output_data["files"][0]))
    assert blended.size == (100, 50) and blended.getpixel((2, 2))[2] > 200  # all overlay (blue)


def test_composite_refuses_the_wrong_number_of_inputs(builtins, pipeline_of, jpeg_file, user):
    step = run_single(pipeline_of, user, [jpeg_file()], "composite")
    assert step.status == StepStatus.FAILED
    assert step.error_message == "composite needs exactly 2 input images, got 1"


def test_step_records_resource_usage_and_output_metadata(builtins, pipeline_of, jpeg_file, user):
    source = jpeg_file(320, 240)
    step = run_single(pipeline_of, user, [source], "blur", radius=4)
    (output,) = File.objects.filter(pk__in=step.output_data["files"])
    assert output.original_name == "in-320x240-op.jpg" and output.created_by == user
    assert output.metadata["node_id"] == "op" and output.metadata["attempt"] == 1
    assert step.resource_usage["cpu_seconds"] > 0 and step.execution_time_ms >= 0
    assert step.input_data["inputs"] == [str(source.id)]


@pytest.mark.parametrize("answer, message", [
    ('{"outputs": [{"path": "../../etc/passwd"}]}', "is not a file in the output directory"),
    ("not json", "external process wrote invalid JSON on stdout"),
    ('{"outputs": [{"nope": 1}]}', "outputs[0] must be an object with a path"),
])
def test_external_answers_that_break_the_contract_fail_the_step(contract_component, engine_settings, pipeline_of,
                                                                 user, tmp_path, answer, message):
    script = tmp_path / "bad_step.py"
    script.write_text(f"import sys, json\njson.load(sys.stdin)\nsys.stdout.write({answer!r})\n")
    import sys

    engine_settings.CONTAINER_COMMAND_TEMPLATE = f"{sys.executable} {script}"
    execution = execution_start(pipeline=pipeline_of([{"id": "ext", "component": {"name": "invert-external",
                                                                                    "version": "1.0.0"}}]),
                                inputs=[], user=user)
    step = execution.steps.get()
    run_here(step)
    step.refresh_from_db()
    assert step.status == StepStatus.FAILED and message in step.error_message
    assert File.objects.count() == 0


def test_external_command_that_cannot_start_fails_the_step(contract_component, engine_settings, pipeline_of, user):
    engine_settings.CONTAINER_COMMAND_TEMPLATE = "/nonexistent/runner {image}"
    execution = execution_start(pipeline=pipeline_of([{"id": "ext", "component": {"name": "invert-external",
                                                                                    "version": "1.0.0"}}]),
                                inputs=[], user=user)
    step = execution.steps.get()
    run_here(step)
    step.refresh_from_db()
    assert step.status == StepStatus.FAILED and step.error_message.startswith("cannot start '/nonexistent/runner'")


def test_error_classification():
    assert is_transient(TransientStepError("x"))
    assert is_transient(ConnectionResetError())
    assert is_transient(botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(botocore.exceptions.ClientError({"Error": {"Code": "SlowDown"},
                                                         "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject"))
    assert not is_transient(botocore.exceptions.ClientError({"Error": {"Code": "NoSuchKey"},
                                                             "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject"))
    assert not is_transient(StepFailure("bad parameters"))
    assert not is_transient(ValueError("x"))
