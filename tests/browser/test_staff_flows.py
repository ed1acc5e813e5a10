"""Staff in a real browser: upload real photos, build a pipeline in the structured editor, run it
from the generated run form, watch it live, open its outputs, make a run fail, cancel a long
one, and find them all on the dashboard; hostile names shown as text everywhere."""

from __future__ import annotations

import re

import pytest
from PIL import Image, ImageOps

from executions.models import ExecutionStatus, PipelineExecution
from files.models import File
from registry.models import Pipeline
from tests.browser.conftest import PHOTOS, shot
from tests.executions.conftest import open_image, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(600)]

PHOTOS_TO_UPLOAD = [PHOTOS / "orientation" / "landscape_6.jpg", PHOTOS / "orientation" / "portrait_8.jpg",
                    PHOTOS / "camera" / "Canon_40D.jpg"]


def _upload_photos(page, paths) -> list[File]:
    before = set(File.objects.values_list("pk", flat=True))
    page.goto(f"{page.base}/admin/files/file/upload/")
    page.set_input_files("#id_images", [str(p) for p in paths])
    page.click("input[name=upload]")
    page.wait_for_load_state()
    return list(File.objects.exclude(pk__in=before).order_by("created_at"))


def _build_pipeline(page, name: str, nodes: list[tuple[str, dict]], chain: bool = True) -> Pipeline:
    """Add nodes (component, parameters) in the structured editor, chained in order, and save."""
    page.goto(f"{page.base}/admin/registry/pipeline/add/")
    page.fill("#id_name", name)
    for index, (component, parameters) in enumerate(nodes):
        page.click('[data-role="node-add"]')
        row = page.locator(".pe-node").nth(index)
        row.locator('[data-role="node-component"]').select_option(f"{component}@1.0.0")
        row = page.locator(".pe-node").nth(index)
        for parameter, value in parameters.items():
            row.locator(f'[data-param="{parameter}"]').fill(str(value))
            row.locator(f'[data-param="{parameter}"]').dispatch_event("change")
    if chain:
        for index in range(len(nodes) - 1):
            page.click('[data-role="edge-add"]')
            edge = page.locator(".pe-edge").nth(index)
            edge.locator('[data-role="edge-from"]').select_option(f"step{index + 1}")
            edge.locator('[data-role="edge-to"]').select_option(f"step{index + 2}")
    # the picture is redrawn from the preview endpoint with every node
    page.wait_for_function("n => document.querySelectorAll('[data-role=pe-picture] svg g.dag-node').length === n",
                           arg=len(nodes), timeout=20000)
    page.click("input[name=_save]")
    page.wait_for_load_state()
    return Pipeline.objects.get(name=name)


def _run_from_the_form(page, pipeline: Pipeline, files: list[File], overrides: dict[str, dict]) -> PipelineExecution:
    before = set(PipelineExecution.objects.values_list("pk", flat=True))
    page.goto(f"{page.base}/admin/registry/pipeline/")
    page.check(f'input[name="_selected_action"][value="{pipeline.pk}"]')
    page.select_option('select[name="action"]', "run_pipelines")
    page.click('button[name="index"]')
    page.wait_for_selector("#run-form")
    for file in files:
        page.check(f'input[name="inputs"][value="{file.pk}"]')
    for node_id, parameters in overrides.items():
        for parameter, value in parameters.items():
            row = page.locator(f'fieldset.node[data-node="{node_id}"] .form-row', has_text=f"{parameter}:")
            row.locator("input, select").first.fill(str(value))
    page.click('#run-form input[name="apply"]')
    page.wait_for_url(re.compile(r"/admin/executions/pipelineexecution/[0-9a-f-]+/change/"))
    return PipelineExecution.objects.exclude(pk__in=before).get()


def _wait_live_status(page, status: str) -> None:
    page.wait_for_function("s => document.querySelector('[data-role=status]').textContent.trim() === s",
                           arg=status, timeout=90000)


def test_staff_upload_build_run_watch_fail_cancel_and_dashboard(stack, staff_page):
    page = staff_page
    # upload three real photos through the admin
    files = _upload_photos(page, PHOTOS_TO_UPLOAD)
    assert sorted(f.original_name for f in files) == sorted(p.name for p in PHOTOS_TO_UPLOAD)
    shot(page, "01-upload")
    wait_for(lambda: all(File.objects.get(pk=f.pk).thumbnails for f in files), timeout=60,
             what="the worker to make the thumbnails")
    page.goto(f"{page.base}/admin/files/file/")
    assert page.locator("#result_list img").count() >= 3
    shot(page, "02-file-list")

    # build a three-step pipeline in the structured editor and see its picture
    pipeline = _build_pipeline(page, "browser: resize, gray, blur",
                               [("resize", {"width": 200}), ("grayscale", {}), ("blur", {})])
    assert [n["component"]["name"] for n in pipeline.definition["nodes"]] == ["resize", "grayscale", "blur"]
    assert pipeline.definition["edges"] == [{"from": "step1", "to": "step2"}, {"from": "step2", "to": "step3"}]
    page.goto(f"{page.base}/admin/registry/pipeline/{pipeline.pk}/change/")
    assert page.locator("svg g.dag-node").count() >= 3
    shot(page, "03-pipeline-picture")

    # run it from the run form with a parameter override and watch it reach 100 %, the picture green
    run = _run_from_the_form(page, pipeline, files, {"step1": {"width": 120}})
    _wait_live_status(page, "completed")
    page.wait_for_function("() => document.querySelectorAll('#dag-live g.dag-status-completed').length === 3",
                           timeout=30000)
    assert "100%" in page.locator('[data-role="counts"]').inner_text()
    # each map step's items, as the live panel drew them: all finished, a full bar
    page.wait_for_function("() => Array.from(document.querySelectorAll('#live-progress [data-role=\"items\"]'))"
                           ".filter(td => /^(\\d+)\\/\\1 items/.test(td.textContent)).length === 3", timeout=30000)
    assert page.locator('#live-progress [data-role="items"] .run-progress > span').evaluate_all(
        "bars => bars.map(b => b.style.width)") == ["100%"] * 3
    # the timeline followed the run on the page (opened before its steps ran): three bars, all completed
    page.wait_for_function("() => document.querySelectorAll("
                           "'#run-timeline-live tr.tl-row .tl-bar.status-completed').length === 3", timeout=30000)
    live_rows = page.locator("#run-timeline-live tr.tl-row").evaluate_all("rows => rows.map(r => r.dataset.nodeId)")
    assert all(re.search(r"\d( ms| s)", text) for text in page.locator("#run-timeline-live .tl-time").all_inner_texts())
    page.reload()  # and the server draws the same chart: the same rows, all completed
    assert page.locator('[data-role="run-timeline"] tr.tl-row .tl-bar.status-completed').count() == 3
    assert page.locator("#run-timeline-live tr.tl-row").evaluate_all("rows => rows.map(r => r.dataset.nodeId)") \
        == live_rows
    shot(page, "04-run-completed")
    run.refresh_from_db()
    assert run.status == ExecutionStatus.COMPLETED and run.input_data["parameters"] == {"step1": {"width": 120}}
    resized = [open_image(f) for f in File.objects.filter(metadata__step_id=str(run.steps.get(node_id="step1").pk))]
    landscape = ImageOps.exif_transpose(Image.open(PHOTOS / "orientation" / "landscape_6.jpg"))
    assert (120, round(120 * landscape.height / landscape.width)) in [image.size for image in resized]

    # open an output thumbnail and its file page
    page.goto(f"{page.base}/admin/executions/pipelineexecution/{run.pk}/change/")
    outputs = page.locator('#run-images tr[data-node="step3"] [data-role="after"] figure a img')
    assert outputs.count() == 3  # one thumbnail per input photo, after the last step
    outputs.first.click()
    page.wait_for_url(re.compile(r"/admin/files/file/[0-9a-f-]+/change/"))
    assert "Derived from" in page.content()
    shot(page, "05-output-file-page")

    # a run that fails shows the error on its failed node
    failing = _run_from_the_form(page, pipeline, [], {})
    _wait_live_status(page, "failed")
    page.reload()
    assert page.locator("#dag-live g.dag-status-failed").count() == 1
    failing.refresh_from_db()
    assert failing.status == ExecutionStatus.FAILED
    assert "at least 1 input" in page.content()
    shot(page, "06-run-failed")

    # a long run is cancelled from its page
    slow = _build_pipeline(page, "browser: slow", [("passthrough", {"sleep_seconds": 60})], chain=False)
    long_run = _run_from_the_form(page, slow, files[:1], {})
    _wait_live_status(page, "running")
    # its running step shows on the timeline as it runs
    page.wait_for_function("() => document.querySelector('#run-timeline-live .tl-bar.status-running') !== null",
                           timeout=30000)
    page.click('[data-role="run-cancel"]')
    page.wait_for_load_state()
    wait_for(lambda: PipelineExecution.objects.get(pk=long_run.pk).status == ExecutionStatus.CANCELLED, timeout=30,
             what="the run to be cancelled")
    page.goto(f"{page.base}/admin/executions/pipelineexecution/{long_run.pk}/change/")
    assert page.locator('[data-role="status"]').inner_text().strip() == "cancelled"
    shot(page, "07-run-cancelled")

    # and the dashboard counts them, once beat's refresh has run (the test worker runs no beat)
    from executions.tasks import dashboard_refresh

    dashboard_refresh()
    page.goto(f"{page.base}/admin/dashboard/")
    failures = page.locator("#dash-failures").inner_text()
    assert "browser: resize, gray, blur" in failures and "at least 1 input" in failures
    assert "runs)" in page.locator("#dash-runs-per-day h2").inner_text()
    total = int(re.search(r"; (\d+) runs\)", page.locator("#dash-runs-per-day h2").inner_text()).group(1))
    assert total == PipelineExecution.objects.count()
    shot(page, "08-dashboard")
    assert page.dialogs == []


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert("y")>'


def test_hostile_names_are_shown_as_text_on_every_page(stack, staff_page, tmp_path):
    from executions.services import execution_start
    from files.services import file_store_bytes
    from registry.services import pipeline_create

    page = staff_page
    staff = stack["staff"]
    source = PHOTOS / "camera" / "Canon_40D.jpg"
    image = file_store_bytes(content=source.read_bytes(), original_name=f"{HOSTILE}.jpg", created_by=staff,
                             prefix="uploads")
    pipeline = pipeline_create(
        name=f"pipeline {HOSTILE}"[:255].replace("\x00", ""), description=HOSTILE, created_by=staff,
        definition={"nodes": [{"id": "n-onerror=alert(1)", "component": {"name": "grayscale", "version": "1.0.0"},
                               "parameters": {}}], "edges": []})
    run = execution_start(pipeline=pipeline, inputs=[image.pk], user=staff)
    pages = [
        "/admin/", "/admin/dashboard/", "/admin/registry/pipeline/", f"/admin/registry/pipeline/{pipeline.pk}/change/",
        "/admin/files/file/", f"/admin/files/file/{image.pk}/change/", "/admin/executions/pipelineexecution/",
        f"/admin/executions/pipelineexecution/{run.pk}/change/",
    ]
    for path in pages:
        page.goto(f"{page.base}{path}")
        page.wait_for_timeout(300)  # scripts that render on load (pictures, live panel) have run
        assert page.locator("script", has_text='alert("x")').count() == 0, path
        assert page.locator('img[src="x"]').count() == 0, path
    page.goto(f"{page.base}/admin/registry/pipeline/{pipeline.pk}/change/")
    assert "n-onerror=alert(1)" in page.locator("svg.dag-picture").first.text_content()  # the node label, as text
    shot(page, "09-hostile-names")
    assert page.dialogs == []
