"""Thumbnails made by real workers, and the pages that show them, end to end: an admin upload's
thumbnail by a worker thread, a step output's by a worker process, the execution page's before /
after panel, the output's file page, and no object-store read of an original on any page view."""

from __future__ import annotations

import io

from django.urls import reverse
from PIL import Image

from executions.models import PipelineExecution
from executions.services import execution_start
from files.models import File
from tests.admin.images import CANON, ORIENTATION_6, admin_upload, read_object, reads_of, store_requests
from tests.executions.conftest import (  # noqa: F401  (fixtures)
    engine_settings, node, process_worker, thread_worker, wait_finished, wait_for)
from tests.photos import shown


def _thumbnails_of(file_id):
    def made():
        return File.objects.values_list("thumbnails", flat=True).get(pk=file_id)
    return wait_for(made, timeout=60, what=f"thumbnails of {file_id}")


def test_an_admin_upload_gets_its_upright_thumbnail_from_a_worker(thread_worker, staff_client):
    admin_upload(staff_client, ORIENTATION_6)
    file = File.objects.get()
    record = _thumbnails_of(file.pk)
    with Image.open(io.BytesIO(read_object(record["256"]["key"]))) as thumb:
        upright = shown(ORIENTATION_6.read_bytes())
        assert abs(thumb.width / thumb.height - upright.width / upright.height) < 0.02


def test_step_outputs_get_thumbnails_and_the_pages_show_before_and_after_without_reading_originals(
        process_worker, staff_client, staff_user, builtins, pipeline_of):
    admin_upload(staff_client, ORIENTATION_6, CANON)
    inputs = list(File.objects.order_by("original_name"))  # Canon_40D.jpg, landscape_6.jpg
    pipeline = pipeline_of([node("small", "resize", width=200), node("gray", "grayscale")],
                           [{"from": "small", "to": "gray"}], owner=staff_user)
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[str(f.pk) for f in inputs], user=staff_user))
    assert execution.status == "completed", execution.error_message
    steps = {s.node_id: s for s in execution.steps.all()}
    small_out = steps["small"].output_data["files"]
    gray_out = steps["gray"].output_data["files"]
    for file_id in [*small_out, *gray_out, *(str(f.pk) for f in inputs)]:
        assert "256" in _thumbnails_of(file_id)
    # The resized orientation-6 photo is upright (its thumbnail too): a portrait-free landscape.
    resized = File.objects.get(pk=small_out[1])
    assert resized.thumbnails["256"]["width"] > resized.thumbnails["256"]["height"]

    originals = list(File.objects.values_list("storage_path", flat=True))
    pages = {
        "file list": reverse("admin:files_file_changelist"),
        "file page": reverse("admin:files_file_change", args=[gray_out[1]]),
        "execution page": reverse("admin:executions_pipelineexecution_change", args=[execution.pk]),
    }
    with store_requests() as seen:
        rendered = {name: staff_client.get(url).content.decode() for name, url in pages.items()}
        run_form = staff_client.post(reverse("admin:registry_pipeline_changelist"), {
            "action": "run_pipelines", "_selected_action": [str(pipeline.pk)]}).content.decode()
    assert reads_of(seen, originals) == [] and seen == []

    panel = rendered["execution page"].split('id="run-images"', 1)[1]
    # Each map step pairs input i with output i: before -> after, linked to the file pages.
    for node_id, befores, afters in (("small", [str(f.pk) for f in inputs], small_out), ("gray", small_out, gray_out)):
        rows = panel.split(f'data-node="{node_id}"')[1:]
        assert len(rows) == 2
        for row, before, after in zip(rows, befores, afters):
            before_cell, after_cell = row.split('data-role="before"')[1].split('data-role="after"')
            assert f'data-file="{before}"' in before_cell and f'data-file="{after}"' in after_cell.split("</tr>")[0]
            assert reverse("admin:files_file_change", args=[after]) in after_cell
            assert reverse("admin:files_file_thumbnail", args=[after, 256]) in after_cell
    # The output's page names its run and step, and the file it was derived from.
    page = rendered["file page"]
    assert reverse("admin:executions_pipelineexecution_change", args=[execution.pk]) in page
    assert reverse("admin:executions_componentexecution_change", args=[steps["gray"].pk]) in page
    derived = page.split('data-role="derived-from"', 1)[1].split("</td>", 1)[0]
    assert f'data-file="{small_out[1]}"' in derived and "Derived from" in page
    assert all(reverse("admin:files_file_thumbnail", args=[f.pk, 256]) in run_form for f in inputs)
