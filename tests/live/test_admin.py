"""The live panel of the pipeline execution admin page."""

import pytest

from executions import logs
from tests.factories import ComponentExecutionFactory, PipelineExecutionFactory
from tests.live.conftest import commit_step_status

pytestmark = pytest.mark.django_db


def test_the_change_page_shows_progress_steps_and_the_latest_log_lines(staff_client):
    execution = PipelineExecutionFactory(status="running")
    done = ComponentExecutionFactory(execution=execution, node_id="resize", status="completed")
    ComponentExecutionFactory(execution=execution, node_id="blur")
    logs.emit(execution_id=execution.id, step_id=done.id, node_id="resize", level="error", message="<b>resize</b> said hi")
    response = staff_client.get(f"/admin/executions/pipelineexecution/{execution.id}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="live-progress"' in html
    assert f'data-ws-path="/ws/executions/{execution.id}/"' in html
    assert "1 / 2 steps (50.0%)" in html
    assert 'style="width: 50.0%"' in html
    assert '<td class="status-completed">completed</td>' in html
    assert "ERROR resize: &lt;b&gt;resize&lt;/b&gt; said hi" in html
    assert "executions/live_progress.js" in html


def test_the_live_view_returns_the_snapshot_with_the_latest_log_lines(staff_client):
    execution = PipelineExecutionFactory(status="running")
    step = ComponentExecutionFactory(execution=execution, node_id="resize", status="pending")
    for i in range(60):
        logs.emit(execution_id=execution.id, level="info", message=f"line {i}")
    commit_step_status(step, expected="pending", to="running")
    body = staff_client.get(f"/admin/executions/pipelineexecution/{execution.id}/live/").json()
    assert body["type"] == "snapshot"
    assert [(s["node_id"], s["status"]) for s in body["steps"]] == [("resize", "running")]
    assert [line["message"] for line in body["logs"]] == [f"line {i}" for i in range(10, 60)]


def test_the_live_view_is_for_staff_only(client, user):
    execution = PipelineExecutionFactory(pipeline__created_by=user)
    client.force_login(user)
    response = client.get(f"/admin/executions/pipelineexecution/{execution.id}/live/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_change_page_shows_each_map_steps_items_and_the_runs_sum(staff_client):
    execution = PipelineExecutionFactory(status="running")
    ComponentExecutionFactory(execution=execution, node_id="resize", status="running", item_count=120,
                              items_completed=37, items_failed=2, items_cached=10)
    ComponentExecutionFactory(execution=execution, node_id="merge")
    html = staff_client.get(f"/admin/executions/pipelineexecution/{execution.id}/change/").content.decode()
    # the map step: counts and a bar of the finished share (39 of 120)
    assert ('<span class="run-progress"><span style="width: 32.5%"></span></span>37/120 items, 2 failed, 10 cached'
            in html)
    # the step that is not itemized has none, and the heading sums the run's
    assert '<td class="items" data-role="items">—</td>' in html
    assert '<span data-role="run-items">· 37/120 items, 2 failed, 10 cached</span>' in html


def test_the_live_view_has_the_items_that_the_panel_shows(staff_client):
    execution = PipelineExecutionFactory(status="running")
    ComponentExecutionFactory(execution=execution, node_id="resize", status="running", item_count=8,
                              items_completed=8, items_skipped=0, items_cached=8)
    ComponentExecutionFactory(execution=execution, node_id="gray", status="running", item_count=8, items_completed=3,
                              items_skipped=1)
    body = staff_client.get(f"/admin/executions/pipelineexecution/{execution.id}/live/").json()
    assert [(s["node_id"], s["items_text"], s["items_percentage"]) for s in body["steps"]] == [
        ("resize", "8/8 items, 8 cached", 100.0), ("gray", "3/8 items, 1 skipped", 50.0)]
    assert body["run_items"] == {"total": 16, "completed": 11, "failed": 0, "skipped": 1, "cached": 8}
    assert body["run_items_text"] == "11/16 items, 1 skipped, 8 cached"


def test_the_step_page_shows_its_items(staff_client):
    execution = PipelineExecutionFactory(status="running")
    step = ComponentExecutionFactory(execution=execution, node_id="resize", item_count=4, items_completed=1,
                                     items_failed=1)
    plain = ComponentExecutionFactory(execution=execution, node_id="merge")
    html = staff_client.get(f"/admin/executions/componentexecution/{step.id}/change/").content.decode()
    assert '<span class="run-progress" title="50.0%"><span style="width:50.0%"></span></span>1/4 items, 1 failed' in html
    html = staff_client.get(f"/admin/executions/componentexecution/{plain.id}/change/").content.decode()
    assert "— (not run as items)" in html
