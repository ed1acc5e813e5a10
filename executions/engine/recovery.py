"""Crash recovery: the periodic sweep that re-delivers what a lost worker, a lost message or a
refusing broker left behind, and finishes runs whose end was never committed."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from executions import logs
from executions.engine.delivery import step_deliver
from executions.engine.fanout import drains_send
from executions.engine.transitions import finish_run_if_done
from executions.models import ComponentExecution, ExecutionStatus, PipelineExecution, StepItem, StepStatus


def execution_sweep() -> dict[str, int]:
    """Re-deliver steps whose worker went silent past the heartbeat timeout (the delivery takes
    them over or fails them after STEP_MAX_ATTEMPTS), and ready steps whose message was lost."""
    close_old_connections()
    cutoff = timezone.now() - timedelta(seconds=settings.STEP_HEARTBEAT_TIMEOUT_SECONDS)
    # (An itemized step keeps no heartbeat of its own: its items do, below.)
    stale = list(ComponentExecution.objects.filter(
        status=StepStatus.RUNNING, execution__status__in=[ExecutionStatus.PENDING, ExecutionStatus.RUNNING],
    ).filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)).exclude(input_data__has_key="items")
        .values_list("id", "execution_id", "node_id", "input_data__queue"))
    # Pending steps silent past the cutoff (a lost message) and those whose task could not be sent
    # (enqueue_failed: at once).
    waiting = ComponentExecution.objects.filter(
        Q(updated_at__lt=cutoff) | Q(enqueue_failed=True), status=StepStatus.PENDING,
        execution__status__in=[ExecutionStatus.PENDING, ExecutionStatus.RUNNING],
    ).only("id", "execution_id", "node_id", "input_data")[:1000]
    ready = []
    for step in waiting:
        parents = step.input_data.get("parents", []) if step.input_data else []
        if not parents or ComponentExecution.objects.filter(
                execution_id=step.execution_id, node_id__in=parents, status=StepStatus.COMPLETED).count() == len(parents):
            ready.append((step.pk, step.execution_id, step.node_id, step.input_data.get("queue")))
    for step_id, execution_id, node_id, _ in stale:
        logs.emit(execution_id=execution_id, step_id=step_id, node_id=node_id, level="warning",
                  message=f"sweep: step {node_id} silent for over {settings.STEP_HEARTBEAT_TIMEOUT_SECONDS}s; re-queued",
                  event="sweep_requeue")
    for step_id, execution_id, node_id, _ in ready:
        logs.emit(execution_id=execution_id, step_id=step_id, node_id=node_id, level="warning",
                  message=f"sweep: ready step {node_id} was never picked up; re-queued", event="sweep_requeue")
    for step_id, _, _, queue in stale + ready:
        step_deliver(step_id, queue)
    if ready:
        ComponentExecution.objects.filter(pk__in=[step_id for step_id, _, _, _ in ready], enqueue_failed=True).update(
            enqueue_failed=False)
    drained = _offer_stranded_items(cutoff)
    # Runs whose steps have all finished but which are still open: the end of a run is a commit
    # of its own after the last completion, and a crash in between (or of PostgreSQL, losing it)
    # leaves the run open with nothing left to deliver.
    open_steps = ComponentExecution.objects.filter(
        execution=OuterRef("pk"), status__in=[StepStatus.PENDING, StepStatus.RUNNING])
    stranded = list(PipelineExecution.objects.filter(
        status__in=[ExecutionStatus.PENDING, ExecutionStatus.RUNNING], updated_at__lt=cutoff,
    ).filter(Exists(ComponentExecution.objects.filter(execution=OuterRef("pk")))).exclude(Exists(open_steps))
        .order_by().values_list("id", flat=True)[:1000])
    for execution_id in stranded:
        logs.emit(execution_id=execution_id, level="warning",
                  message="sweep: every step had finished but the run was still open; finishing it",
                  event="sweep_finish")
        finish_run_if_done(execution_id)
    return {"stale": len(stale), "ready": len(ready), "finished": len(stranded), "items_offered": drained}


def _offer_stranded_items(cutoff) -> int:
    """Runs with items nobody is running: an item whose worker went silent, or ready items while no
    item of the run has a fresh heartbeat and no step of it moved since the cutoff (their drain
    messages were lost, or the broker refused them). Each gets drains again; a drain puts a
    silent item back to pending (items_recover). Extra drains find nothing and end."""
    active = [ExecutionStatus.PENDING, ExecutionStatus.RUNNING]
    silent = set(StepItem.objects.filter(status=StepStatus.RUNNING, heartbeat_at__lt=cutoff,
                                         execution__status__in=active)
                 .order_by().values_list("execution_id", flat=True).distinct()[:1000])
    ready = StepItem.objects.filter(execution=OuterRef("pk"), status=StepStatus.PENDING, waiting=0)
    fresh = StepItem.objects.filter(execution=OuterRef("pk"), status=StepStatus.RUNNING, heartbeat_at__gte=cutoff)
    moved = ComponentExecution.objects.filter(execution=OuterRef("pk"), updated_at__gte=cutoff)
    idle = set(PipelineExecution.objects.filter(status__in=active).filter(Exists(ready)).exclude(Exists(fresh))
               .exclude(Exists(moved)).order_by().values_list("id", flat=True)[:1000])
    for execution_id in silent | idle:
        logs.emit(execution_id=execution_id, level="warning", event="sweep_items",
                  message="sweep: items of the run were left waiting or silent; offered to drains again")
        drains_send(execution_id)
    return len(silent | idle)
