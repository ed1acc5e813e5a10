"""/metrics: guarded by METRICS_TOKEN, and its values are those of the database, Redis and the
engine at the time of the scrape."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import redis
from botocore.exceptions import EndpointConnectionError
from django.conf import settings as django_settings
from django.utils import timezone

from executions import logs
from executions.log_models import ExecutionLogRecord
from executions.models import ExecutionStatus, StepStatus
from executions.signals import step_status_changed
from imageflow.outages import unavailable_service
from tests.factories import ComponentExecutionFactory, PipelineExecutionFactory

TOKEN = "metrics-token-for-tests"
pytestmark = pytest.mark.django_db


@pytest.fixture
def scrape(client, settings):
    settings.METRICS_TOKEN = TOKEN

    def scrape() -> str:
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_HOST="10.0.0.9:8000")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain; version=")
        return response.content.decode()

    return scrape


def value(text: str, name: str, **labels) -> float:
    label_text = ",".join(f'{key}="{val}"' for key, val in sorted(labels.items()))
    pattern = "^" + re.escape(name + ("{" + label_text + "}" if labels else "")) + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name} {labels} not in the scrape"
    return float(match.group(1))


def test_metrics_are_off_without_a_token_setting(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize("authorization", ["", "Bearer wrong-token", f"Token {TOKEN}"])
def test_metrics_refuse_a_missing_or_wrong_token(client, settings, authorization):
    settings.METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 401
    assert b"imageflow_" not in response.content


def test_runs_and_steps_by_status_are_counted_at_scrape_time(scrape):
    before = scrape()
    running = [PipelineExecutionFactory(status=ExecutionStatus.RUNNING, started_at=timezone.now()) for _ in range(3)]
    PipelineExecutionFactory(status=ExecutionStatus.FAILED, started_at=timezone.now() - timedelta(minutes=5))
    PipelineExecutionFactory(status=ExecutionStatus.FAILED, started_at=timezone.now() - timedelta(hours=3))
    ComponentExecutionFactory(execution=running[0], status=StepStatus.RUNNING,
                              heartbeat_at=timezone.now() - timedelta(seconds=django_settings.STEP_HEARTBEAT_TIMEOUT_SECONDS + 60))
    ComponentExecutionFactory(execution=running[1], status=StepStatus.RUNNING, heartbeat_at=timezone.now())
    after = scrape()
    assert value(after, "imageflow_runs", status="running") - value(before, "imageflow_runs", status="running") == 3
    assert value(after, "imageflow_steps", status="running") - value(before, "imageflow_steps", status="running") == 2
    # Only the failure of the last hour counts towards the failure rate.
    assert (value(after, "imageflow_runs_started_last_hour", status="failed")
            - value(before, "imageflow_runs_started_last_hour", status="failed")) == 1
    assert value(after, "imageflow_steps_stale") - value(before, "imageflow_steps_stale") == 1
    assert value(after, "imageflow_oldest_running_run_seconds") > 0


def test_queue_length_is_the_brokers_list_length(scrape):
    queue = django_settings.CELERY_TASK_DEFAULT_QUEUE
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    broker.delete(queue)
    try:
        broker.rpush(queue, "a", "b", "c", "d")
        assert value(scrape(), "imageflow_queue_length", queue=queue) == 4
    finally:
        broker.delete(queue)
    assert value(scrape(), "imageflow_queue_length", queue=queue) == 0


def test_log_backlog_and_shipping_lag_come_from_the_unshipped_rows(scrape):
    ExecutionLogRecord.objects.filter(shipped_at__isnull=True).update(shipped_at=timezone.now())
    assert value(scrape(), "imageflow_log_buffer_backlog") == 0
    assert value(scrape(), "imageflow_log_shipping_lag_seconds") == 0
    execution = PipelineExecutionFactory()
    for i in range(5):
        logs.emit(execution_id=execution.id, level="info", message=f"line {i}")
    ExecutionLogRecord.objects.filter(execution=execution).update(timestamp=timezone.now() - timedelta(minutes=10))
    text = scrape()
    assert value(text, "imageflow_log_buffer_backlog") == 5
    assert 600 <= value(text, "imageflow_log_shipping_lag_seconds") < 700


def test_an_object_store_outage_is_counted_once_per_error(scrape):
    text = scrape()
    counted = 'imageflow_service_errors_total{service="object_store"}' in text
    before = value(text, "imageflow_service_errors_total", service="object_store") if counted else 0.0
    error = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert unavailable_service(error) == "object_store"
    assert unavailable_service(error) == "object_store"  # asked twice (is_transient, then the give-up message)
    assert unavailable_service(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")) == "object_store"
    assert value(scrape(), "imageflow_service_errors_total", service="object_store") - before == 2


def test_a_finished_step_is_observed_in_the_duration_histogram_of_its_component(scrape):
    step = ComponentExecutionFactory(status=StepStatus.COMPLETED, execution_time_ms=1500)
    component = step.component.name
    step_status_changed.send(sender=None, execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id,
                             status=StepStatus.COMPLETED, previous_status=StepStatus.RUNNING)
    text = scrape()
    labels = {"component": component, "status": "completed"}
    assert value(text, "imageflow_step_duration_seconds_count", **labels) == 1
    assert value(text, "imageflow_step_duration_seconds_sum", **labels) == 1.5
    assert value(text, "imageflow_step_duration_seconds_bucket", **labels, le="1.0") == 0
    assert value(text, "imageflow_step_duration_seconds_bucket", **labels, le="2.5") == 1


def test_websocket_clients_gauge_is_exported(scrape):
    assert value(scrape(), "imageflow_websocket_clients") >= 0


def test_items_ready_running_and_stale_are_counted_at_scrape_time(scrape):
    from executions.models import StepItem

    before = scrape()
    step = ComponentExecutionFactory(status=StepStatus.RUNNING, item_count=5)
    silent = timezone.now() - timedelta(seconds=django_settings.STEP_HEARTBEAT_TIMEOUT_SECONDS + 60)
    for index, (status, waiting, heartbeat) in enumerate([
            ("pending", 0, None), ("pending", 0, None), ("pending", 1, None),  # the last waits for its parent
            ("running", 0, timezone.now()), ("running", 0, silent)]):
        StepItem.objects.create(execution=step.execution, step=step, index=index, status=status, waiting=waiting,
                                heartbeat_at=heartbeat, inputs=[])
    after = scrape()
    assert value(after, "imageflow_items", status="pending") - value(before, "imageflow_items", status="pending") == 2
    assert value(after, "imageflow_items", status="running") - value(before, "imageflow_items", status="running") == 2
    assert value(after, "imageflow_items_stale") - value(before, "imageflow_items_stale") == 1


def test_a_run_of_items_is_observed_in_the_item_histogram_and_the_cache_lookups(scrape, settings, user):
    from executions.catalogue import builtin_components_register
    from executions.services import execution_start
    from files.services import file_store_bytes
    from registry.models import Pipeline
    from tests.executions.conftest import make_jpeg, node, run_here

    builtin_components_register()
    settings.STEP_ITEM_BATCH = 1
    labels = {"component": "grayscale", "status": "completed"}
    text = scrape()
    done_before = value(text, "imageflow_item_duration_seconds_count", **labels) if "grayscale" in text else 0
    misses_before = value(text, "imageflow_step_cache_lookups_total", result="miss") if "lookups_total{" in text else 0
    pipeline = Pipeline.objects.create(name="metrics-items", definition={"nodes": [node("g", "grayscale")], "edges": []},
                                       created_by=user)
    sources = [file_store_bytes(content=make_jpeg(40 + i, 30), original_name=f"m{i}.jpg", created_by=user,
                                prefix="uploads") for i in range(3)]
    execution = execution_start(pipeline=pipeline, inputs=[s.id for s in sources], user=user)
    run_here(execution.steps.get())
    text = scrape()
    assert value(text, "imageflow_item_duration_seconds_count", **labels) - done_before == 3
    assert value(text, "imageflow_step_cache_lookups_total", result="miss") - misses_before == 3
    from executions.engine.cache import cache_stats

    assert value(text, "imageflow_step_cache_entries") == cache_stats()["entries"] >= 3
