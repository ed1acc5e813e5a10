"""The run form (executions/admin_actions.py, run_pipelines): generated from the pipeline, input
files picked from thumbnails or uploaded there, parameter overrides as fields from each
component's input_schema, validated by the engine with the refusal on the field."""

from __future__ import annotations

import re

from django.urls import reverse

from executions.models import PipelineExecution
from files.models import File
from files.services import file_store_bytes, file_thumbnails_generate
from tests.admin.images import CANON, NIKON, reads_of, store_requests, upload
from tests.executions.conftest import node

URL = "admin:registry_pipeline_changelist"


def _post(client, pipeline, **data):
    return client.post(reverse(URL), {"action": "run_pipelines", "_selected_action": [str(pipeline.pk)], **data})


def _field_name(page: str, node_id: str, parameter: str) -> str:
    block = page.split(f'data-node="{node_id}"', 1)[1].split("</fieldset>", 1)[0]
    return re.search(rf'<label for="id_(p0-\d+)">{parameter}:</label>', block).group(1)


def test_the_form_has_a_field_per_parameter_with_the_schemas_types_bounds_and_choices(staff_client, staff_user,
                                                                                     builtins, pipeline_of):
    pipeline = pipeline_of([node("resize", "resize", width=320), node("conv", "convert")],
                           [{"from": "resize", "to": "conv"}])
    page = _post(staff_client, pipeline).content.decode()
    width = _field_name(page, "resize", "width")
    assert re.search(rf'<input type="number" name="{width}"[^>]*min="1"[^>]*max="20000"[^>]*placeholder="320"', page) \
        or re.search(rf'<input type="number" name="{width}"[^>]*placeholder="320"[^>]*min="1"', page)
    keep = _field_name(page, "resize", "keep_aspect")
    assert re.search(rf'<select name="{keep}"[^>]*>\s*<option value="" selected>— keep \(true\)</option>', page)
    fmt = _field_name(page, "conv", "format")
    options = re.search(rf'<select name="{fmt}"[^>]*>(.*?)</select>', page, re.S).group(1)
    assert re.findall(r'<option value="([^"]*)"', options) == ["", "JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF"]
    assert "<textarea" not in page and "null" not in page  # no UUID box, no JSON pre-filled with null


def test_picked_files_and_an_override_start_a_run_as_the_api_would(staff_client, staff_user, builtins, pipeline_of):
    pipeline = pipeline_of([node("resize", "resize", width=320)])
    first = file_store_bytes(content=CANON.read_bytes(), original_name="a.jpg", created_by=staff_user)
    second = file_store_bytes(content=NIKON.read_bytes(), original_name="b.jpg", created_by=staff_user)
    file_thumbnails_generate(file_id=first.pk)
    with store_requests() as seen:
        page = _post(staff_client, pipeline).content.decode()
    assert reads_of(seen, [first.storage_path, second.storage_path]) == []
    assert reverse("admin:files_file_thumbnail", args=[first.pk, 256]) in page  # picked from thumbnails
    assert f'name="inputs" value="{second.pk}"' in page
    width = _field_name(page, "resize", "width")
    response = _post(staff_client, pipeline, apply="Run", inputs=[str(second.pk), str(first.pk)], **{width: "64"})
    execution = PipelineExecution.objects.get(pipeline=pipeline)
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:executions_pipelineexecution_change", args=[execution.pk])
    assert execution.input_data["inputs"] == [str(second.pk), str(first.pk)]
    assert execution.input_data["parameters"] == {"resize": {"width": 64}}
    assert execution.steps.get().input_data["parameters"]["width"] == 64


def test_a_value_out_of_the_schemas_bounds_is_an_error_on_its_field_and_starts_nothing(staff_client, staff_user,
                                                                                      builtins, pipeline_of):
    pipeline = pipeline_of([node("resize", "resize", width=320)])
    page = _post(staff_client, pipeline).content.decode()
    width = _field_name(page, "resize", "width")
    response = _post(staff_client, pipeline, apply="Run", **{width: "0"})
    assert response.status_code == 200 and PipelineExecution.objects.count() == 0
    assert response.context["form"].errors == {width: ["Ensure this value is greater than or equal to 1."]}


def test_a_refusal_of_the_engine_is_shown_on_the_parameters_field(staff_client, staff_user, builtins, pipeline_of):
    """A pattern the form does not check itself (rotate's fill color) is refused by registry.dag
    (the API's words) and shown on the field, not as a message, and nothing starts."""
    pipeline = pipeline_of([node("rot", "rotate")])
    page = _post(staff_client, pipeline).content.decode()
    fill = _field_name(page, "rot", "fill")
    form = _post(staff_client, pipeline, apply="Run", **{fill: "red"}).context["form"]
    assert PipelineExecution.objects.count() == 0
    assert list(form.errors) == [fill] and form.errors[fill][0].startswith("Must match")


def test_unknown_input_ids_are_refused_with_the_apis_words_on_the_picker(staff_client, builtins, pipeline_of):
    pipeline = pipeline_of([node("g", "grayscale")])
    form = _post(staff_client, pipeline, apply="Run", inputs=["0b6d2a8e-0000-4000-8000-000000000000"]).context["form"]
    assert form.errors == {"inputs": ["No such file: 0b6d2a8e-0000-4000-8000-000000000000."]}
    assert PipelineExecution.objects.count() == 0


def test_images_uploaded_from_the_run_form_are_stored_and_checked_and_nothing_starts(staff_client, staff_user,
                                                                                  builtins, pipeline_of):
    pipeline = pipeline_of([node("g", "grayscale")])
    response = _post(staff_client, pipeline, upload="Upload and select", images=[upload(CANON), upload(NIKON)])
    stored = File.objects.order_by("original_name")
    assert [f.original_name for f in stored] == ["Canon_40D.jpg", "Nikon_D70.jpg"]
    page = response.content.decode()
    for file in stored:
        assert f'name="inputs" value="{file.pk}" checked' in page
    assert PipelineExecution.objects.count() == 0
