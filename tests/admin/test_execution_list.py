"""The execution list: status badges, progress (finished / total steps) and duration columns
read in the list's own queries (as many for 2 rows as for 6), filters by pipeline and status,
and the run timeline of the execution page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import admin
from django.test.utils import CaptureQueriesContext
from django.db import connection
from django.utils import timezone

from executions.admin_pictures import timeline_rows
from executions.models import PipelineExecution
from tests import factories
from tests.admin.pages import admin_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs(db):
    pipeline = factories.PipelineFactory(name="listed")
    made = []
    start = timezone.now() - timedelta(minutes=5)
    for i in range(6):
        run = factories.PipelineExecutionFactory(pipeline=pipeline, status="completed" if i % 2 else "running",
                                                 started_at=start, completed_at=start + timedelta(seconds=90) if i % 2 else None)
        for status in ("completed", "failed", "pending"):
            factories.ComponentExecutionFactory(execution=run, status=status)
        made.append(run)
    return made


def _queries(client, per_page: int, monkeypatch) -> int:
    monkeypatch.setattr(admin.site._registry[PipelineExecution], "list_per_page", per_page)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(admin_url(PipelineExecution, "changelist"))
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == per_page
    return len(ctx.captured_queries)


def test_the_list_makes_as_many_queries_for_2_rows_as_for_6(staff_client, runs, monkeypatch):
    staff_client.get(admin_url(PipelineExecution, "changelist"))  # session, content types warmed
    assert _queries(staff_client, 2, monkeypatch) == _queries(staff_client, 6, monkeypatch)


def test_the_list_shows_badges_progress_and_duration(staff_client, runs):
    html = staff_client.get(admin_url(PipelineExecution, "changelist")).content.decode()
    assert '<span class="status-badge status-completed">Completed</span>' in html
    assert '<span class="status-badge status-running">Running</span>' in html
    assert html.count("2 / 3") == 6  # completed and failed steps are finished, pending is not
    assert html.count("1 min 30 s<") == 3 and html.count("so far") == 3


def test_the_list_filters_by_pipeline_and_status(staff_client, runs):
    other = factories.PipelineExecutionFactory(status="failed")
    url = admin_url(PipelineExecution, "changelist")
    by_pipeline = staff_client.get(url, {"pipeline__id__exact": str(other.pipeline_id)}).context["cl"].result_list
    assert [r.pk for r in by_pipeline] == [other.pk]
    by_status = staff_client.get(url, {"status__exact": "completed"}).context["cl"].result_list
    assert {r.pk for r in by_status} == {r.pk for r in runs if r.status == "completed"}


def test_the_timeline_places_parallel_steps_and_marks_the_slowest():
    t0 = timezone.now()
    steps = [
        {"node_id": "resize", "status": "completed", "started_at": t0, "completed_at": t0 + timedelta(seconds=1)},
        {"node_id": "gray", "status": "completed", "started_at": t0 + timedelta(seconds=1),
         "completed_at": t0 + timedelta(seconds=3)},
        {"node_id": "edges", "status": "failed", "started_at": t0 + timedelta(seconds=1),
         "completed_at": t0 + timedelta(milliseconds=1500)},
        {"node_id": "board", "status": "pending", "started_at": None, "completed_at": None},
    ]
    chart = timeline_rows(steps, now=t0 + timedelta(seconds=10))
    rows = {r["node_id"]: r for r in chart["rows"]}
    assert chart["span_ms"] == 3000.0
    assert (rows["resize"]["left"], rows["resize"]["width"]) == (0.0, 33.33)
    assert (rows["gray"]["left"], rows["gray"]["width"]) == (33.33, 66.67)
    assert (rows["edges"]["left"], rows["edges"]["width"]) == (33.33, 16.67)  # beside gray: parallel
    assert [n for n, r in rows.items() if r["slowest"]] == ["gray"]
    assert rows["board"]["bar"] is False


def test_the_execution_page_shows_the_timeline(staff_client):
    t0 = timezone.now() - timedelta(minutes=1)
    run = factories.PipelineExecutionFactory(status="completed")
    factories.ComponentExecutionFactory(execution=run, node_id="quick", status="completed", started_at=t0,
                                        completed_at=t0 + timedelta(milliseconds=200))
    factories.ComponentExecutionFactory(execution=run, node_id="slow", status="completed", started_at=t0,
                                        completed_at=t0 + timedelta(seconds=2))
    html = staff_client.get(admin_url(PipelineExecution, "change", run.pk)).content.decode()
    assert 'data-role="run-timeline"' in html
    assert '<tr class="tl-row tl-slowest" data-node-id="slow">' in html
    assert "2.0 s · slowest" in html and "200 ms" in html
