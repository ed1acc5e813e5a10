"""The request commands of pipeline executions: start, cancel, retry.

The API, the admin, management commands and applied workflows call these; the step life cycle
a worker runs is the engine's (`executions/engine/`). Every status change is a guarded
transition (executions/engine/transitions.py), and steps are enqueued only once the change that
made them ready has committed (executions/engine/delivery.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from executions import logs
from executions.engine.delivery import enqueue_on_commit
from executions.engine.queues import component_queue
from executions.engine.transitions import execution_transition, step_transition
from executions.models import (
    FINISHED_EXECUTION_STATUSES,
    ComponentExecution,
    ExecutionStatus,
    PipelineExecution,
    StepItem,
    StepStatus,
)
from files.models import File
from imageflow.validators import UNSAFE_CHARACTERS
from registry.dag import ON_ITEM_ERROR_POLICIES, merge_parameters, validate_definition
from registry.models import ComponentKind, Pipeline


# --- start ---------------------------------------------------------------------------------------

def _parse_file_ids(inputs: Any) -> list[uuid.UUID]:
    if not isinstance(inputs, (list, tuple)):
        raise ValidationError({"inputs": ["Must be a list of file ids."]})
    ids, bad = [], []
    for value in inputs:
        try:
            ids.append(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
        except ValueError:
            bad.append(str(value))
    if bad:
        raise ValidationError({"inputs": [f"Not a file id: {', '.join(bad)}."]})
    return ids


def _check_input_files(ids: list[uuid.UUID], user) -> None:
    """Another user's file is answered exactly as a file that does not exist (the API's 404
    rule), so ids cannot be probed: one query scoped to what the user may see, one message."""
    visible = File.objects.filter(id__in=ids)
    if user is not None and not (user.is_staff or user.is_superuser):
        visible = visible.filter(created_by_id=user.pk)
    found = set(visible.values_list("id", flat=True))
    unknown = [str(i) for i in ids if i not in found]
    if unknown:
        raise ValidationError({"inputs": [f"No such file: {', '.join(unknown)}."]})


def _existing_for_key(user, idempotency_key: str | None) -> PipelineExecution | None:
    if not idempotency_key or user is None:
        return None
    return PipelineExecution.objects.filter(created_by=user, idempotency_key=idempotency_key).first()


def execution_start(*, pipeline: Pipeline, inputs: list, parameters: dict | None = None, user,
                    idempotency_key: str | None = None, on_item_error: str | None = None,
                    use_cache: bool = True) -> PipelineExecution:
    """Validate the pipeline's current definition and create a pending run with one step per node;
    the root steps are enqueued once the transaction commits. The same (user, idempotency_key)
    returns the existing run instead of creating another.

    A step of a map component is itemized: its inputs run as items (executions/engine/fanout.py),
    made by the worker that takes the step, so the request writes one row per node whatever the
    number of inputs. A map step whose only edge (all outputs) comes from another map step streams
    from it: its item i runs as soon as the parent's item i is done. `on_item_error` (else the
    pipeline's, else ON_ITEM_ERROR_DEFAULT) and `use_cache` travel with every step."""
    # The key is checked before it is looked up: a NUL cannot even be sent to PostgreSQL.
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or len(idempotency_key) > 255
                                        or UNSAFE_CHARACTERS.search(idempotency_key)):
        raise ValidationError({"idempotency_key": ["Must be a string of at most 255 characters, "
                                                   "without control characters."]})
    existing = _existing_for_key(user, idempotency_key)
    if existing is not None:
        return existing
    file_ids = _parse_file_ids(inputs)
    _check_input_files(file_ids, user)
    pipeline = Pipeline.objects.get(pk=pipeline.pk)  # the current definition and its version, together
    dag = validate_definition(merge_parameters(pipeline.definition, parameters))
    run_inputs = [str(i) for i in file_ids]
    if on_item_error is not None and on_item_error not in ON_ITEM_ERROR_POLICIES:
        raise ValidationError({"on_item_error": [f"Must be one of {', '.join(ON_ITEM_ERROR_POLICIES)}."]})
    options = {"on_item_error": on_item_error or dag.on_item_error or settings.ON_ITEM_ERROR_DEFAULT,
               "use_cache": bool(use_cache)}
    plans = _items_plans(dag, len(run_inputs))

    with transaction.atomic():
        try:
            with transaction.atomic():
                execution = PipelineExecution.objects.create(
                    pipeline=pipeline, pipeline_version=pipeline.version, status=ExecutionStatus.PENDING,
                    input_data={"inputs": run_inputs, "parameters": parameters or {}, **options,
                                **_request_id_field()},
                    created_by=user, idempotency_key=idempotency_key,
                )
        except IntegrityError:
            winner = _existing_for_key(user, idempotency_key)
            if winner is None:
                raise
            return winner
        steps = [
            ComponentExecution(
                execution=execution, component=node.component, node_id=node.id, status=StepStatus.PENDING,
                waiting_parents=len(dag.parents[node.id]),
                input_data={
                    "component": {"name": node.component.name, "version": node.component.version,
                                  "runner": node.component.runner},
                    "parameters": node.parameters,
                    "parents": dag.parents[node.id],
                    "edges": [edge.as_dict() for edge in dag.incoming[node.id]],
                    "inputs": run_inputs if not dag.parents[node.id] else None,
                    **options,
                    **plans.get(node.id, {}),
                    **_route(node.component),
                },
            )
            for node in dag.nodes.values()
        ]
        ComponentExecution.objects.bulk_create(steps)
        # In the run's transaction, so it is stamped before anything a worker logs for the run.
        logs.emit(execution_id=execution.pk, level="info",
                  message=f"execution created: pipeline {pipeline.name} v{pipeline.version}, {len(steps)} steps, "
                          f"{len(run_inputs)} input files", event="execution_created")
        enqueue_on_commit([s.pk for s in steps if not dag.parents[s.node_id]], _queues(steps))
    return execution


def _queues(steps: list[ComponentExecution]) -> dict:
    return {s.pk: (s.input_data or {}).get("queue") for s in steps}


def _route(component) -> dict:
    """{"queue": name} for a component whose resource requirements need particular workers."""
    queue = component_queue(component)
    return {"queue": queue} if queue else {}


def _items_plans(dag, input_count: int) -> dict[str, dict]:
    """node id -> {"items": {"streams_from": parent or None}} for the map steps that run as items.

    A map step keeps its input count, so along a chain of map steps from a root it is known at the
    start: a chain over fewer than 2 images has nothing to fan out and runs as plain steps (items
    would only add their bookkeeping to each step). A map step after anything else (a merge,
    several parents, an edge picking outputs) runs as items, as many as its inputs turn out to be.
    A map step whose only edge carries all the outputs of an itemized map step streams from it."""
    plans: dict[str, dict] = {}
    known: dict[str, int | None] = {}  # node id -> its input count when the start can know it
    for node_id in dag.order:
        edges = dag.incoming[node_id]
        is_map = dag.nodes[node_id].component.kind == ComponentKind.MAP
        single = (len(edges) == 1 and edges[0].outputs is None
                  and dag.nodes[edges[0].parent].component.kind == ComponentKind.MAP)
        if not edges:
            known[node_id] = input_count
        else:
            known[node_id] = known[edges[0].parent] if single else None
        if not is_map or not settings.STEP_ITEMS_ENABLED:
            continue
        if known[node_id] is not None and known[node_id] < 2:
            continue
        plans[node_id] = {"items": {"streams_from": edges[0].parent if single and edges[0].parent in plans
                                    else None}}
    return plans


def _request_id_field() -> dict:
    """The X-Request-ID of the API call starting the run, when there is one: the log shipper adds
    it to the `extra` of every log record of the run (imageflow/request_id.py)."""
    from imageflow.request_id import current_request_id

    request_id = current_request_id()
    return {"request_id": request_id} if request_id else {}


# --- cancel and retry ----------------------------------------------------------------------------

def execution_cancel(*, execution: PipelineExecution, user=None) -> PipelineExecution:
    """Cancel a pending or running run: no step starts any more, pending and running steps become
    cancelled, and a running step's result is discarded when its worker reports it."""
    with transaction.atomic():
        # NO KEY: a claim or completion committing meanwhile holds a KEY SHARE lock on this row (the
        # foreign key of its log line, checked at commit) while it holds its step: FOR UPDATE would
        # wait for it while it waits for us.
        locked = PipelineExecution.objects.select_for_update(no_key=True).get(pk=execution.pk)
        if locked.status in FINISHED_EXECUTION_STATUSES:
            raise ValidationError({"status": [f"The execution is already {locked.status}."]})
        now = timezone.now()
        execution_transition(execution_id=locked.pk, expected=locked.status, to=ExecutionStatus.CANCELLED,
                             completed_at=now, error_message=f"Cancelled by {user}" if user else "Cancelled")
        # FOR UPDATE: a claim that commits meanwhile is waited for and its step seen as running
        # (and cancelled as such), instead of being missed as no longer pending.
        for step in locked.steps.select_for_update(no_key=True).filter(
                status__in=[StepStatus.PENDING, StepStatus.RUNNING]).only("id", "execution_id", "node_id", "status"):
            step_transition(step=step, expected=step.status, to=StepStatus.CANCELLED, completed_at=now)
        # Items: none starts any more (the claim checks the run), and a running item's claim is
        # lost, so its worker stops at its next image and its result is discarded.
        StepItem.objects.filter(execution_id=locked.pk, status__in=[StepStatus.PENDING, StepStatus.RUNNING]).update(
            status=StepStatus.CANCELLED, completed_at=now, error_message="cancelled with the run")
    logs.emit(execution_id=execution.pk, level="warning", message=f"execution cancelled by {user or 'system'}",
              event="execution_cancelled")
    execution.refresh_from_db()
    return execution


def execution_retry(*, execution: PipelineExecution, user) -> PipelineExecution:
    """Re-run a failed (or cancelled) run as a new run of the same steps and inputs: completed
    steps are not run again, their outputs are reused (recorded in `reused_from`). Of a map step,
    only the items that did not complete run again (failed, skipped, cancelled), the others are
    reused (StepItem.reused_from); so a run that completed past failed items (on_item_error
    "continue") can be retried too. A run is retried once: asking again (a double click, two
    admins) returns the retry that exists."""
    with transaction.atomic():
        execution = PipelineExecution.objects.select_for_update(no_key=True).get(pk=execution.pk)
        old_steps = list(execution.steps.all())
        partial = any(old.items_failed or old.items_skipped for old in old_steps)
        if execution.status not in {ExecutionStatus.FAILED, ExecutionStatus.CANCELLED} and not (
                execution.status == ExecutionStatus.COMPLETED and partial):
            raise ValidationError(
                {"status": [f"Only a failed or cancelled execution can be retried, not {execution.status}."]})
        existing = execution.retries.order_by("created_at").first()
        if existing is not None:
            return existing
        now = timezone.now()
        retry = PipelineExecution.objects.create(
            pipeline_id=execution.pipeline_id, pipeline_version=execution.pipeline_version,
            status=ExecutionStatus.PENDING, input_data=execution.input_data, created_by=user, retry_of=execution,
            workflow_id=execution.workflow_id, workflow_version=execution.workflow_version,  # applied workflows
        )
        plan = _retry_plan(old_steps)
        new_steps, copies = [], []
        for old in old_steps:
            data = dict(old.input_data or {})
            if plan[old.node_id] == "reuse":
                new_steps.append(ComponentExecution(
                    execution=retry, component_id=old.component_id, node_id=old.node_id,
                    status=StepStatus.COMPLETED, input_data=data,
                    output_data={**(old.output_data or {}), "reused": True}, reused_from=old.reused_from or old,
                    execution_time_ms=0, resource_usage={"cpu_seconds": 0.0, "peak_memory_bytes": 0},
                    started_at=now, completed_at=now, item_count=old.item_count,
                    items_completed=old.items_completed, items_cached=old.items_cached,
                ))
                continue
            if data.get("parents") and plan[old.node_id] != "items":
                data["inputs"] = None
            waiting = sum(1 for parent in data.get("parents") or [] if plan.get(parent) != "reuse")
            step = ComponentExecution(execution=retry, component_id=old.component_id, node_id=old.node_id,
                                      status=StepStatus.PENDING, input_data=data, waiting_parents=waiting)
            if plan[old.node_id] == "items":
                step.item_count = old.item_count
                copies.append((old, step))
            new_steps.append(step)
        ComponentExecution.objects.bulk_create(new_steps)
        by_node = {old.node_id: old for old in old_steps}
        for old, step in copies:
            streams_from = ((old.input_data or {}).get("items") or {}).get("streams_from")
            step.items_completed = _retry_items_copy(old=old, new=step, retry=retry,
                                                     parent=by_node.get(streams_from) if streams_from else None)
            ComponentExecution.objects.filter(pk=step.pk).update(items_completed=step.items_completed)
        status = {s.node_id: s.status for s in new_steps}
        ready = [s.pk for s in new_steps if s.status == StepStatus.PENDING
                 and all(status.get(p) == StepStatus.COMPLETED for p in s.input_data.get("parents", []))]
        reused = sum(1 for s in new_steps if s.status == StepStatus.COMPLETED)
        reused_items = sum(s.items_completed for _, s in copies)
        logs.emit(execution_id=retry.pk, level="info",
                  message=f"retry of {execution.pk}: {reused} completed steps reused, {len(new_steps) - reused} to run"
                          + (f" ({reused_items} completed items of them reused)" if copies else ""),
                  event="execution_retry", retry_of=str(execution.pk))
        enqueue_on_commit(ready, _queues(new_steps))
    return retry


def _retry_plan(old_steps: list[ComponentExecution]) -> dict[str, str]:
    """node id -> "reuse" (completed with every item, after reused parents), "items" (a map step
    whose completed items are reused and the others run again: its inputs are the same, being a
    root, streaming from a step whose items are copied too, or after reused parents) or "run"."""
    by_node = {s.node_id: s for s in old_steps}
    plan: dict[str, str] = {}

    def decide(step: ComponentExecution) -> str:
        if step.node_id in plan:
            return plan[step.node_id]
        data = step.input_data or {}
        parents = [decide(by_node[p]) for p in data.get("parents") or [] if p in by_node]
        clean = step.status == StepStatus.COMPLETED and not step.items_failed and not step.items_skipped
        streams_from = (data.get("items") or {}).get("streams_from")
        if clean and all(p == "reuse" for p in parents):
            plan[step.node_id] = "reuse"
        elif step.item_count is not None and (all(p == "reuse" for p in parents) or (
                streams_from and decide(by_node[streams_from]) in {"items", "reuse"})):
            plan[step.node_id] = "items"
        else:
            plan[step.node_id] = "run"
        return plan[step.node_id]

    for step in old_steps:
        decide(step)
    return plan


_RETRY_ITEMS_SQL = f"""
INSERT INTO {StepItem._meta.db_table}
       (execution_id, step_id, index, status, inputs, outputs, waiting, attempts, worker, reused_from_id,
        started_at, completed_at, execution_time_ms, metrics)
SELECT %(execution)s, %(step)s, i.index,
       CASE WHEN i.status = 'completed' THEN 'completed' ELSE 'pending' END,
       CASE WHEN i.status = 'completed' THEN i.inputs
            WHEN p.id IS NULL THEN i.inputs
            WHEN p.status = 'completed' THEN coalesce(i.inputs, p.outputs) END,
       CASE WHEN i.status = 'completed' THEN i.outputs END,
       CASE WHEN i.status <> 'completed' AND p.id IS NOT NULL AND p.status <> 'completed' THEN 1 ELSE 0 END,
       0, '', CASE WHEN i.status = 'completed' THEN coalesce(i.reused_from_id, i.id) END,
       CASE WHEN i.status = 'completed' THEN %(now)s END, CASE WHEN i.status = 'completed' THEN %(now)s END,
       CASE WHEN i.status = 'completed' THEN 0 END,
       CASE WHEN i.status = 'completed'
            THEN coalesce(i.metrics, '{{}}'::jsonb) || jsonb_build_object('reused', true, 'decoded', 0) END
  FROM {StepItem._meta.db_table} i
  LEFT JOIN {StepItem._meta.db_table} p ON p.step_id = %(parent)s AND p.index = i.index
 WHERE i.step_id = %(old)s
RETURNING status
"""


def _retry_items_copy(*, old: ComponentExecution, new: ComponentExecution, retry: PipelineExecution,
                      parent: ComponentExecution | None) -> int:
    """Copy the items of `old` into `new`: completed ones as completed (reused), the others pending
    (waiting for the parent's item when it must run again). Returns how many were reused."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(_RETRY_ITEMS_SQL, {"execution": retry.pk, "step": new.pk, "old": old.pk,
                                          "parent": parent.pk if parent else None, "now": timezone.now()})
        return sum(1 for (status,) in cursor.fetchall() if status == StepStatus.COMPLETED)
