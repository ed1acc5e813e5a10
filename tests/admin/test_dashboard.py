"""The admin dashboard's figures, from known rows: runs per status per day, failure rate per
pipeline, median and p95 step time per component (percentile_cont), recent failures with their
error, runs going on with their progress."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django.core.cache import cache

from executions import dashboard_selectors as selectors
from executions.models import ComponentExecution, PipelineExecution
from executions.tasks import dashboard_refresh
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_kept_figures():
    """The kept figures' key is one per day (real Redis): each test starts and ends without them."""
    key = selectors.aggregates_cache_key(days=14, now=timezone.now())
    cache.delete(key)
    yield
    cache.delete(key)


def _run(pipeline, status, *, days_ago=0, **fields):
    run = factories.PipelineExecutionFactory(pipeline=pipeline, status=status, **fields)
    PipelineExecution.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
    return run


@pytest.fixture
def rows(db):
    a, b = factories.PipelineFactory(name="alpha"), factories.PipelineFactory(name="beta")
    _run(a, "completed", days_ago=0)
    _run(a, "completed", days_ago=0)
    _run(a, "failed", days_ago=1, error_message="run-level error")
    _run(a, "running", days_ago=0)  # not finished: not in the failure rate
    _run(b, "failed", days_ago=3)
    failed = _run(b, "failed", days_ago=0, error_message="step failed", completed_at=timezone.now())
    _run(b, "completed", days_ago=20)  # outside the 14 days
    slow, quick = factories.ComponentFactory(name="slow"), factories.ComponentFactory(name="quick")
    for ms in (10, 20, 30, 40, 100):
        factories.ComponentExecutionFactory(component=slow, status="completed", execution_time_ms=ms)
    for ms in (5, 5):
        factories.ComponentExecutionFactory(component=quick, status="completed", execution_time_ms=ms)
    factories.ComponentExecutionFactory(component=quick, status="failed", execution_time_ms=99_999)  # not completed
    factories.ComponentExecutionFactory(execution=failed, component=quick, node_id="sharpen", status="failed",
                                        error_message="sharpen: bad percent")
    return {"a": a, "b": b, "failed": failed}


def test_runs_per_status_per_day_counts_each_day_of_the_last_14(rows):
    days = selectors.runs_per_status_per_day(days=14)
    assert len(days) == 14 and days[-1]["day"] == timezone.now().date()
    # the ComponentExecutionFactory rows made runs of their own (pending, today)
    today = days[-1]["counts"]
    assert (today["completed"], today["failed"], today["running"]) == (2, 1, 1)
    assert days[-2]["counts"] == {"failed": 1} and days[-4]["counts"] == {"failed": 1}
    assert days[-3]["total"] == 0
    assert sum(d["total"] for d in days) == PipelineExecution.objects.count() - 1  # all but the 20-day-old run


def test_failure_rate_per_pipeline_is_failed_over_finished(rows):
    rates = {r["pipeline"]: r for r in selectors.failure_rate_per_pipeline(days=14)}
    assert (rates["beta"]["finished"], rates["beta"]["failed"], rates["beta"]["rate"]) == (2, 2, 100.0)
    assert (rates["alpha"]["finished"], rates["alpha"]["failed"], rates["alpha"]["rate"]) == (3, 1, 33.3)
    assert [r["pipeline"] for r in selectors.failure_rate_per_pipeline(days=14)][:2] == ["beta", "alpha"]


def test_slowest_components_by_p95_with_median_from_percentile_cont(rows):
    slowest = selectors.slowest_components(days=14)
    assert [(r["component"], r["steps"], r["median_ms"], r["p95_ms"]) for r in slowest] == [
        ("slow", 5, 30.0, 88.0),  # p95 interpolates between 40 and 100: 40 + 0.8 * 60
        ("quick", 2, 5.0, 5.0),   # the failed 99,999 ms step is not counted
    ]


def test_recent_failures_name_the_failed_node_and_its_error(rows):
    failures = list(selectors.recent_failures())
    assert failures[0].pk == rows["failed"].pk
    assert (failures[0].failed_node, failures[0].failed_step_error) == ("sharpen", "sharpen: bad percent")
    assert {f.pipeline.name for f in failures} == {"alpha", "beta"} and len(failures) == 3


def test_running_runs_carry_their_progress(rows):
    running = rows["a"].executions.get(status="running")
    for status in ("completed", "running", "pending"):
        factories.ComponentExecutionFactory(execution=running, status=status)
    found = {r.pk: r for r in selectors.running_with_progress()}
    assert (found[running.pk].steps_finished, found[running.pk].steps_total) == (1, 3)


def test_the_dashboard_page_shows_the_figures_and_is_linked_from_the_index(staff_client, rows):
    index = staff_client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in index
    response = staff_client.get("/admin/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="runs-chart"' in html and 'data-status="failed" data-count="1"' in html
    assert "33.3 %" in html and "100.0 %" in html and "88.0 ms" in html and "sharpen: bad percent" in html


def test_the_dashboard_is_for_staff(rows):
    from django.test import Client

    client = Client()
    assert client.get("/admin/dashboard/").status_code == 302
    client.force_login(factories.UserFactory(is_staff=True))  # staff without the view permission
    assert client.get("/admin/dashboard/").status_code == 403


def test_a_step_counts_where_it_ran(rows):
    assert ComponentExecution.objects.filter(component__name="slow").count() == 5


def test_the_page_shows_the_kept_figures_and_how_old_they_are(staff_client, rows):
    # given figures refreshed by the beat task
    dashboard_refresh()
    first = staff_client.get("/admin/dashboard/").content.decode()
    assert "88.0 ms" in first and "computed at" in first and "refreshed every 30 s" in first
    # when a step time changes
    ComponentExecution.objects.filter(component__name="slow", execution_time_ms=100).update(execution_time_ms=200)
    # then views show the kept figures, with the time they were computed
    again = staff_client.get("/admin/dashboard/")
    assert "88.0 ms" in again.content.decode()
    assert again.context["computed_at"] < timezone.now()
    assert 0 <= again.context["figures_age_seconds"] <= selectors.AGGREGATES_REFRESH_SECONDS
    # and the next refresh brings the change
    dashboard_refresh()
    assert "168.0 ms" in staff_client.get("/admin/dashboard/").content.decode()  # 40 + 0.8 * 160


def test_new_runs_are_counted_after_the_refresh_task_runs(staff_client, rows):
    # given a dashboard showing refreshed figures
    dashboard_refresh()
    before = staff_client.get("/admin/dashboard/").context["runs_total"]
    # when runs are created, a view does not recompute (the kept figures stay)
    _run(rows["a"], "pending")
    _run(rows["b"], "failed")
    assert staff_client.get("/admin/dashboard/").context["runs_total"] == before
    # then the refresh task's next run counts them
    dashboard_refresh()
    response = staff_client.get("/admin/dashboard/")
    assert response.context["runs_total"] == before + 2
    assert {r["pipeline"]: r["failed"] for r in response.context["failure_rates"]}["beta"] == 3


def test_a_view_with_kept_figures_runs_none_of_the_aggregate_queries(staff_client, rows):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # given kept figures, and the SQL of the aggregates as the refresh runs it
    with CaptureQueriesContext(connection) as refresh:
        dashboard_refresh()
    aggregate_sql = {q["sql"] for q in refresh.captured_queries}
    assert any("percentile_cont" in q for q in aggregate_sql) and len(aggregate_sql) >= 3
    # when the page is viewed
    with CaptureQueriesContext(connection) as view:
        response = staff_client.get("/admin/dashboard/")
    # then none of them runs, no percentile at all; the figures are the kept ones
    assert response.status_code == 200 and "88.0 ms" in response.content.decode()
    view_sql = [q["sql"] for q in view.captured_queries]
    assert not aggregate_sql.intersection(view_sql)
    assert not [q for q in view_sql if "percentile_cont" in q.lower()]
    # while the live parts are still read on the view: running runs and recent failures
    running = rows["a"].executions.get(status="running")
    assert running.pk in {r.pk for r in response.context["running"]}
    assert "sharpen: bad percent" in response.content.decode()


def test_with_nothing_kept_a_view_computes_the_figures_once_and_keeps_them(staff_client, rows):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # given no kept figures (right after start)
    assert cache.get(selectors.aggregates_cache_key(days=14, now=timezone.now())) is None
    # when the page is viewed twice
    with CaptureQueriesContext(connection) as first:
        assert "88.0 ms" in staff_client.get("/admin/dashboard/").content.decode()
    with CaptureQueriesContext(connection) as second:
        staff_client.get("/admin/dashboard/")
    # then the first view computed them and the second read what it stored
    assert any("percentile_cont" in q["sql"] for q in first.captured_queries)
    assert not any("percentile_cont" in q["sql"] for q in second.captured_queries)


def test_the_refresh_task_is_on_beats_schedule(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["executions-dashboard-refresh"]
    assert entry["task"] == dashboard_refresh.name == "executions.tasks.dashboard_refresh"
    assert entry["schedule"] == settings.DASHBOARD_REFRESH_SECONDS == 30.0


def test_the_running_runs_and_failures_are_live(staff_client, rows):
    # given a dashboard with kept figures
    dashboard_refresh()
    staff_client.get("/admin/dashboard/")
    # when a run fails meanwhile (no refresh: the kept aggregates stay)
    running = rows["a"].executions.get(status="running")
    PipelineExecution.objects.filter(pk=running.pk).update(status="failed", error_message="live: worker lost",
                                                           completed_at=timezone.now())
    # then it leaves "Running now" and shows in the recent failures at once
    response = staff_client.get("/admin/dashboard/")
    assert running.pk not in {r.pk for r in response.context["running"]}
    assert "live: worker lost" in response.content.decode()


def test_with_the_cache_unreachable_the_figures_are_computed_from_the_database(settings, rows):
    # given a cache at an address where nothing listens (Redis stopped)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{dead_port}/0",
                                   "OPTIONS": {**settings.CACHES["default"]["OPTIONS"], "SOCKET_CONNECT_TIMEOUT": 1}}}
    # when the dashboard asks for its figures, they are computed from the database
    figures = selectors.dashboard_aggregates()
    assert sum(day["total"] for day in figures["days"]) == sum(
        day["total"] for day in selectors.runs_per_status_per_day())
    assert {row["pipeline"] for row in figures["failure_rates"]} >= {"alpha", "beta"}
