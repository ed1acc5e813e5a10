"""The state machine: guarded moves of a run and of its steps, and the moves they entail.

Every status change is a conditional `UPDATE ... WHERE status=<expected>` whose row count says
who won (and, for a running step, `attempts=<the claimant's attempt>`, so a worker that lost its
claim can never complete or fail the step). Bookkeeping that must see the other steps of the run
consistently (which steps a failure skips, is the run finished) happens under a row lock of the
execution (`lock_execution`), so two steps finishing at once cannot both miss the run's end.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from executions import logs, signals
from executions.engine.errors import InvalidTransition
from executions.models import (
    EXECUTION_TRANSITIONS,
    FINISHED_STEP_STATUSES,
    STEP_TRANSITIONS,
    ComponentExecution,
    ExecutionStatus,
    PipelineExecution,
    StepStatus,
)


def send_on_commit(signal, **kwargs) -> None:
    transaction.on_commit(lambda: signal.send_robust(sender=PipelineExecution, **kwargs))


def execution_transition(*, execution_id, expected: str, to: str, **fields: Any) -> bool:
    """Move an execution from `expected` to `to` if it is still `expected`; True if this call won."""
    if to not in EXECUTION_TRANSITIONS[expected]:
        raise InvalidTransition(f"execution {expected} -> {to} is not allowed")
    # One UPDATE is atomic by itself; on_commit runs at once in autocommit, or after the caller's commit.
    won = PipelineExecution.objects.filter(pk=execution_id, status=expected).update(status=to, **fields) == 1
    if won:
        send_on_commit(signals.execution_status_changed, execution_id=execution_id, status=to,
                        previous_status=expected)
        logs.emit(execution_id=execution_id, level="info", message=f"execution {expected} -> {to}",
                  event="execution_status", status=to, previous_status=expected)
    return won


def step_transition(*, step: ComponentExecution, expected: str, to: str, attempt: int | None = None,
                    log: bool = True, **fields: Any) -> bool:
    """Move a step from `expected` to `to`; with `attempt`, only the claimant of that attempt may.
    `log=False` when the caller writes its own, more telling log line (started, completed, failed)."""
    if to not in STEP_TRANSITIONS[expected]:
        raise InvalidTransition(f"step {expected} -> {to} is not allowed")
    query = ComponentExecution.objects.filter(pk=step.pk, status=expected)
    if attempt is not None:
        query = query.filter(attempts=attempt)
    won = query.update(status=to, **fields) == 1
    if won:
        send_on_commit(signals.step_status_changed, execution_id=step.execution_id, step_id=step.pk,
                        node_id=step.node_id, status=to, previous_status=expected)
        step.status = to
    if won and log:
        logs.emit(execution_id=step.execution_id, level="info", message=f"step {step.node_id}: {expected} -> {to}",
                  step_id=step.pk, node_id=step.node_id, event="step_status", status=to, previous_status=expected)
    return won


def lock_execution(execution_id) -> PipelineExecution:
    # NO KEY, as in execution_cancel: the row's KEY SHARE locks (log lines' foreign keys) do not wait.
    return PipelineExecution.objects.select_for_update(no_key=True).only("id", "status").get(pk=execution_id)


def finish_run_if_done(execution_id) -> None:
    """Finish the run if none of its steps is left, under the run's row lock. Called after a
    completion has committed: if this never happens (the worker died in between, or a PostgreSQL
    crash lost this commit), the redelivered task and the sweep call it again."""
    with transaction.atomic():
        execution = lock_execution(execution_id)
        if execution.status in {ExecutionStatus.PENDING, ExecutionStatus.RUNNING}:
            finish_if_done(execution)


def steps_graph(execution_id) -> list[ComponentExecution]:
    return list(ComponentExecution.objects.filter(execution_id=execution_id).only(
        "id", "execution_id", "node_id", "status", "input_data", "component_id", "item_count", "items_failed",
        "items_skipped"))


def descendants(step: ComponentExecution, steps: list[ComponentExecution]) -> list[ComponentExecution]:
    """The steps after `step` among the run's `steps` (its children, theirs, ...), each once."""
    children: dict[str, list[ComponentExecution]] = {}
    for s in steps:
        for parent in (s.input_data or {}).get("parents", []):
            children.setdefault(parent, []).append(s)
    found, queue, seen = [], [step.node_id], {step.node_id}
    while queue:
        for child in children.get(queue.pop(), []):
            if child.node_id not in seen:
                seen.add(child.node_id)
                found.append(child)
                queue.append(child.node_id)
    return found


def skip_descendants(step: ComponentExecution) -> None:
    for child in descendants(step, steps_graph(step.execution_id)):
        if child.status == StepStatus.PENDING:
            step_transition(step=child, expected=StepStatus.PENDING, to=StepStatus.SKIPPED,
                            completed_at=timezone.now(),
                            error_message=f"skipped: upstream step {step.node_id} failed")


def finish_if_done(execution: PipelineExecution) -> None:
    """Called with the execution row locked."""
    steps = steps_graph(execution.pk)
    if any(s.status not in FINISHED_STEP_STATUSES for s in steps):
        return
    now = timezone.now()
    if execution.status == ExecutionStatus.PENDING:
        execution_transition(execution_id=execution.pk, expected=ExecutionStatus.PENDING, to=ExecutionStatus.RUNNING,
                             started_at=now)
    failed = [s for s in steps if s.status == StepStatus.FAILED]
    if failed:
        first = ComponentExecution.objects.select_related("component").filter(pk__in=[s.pk for s in failed]).order_by(
            "completed_at").first()
        execution_transition(
            execution_id=execution.pk, expected=ExecutionStatus.RUNNING, to=ExecutionStatus.FAILED, completed_at=now,
            error_message=f"node {first.node_id!r} ({first.component}) failed: {first.error_message}"
                          + (f" (and {len(failed) - 1} other failed steps)" if len(failed) > 1 else ""),
        )
        return
    parents = {p for s in steps for p in (s.input_data or {}).get("parents", [])}
    leaves = [s.node_id for s in steps if s.node_id not in parents]
    outputs = {node_id: files for node_id, files in ComponentExecution.objects.filter(
        execution_id=execution.pk, node_id__in=leaves).values_list("node_id", "output_data__files")}
    output_data = {"outputs": outputs}
    if any(s.items_failed or s.items_skipped for s in steps):  # on_item_error "continue"
        output_data.update(failed_items_summary(execution.pk, steps))
    execution_transition(execution_id=execution.pk, expected=ExecutionStatus.RUNNING, to=ExecutionStatus.COMPLETED,
                         completed_at=now, output_data=output_data)


FAILED_ITEMS_LISTED = 1000


def failed_items_summary(execution_id, steps: list[ComponentExecution]) -> dict:
    """The failed items of a run that went on past them, by input: their node, item, input files
    and error (the first FAILED_ITEMS_LISTED), and how many items failed and were skipped."""
    from executions.models import StepItem

    nodes = {s.pk: s.node_id for s in steps}
    listed = [{"node": nodes.get(step_id), "item": index, "inputs": inputs or [], "error": error}
              for step_id, index, inputs, error in StepItem.objects.filter(
                  execution_id=execution_id, status=StepStatus.FAILED).order_by("index", "step_id").values_list(
                  "step_id", "index", "inputs", "error_message")[:FAILED_ITEMS_LISTED]]
    return {"failed_items": listed, "items_failed": sum(s.items_failed for s in steps),
            "items_skipped": sum(s.items_skipped for s in steps)}
