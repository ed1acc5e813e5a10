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
