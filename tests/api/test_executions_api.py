"""Executions: run (with Idempotency-Key), list with filters and cursor pages, detail, cancel, retry."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from executions.models import ComponentExecution, PipelineExecution
from registry import services as registry_services
from tests.api.conftest import definition
from tests.factories import FileFactory, PipelineExecutionFactory


@pytest.fixture
def pipeline(owner, resize):
    return registry_services.pipeline_create(name="thumbs", description="Make thumbnails", definition=definition(),
                                             created_by=owner)


@pytest.fixture
def image(owner):
    return FileFactory(created_by=owner)


def run(api, pipeline, inputs, key=None, **body):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api.post(f"/api/v1/pipelines/{pipeline.pk}/run/", {"inputs": [str(i) for i in inputs], **body},
                    format="json", **headers)


# --- run ----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_run_creates_pending_execution_with_steps(api, owner, pipeline, image):
    response = run(api, pipeline, [image.pk], parameters={"shrink": {"width": 12}})
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "pending" and body["pipeline_version"] == 1
    assert body["url"].endswith(f"/api/v1/executions/{body['id']}/") and response["Location"] == body["url"]
    execution = PipelineExecution.objects.get(pk=body["id"])
    assert execution.created_by == owner
    step = execution.steps.get()
    assert step.node_id == "shrink" and step.input_data["parameters"] == {"width": 12}


@pytest.mark.django_db
def test_run_with_bad_parameters_is_400_and_stores_nothing(api, pipeline, image):
    response = run(api, pipeline, [image.pk], parameters={"shrink": {"width": "wide"}})
    assert response.status_code == 400
    assert any("shrink" in " ".join(m) for m in response.json()["errors"].values())
    assert not PipelineExecution.objects.exists()


@pytest.mark.django_db
def test_run_with_someone_elses_or_unknown_file_is_400(api, pipeline, stranger):
    foreign = FileFactory(created_by=stranger)
    response = run(api, pipeline, [foreign.pk])
    assert response.status_code == 400 and "inputs" in response.json()["errors"]
    response = api.post(f"/api/v1/pipelines/{pipeline.pk}/run/", {"inputs": ["not-a-uuid"]}, format="json")
    assert response.status_code == 400 and "inputs.0" in response.json()["errors"]
    assert not PipelineExecution.objects.exists()


@pytest.mark.django_db
def test_run_someone_elses_pipeline_is_404(stranger_api, pipeline, anon):
    assert run(stranger_api, pipeline, []).status_code == 404
    assert run(anon, pipeline, []).status_code == 401


@pytest.mark.django_db
def test_same_idempotency_key_returns_the_same_execution(api, stranger_api, pipeline, image, owner, stranger):
    first = run(api, pipeline, [image.pk], key="abc-1").json()
    second = run(api, pipeline, [image.pk], key="abc-1").json()
    assert first["id"] == second["id"] and PipelineExecution.objects.count() == 1
    assert run(api, pipeline, [image.pk], key="abc-2").json()["id"] != first["id"]
    # another user's key space is separate
    their_pipeline = registry_services.pipeline_create(name="t", definition=definition(), created_by=stranger)
    assert run(stranger_api, their_pipeline, [], key="abc-1").json()["id"] != first["id"]
    # a key reused for another pipeline is a conflict, not a silent mix-up
    other = registry_services.pipeline_create(name="o", definition=definition(), created_by=owner)
    assert run(api, other, [image.pk], key="abc-1").status_code == 409


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_with_one_key_create_exactly_one_execution(live_server, owner, pipeline, image):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=owner).key
    url = f"{live_server.url}/api/v1/pipelines/{pipeline.pk}/run/"
    threads = 8
    barrier = threading.Barrier(threads)

    def post(_):
        barrier.wait()
        return requests.post(url, json={"inputs": [str(image.pk)]}, timeout=30,
                             headers={"Authorization": f"Token {token}", "Idempotency-Key": "same-key"})

    with ThreadPoolExecutor(threads) as pool:
        responses = list(pool.map(post, range(threads)))
    assert [r.status_code for r in responses] == [202] * threads
    assert len({r.json()["id"] for r in responses}) == 1
    assert PipelineExecution.objects.count() == 1
    assert ComponentExecution.objects.count() == 1


# --- list, filters, pagination --------------------------------------------------------------------

@pytest.fixture
def history(owner, pipeline):
    """Executions at known times: now-0h ... now-5h, alternating statuses."""
    now = timezone.now()
    statuses = ["failed", "running", "completed", "failed", "pending", "cancelled"]
    rows = []
    for hours, status in enumerate(statuses):
        execution = PipelineExecutionFactory(pipeline=pipeline, created_by=owner, status=status,
                                             error_message="disk full" if status == "failed" and hours == 3 else None)
        PipelineExecution.objects.filter(pk=execution.pk).update(created_at=now - timedelta(hours=hours),
                                                                 started_at=now - timedelta(hours=hours))
        rows.append(execution.pk)
    return rows, now


@pytest.mark.django_db
def test_list_newest_first_with_cursor_pages(api, history):
    rows, _ = history
    seen = []
    url = "/api/v1/executions/?page_size=4"
    page = api.get(url).json()
    seen += [r["id"] for r in page["results"]]
    assert len(page["results"]) == 4 and page["next_cursor"]
    first = page["results"][0]
    assert first["pipeline_name"] == "thumbs" and first["url"] == f"http://testserver/api/v1/executions/{rows[0]}/"
    assert first["created_at"].endswith("Z") and first["completed_at"] is None
    page = api.get(page["next"]).json()
    seen += [r["id"] for r in page["results"]]
    assert page["next"] is None and page["next_cursor"] is None
    assert seen == [str(pk) for pk in rows]


@pytest.mark.django_db
def test_filter_by_several_statuses(api, history):
    rows, _ = history
    repeated = api.get("/api/v1/executions/?status=failed&status=running").json()["results"]
    comma = api.get("/api/v1/executions/?status=failed,running").json()["results"]
    assert [r["id"] for r in repeated] == [r["id"] for r in comma] == [str(rows[i]) for i in (0, 1, 3)]
    assert api.get("/api/v1/executions/?status=exploded").status_code == 400


@pytest.mark.django_db
def test_filter_by_date_range_pipeline_version_and_text(api, history, pipeline, owner):
    rows, now = history
    after = (now - timedelta(hours=3, minutes=30)).isoformat()
    before = (now - timedelta(minutes=30)).isoformat()
    found = api.get("/api/v1/executions/", {"created_after": after, "created_before": before}).json()["results"]
    assert [r["id"] for r in found] == [str(rows[i]) for i in (1, 2, 3)]
    found = api.get("/api/v1/executions/", {"started_after": after, "status": "failed",
                                            "pipeline": str(pipeline.pk)}).json()["results"]
    assert [r["id"] for r in found] == [str(rows[0]), str(rows[3])]
    assert api.get("/api/v1/executions/", {"pipeline_version": 2}).json()["results"] == []
    assert len(api.get("/api/v1/executions/", {"created_by": str(owner.pk)}).json()["results"]) == 6
    assert [r["id"] for r in api.get("/api/v1/executions/?q=DISK").json()["results"]] == [str(rows[3])]
    assert len(api.get("/api/v1/executions/?q=thumbnails").json()["results"]) == 6
    assert api.get("/api/v1/executions/?created_after=yesterday").status_code == 400
    assert api.get("/api/v1/executions/?cursor=garbage").status_code == 400


@pytest.mark.django_db
def test_list_is_scoped_to_the_owner(api, stranger_api, staff_api, history):
    assert stranger_api.get("/api/v1/executions/").json()["results"] == []
    assert len(staff_api.get("/api/v1/executions/").json()["results"]) == 6
    assert api.get("/api/v1/executions/").status_code == 200


# --- detail, cancel, retry ----------------------------------------------------------------------

@pytest.mark.django_db
def test_detail_has_steps_and_progress(api, pipeline, image, stranger_api):
    execution_id = run(api, pipeline, [image.pk]).json()["id"]
    body = api.get(f"/api/v1/executions/{execution_id}/").json()
    assert [s["node_id"] for s in body["steps"]] == ["shrink"]
    assert body["steps"][0]["component"]["name"] == "resize"
    assert body["progress"]["total"] == 1 and body["progress"]["completed"] == 0
    assert body["progress"]["percentage"] == 0.0
    ComponentExecution.objects.filter(execution_id=execution_id).update(status="completed")
    assert api.get(f"/api/v1/executions/{execution_id}/").json()["progress"]["percentage"] == 100.0
    assert stranger_api.get(f"/api/v1/executions/{execution_id}/").status_code == 404


@pytest.mark.django_db
def test_cancel_then_cancel_again_is_409(api, stranger_api, pipeline, image):
    execution_id = run(api, pipeline, [image.pk]).json()["id"]
    assert stranger_api.post(f"/api/v1/executions/{execution_id}/cancel/").status_code == 404
    response = api.post(f"/api/v1/executions/{execution_id}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json()["steps"][0]["status"] == "cancelled"
    again = api.post(f"/api/v1/executions/{execution_id}/cancel/")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


@pytest.mark.django_db
def test_retry_failed_execution(api, pipeline, image):
    execution_id = run(api, pipeline, [image.pk]).json()["id"]
    assert api.post(f"/api/v1/executions/{execution_id}/retry/").status_code == 409  # still pending
    PipelineExecution.objects.filter(pk=execution_id).update(status="failed")
    response = api.post(f"/api/v1/executions/{execution_id}/retry/")
    assert response.status_code == 202
    retry = PipelineExecution.objects.get(pk=response.json()["id"])
    assert str(retry.retry_of_id) == execution_id and retry.status == "pending"


@pytest.mark.django_db
def test_executions_need_authentication(anon):
    assert anon.get("/api/v1/executions/").status_code == 401


# --- item progress ------------------------------------------------------------------------------

def _query_count(api, url) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert api.get(url).status_code == 200
    return len(queries)


@pytest.mark.django_db
def test_detail_and_status_have_each_steps_items_and_the_runs_item_totals(api, owner, resize):
    # given a run with two map steps part-way through their items and a merge step
    execution = PipelineExecutionFactory(created_by=owner, pipeline__created_by=owner, status="running")
    ComponentExecution.objects.bulk_create([
        ComponentExecution(execution=execution, component=resize, node_id="resize", status="running",
                           item_count=120, items_completed=37, items_failed=2, items_skipped=1, items_cached=10),
        ComponentExecution(execution=execution, component=resize, node_id="gray", status="running",
                           item_count=80, items_completed=5, items_cached=5),
        ComponentExecution(execution=execution, component=resize, node_id="merge", status="pending"),
    ])
    url = f"/api/v1/executions/{execution.pk}/"
    body = api.get(url).json()
    # then each step has its counts, a step that is not itemized null
    assert {s["node_id"]: s["items"] for s in body["steps"]} == {
        "resize": {"total": 120, "completed": 37, "failed": 2, "skipped": 1, "cached": 10},
        "gray": {"total": 80, "completed": 5, "failed": 0, "skipped": 0, "cached": 5},
        "merge": None,
    }
    # and the progress sums them over the itemized steps, beside the step counts
    progress = body["progress"]
    assert (progress["total_items"], progress["completed_items"], progress["failed_items"],
            progress["skipped_items"], progress["cached_items"]) == (200, 42, 2, 1, 15)
    assert (progress["total"], progress["running"], progress["pending"]) == (3, 2, 1)
    # and when the engine moves a counter, the next poll shows it
    ComponentExecution.objects.filter(execution=execution, node_id="gray").update(items_completed=80, items_cached=9)
    again = api.get(url).json()
    assert again["progress"]["completed_items"] == 117 and again["progress"]["cached_items"] == 19
    assert next(s for s in again["steps"] if s["node_id"] == "gray")["items"]["completed"] == 80


@pytest.mark.django_db
def test_a_run_without_items_has_zero_item_totals_and_the_poll_costs_no_more_queries(api, owner, resize):
    plain = PipelineExecutionFactory(created_by=owner, pipeline__created_by=owner, status="running")
    itemized = PipelineExecutionFactory(created_by=owner, pipeline=plain.pipeline, status="running")
    for execution, count in ((plain, None), (itemized, 50)):
        for node in ("a", "b", "c"):
            ComponentExecution.objects.create(execution=execution, component=resize, node_id=node, item_count=count,
                                              items_completed=0 if count is None else 7)
    body = api.get(f"/api/v1/executions/{plain.pk}/").json()
    assert [s["items"] for s in body["steps"]] == [None, None, None]
    assert {key: value for key, value in body["progress"].items() if key.endswith("_items")} == {
        "total_items": 0, "completed_items": 0, "failed_items": 0, "skipped_items": 0, "cached_items": 0}
    # the counters are columns of the step rows the poll reads anyway
    assert _query_count(api, f"/api/v1/executions/{itemized.pk}/") == _query_count(api, f"/api/v1/executions/{plain.pk}/")
    assert api.get(f"/api/v1/executions/{itemized.pk}/").json()["progress"]["completed_items"] == 21


@pytest.mark.django_db
def test_the_progress_selector_without_loaded_steps_sums_the_same_items(owner, resize):
    from executions.selectors import execution_progress

    execution = PipelineExecutionFactory(created_by=owner, pipeline__created_by=owner, status="running")
    ComponentExecution.objects.create(execution=execution, component=resize, node_id="a", status="completed",
                                      item_count=4, items_completed=3, items_failed=1, items_cached=2)
    ComponentExecution.objects.create(execution=execution, component=resize, node_id="b", status="running",
                                      item_count=6, items_completed=1)
    ComponentExecution.objects.create(execution=execution, component=resize, node_id="c", items_completed=9)
    progress = execution_progress(execution)
    assert progress == execution_progress(execution, steps=list(execution.steps.all()))
    assert (progress["total_items"], progress["completed_items"], progress["failed_items"],
            progress["cached_items"], progress["finished"]) == (10, 4, 1, 2, 1)
