"""Schedules on the real services: occurrences of a cron expression in a time zone (DST
included), exactly one run per occurrence whatever ticks twice or at once, the catch-up
policies, the API."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.db import connections

from executions import schedules
from executions.automation_models import PipelineSchedule
from executions.models import PipelineExecution
from tests.api.conftest import client_for
from tests.executions.conftest import node
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)
UTC = dt_timezone.utc


@pytest.fixture
def schedule_of(builtins, pipeline_of, jpeg_file, user):
    def make(cron="*/10 * * * *", zone="UTC", catch_up="latest"):
        pipeline = pipeline_of([node("gray", "grayscale")])
        return schedules.schedule_create(user=user, pipeline=pipeline, name="nightly", cron=cron, timezone=zone,
                                         inputs=[str(jpeg_file().pk)], catch_up=catch_up)
    return make


def runs_of(schedule) -> list[PipelineExecution]:
    return list(PipelineExecution.objects.filter(pipeline=schedule.pipeline).order_by("idempotency_key"))


def test_occurrences_follow_the_time_zone_across_daylight_saving():
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC from the last Sunday of March 2026
    found = schedules.schedule_occurrences(cron="0 9 * * *", zone="Europe/Paris",
                                           after=datetime(2026, 3, 27, 12, tzinfo=UTC),
                                           until=datetime(2026, 3, 30, 12, tzinfo=UTC), limit=10)
    assert [o.astimezone(UTC) for o in found] == [datetime(2026, 3, 28, 8, tzinfo=UTC),
                                                  datetime(2026, 3, 29, 7, tzinfo=UTC),
                                                  datetime(2026, 3, 30, 7, tzinfo=UTC)]


def test_an_occurrence_starts_exactly_one_run_even_when_ticked_twice_or_at_once(schedule_of):
    schedule = schedule_of()
    occurrence = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    PipelineSchedule.objects.filter(pk=schedule.pk).update(next_run_at=occurrence)
    now = occurrence + timedelta(seconds=5)
    # when two beats tick at the same moment, and then once more
    results: list[dict] = []

    def tick() -> None:
        try:
            results.append(schedules.schedules_tick(now=now))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.append(schedules.schedules_tick(now=now))
    # then one run, keyed by its occurrence, and the next occurrence ahead
    runs = runs_of(schedule)
    assert sum(r["started"] for r in results) == 1 and len(runs) == 1
    assert runs[0].idempotency_key == f"schedule:{schedule.pk}:2026-06-01T12:00:00+00:00"
    assert runs[0].input_data["inputs"] == schedule.inputs and runs[0].created_by_id == schedule.created_by_id
    schedule.refresh_from_db()
    assert schedule.next_run_at == datetime(2026, 6, 1, 12, 10, tzinfo=UTC)
    assert schedule.last_run_at == occurrence and schedule.last_execution_id == runs[0].pk
    # a schedule put back on an occurrence it already ran (a restored backup) runs nothing again
    PipelineSchedule.objects.filter(pk=schedule.pk).update(next_run_at=occurrence)
    schedules.schedules_tick(now=now)
    assert [r.pk for r in runs_of(schedule)] == [runs[0].pk]


@pytest.mark.parametrize("catch_up, expected", [
    ("latest", ["12:50"]),
    ("all", ["12:00", "12:10", "12:20", "12:30", "12:40", "12:50"]),
    ("none", []),
])
def test_missed_occurrences_follow_the_catch_up_policy(schedule_of, catch_up, expected):
    # given a schedule every 10 minutes whose beat was down from 12:00 to 12:55
    schedule = schedule_of(catch_up=catch_up)
    PipelineSchedule.objects.filter(pk=schedule.pk).update(next_run_at=datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    result = schedules.schedules_tick(now=datetime(2026, 6, 1, 12, 55, tzinfo=UTC))
    started = [r.idempotency_key.rsplit("T", 1)[1][:5] for r in runs_of(schedule)]
    assert started == expected
    assert result == {"started": len(expected), "skipped": 6 - len(expected)}
    schedule.refresh_from_db()
    assert schedule.next_run_at == datetime(2026, 6, 1, 13, 0, tzinfo=UTC)


def test_none_still_runs_the_occurrence_of_this_tick(schedule_of):
    schedule = schedule_of(catch_up="none")
    PipelineSchedule.objects.filter(pk=schedule.pk).update(next_run_at=datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    assert schedules.schedules_tick(now=datetime(2026, 6, 1, 12, 0, 3, tzinfo=UTC))["started"] == 1


def test_schedule_api_validates_cron_zone_and_inputs(builtins, pipeline_of, jpeg_file, user):
    api = client_for(user)
    pipeline = pipeline_of([node("gray", "grayscale")])
    mine = str(jpeg_file().pk)
    body = {"name": "n", "pipeline": str(pipeline.pk), "cron": "30 2 * * 1-5", "timezone": "America/New_York",
            "inputs": [mine]}
    response = api.post("/api/v1/schedules/", body, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    next_run = datetime.fromisoformat(created["next_run_at"])
    assert next_run > datetime.now(UTC) and created["catch_up"] == "latest"
    assert next_run.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York")).strftime("%H:%M") == "02:30"
    assert client_for(UserFactory()).get(f"/api/v1/schedules/{created['id']}/").status_code == 404
    for change, field in (({"cron": "every day"}, "cron"), ({"cron": "* * * * * *"}, "cron"),
                          ({"timezone": "Mars/Olympus"}, "timezone"),
                          ({"inputs": [str(jpeg_file(owner=UserFactory()).pk)]}, "inputs")):
        refused = api.post("/api/v1/schedules/", {**body, **change}, format="json")
        assert refused.status_code == 400 and field in refused.json()["errors"], (change, refused.json())
