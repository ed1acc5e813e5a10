"""Schedules: a pipeline run at every occurrence of a cron expression in a time zone
(docs/automation.md#schedules).

A beat task (`schedules_tick`, every SCHEDULE_TICK_SECONDS) takes the active schedules whose
`next_run_at` has come (FOR UPDATE SKIP LOCKED: two beats, or a tick slower than the interval,
never take the same schedule), starts the due occurrences' runs through `execution_start` with the
idempotency key `schedule:<id>:<occurrence>`, so an occurrence starts at most one run whatever
happens, and moves `next_run_at` past now, in the same transaction. Missed occurrences (beat
down, schedule paused) follow the schedule's `catch_up`: `latest` (default) runs the latest one
once, `all` each of them (at most SCHEDULE_CATCH_UP_MAX, the latest ones), `none` none.
Occurrences are computed in the schedule's zone, so "0 9 * * *" in Europe/Paris is 09:00 there in
summer and winter (a time skipped by a DST change does not occur; a repeated one occurs once).
"""

from __future__ import annotations

import logging
import zoneinfo
from datetime import datetime, timedelta

from croniter import croniter
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from executions.automation_models import CatchUp, PipelineSchedule
from executions.services import execution_start
from imageflow.api.ownership import scope_to_user
from imageflow.exceptions import DagValidationError
from registry.models import Pipeline

logger = logging.getLogger(__name__)

SCHEDULE_FIELDS = ("name", "pipeline", "cron", "timezone", "inputs", "parameters", "catch_up", "active")


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(str(name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError({"timezone": [f"Not an IANA time zone: {name!r}."]}) from None


def schedule_occurrences(*, cron: str, zone: str, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """Occurrences in (after, until], oldest first, at most `limit` (the latest ones)."""
    it = croniter(cron, after.astimezone(_zone(zone)))
    found: list[datetime] = []
    while True:
        occurrence = it.get_next(datetime)
        if occurrence > until:
            return found
        found.append(occurrence)
        if len(found) > limit:
            found.pop(0)


def schedule_next(*, cron: str, zone: str, after: datetime) -> datetime:
    return croniter(cron, after.astimezone(_zone(zone))).get_next(datetime)


def schedule_check(schedule: PipelineSchedule, *, user) -> None:
    errors: dict[str, list[str]] = {}
    if not croniter.is_valid(str(schedule.cron or "")) or len(str(schedule.cron).split()) != 5:
        errors["cron"] = ["Five fields: minute hour day-of-month month day-of-week (e.g. '0 9 * * 1-5')."]
    try:
        _zone(schedule.timezone)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if schedule.pipeline_id and not scope_to_user(Pipeline.objects.filter(pk=schedule.pipeline_id), user=user).exists():
        errors["pipeline"] = ["No such pipeline."]
    if not isinstance(schedule.parameters, dict):
        errors["parameters"] = ["Must be an object {node_id: {...}}."]
    if not isinstance(schedule.inputs, list) or not schedule.inputs:
        errors["inputs"] = ["Name at least one input file."]
    if errors:
        raise ValidationError(errors)
    from executions.services import _check_input_files, _parse_file_ids
    from registry.dag import merge_parameters, validate_definition

    _check_input_files(_parse_file_ids(schedule.inputs), user)
    validate_definition(merge_parameters(Pipeline.objects.get(pk=schedule.pipeline_id).definition,
                                         schedule.parameters or None))


def _save(schedule: PipelineSchedule, *, user) -> PipelineSchedule:
    schedule_check(schedule, user=user)
    schedule.inputs = [str(i) for i in schedule.inputs]
    schedule.next_run_at = schedule_next(cron=schedule.cron, zone=schedule.timezone, after=timezone.now())
    schedule.full_clean()
    schedule.save()
    return schedule


def schedule_create(*, user, pipeline: Pipeline, name: str, cron: str, inputs: list, **fields) -> PipelineSchedule:
    """A new schedule; its first occurrence is the first one after now."""
    return _save(PipelineSchedule(created_by=user, pipeline=pipeline, name=name, cron=cron, inputs=inputs,
                                  **{k: v for k, v in fields.items() if k in SCHEDULE_FIELDS}), user=user)


def schedule_update(*, schedule: PipelineSchedule, user, data: dict) -> PipelineSchedule:
    """A change (or re-activation) counts from now: occurrences before it are not caught up."""
    for key, value in data.items():
        if key in SCHEDULE_FIELDS:
            setattr(schedule, key, value)
    return _save(schedule, user=user)


def schedule_delete(*, schedule: PipelineSchedule) -> None:
    schedule.delete()


def schedules_tick(*, now: datetime | None = None) -> dict:
    """Beat: start the runs of every due schedule (see the module's docstring)."""
    now = now or timezone.now()
    started = skipped = 0
    while True:
        with transaction.atomic():
            schedule = (PipelineSchedule.objects.select_for_update(skip_locked=True)
                        .filter(active=True, next_run_at__lte=now).select_related("pipeline", "created_by")
                        .order_by("next_run_at").first())
            if schedule is None:
                return {"started": started, "skipped": skipped}
            # next_run_at itself is the first occurrence not handled yet
            missed = schedule_occurrences(cron=schedule.cron, zone=schedule.timezone,
                                          after=schedule.next_run_at - timedelta(microseconds=1), until=now,
                                          limit=settings.SCHEDULE_CATCH_UP_MAX)
            due = {CatchUp.ALL: missed, CatchUp.LATEST: missed[-1:], CatchUp.NONE: []}[schedule.catch_up]
            grace = timedelta(seconds=settings.SCHEDULE_TICK_SECONDS * 2)
            if schedule.catch_up == CatchUp.NONE and missed and missed[-1] >= now - grace:
                due = missed[-1:]  # the occurrence of this very tick is not a missed one
            skipped += len(missed) - len(due)
            for occurrence in due:
                if _start(schedule, occurrence):
                    started += 1
            schedule.next_run_at = schedule_next(cron=schedule.cron, zone=schedule.timezone, after=now)
            schedule.save(update_fields=["next_run_at", "last_run_at", "last_execution", "last_error", "updated_at"])


def _start(schedule: PipelineSchedule, occurrence: datetime) -> bool:
    key = f"schedule:{schedule.pk}:{occurrence.astimezone(zoneinfo.ZoneInfo('UTC')).isoformat()}"
    try:
        with transaction.atomic():
            execution = execution_start(pipeline=schedule.pipeline, inputs=schedule.inputs,
                                        parameters=schedule.parameters or None, user=schedule.created_by,
                                        idempotency_key=key)
    except (ValidationError, DagValidationError) as exc:
        schedule.last_error = ("; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc))[:2000]
        logger.warning("schedule %s could not start its run of %s: %s", schedule.pk, occurrence, schedule.last_error)
        return False
    schedule.last_run_at, schedule.last_execution, schedule.last_error = occurrence, execution, ""
    return True
