"""Celery tasks of the engine: thin wrappers that take ids and call the engine (executions/engine/).
Their `name=` strings are what queued messages carry: they never change."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import close_old_connections
from django.db.utils import OperationalError as DatabaseOperationalError

from executions import dashboard_selectors
from executions.engine import items, lifecycle, recovery
from executions.worker import recycle_connection


@shared_task(
    bind=True, name="executions.tasks.step_run", acks_late=True, reject_on_worker_lost=True, max_retries=None,
    # The step row is the record of the outcome; a result-backend write per step would be waste.
    ignore_result=True, track_started=False,
    soft_time_limit=settings.STEP_TIME_LIMIT_SECONDS + 5, time_limit=settings.STEP_TIME_LIMIT_SECONDS + 30,
)
def step_run(self, step_id: str, owned_attempt: int | None = None, transient_since: float | None = None) -> str:
    recycle_connection()  # CONN_MAX_AGE, broken connections (Celery's per-task close is off: CELERY_DB_REUSE_MAX)
    try:
        outcome = lifecycle.step_execute(step_id=step_id, owned_attempt=owned_attempt, transient_since=transient_since)
    except DatabaseOperationalError as exc:  # the connection broke (a database restart): again, on a new one
        raise self.retry(countdown=min(30, 2 ** self.request.retries), exc=exc, args=(),
                         kwargs={"step_id": step_id, "owned_attempt": owned_attempt, "transient_since": transient_since})
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in, args=(),
                         kwargs={"step_id": step_id, "owned_attempt": outcome.owned_attempt,
                                 "transient_since": outcome.transient_since})
    return outcome.reason


@shared_task(name="executions.tasks.execution_sweep", acks_late=True)
def execution_sweep() -> dict[str, int]:
    close_old_connections()
    return recovery.execution_sweep()


@shared_task(name="executions.tasks.dashboard_refresh", ignore_result=True)
def dashboard_refresh() -> None:
    """Beat, every DASHBOARD_REFRESH_SECONDS: the admin dashboard's aggregates into the cache.
    Connections are left to Celery's Django fixup, as the log store's beat tasks do."""
    dashboard_selectors.dashboard_aggregates_refresh()


@shared_task(
    bind=True, name="executions.tasks.items_drain", acks_late=True, reject_on_worker_lost=True, max_retries=None,
    ignore_result=True, track_started=False,
    # A drain starts no new item after its slice; the item it holds then may take the step limit.
    soft_time_limit=settings.STEP_TIME_LIMIT_SECONDS + settings.ITEM_DRAIN_SLICE_SECONDS + 5,
    time_limit=settings.STEP_TIME_LIMIT_SECONDS + settings.ITEM_DRAIN_SLICE_SECONDS + 30,
)
def items_drain(self, execution_id: str, queue: str | None = None) -> str:
    """Run ready items of one run (those of its steps routed to `queue`), one after another, for a
    slice (executions/engine/items.py)."""
    recycle_connection()
    try:
        outcome = items.items_drain(execution_id=execution_id, queue=queue)
    except DatabaseOperationalError as exc:
        raise self.retry(countdown=min(30, 2 ** self.request.retries), exc=exc, args=(),
                         kwargs={"execution_id": execution_id, "queue": queue}, queue=queue or None)
    return outcome


@shared_task(name="executions.tasks.step_cache_evict", ignore_result=True)
def step_cache_evict() -> dict:
    """Beat, every STEP_CACHE_EVICT_INTERVAL_SECONDS: the step cache back under its byte budget."""
    from executions.engine import cache

    return cache.cache_evict()
