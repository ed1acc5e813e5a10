"""Fan-out: making the items of a map step and offering them to the workers.

A map step (component kind "map") runs as items of up to STEP_ITEM_BATCH of its inputs
(executions.models.StepItem). Its items are made when its step task runs, that is when the step
is ready (its parents are done; a root at once): one INSERT ... SELECT writes them from the input
list, so no process builds 100,000 rows in memory. A step that streams from it (a map -> map edge
carrying all outputs, executions.services._items_plan) gets the same number of items in the same
transaction, each waiting for the parent's item of the same index; the completion of that item
gives it its inputs (executions.engine.item_statements). Such a chain of streaming steps is made
by its head, once.

The items are then offered to drain tasks (`items_drain`, executions/engine/items.py): a message
names the run, not an item, and each drain takes ready items of the run one after another, so a
run of 100,000 items costs ITEM_DRAINS_PER_RUN messages, not 100,000.
"""

from __future__ import annotations

import json
import logging
import math

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from executions import logs
from executions.engine.errors import StepFailure
from executions.engine.transitions import (
    finish_if_done,
    lock_execution,
    skip_descendants,
    step_transition,
    steps_graph,
)
from executions.models import ComponentExecution, ExecutionStatus, StepItem, StepStatus

logger = logging.getLogger(__name__)

ITEMS_DRAIN_TASK = "executions.tasks.items_drain"

_ITEMS = StepItem._meta.db_table


def step_inputs(step: ComponentExecution, parent_outputs: dict[str, dict | None]) -> list[str]:
    """The input file ids of a step: the run's inputs for a root, else its parents' outputs along
    its edges (all of them, or the indexes an edge names)."""
    data = step.input_data or {}
    if not data.get("parents"):
        return list(data.get("inputs") or [])
    inputs: list[str] = []
    for edge in data.get("edges", []):
        produced = list((parent_outputs[edge["from"]] or {}).get("files", []))
        if edge.get("outputs") is None:
            inputs.extend(produced)
        else:
            for index in edge["outputs"]:
                if index >= len(produced):
                    raise StepFailure(f"edge {edge['from']} -> {step.node_id} asks for output {index}, "
                                      f"but {edge['from']} produced {len(produced)}")
                inputs.append(produced[index])
    return inputs


def drains_send(execution_id, count: int | None = None, *, countdown: float | None = None,
                queue: str | None = None) -> None:
    """Offer a run's ready items to `count` drain tasks (ITEM_DRAINS_PER_RUN by default) on a
    queue (None: the default queue): a drain takes only the items of the steps routed to its
    queue (executions.engine.queues). The broker's errors are logged, not raised: the sweep
    offers the items of a run again."""
    count = settings.ITEM_DRAINS_PER_RUN if count is None else count
    task = current_app.tasks[ITEMS_DRAIN_TASK]
    try:
        for _ in range(max(0, count)):
            task.apply_async(args=[str(execution_id)], kwargs={"queue": queue} if queue else {},
                             countdown=countdown, queue=queue or None)
    except Exception as exc:  # broker unreachable: the items wait in the database for the sweep
        logger.warning("could not offer the items of run %s to drains (%s: %s); the sweep will",
                       execution_id, type(exc).__name__, exc)


def drains_send_on_commit(execution_id, count: int | None = None, *, queue: str | None = None) -> None:
    transaction.on_commit(lambda: drains_send(execution_id, count, queue=queue))


def step_queue(step: ComponentExecution) -> str | None:
    return (step.input_data or {}).get("queue") or None


def streams_by_parent(steps: list[ComponentExecution]) -> dict[str, list[ComponentExecution]]:
    """Parent node id -> the steps that stream from it."""
    streams: dict[str, list[ComponentExecution]] = {}
    for s in steps:
        parent = ((s.input_data or {}).get("items") or {}).get("streams_from")
        if parent:
            streams.setdefault(parent, []).append(s)
    return streams


def streaming_chain(step: ComponentExecution) -> list[ComponentExecution]:
    """The step and, breadth first, the steps that stream from it (and from those)."""
    steps = steps_graph(step.execution_id)
    streams = streams_by_parent(steps)
    chain, queue = [], [s for s in steps if s.pk == step.pk]
    while queue:
        current = queue.pop(0)
        chain.append(current)
        queue.extend(streams.get(current.node_id, []))
    return chain


_HEAD_ITEMS_SQL = f"""
INSERT INTO {_ITEMS} (execution_id, step_id, index, status, inputs, waiting, attempts, worker)
SELECT %(execution)s, %(step)s, (position - 1) / %(batch)s, '{StepStatus.PENDING.value}',
       jsonb_agg(input ORDER BY position), 0, 0, ''
  FROM jsonb_array_elements(%(inputs)s::jsonb) WITH ORDINALITY AS listed(input, position)
 GROUP BY (position - 1) / %(batch)s
"""

_WAITING_ITEMS_SQL = f"""
INSERT INTO {_ITEMS} (execution_id, step_id, index, status, inputs, waiting, attempts, worker)
SELECT %(execution)s, %(step)s, position, '{StepStatus.PENDING.value}', NULL, 1, 0, ''
  FROM generate_series(0, %(count)s - 1) AS position
"""


def step_items_start(step_id) -> str:
    """What the step task of an itemized step does: make the items of the chain it heads (once),
    or offer the items it already has to the drains again (a redelivery, the sweep)."""
    with transaction.atomic():
        step = (ComponentExecution.objects.select_for_update(no_key=True)
                .select_related("execution").only("id", "execution_id", "node_id", "status", "input_data",
                                                  "item_count", "execution__status").get(pk=step_id))
        if step.execution.status not in {ExecutionStatus.PENDING, ExecutionStatus.RUNNING}:
            return f"execution {step.execution.status}"
        if step.item_count is not None:
            # A redelivery, the sweep, or the step task of a streaming step (its parent finished):
            # drains for the items ready now, no more (an idle drain is a message in the queue).
            ready = len(StepItem.objects.filter(step_id=step.pk, status=StepStatus.PENDING, waiting=0)
                        .values_list("id", flat=True)[:settings.ITEM_DRAINS_PER_RUN])
            if ready and step.status in {StepStatus.PENDING, StepStatus.RUNNING}:
                drains_send_on_commit(step.execution_id, ready, queue=step_queue(step))
            return "items exist"
        if (step.input_data.get("items") or {}).get("streams_from"):
            return "streams from its parent"  # its items are made by the head of its chain
        if step.status != StepStatus.PENDING:
            return f"already {step.status}"
        parents = step.input_data.get("parents") or []
        done = {node_id: output for node_id, status, output in ComponentExecution.objects.filter(
            execution_id=step.execution_id, node_id__in=parents).values_list("node_id", "status", "output_data")
            if status == StepStatus.COMPLETED}
        if len(done) < len(parents):
            return "parents not completed"
        try:
            inputs = step_inputs(step, done)
        except StepFailure as exc:
            inputs, failure = None, str(exc)
        if inputs is None:
            _fail_unstarted(step, failure)
            return "bad inputs"
        count = items_make(step, inputs)
    logs.emit(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id, level="info",
              message=f"step {step.node_id}: {len(inputs)} inputs as {count} items", event="step_items",
              inputs=len(inputs), items=count)
    return f"{count} items"


def items_make(step: ComponentExecution, inputs: list[str]) -> int:
    """Write the items of `step` (a chain head) and of the steps that stream from it, in the
    caller's transaction; their drains are sent once it commits. At least one item, so a step
    without inputs runs (and fails or passes as it would with them)."""
    batch = max(1, settings.STEP_ITEM_BATCH)
    count = max(1, math.ceil(len(inputs) / batch))
    chain = streaming_chain(step)
    with connection.cursor() as cursor:
        if inputs:
            cursor.execute(_HEAD_ITEMS_SQL, {"execution": step.execution_id, "step": step.pk, "batch": batch,
                                             "inputs": json.dumps(inputs)})
        else:
            cursor.execute(f"INSERT INTO {_ITEMS} (execution_id, step_id, index, status, inputs, waiting, attempts,"
                           f" worker) VALUES (%s, %s, 0, '{StepStatus.PENDING.value}', '[]'::jsonb, 0, 0, '')",
                           [step.execution_id, step.pk])
        for follower in chain[1:]:
            cursor.execute(_WAITING_ITEMS_SQL, {"execution": step.execution_id, "step": follower.pk, "count": count})
    ComponentExecution.objects.filter(pk__in=[s.pk for s in chain]).update(item_count=count)
    # The inputs are the items' now: the step row keeps none until it finishes (then it has them
    # all again), so the claim of each item does not read a list of 100,000 ids with its step.
    ComponentExecution.objects.filter(pk=step.pk).update(
        input_data={**step.input_data, "inputs": None, "items": {**step.input_data["items"], "batch": batch}})
    drains_send_on_commit(step.execution_id, min(count, settings.ITEM_DRAINS_PER_RUN), queue=step_queue(step))
    for queue in {step_queue(follower) for follower in chain[1:]} - {step_queue(step)}:
        # a follower on another queue: one drain there, which waits for its first ready item
        drains_send_on_commit(step.execution_id, 1, queue=queue)
    return count


def _fail_unstarted(step: ComponentExecution, message: str) -> None:
    """A chain head whose inputs cannot be taken from its parents fails as a step would."""
    execution = lock_execution(step.execution_id)
    if step_transition(step=step, expected=StepStatus.PENDING, to=StepStatus.RUNNING, log=False, attempts=1,
                       started_at=timezone.now()):
        step_transition(step=step, expected=StepStatus.RUNNING, to=StepStatus.FAILED, attempt=1,
                        error_message=message[:10000], completed_at=timezone.now())
        skip_descendants(step)
        finish_if_done(execution)
