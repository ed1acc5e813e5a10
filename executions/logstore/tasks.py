"""The periodic shipper of the durable log buffer (beat entry `executions-ship-logs`)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from executions.logstore.shipping import SearchUnavailable, ship_pending

logger = logging.getLogger(__name__)


@shared_task(name="executions.logstore.tasks.ship_logs", ignore_result=True, acks_late=False)
def ship_logs(max_batches: int = 50) -> int:
    """Ships what is waiting; when the search server is down the rows wait for the next run."""
    try:
        result = ship_pending(batch_size=settings.LOG_SHIP_BATCH_SIZE, max_batches=max_batches)
    except SearchUnavailable as exc:
        logger.warning("log shipping postponed: %s", exc)
        return 0
    return result.shipped


@shared_task(name="executions.logstore.tasks.prune_log_buffer", ignore_result=True)
def prune_log_buffer() -> int:
    """Deletes shipped log rows older than LOG_BUFFER_RETENTION_DAYS (beat entry
    `executions-prune-log-buffer`); 0 days keeps them all."""
    from datetime import timedelta

    from django.utils import timezone

    from executions.logstore.shipping import prune_shipped

    if settings.LOG_BUFFER_RETENTION_DAYS <= 0:
        return 0
    return prune_shipped(older_than=timezone.now() - timedelta(days=settings.LOG_BUFFER_RETENTION_DAYS))


SHIP_SOON_KEY = "executions:logstore:ship-soon"


def ship_soon(*, window_seconds: int = 1) -> bool:
    """Asks for a shipping run now (a run just ended: its last lines should be searchable without
    waiting for the periodic one), at most once per window however many runs end in it: a burst of
    short runs must not turn into a burst of shipping tasks. True if a run was enqueued."""
    from django.core.cache import cache

    if not cache.add(SHIP_SOON_KEY, 1, timeout=window_seconds):
        return False
    ship_logs.delay()
    return True
