"""Celery tasks of triggers and webhooks (docs/automation.md): thin wrappers that take ids and
call executions/triggers.py and executions/webhooks.py. Their names are what queued messages
carry: they never change."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="executions.automation_tasks.webhook_deliver", acks_late=True, ignore_result=True)
def webhook_deliver(delivery_id: str) -> str:
    """One attempt of a webhook delivery; a failed one schedules the next itself."""
    from executions import webhooks

    return webhooks.webhook_attempt(delivery_id=delivery_id)


@shared_task(name="executions.automation_tasks.webhook_deliveries_sweep", ignore_result=True)
def webhook_deliveries_sweep() -> int:
    """Beat, every WEBHOOK_SWEEP_INTERVAL_SECONDS: deliveries whose message was lost."""
    from executions import webhooks

    return webhooks.webhook_deliveries_sweep()


@shared_task(name="executions.automation_tasks.trigger_process", acks_late=True, ignore_result=True)
def trigger_process(trigger_id: str) -> dict:
    """Start the runs of a trigger's pending files (executions/triggers.py)."""
    from executions import triggers

    return triggers.trigger_process(trigger_id=trigger_id)


@shared_task(name="executions.automation_tasks.triggers_sweep", ignore_result=True)
def triggers_sweep() -> int:
    """Beat, every TRIGGER_SWEEP_INTERVAL_SECONDS: pending matches (lost messages, batch windows)."""
    from executions import triggers

    return triggers.triggers_sweep()


@shared_task(name="executions.automation_tasks.schedules_tick", ignore_result=True)
def schedules_tick() -> dict:
    """Beat, every SCHEDULE_TICK_SECONDS: the runs of due schedule occurrences (executions/schedules.py)."""
    from executions import schedules

    return schedules.schedules_tick()
