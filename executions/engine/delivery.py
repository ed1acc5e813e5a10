"""Delivery: sending the task of a step that is ready to run.

The task is found by its name in Celery's registry (`STEP_RUN_TASK`, the name queued messages
carry) rather than imported: `executions.tasks` calls the engine, so the engine must not import
it back. The executions app imports its tasks when it is ready (executions/apps.py), so the
registered task, with its options, is what is sent, in the web process as in a worker.
"""

from __future__ import annotations

import logging
from typing import Iterable

from celery import current_app
from django.db import DatabaseError, transaction

from executions.models import ComponentExecution, StepStatus

logger = logging.getLogger(__name__)

STEP_RUN_TASK = "executions.tasks.step_run"


def step_deliver(step_id, queue: str | None = None) -> None:
    """Send one step's task to its queue (None: the default queue; a step's queue is
    `input_data["queue"]`, chosen from its component's resource requirements when the run
    started: executions.engine.queues). The broker's errors are the caller's."""
    current_app.tasks[STEP_RUN_TASK].apply_async(args=[str(step_id)], queue=queue or None)


def enqueue_on_commit(step_ids: Iterable, queues: dict | None = None) -> None:
    """Send the tasks of these steps once the transaction commits; `queues`: step id -> queue."""
    ids = [str(i) for i in step_ids]
    if not ids:
        return
    routes = {str(key): value for key, value in (queues or {}).items() if value}

    def send() -> None:
        # Registered after the signals of the change that made these steps ready, so its progress
        # events are out before any of them can start (executions.events.publish).
        enqueue_steps(ids, routes)

    transaction.on_commit(send)


def enqueue_steps(ids: list[str], queues: dict[str, str] | None = None) -> None:
    """Send the tasks of committed ready steps. The commit is what counts: when the broker cannot
    take them, the steps are marked `enqueue_failed` (the outbox) and the next sweep sends them,
    so the request that committed them still succeeds (202) and no client retries into a
    duplicate run."""
    for position, step_id in enumerate(ids):
        try:
            step_deliver(step_id, (queues or {}).get(step_id))
        except Exception as exc:  # broker unreachable (or refusing): the sweep delivers the rest
            unsent = ids[position:]
            logger.warning("could not enqueue %d ready steps (%s: %s); the sweep will send them",
                           len(unsent), type(exc).__name__, exc)
            try:
                ComponentExecution.objects.filter(pk__in=unsent, status=StepStatus.PENDING).update(enqueue_failed=True)
            except DatabaseError:  # the database went too: the sweep finds them as silent ready steps
                logger.warning("could not mark %d steps for the sweep", len(unsent), exc_info=True)
            return
