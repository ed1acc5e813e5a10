"""Privacy filters on the real services: faces and licence plates found by OpenCV's bundled
cascades in generated photos whose face and plate positions are known, blurred or pixelated,
and the regions reported; a real camera photo without faces left alone; and detect faces ->
blur -> annotate through the API with a real worker."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont
from rest_framework.test import APIClient

from executions.engine.runners.privacy import CASCADES
from executions.models import ExecutionStatus, PipelineExecution
from files.models import File
from files.services import file_store_bytes
from tests.executions.conftest import open_image, wait_finished
from tests.executions.test_runners import run_single

PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "photos"
# (centre x, centre y, face width) of the faces drawn in the generated photo
FACES = [(180, 220, 120), (460, 260, 150)]
PLATE = (240, 260, 420, 300)
BACKGROUND = (90, 120, 150)


def _face(draw: ImageDraw.ImageDraw, cx: int, cy: int, width: int) -> None:
    """A frontal face as the cascade sees one: skin oval, dark eyes and brows, nose, mouth."""
    height = int(width * 1.3)
    draw.ellipse([cx - width // 2, cy - height // 2, cx + width // 2, cy + height // 2], fill=(225, 185, 160))
    eye_y, eye_x, eye_r = cy - height * 0.12, width * 0.22, width * 0.11
    for side in (-1, 1):
        x = cx + side * eye_x
        draw.ellipse([x - eye_r * 1.3, eye_y - eye_r * 0.7, x + eye_r * 1.3, eye_y + eye_r * 0.7], fill=(40, 30, 30))
        draw.rectangle([x - eye_r * 1.6, eye_y - eye_r * 2.0, x + eye_r * 1.6, eye_y - eye_r * 1.4], fill=(60, 40, 30))
    nose = [(cx, eye_y + eye_r), (cx - width * 0.08, cy + height * 0.12), (cx + width * 0.08, cy + height * 0.12)]
    draw.polygon(nose, fill=(190, 150, 130))
    draw.ellipse([cx - width * 0.2, cy + height * 0.2, cx + width * 0.2, cy + height * 0.28], fill=(120, 50, 50))


def faces_photo() -> bytes:
    image = Image.new("RGB", (640, 480), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for face in FACES:
        _face(draw, *face)
    buffer = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(2)).save(buffer, "PNG")
    return buffer.getvalue()


def plate_photo() -> bytes:
    image = Image.new("RGB", (640, 480), (70, 70, 80))
    draw = ImageDraw.Draw(image)
    draw.rectangle([150, 150, 500, 330], fill=(30, 30, 120))  # the car
    draw.rectangle(PLATE, fill=(235, 235, 235), outline=(10, 10, 10), width=3)
    draw.text((PLATE[0] + 10, PLATE[1] + 3), "A123BC", fill=(10, 10, 10), font=ImageFont.load_default(size=30))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def photo(user):
    def make(content: bytes, name: str):
        return file_store_bytes(content=content, original_name=name, created_by=user, prefix="uploads")
    return make


def _contains(box, x, y) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def test_the_cascades_ship_inside_the_opencv_package():
    for name in CASCADES.values():
        path = os.path.join(cv2.data.haarcascades, name)
        assert os.path.getsize(path) > 10_000 and not cv2.CascadeClassifier(path).empty()


@pytest.mark.parametrize("mode", ["blur", "pixelate"])
def test_faces_are_found_where_they_are_and_anonymized(builtins, pipeline_of, photo, user, mode):
    source = photo(faces_photo(), "faces.png")
    step = run_single(pipeline_of, user, [source], "anonymize_faces", mode=mode)
    assert step.status == "completed", step.error_message
    output = File.objects.get(pk=step.output_data["files"][0])
    results = output.metadata["results"]
    assert (results["task"], results["mode"], results["source"]) == ("anonymize_faces", mode, str(source.id))
    regions = [d["box"] for d in results["detections"]]
    # one region per drawn face, each around its centre and about its size
    assert len(regions) == 2
    for box, (cx, cy, width) in zip(sorted(regions), FACES):
        assert _contains(box, cx, cy)
        assert 0.9 * width <= box[2] - box[0] <= 2.2 * width
    before, after = open_image(source).convert("RGB"), open_image(output).convert("RGB")
    difference = ImageChops.difference(before, after)
    for box in regions:
        changed = difference.crop(tuple(map(int, box))).convert("L").point(lambda v: 255 if v > 8 else 0)
        assert changed.histogram()[255] > 0.2 * changed.width * changed.height  # the face is no longer there
    outside = difference.crop((0, 0, 60, 60)).getbbox()
    assert outside is None  # the rest of the photo is untouched (a PNG: exact pixels)
    assert after.getpixel((20, 20)) == BACKGROUND
    # the regions are the step's per-image data too
    assert step.output_data["data"] == [results]


def test_a_second_run_reports_its_regions_again(builtins, pipeline_of, photo, user):
    # an item with results is not taken from the step cache (the cache keeps files, not data)
    source = photo(faces_photo(), "faces.png")
    first = run_single(pipeline_of, user, [source], "anonymize_faces")
    again = run_single(pipeline_of, user, [source], "anonymize_faces")
    assert again.output_data["metrics"].get("items_cached", 0) == 0  # (one image: a plain step, never cached)
    assert again.output_data["data"] == first.output_data["data"]
    assert len(again.output_data["data"][0]["detections"]) == 2


def test_a_licence_plate_is_found_and_blurred(builtins, pipeline_of, photo, user):
    source = photo(plate_photo(), "car.png")
    step = run_single(pipeline_of, user, [source], "anonymize_plates")
    output = File.objects.get(pk=step.output_data["files"][0])
    detections = output.metadata["results"]["detections"]
    assert [d["label"] for d in detections] == ["plate"]
    box = detections[0]["box"]
    assert _contains(box, (PLATE[0] + PLATE[2]) / 2, (PLATE[1] + PLATE[3]) / 2)
    assert box[0] <= PLATE[0] + 20 and box[2] >= PLATE[2] - 20
    text = open_image(output).convert("L").crop((PLATE[0] + 10, PLATE[1] + 5, PLATE[2] - 10, PLATE[3] - 5))
    low, high = text.getextrema()
    assert high - low < 120  # the black characters on white are gone


def test_a_real_photo_without_faces_is_left_as_it_is(builtins, pipeline_of, photo, user):
    with open(PHOTOS / "orientation" / "landscape_1.jpg", "rb") as handle:
        source = photo(handle.read(), "landscape_1.jpg")
    step = run_single(pipeline_of, user, [source], "anonymize_faces")
    output = File.objects.get(pk=step.output_data["files"][0])
    assert output.metadata["results"]["detections"] == []
    assert open_image(output).size == (600, 450)


@pytest.mark.worker
def test_detect_faces_blur_annotate_through_the_api(thread_worker, staff_user, builtins):
    client = APIClient()
    client.force_authenticate(staff_user)
    from django.core.files.uploadedfile import SimpleUploadedFile

    inputs = [client.post("/api/v1/files/", {"file": SimpleUploadedFile("faces.png", faces_photo())},
                          format="multipart").json()["id"]]
    with open(PHOTOS / "camera" / "Canon_PowerShot_S40.jpg", "rb") as handle:
        inputs.append(client.post("/api/v1/files/", {"file": handle}, format="multipart").json()["id"])
    pipeline = client.post("/api/v1/pipelines/", {"name": "no faces", "definition": {
        "nodes": [{"id": "faces", "component": {"name": "anonymize_faces", "version": "1.0.0"},
                   "parameters": {"mode": "blur"}},
                  {"id": "boxes", "component": {"name": "annotate", "version": "1.0.0"}}],
        "edges": [{"from": "faces", "to": "boxes"}]}}, format="json").json()
    run = client.post(f"/api/v1/pipelines/{pipeline['id']}/run/", {"inputs": inputs}, format="json")
    assert run.status_code in {201, 202}, run.content
    execution = wait_finished(PipelineExecution.objects.get(pk=run.json()["id"]), timeout=120)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    steps = {s.node_id: s for s in execution.steps.all()}
    blurred = [File.objects.get(pk=i) for i in steps["faces"].output_data["files"]]
    drawn = [File.objects.get(pk=i) for i in steps["boxes"].output_data["files"]]
    assert [len(f.metadata["results"]["detections"]) for f in blurred] == [2, 0]
    assert drawn[0].metadata["results"]["detections"] == blurred[0].metadata["results"]["detections"]
    assert drawn[0].metadata["results"]["drawn"] == 2
    x0, y0, _, _ = map(int, drawn[0].metadata["results"]["detections"][0]["box"])
    assert open_image(drawn[0]).convert("RGB").getpixel((x0 + 1, y0 + 40)) == (230, 25, 75)  # the box's edge
    api_steps = {s["node_id"]: s for s in client.get(f"/api/v1/executions/{execution.pk}/").json()["steps"]}
    assert [len(r["detections"]) for r in api_steps["faces"]["output_data"]["data"]] == [2, 0]
    detail = client.get(f"/api/v1/files/{drawn[0].id}/").json()
    assert detail["metadata"]["results"]["task"] == "anonymize_faces"
    admin = APIClient()
    admin.force_login(staff_user)
    html = admin.get(f"/admin/executions/pipelineexecution/{execution.pk}/change/").content.decode()
    assert '<figcaption data-role="results"><b>2 found: face, face' in html
