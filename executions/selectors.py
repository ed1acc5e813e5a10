"""Reads of executions that are more than `objects.get`."""

from __future__ import annotations

from django.db.models import Count, F, QuerySet

from executions.models import (
    FINISHED_STEP_STATUSES,
    ComponentExecution,
    PipelineExecution,
    StepStatus,
    progress_percentage,
)


def execution_progress(execution: PipelineExecution, *, steps: list[ComponentExecution] | None = None) -> dict:
    """{"completed", "failed", "skipped", "cancelled", "running", "pending", "finished", "total",
    "percentage"}: `percentage` counts every finished step (completed, failed, skipped, cancelled).
    Counted from `steps` when the caller has loaded them all already (no second query)."""
    if steps is not None:
        counts: dict[str, int] = {}
        for step in steps:
            counts[step.status] = counts.get(step.status, 0) + 1
    else:
        counts = dict(execution.steps.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    total = sum(counts.values())
    finished = sum(counts.get(status, 0) for status in FINISHED_STEP_STATUSES)
    progress = {status.value: counts.get(status.value, 0) for status in StepStatus}
    progress.update(total=total, finished=finished,
                    percentage=progress_percentage(finished, total))
    return progress


def execution_steps(execution: PipelineExecution) -> QuerySet[ComponentExecution]:
    """A run's steps in order, each with its component's name and version as `component_name` and
    `component_version` (annotated: a status poll neither loads the component rows, their JSON
    Schemas included, nor pays for a join's second model per row)."""
    return (execution.steps.annotate(component_name=F("component__name"), component_version=F("component__version"))
            .order_by("created_at", "node_id"))

