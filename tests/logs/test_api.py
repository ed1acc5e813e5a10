"""`/api/v1/executions/<id>/logs/` and `/api/v1/logs/` against the real search server."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from executions.log_models import ExecutionLogRecord
from executions.logstore.shipping import ship_pending
from tests.factories import PipelineExecutionFactory, StaffFactory, UserFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 10, 31, 23, 59, 0, tzinfo=UTC)  # records span two monthly indices


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def add(execution, *, minutes: float, level: str, message: str, node: str = "resize", component: str = "pillow"):
    return ExecutionLogRecord.objects.create(
        execution=execution, level=level, message=message, node_id=node, component=component,
        timestamp=T0 + timedelta(minutes=minutes), extra={"n": minutes},
    )


@pytest.fixture
def corpus(es):
    """Two users' runs with known records, shipped and searchable."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    run_a = PipelineExecutionFactory(pipeline__created_by=alice)
    run_b = PipelineExecutionFactory(pipeline__created_by=bob)
    records = {
        "a1": add(run_a, minutes=0, level="info", message="loaded image cat.png from the object store", node="load"),
        "a2": add(run_a, minutes=1, level="warning", message="image is larger than 4096 pixels, resizing down"),
        "a3": add(run_a, minutes=2, level="error", message="resize failed: cannot identify image file", node="resize"),
        "a4": add(run_a, minutes=3, level="info", message="<script>alert(1)</script> resize step finished"),
        "b1": add(run_b, minutes=0.5, level="error", message="resize failed: disk quota exceeded"),
        "b2": add(run_b, minutes=4, level="info", message="thumbnail written", node="thumb", component="thumbnailer"),
    }
    ship_pending(refresh=True)
    return {"alice": alice, "bob": bob, "run_a": run_a, "run_b": run_b, "records": records}


def ids(response, corpus):
    by_id = {record.id: name for name, record in corpus["records"].items()}
    return [by_id[item["id"]] for item in response.json()["results"]]


def test_execution_logs_are_in_write_order_with_their_fields(corpus):
    response = client_for(corpus["alice"]).get(f"/api/v1/executions/{corpus['run_a'].id}/logs/")
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "search"
    assert ids(response, corpus) == ["a1", "a2", "a3", "a4"]
    first = body["results"][0]
    assert first["timestamp"] == "2026-10-31T23:59:00.000Z"
    assert (first["level"], first["node_id"], first["component"], first["extra"]) == ("info", "load", "pillow", {"n": 0})
    assert first["execution_id"] == str(corpus["run_a"].id)
    assert "owner_id" not in first


def test_execution_logs_filter_by_node_and_level_and_page_with_search_after(corpus):
    client = client_for(corpus["alice"])
    url = f"/api/v1/executions/{corpus['run_a'].id}/logs/"
    assert ids(client.get(url, {"level": "error,warning"}), corpus) == ["a2", "a3"]
    assert ids(client.get(url, {"node": "load"}), corpus) == ["a1"]
    # pages of two, following next_cursor
    page1 = client.get(url, {"page_size": 2})
    page2 = client.get(url, {"page_size": 2, "cursor": page1.json()["next_cursor"]})
    page3 = client.get(url, {"page_size": 2, "cursor": page2.json()["next_cursor"]})
    assert ids(page1, corpus) == ["a1", "a2"]
    assert ids(page2, corpus) == ["a3", "a4"]
    assert ids(page3, corpus) == []
    assert page3.json()["next_cursor"] is None


def test_another_users_run_is_not_found(corpus):
    response = client_for(corpus["bob"]).get(f"/api/v1/executions/{corpus['run_a'].id}/logs/")
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"


def test_search_by_phrase_returns_exactly_the_matching_records_newest_first(corpus):
    staff = client_for(StaffFactory())
    response = staff.get("/api/v1/logs/", {"q": '"resize failed"'})
    assert response.status_code == 200
    assert ids(response, corpus) == ["a3", "b1"]
    # the phrase, not the words anywhere: "failed resize" matches nothing
    assert ids(staff.get("/api/v1/logs/", {"q": '"failed resize"'}), corpus) == []
    # the match is highlighted, and the stored text is escaped in the highlight
    highlight = response.json()["results"][0]["highlight"]
    assert highlight == ["<mark>resize</mark> <mark>failed</mark>: cannot identify image file"]
    escaped = staff.get("/api/v1/logs/", {"q": "finished"}).json()["results"][0]["highlight"][0]
    assert "<script>" not in escaped and "&lt;script&gt;" in escaped


def test_search_by_level_and_by_time_range(corpus):
    staff = client_for(StaffFactory())
    assert ids(staff.get("/api/v1/logs/", {"level": "error"}), corpus) == ["a3", "b1"]
    window = {"since": (T0 + timedelta(minutes=0.5)).isoformat(), "until": (T0 + timedelta(minutes=3)).isoformat()}
    assert ids(staff.get("/api/v1/logs/", window), corpus) == ["a3", "a2", "b1"]
    assert ids(staff.get("/api/v1/logs/", {**window, "q": "resize", "level": "error"}), corpus) == ["a3", "b1"]


def test_search_filters_by_pipeline_execution_node_and_component(corpus):
    staff = client_for(StaffFactory())
    assert ids(staff.get("/api/v1/logs/", {"pipeline": str(corpus["run_b"].pipeline_id)}), corpus) == ["b2", "b1"]
    assert ids(staff.get("/api/v1/logs/", {"execution": str(corpus["run_a"].id), "q": "image"}), corpus) == ["a3", "a2", "a1"]
    assert ids(staff.get("/api/v1/logs/", {"node": "thumb"}), corpus) == ["b2"]
    assert ids(staff.get("/api/v1/logs/", {"component": "thumbnailer,nothing"}), corpus) == ["b2"]


def test_a_user_searches_only_their_own_runs(corpus):
    assert ids(client_for(corpus["bob"]).get("/api/v1/logs/", {"q": "resize"}), corpus) == ["b1"]
    assert ids(client_for(corpus["alice"]).get("/api/v1/logs/", {"q": "disk quota"}), corpus) == []


def test_bad_parameters_are_a_400_naming_the_field(corpus):
    client = client_for(corpus["alice"])
    for params, field in [({"level": "loud"}, "level"), ({"since": "yesterday"}, "since"),
                          ({"pipeline": "not-a-uuid"}, "pipeline"), ({"page_size": "0"}, "page_size"),
                          ({"cursor": "abc"}, "cursor"),
                          ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "until")]:
        response = client.get("/api/v1/logs/", params)
        assert response.status_code == 400, params
        assert field in response.json()["errors"], params


def test_anonymous_requests_are_refused():
    assert APIClient().get("/api/v1/logs/", {"q": "x"}).status_code == 401


@pytest.mark.django_db
def test_without_the_search_server_a_runs_logs_come_from_the_durable_buffer_and_search_is_a_503():
    owner = UserFactory()
    run = PipelineExecutionFactory(pipeline__created_by=owner)
    for minute in range(3):
        add(run, minutes=minute, level="info", message=f"line {minute}")
    client = client_for(owner)
    with override_settings(ELASTICSEARCH_URL="http://127.0.0.1:9", ELASTICSEARCH_TIMEOUT_SECONDS=1.0):
        page1 = client.get(f"/api/v1/executions/{run.id}/logs/", {"page_size": 2})
        page2 = client.get(f"/api/v1/executions/{run.id}/logs/", {"page_size": 2, "cursor": page1.json()["next_cursor"]})
        search = client.get("/api/v1/logs/", {"q": "line"})
    assert page1.json()["source"] == "database"
    assert [r["message"] for r in page1.json()["results"]] == ["line 0", "line 1"]
    assert [r["message"] for r in page2.json()["results"]] == ["line 2"]
    assert search.status_code == 503
    assert search.json()["type"] == "search_unavailable"


def test_a_time_range_searches_only_the_monthly_indices_it_can_touch(corpus, search_prefix):
    from executions.logstore.queries import _indices

    staff = client_for(StaffFactory())
    # given records on both sides of a month boundary (T0 is 23:59 on 31 October)
    october = {"since": "2026-10-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}
    november = {"since": "2026-11-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"}
    assert _indices(*(datetime.fromisoformat(v) for v in october.values())) == f"{search_prefix}-logs-2026.10"
    # then each month's search finds exactly that month's records
    assert ids(staff.get("/api/v1/logs/", october), corpus) == ["b1", "a1"]
    assert ids(staff.get("/api/v1/logs/", november), corpus) == ["b2", "a4", "a3", "a2"]
    # and a range over months without any index is empty, not an error
    assert staff.get("/api/v1/logs/", {"since": "2020-01-01T00:00:00Z", "until": "2020-03-01T00:00:00Z"}).json()["results"] == []
