"""The engine's Prometheus metrics (imageflow/metrics.py serves them).

- `imageflow_step_duration_seconds{component,status}`: observed when a step completes or fails
  (a receiver of `step_status_changed`, in the worker that finished it; one primary-key read);
  its `_count` by status is the step failure rate.
- Read at scrape time, each an index range scan: `imageflow_runs{status}` and `imageflow_steps{status}`
  for pending and running; `imageflow_runs_started_last_hour{status}` by final status (the run
  failure rate); `imageflow_steps_stale` (running steps silent past STEP_HEARTBEAT_TIMEOUT_SECONDS:
  waiting for a takeover) and `imageflow_oldest_running_run_seconds` (stuck runs);
  `imageflow_queue_length{queue}` (Redis LLEN of each Celery queue); `imageflow_log_buffer_backlog`
  (unshipped log rows) and `imageflow_log_shipping_lag_seconds` (age of the oldest unshipped row,
  0 when none).
- Items of map steps: `imageflow_item_duration_seconds{component,status}` (observed by the worker
  that finished the item, no query) and `imageflow_step_cache_lookups_total{result}` (hit or miss);
  at scrape time `imageflow_items{status}` (pending and running, from their partial indexes) and
  `imageflow_items_stale`, and the cache's `imageflow_step_cache_entries`, `_bytes`, `_max_bytes`
  (its counters, executions.engine.cache.cache_stats).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.dispatch import receiver
from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from executions.models import ComponentExecution, ExecutionStatus, StepStatus
from executions.signals import step_status_changed
from imageflow.metrics import register_scrape_collector

STEP_DURATION = Histogram(
    "imageflow_step_duration_seconds", "Duration of finished steps (execution_time_ms), by component and status.",
    ["component", "status"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800))

ITEM_DURATION = Histogram(
    "imageflow_item_duration_seconds", "Duration of finished items of map steps, by component and status.",
    ["component", "status"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600))
CACHE_LOOKUPS = Counter("imageflow_step_cache_lookups_total", "Step cache lookups of items, by result.", ["result"])

ACTIVE = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)
FINAL_RUN_STATUSES = (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED)


@receiver(step_status_changed, dispatch_uid="executions.metrics.observe_step_duration")
def observe_step_duration(sender, *, step_id, status, **kwargs) -> None:
    if status not in (StepStatus.COMPLETED, StepStatus.FAILED):
        return
    row = ComponentExecution.objects.filter(pk=step_id).values("execution_time_ms", "component__name").first()
    if row is None or row["execution_time_ms"] is None:
        return
    STEP_DURATION.labels(component=row["component__name"], status=status).observe(row["execution_time_ms"] / 1000)


def _counts(sql: str, params: list) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {status: count for status, count in cursor.fetchall()}


def collect_engine():
    runs = _counts("SELECT status, count(*) FROM pipeline_executions WHERE status = ANY(%s) GROUP BY status",
                   [list(ACTIVE)])
    family = GaugeMetricFamily("imageflow_runs", "Runs pending or running now.", labels=["status"])
    for status in ACTIVE:
        family.add_metric([status], runs.get(status, 0))
    yield family

    steps = _counts("SELECT status, count(*) FROM component_executions WHERE status = ANY(%s) GROUP BY status",
                    [[StepStatus.PENDING, StepStatus.RUNNING]])
    family = GaugeMetricFamily("imageflow_steps", "Steps pending or running now.", labels=["status"])
    for status in (StepStatus.PENDING, StepStatus.RUNNING):
        family.add_metric([status], steps.get(status, 0))
    yield family

    now = timezone.now()
    finished = _counts("SELECT status, count(*) FROM pipeline_executions WHERE status = ANY(%s) AND started_at >= %s "
                       "GROUP BY status", [list(FINAL_RUN_STATUSES), now - timedelta(hours=1)])
    family = GaugeMetricFamily("imageflow_runs_started_last_hour", "Runs started in the last hour, by final status.",
                               labels=["status"])
    for status in FINAL_RUN_STATUSES:
        family.add_metric([status], finished.get(status, 0))
    yield family

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM component_executions WHERE status = %s AND heartbeat_at < %s",
                       [StepStatus.RUNNING, now - timedelta(seconds=settings.STEP_HEARTBEAT_TIMEOUT_SECONDS)])
        stale = cursor.fetchone()[0]
        cursor.execute("SELECT min(started_at) FROM pipeline_executions WHERE status = %s", [ExecutionStatus.RUNNING])
        oldest = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM execution_log_records WHERE shipped_at IS NULL AND ship_error IS NULL")
        backlog = cursor.fetchone()[0]
        cursor.execute("SELECT timestamp FROM execution_log_records WHERE shipped_at IS NULL AND ship_error IS NULL "
                       "ORDER BY id LIMIT 1")
        first_unshipped = cursor.fetchone()
    yield GaugeMetricFamily("imageflow_steps_stale", "Running steps silent past the heartbeat timeout.", value=stale)
    yield from collect_items(now)
    yield GaugeMetricFamily("imageflow_oldest_running_run_seconds", "Age of the oldest running run (0: none).",
                            value=(now - oldest).total_seconds() if oldest else 0)
    yield GaugeMetricFamily("imageflow_log_buffer_backlog", "Log records not shipped to the search server yet.",
                            value=backlog)
    yield GaugeMetricFamily("imageflow_log_shipping_lag_seconds", "Age of the oldest unshipped log record (0: none).",
                            value=max(0.0, (now - first_unshipped[0]).total_seconds()) if first_unshipped else 0)


def collect_items(now):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM step_items WHERE status = 'pending' AND waiting = 0")
        ready = cursor.fetchone()[0]
        cursor.execute("SELECT count(*), count(*) FILTER (WHERE heartbeat_at < %s) FROM step_items "
                       "WHERE status = 'running'", [now - timedelta(seconds=settings.STEP_HEARTBEAT_TIMEOUT_SECONDS)])
        running, stale = cursor.fetchone()
    family = GaugeMetricFamily("imageflow_items", "Items of map steps ready to run (pending, their inputs there) "
                                                  "or running now.", labels=["status"])
    family.add_metric([StepStatus.PENDING], ready)
    family.add_metric([StepStatus.RUNNING], running)
    yield family
    yield GaugeMetricFamily("imageflow_items_stale", "Running items silent past the heartbeat timeout.", value=stale)
    from executions.engine.cache import cache_stats

    stats = cache_stats()
    yield GaugeMetricFamily("imageflow_step_cache_entries", "Entries of the step cache.", value=stats["entries"])
    yield GaugeMetricFamily("imageflow_step_cache_bytes", "Bytes of outputs the step cache keeps.", value=stats["bytes"])
    yield GaugeMetricFamily("imageflow_step_cache_max_bytes", "The step cache's byte budget.", value=stats["max_bytes"])


def collect_queues():
    import redis

    from imageflow.celery import app

    names = sorted(set(app.amqp.queues) | {settings.CELERY_TASK_DEFAULT_QUEUE}
                   | {queue for queue in settings.STEP_QUEUE_ROUTES.values() if queue})
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(name)
            lengths = pipe.execute()
    finally:
        client.close()
    family = GaugeMetricFamily("imageflow_queue_length", "Messages waiting in each Celery queue.", labels=["queue"])
    for name, length in zip(names, lengths):
        family.add_metric([name], length)
    yield family
    from executions.engine.presence import live_queues

    live = live_queues()
    if live is not None:  # unknown (no worker announces its queues): no figure rather than a false 0
        consumers = GaugeMetricFamily("imageflow_queue_consumers", "Live workers consuming each queue (steps "
                                      "routed to a queue with none wait for one).", labels=["queue"])
        for name in sorted(set(names) | set(live)):
            consumers.add_metric([name], live.get(name, 0))
        yield consumers


register_scrape_collector(collect_engine)
register_scrape_collector(collect_queues)
