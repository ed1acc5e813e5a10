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
