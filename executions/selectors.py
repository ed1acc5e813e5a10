"""Reads of executions that are more than `objects.get`."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from executions.models import (
    FINISHED_STEP_STATUSES,
    ComponentExecution,
    PipelineExecution,
    StepStatus,
    progress_percentage,
)


def execution_progress(execution: PipelineExecution) -> dict:
    """{"completed", "failed", "skipped", "cancelled", "running", "pending", "finished", "total",
    "percentage"}: `percentage` counts every finished step (completed, failed, skipped, cancelled)."""
    counts = dict(execution.steps.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    total = sum(counts.values())
    finished = sum(counts.get(status, 0) for status in FINISHED_STEP_STATUSES)
    progress = {status.value: counts.get(status.value, 0) for status in StepStatus}
    progress.update(total=total, finished=finished,
                    percentage=progress_percentage(finished, total))
    return progress


def execution_steps(execution: PipelineExecution) -> QuerySet[ComponentExecution]:
    return execution.steps.select_related("component").order_by("created_at", "node_id")
