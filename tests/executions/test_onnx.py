"""ONNX components on the real services: the model checked and its signature stored when the
component is made, and the runner's exact answers on tiny models built by the tests
(tests/executions/tiny_models.py), in process (run_here) and through the API with a real worker."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from executions.engine.runners import inference
from executions.models import ExecutionStatus, StepItem, StepStatus
from executions.services import execution_start
from files.models import File
from files.services import file_store_bytes, file_store_model
from registry.models import Component
from registry.services import component_create
from tests.executions import tiny_models
from tests.executions.conftest import node, open_image, run_here, wait_finished

PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "photos"


def png(width: int, height: int, color=(200, 60, 30), *, draw=None) -> bytes:
    image = Image.new("RGB", (width, height), color)
    if draw is not None:
        draw(image)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def png_file(user):
    def make(width: int = 64, height: int = 48, color=(200, 60, 30), draw=None):
        return file_store_bytes(content=png(width, height, color, draw=draw), original_name=f"in-{width}x{height}.png",
                                created_by=user, prefix="uploads")
    return make


@pytest.fixture
def onnx_component(staff_user):
    def make(name: str, model: bytes, spec: dict) -> Component:
        model_file = file_store_model(content=model, original_name=f"{name}.onnx", created_by=staff_user)
        return component_create(name=name, version="1.0.0", runner=Component.Runner.ONNX, model_file=model_file,
                                model_spec=spec, deterministic=True)
    return make


def _run(pipeline_of, user, files, component: Component, **params):
    execution = execution_start(pipeline=pipeline_of([node("model", component.name, **params)]),
                                inputs=[f.id for f in files], user=user)
    step = execution.steps.get()
    run_here(step)
    step.refresh_from_db()
    assert step.status == StepStatus.COMPLETED, step.error_message
    return step, [File.objects.get(pk=i) for i in step.output_data["files"]]


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values.astype(np.float64) - values.max())
    return shifted / shifted.sum()


# --- the component: model checked, signature stored, schemas generated ------------------------------

def test_a_model_uploaded_through_the_api_makes_an_onnx_component(staff_user):
    client = APIClient()
    client.force_authenticate(staff_user)
    upload = client.post("/api/v1/files/models/", {"file": SimpleUploadedFile("clf.onnx", tiny_models.classifier())},
                         format="multipart")
    assert upload.status_code == 201, upload.content
    model = upload.json()
    assert model["mime_type"] == "application/onnx" and model["metadata"]["format"] == "ONNX"
    created = client.post("/api/v1/components/", {
        "name": "tiny-classifier", "version": "1.0.0", "runner": "onnx", "model_file": model["id"],
        "model_spec": {"task": "classify", "labels": tiny_models.CLASSIFIER_LABELS, "classify": {"top_k": 2}}},
        format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["kind"] == "map" and body["docker_image"] == f"onnx:{model['checksum']}"
    assert body["model_signature"]["inputs"] == [{"name": "image", "type": "float32", "shape": [1, 3, 8, 8]}]
    assert body["model_signature"]["outputs"] == [{"name": "scores", "type": "float32", "shape": [1, 3]}]
    assert body["model_spec"]["input"] == {"name": "image", "width": 8, "height": 8, "resize": "stretch",
                                           "channels": "RGB", "layout": "NCHW", "dtype": "float32",
                                           "scale": 1 / 255, "mean": [0.0], "std": [1.0], "pad_value": 114}
    assert body["input_schema"]["properties"]["top_k"]["default"] == 2
    assert body["output_schema"]["properties"]["data"]["items"]["required"] == ["task", "width", "height", "labels"]
    # the model and its spec are fixed: another behaviour is another version
    changed = client.patch(f"/api/v1/components/{body['id']}/", {"model_spec": {"task": "classify"}}, format="json")
    assert changed.status_code == 400 and "model_spec" in changed.json()["errors"]
    same = client.patch(f"/api/v1/components/{body['id']}/", {"description": "d", "model_spec": body["model_spec"]},
                        format="json")
    assert same.status_code == 200, same.content
    # and the model file cannot be deleted while the component names it
    assert client.delete(f"/api/v1/files/{model['id']}/").status_code == 409


@pytest.mark.parametrize("spec, field, words", [
    ({"task": "classify", "input": {"width": 16}}, "model_spec", "takes 8"),
    ({"task": "classify", "labels": ["a", "b"]}, "model_spec", "scores 3 classes"),
    ({"task": "classify", "input": {"channels": "L"}}, "model_spec", "3 channels"),
    ({"task": "recognize"}, "model_spec", "task"),
    ({"task": "classify", "classify": {"output_name": "logits"}}, "model_spec", "no output 'logits'"),
])
def test_a_spec_that_does_not_fit_the_model_is_refused(staff_user, spec, field, words):
    model_file = file_store_model(content=tiny_models.classifier(), original_name="clf.onnx", created_by=staff_user)
    with pytest.raises(Exception) as refused:
        component_create(name="bad", version="1.0.0", runner="onnx", model_file=model_file, model_spec=spec)
    assert words in " ".join(refused.value.message_dict[field])
    assert not Component.objects.filter(name="bad").exists()


def test_bytes_that_are_not_an_onnx_model_are_a_400(staff_user):
    client = APIClient()
    client.force_authenticate(staff_user)
    response = client.post("/api/v1/files/models/", {"file": SimpleUploadedFile("x.onnx", b"not a model")},
                           format="multipart")
    assert response.status_code == 400 and "not an ONNX model" in str(response.json())
    assert not File.objects.filter(mime_type="application/onnx").exists()


# --- the runner's answers ---------------------------------------------------------------------------

def test_classify_gives_the_scores_the_model_is_built_to_give(onnx_component, pipeline_of, png_file, user):
    component = onnx_component("tiny-classifier", tiny_models.classifier(),
                               {"task": "classify", "labels": tiny_models.CLASSIFIER_LABELS})
    red, blue = png_file(64, 48, (200, 60, 30)), png_file(20, 30, (10, 40, 250))
    step, outputs = _run(pipeline_of, user, [red, blue], component, top_k=3)
    for source, output, rgb in ((red, outputs[0], (200, 60, 30)), (blue, outputs[1], (10, 40, 250))):
        expected = _softmax(tiny_models.classifier_scores(*(np.float32(c) * np.float32(1 / 255) for c in rgb)))
        order = np.argsort(-expected)
        results = output.metadata["results"]
        assert results["task"] == "classify" and results["source"] == str(source.id)
        assert [e["label"] for e in results["labels"]] == [tiny_models.CLASSIFIER_LABELS[i] for i in order]
        assert [e["score"] for e in results["labels"]] == pytest.approx(expected[order].tolist(), abs=1e-6)
        # the output is the input re-encoded (parameter output: source), same size
        assert open_image(output).size == open_image(source).size
    assert [e["label"] for e in outputs[0].metadata["results"]["labels"]][0] == "red"
    assert [e["label"] for e in outputs[1].metadata["results"]["labels"]][0] == "blue"
    # the step's output_data has the same results, one per input image in order (joined from its items)
    assert step.output_data["data"] == [outputs[0].metadata["results"], outputs[1].metadata["results"]]
    assert [r for item in StepItem.objects.filter(step=step).order_by("index")
            for r in item.metrics["data"]] == step.output_data["data"]


@pytest.mark.parametrize("resize, expected_box0", [
    # 64x48 into 32x32: stretch scales x by 1/2 and y by 2/3
    ("stretch", lambda x1: [4.0, 3.0, x1 * 2, x1 * 1.5]),
    # letterbox: ratio 1/2, 32x24 placed 4 pixels down
    ("letterbox", lambda x1: [4.0, 0.0, x1 * 2, (x1 - 4) * 2]),
])
def test_detect_gives_the_boxes_the_model_is_built_to_give(onnx_component, pipeline_of, png_file, user, resize,
                                                           expected_box0):
    component = onnx_component("tiny-detector", tiny_models.detector(),
                               {"task": "detect", "labels": tiny_models.DETECTOR_LABELS,
                                "input": {"resize": resize, "pad_value": 0}, "detect": {"confidence_threshold": 0.15}})
    color = (200, 60, 30)
    source = png_file(64, 48, color)
    step, [output] = _run(pipeline_of, user, [source], component)
    r, g = (np.float32(c) * np.float32(1 / 255) for c in color[:2])
    if resize == "letterbox":  # the pads (value 0) are averaged in too: 3/4 of the input is the image
        r, g = r * np.float32(0.75), g * np.float32(0.75)
    boxes, scores = tiny_models.detector_boxes(float(r), float(g))
    detections = output.metadata["results"]["detections"]
    # box 1 overlaps box 0 (same class, lower score): suppressed; box 2 is class "other"
    # (float32 pooling: the last digit of a score may differ from the sum in float64)
    assert [d["label"] for d in detections] == ["thing", "other"]
    assert [d["score"] for d in detections] == pytest.approx([scores[0, 0], scores[2, 1]], abs=1e-5)
    assert detections[0]["box"] == pytest.approx(expected_box0(float(boxes[0, 2])), abs=0.01)
    annotated = open_image(output).convert("RGB")
    assert annotated.size == (64, 48)
    assert annotated.getpixel((5, 24)) == (230, 25, 75)  # box 0's left edge in class 0's color
    assert annotated.getpixel((30, 24)) == color  # inside the box: untouched


def test_a_higher_threshold_is_a_run_parameter(onnx_component, pipeline_of, png_file, user):
    component = onnx_component("tiny-detector", tiny_models.detector(),
                               {"task": "detect", "labels": tiny_models.DETECTOR_LABELS})
    _, [output] = _run(pipeline_of, user, [png_file(64, 48)], component, confidence_threshold=0.5, output="source")
    assert [d["label"] for d in output.metadata["results"]["detections"]] == ["thing"]
    assert open_image(output).convert("RGB").getpixel((5, 24)) == (200, 60, 30)  # nothing drawn


def test_segment_gives_the_mask_the_model_is_built_to_give(onnx_component, pipeline_of, png_file, user):
    component = onnx_component("tiny-segmenter", tiny_models.segmenter(),
                               {"task": "segment", "labels": ["background", "red"]})
    half = png_file(32, 16, (0, 0, 0), draw=lambda image: image.paste((255, 0, 0), (0, 0, 16, 16)))
    _, [output] = _run(pipeline_of, user, [half], component, output="mask")
    assert output.metadata["results"]["classes"] == [
        {"class_id": 1, "label": "red", "pixels": 16 * 16, "fraction": 0.5, "box": [0.0, 0.0, 16.0, 16.0]}]
    mask = open_image(output)
    assert output.mime_type == "image/png" and mask.size == (32, 16)
    assert mask.getpixel((3, 3)) == 1 and mask.getpixel((20, 3)) == 0


def test_the_results_are_checked_against_the_output_schema(onnx_component, pipeline_of, png_file, user):
    component = onnx_component("tiny-classifier", tiny_models.classifier(), {"task": "classify"})
    schema = component.output_schema
    schema["properties"]["data"]["items"]["properties"]["labels"]["maxItems"] = 1  # a stricter contract
    Component.objects.filter(pk=component.pk).update(output_schema=schema)
    execution = execution_start(pipeline=pipeline_of([node("model", component.name, top_k=2)]),
                                inputs=[png_file().id], user=user)
    step = execution.steps.get()
    run_here(step)
    step.refresh_from_db()
    assert step.status == StepStatus.FAILED
    assert "does not match its output_schema at data[0].labels" in step.error_message


def test_a_model_is_loaded_once_per_process_and_kept_in_an_lru(onnx_component, pipeline_of, png_file, user,
                                                                settings):
    settings.STEP_ITEM_BATCH = 1
    settings.ONNX_MODEL_CACHE_SIZE = 1
    settings.STEP_CACHE_ENABLED = False
    inference.sessions_clear()
    classifier = onnx_component("tiny-classifier", tiny_models.classifier(), {"task": "classify"})
    detector = onnx_component("tiny-detector", tiny_models.detector(), {"task": "detect"})
    images = [png_file(10 + i, 10) for i in range(3)]
    before = inference.load_count
    _run(pipeline_of, user, images, classifier)
    _run(pipeline_of, user, images, classifier)
    assert inference.load_count - before == 1  # 6 items, 2 steps: one load
    _run(pipeline_of, user, images, detector)  # the LRU of 1 drops the classifier
    _run(pipeline_of, user, images, classifier)
    assert inference.load_count - before == 3


# --- through the API with a real worker: resize -> classify -> annotate on real photos ---------------

@pytest.mark.worker
def test_resize_classify_annotate_on_real_photos_through_the_api(thread_worker, staff_user, builtins):
    client = APIClient()
    client.force_authenticate(staff_user)
    model = client.post("/api/v1/files/models/", {"file": SimpleUploadedFile("clf.onnx", tiny_models.classifier())},
                        format="multipart").json()
    assert client.post("/api/v1/components/", {
        "name": "tiny-classifier", "version": "1.0.0", "runner": "onnx", "model_file": model["id"],
        "model_spec": {"task": "classify", "labels": tiny_models.CLASSIFIER_LABELS}}, format="json").status_code == 201
    photos = ["camera/Canon_PowerShot_S40.jpg", "orientation/landscape_6.jpg"]
    inputs = []
    for name in photos:
        with open(PHOTOS / name, "rb") as handle:
            response = client.post("/api/v1/files/", {"file": handle}, format="multipart")
        assert response.status_code == 201, response.content
        inputs.append(response.json()["id"])
    pipeline = client.post("/api/v1/pipelines/", {"name": "classify photos", "definition": {
        "nodes": [{"id": "resize", "component": {"name": "resize", "version": "1.0.0"}, "parameters": {"width": 160}},
                  {"id": "classify", "component": {"name": "tiny-classifier", "version": "1.0.0"},
                   "parameters": {"top_k": 3}},
                  {"id": "annotate", "component": {"name": "annotate", "version": "1.0.0"}}],
        "edges": [{"from": "resize", "to": "classify"}, {"from": "classify", "to": "annotate"}]}},
        format="json").json()
    run = client.post(f"/api/v1/pipelines/{pipeline['id']}/run/", {"inputs": inputs}, format="json")
    assert run.status_code in {201, 202}, run.content
    from executions.models import PipelineExecution

    execution = wait_finished(PipelineExecution.objects.get(pk=run.json()["id"]), timeout=120)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    steps = {s.node_id: s for s in execution.steps.all()}
    resized = [File.objects.get(pk=i) for i in steps["resize"].output_data["files"]]
    classified = [File.objects.get(pk=i) for i in steps["classify"].output_data["files"]]
    annotated = [File.objects.get(pk=i) for i in steps["annotate"].output_data["files"]]
    for small, result_file, drawn in zip(resized, classified, annotated):
        # what the model is built to answer: softmax(2 x the channel means of the 8x8 stretch)
        pixels = np.asarray(open_image(small).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR), np.float32)
        means = (pixels * np.float32(1 / 255)).mean(axis=(0, 1))
        expected = _softmax(tiny_models.classifier_scores(*means))
        labels = result_file.metadata["results"]["labels"]
        assert [e["label"] for e in labels] == [tiny_models.CLASSIFIER_LABELS[i] for i in np.argsort(-expected)]
        assert [e["score"] for e in labels] == pytest.approx(sorted(expected.tolist(), reverse=True), abs=1e-5)
        assert drawn.metadata["results"]["labels"] == labels and drawn.metadata["results"]["drawn"] == 3
        assert open_image(drawn).size == open_image(small).size
    assert open_image(resized[1]).size == (160, 120)  # landscape_6 turned upright first
    # the results through the API: the step's output_data.data (one per image) and each output's metadata
    api_steps = {s["node_id"]: s for s in client.get(f"/api/v1/executions/{execution.pk}/").json()["steps"]}
    assert api_steps["classify"]["output_data"]["data"] == [f.metadata["results"] for f in classified]
    detail = client.get(f"/api/v1/files/{annotated[0].id}/").json()
    assert detail["metadata"]["results"]["task"] == "classify"
    # and in the admin: the run page shows the before/after images, the step page the results
    admin = APIClient()
    admin.force_login(staff_user)
    page = admin.get(f"/admin/executions/pipelineexecution/{execution.pk}/change/")
    html = page.content.decode()
    top = classified[0].metadata["results"]["labels"][0]
    assert page.status_code == 200 and f'data-file="{annotated[0].id}"' in html
    assert f'<figcaption data-role="results"><b>{top["label"]} {top["score"]:.2f}' in html
    step_page = admin.get(f"/admin/executions/componentexecution/{steps['classify'].pk}/change/")
    assert step_page.status_code == 200 and "Results per image" in step_page.content.decode()
    assert f"&quot;source&quot;: &quot;{resized[0].id}&quot;" in step_page.content.decode()


# --- the admin: a model uploaded on the component's add page -----------------------------------------

def test_the_admin_adds_an_onnx_component_from_an_uploaded_model(staff_client):
    import json

    form = {"name": "admin-detector", "version": "1.0.0", "docker_image": "", "runner": "onnx", "kind": "merge",
            "deterministic": "on", "description": "", "input_schema": "", "output_schema": "",
            "resource_requirements": "", "model_file": "",
            "model_spec": json.dumps({"task": "detect", "labels": tiny_models.DETECTOR_LABELS})}
    refused = staff_client.post("/admin/registry/component/add/", {
        **form, "model_spec": json.dumps({"task": "detect", "input": {"width": 64}}),
        "model_upload": SimpleUploadedFile("det.onnx", tiny_models.detector())})
    assert refused.status_code == 200 and "input.width is 64, the model&#x27;s input" in refused.content.decode()
    assert not Component.objects.filter(name="admin-detector").exists()
    assert not File.objects.filter(mime_type="application/onnx").exists()  # nothing stored for a refusal
    response = staff_client.post("/admin/registry/component/add/", {
        **form, "model_upload": SimpleUploadedFile("det.onnx", tiny_models.detector())})
    assert response.status_code == 302, response.content.decode()[-3000:]
    component = Component.objects.get(name="admin-detector")
    assert component.model_file.original_name == "det.onnx"
    assert component.model_spec["detect"]["boxes_output"] == "boxes"
    assert component.kind == "map" and component.docker_image == f"onnx:{component.model_file.checksum}"
    page = staff_client.get(f"/admin/registry/component/{component.pk}/change/").content.decode()
    assert "Model signature" in page and "&quot;scores&quot;" in page


def test_a_gpu_execution_provider_is_used_where_the_worker_has_one(settings, monkeypatch):
    import onnxruntime

    settings.ONNX_EXECUTION_PROVIDERS = []
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert inference.execution_providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert inference.execution_providers() == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                               "CPUExecutionProvider"]
    settings.ONNX_EXECUTION_PROVIDERS = ["CUDAExecutionProvider", "ROCMExecutionProvider"]  # ROCm: not in this build
    assert inference.execution_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.worker
def test_each_worker_process_loads_the_model_once(transactional_db, engine_settings, staff_user, user, png_file,
                                                   pipeline_of):
    from executions.log_models import ExecutionLogRecord
    from executions.models import PipelineExecution
    from tests.executions.conftest import ProcessWorker, _purge_queue

    component = component_create(
        name="tiny-classifier", version="1.0.0", runner="onnx", model_spec={"task": "classify"},
        model_file=file_store_model(content=tiny_models.classifier(), original_name="clf.onnx", created_by=staff_user))
    pipeline = pipeline_of([node("model", component.name)])
    images = [png_file(16 + i, 16) for i in range(8)]
    _purge_queue()
    worker = ProcessWorker(concurrency=2, extra_env={"STEP_ITEM_BATCH": "1", "STEP_CACHE_ENABLED": "false"})
    try:
        runs = []
        for _ in range(2):
            run = execution_start(pipeline=pipeline, inputs=[f.id for f in images], user=user)
            run = wait_finished(PipelineExecution.objects.get(pk=run.pk), timeout=120)
            assert run.status == ExecutionStatus.COMPLETED, run.error_message
            runs.append(run)
    finally:
        worker.stop()
        _purge_queue()
    # 16 items on two pool processes: each process that ran any loaded the model once, on its first item
    ran_on = {int(w.rsplit(":", 1)[1]) for w in StepItem.objects.filter(execution__in=runs).values_list(
        "worker", flat=True)}
    loads = list(ExecutionLogRecord.objects.filter(execution__in=runs, extra__event="model_loaded")
                 .values_list("extra__pid", flat=True))
    assert sorted(loads) == sorted(ran_on) and 1 <= len(loads) <= 2
    assert all(len(run.steps.get().output_data["data"]) == 8 for run in runs)
