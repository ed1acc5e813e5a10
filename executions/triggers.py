"""Triggers: runs started by new uploads that match a rule (docs/automation.md#triggers).

`files` announces each upload to the hooks the executions app registers
(files.services.file_upload_hook_provide), inside the upload's transaction: `trigger_file_uploaded`
writes one `TriggerFile` row per matching trigger there, so a match commits with its file or not
at all, whatever the broker does; (trigger, file) is unique, so a file announced twice is matched
once. After the commit a task per trigger (`trigger_process`) takes its pending files under the
trigger's row lock and starts the runs through `execution_start`, whose idempotency key names the
trigger and the file (or the batch's first file), so even a run started twice is one run. The
periodic sweep processes triggers with pending files: lost messages, and batches whose window
ran out.
"""

from __future__ import annotations

import fnmatch
import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from executions.automation_models import Trigger, TriggerFile, TriggerFileStatus
from executions.services import execution_start
from files.models import File
from imageflow.exceptions import DagValidationError
from imageflow.api.ownership import scope_to_user
from registry.models import Pipeline

logger = logging.getLogger(__name__)

PROCESS_TASK = "executions.automation_tasks.trigger_process"
TRIGGER_FIELDS = ("name", "pipeline", "organization", "active", "match_tag", "match_mime_type",
                  "match_name_pattern", "parameters", "batch_size", "batch_window_seconds")


# --- triggers ------------------------------------------------------------------------------------

def trigger_check(trigger: Trigger, *, user) -> None:
    errors: dict[str, list[str]] = {}
    if trigger.pipeline_id and not scope_to_user(Pipeline.objects.filter(pk=trigger.pipeline_id), user=user).exists():
        errors["pipeline"] = ["No such pipeline."]
    if trigger.organization_id is not None and not user.is_staff:
        from imageflow.orgs.models import Membership

        if not Membership.objects.filter(user=user, organization_id=trigger.organization_id).exists():
            errors["organization"] = ["You are not a member of this organization."]
    if not isinstance(trigger.parameters, dict):
        errors["parameters"] = ["Must be an object {node_id: {...}}."]
    if not 1 <= (trigger.batch_size or 0) <= 1000:
        errors["batch_size"] = ["Between 1 and 1000."]
    if trigger.match_mime_type and "/" not in trigger.match_mime_type:
        errors["match_mime_type"] = ["A MIME type such as image/png, or image/*."]
    if errors:
        raise ValidationError(errors)
    if trigger.pipeline_id:
        from registry.dag import merge_parameters, validate_definition

        pipeline = Pipeline.objects.get(pk=trigger.pipeline_id)
        validate_definition(merge_parameters(pipeline.definition, trigger.parameters or None))


def trigger_create(*, user, pipeline: Pipeline, name: str, **fields) -> Trigger:
    trigger = Trigger(created_by=user, pipeline=pipeline, name=name,
                      **{k: v for k, v in fields.items() if k in TRIGGER_FIELDS})
    trigger_check(trigger, user=user)
    trigger.full_clean()
    trigger.save()
    return trigger


def trigger_update(*, trigger: Trigger, user, data: dict) -> Trigger:
    for key, value in data.items():
        if key in TRIGGER_FIELDS:
            setattr(trigger, key, value)
    trigger_check(trigger, user=user)
    trigger.full_clean()
    trigger.save()
    return trigger


def trigger_delete(*, trigger: Trigger) -> None:
    trigger.delete()


# --- matching, in the upload's transaction -------------------------------------------------------

def trigger_matches(trigger: Trigger, file: File) -> bool:
    if trigger.match_mime_type:
        wanted = trigger.match_mime_type.lower()
        mime = (file.mime_type or "").lower()
        if not (mime == wanted or (wanted.endswith("/*") and mime.startswith(wanted[:-1]))):
            return False
    if trigger.match_name_pattern and not fnmatch.fnmatch((file.original_name or "").lower(),
                                                          trigger.match_name_pattern.lower()):
        return False
    if trigger.match_tag and trigger.match_tag not in ((file.metadata or {}).get("tags") or []):
        return False
    return True


def trigger_file_uploaded(file: File) -> list[int]:
    """Match a new upload against the active triggers of its owner and of the owner's
    organizations; record the matches (in the caller's transaction) and, after its commit, ask a
    worker to start their runs. Announcing the same file again matches nothing new."""
    if file.created_by_id is None:
        return []
    from imageflow.orgs.models import Membership

    orgs = Membership.objects.filter(user_id=file.created_by_id).values("organization_id")
    candidates = Trigger.objects.filter(Q(created_by_id=file.created_by_id, organization__isnull=True)
                                        | Q(organization_id__in=orgs), active=True)
    matched = [t for t in candidates if trigger_matches(t, file)]
    if not matched:
        return []
    TriggerFile.objects.bulk_create([TriggerFile(trigger=t, file=file) for t in matched], ignore_conflicts=True)
    ids = [t.pk for t in matched]
    transaction.on_commit(lambda: [_send_process(str(pk)) for pk in ids])
    return ids


def _send_process(trigger_id: str, *, countdown: float | None = None) -> None:
    try:
        current_app.tasks[PROCESS_TASK].apply_async(args=[trigger_id], countdown=countdown)
    except Exception as exc:  # broker down: the matches are pending rows, the sweep starts them
        logger.warning("could not enqueue trigger %s (%s: %s); the sweep will", trigger_id, type(exc).__name__, exc)


# --- starting the runs ---------------------------------------------------------------------------

def trigger_process(*, trigger_id) -> dict:
    """Start the runs of a trigger's pending files: one per file, or one per full batch and one
    for a batch whose oldest file waited batch_window_seconds; the rest wait (the task is sent
    again for when the window ends). Under the trigger's row lock, so two processes never form
    the same batch; each run's idempotency key names its trigger and (first) file."""
    started, failed, wait = 0, 0, None
    with transaction.atomic():
        trigger = Trigger.objects.select_for_update(no_key=True).filter(pk=trigger_id).select_related("pipeline").first()
        if trigger is None:
            return {"started": 0, "failed": 0}
        pending = list(TriggerFile.objects.filter(trigger=trigger, status=TriggerFileStatus.PENDING)
                       .select_related("file__created_by").order_by("id"))
        by_owner: dict = {}
        for match in pending:
            by_owner.setdefault(match.file.created_by_id, []).append(match)
        now = timezone.now()
        for owner_id, matches in by_owner.items():
            size = trigger.batch_size
            while matches:
                batch, rest = matches[:size], matches[size:]
                if len(batch) < size:
                    due = batch[0].created_at + timedelta(seconds=trigger.batch_window_seconds)
                    if due > now and trigger.active:
                        left = (due - now).total_seconds()
                        wait = left if wait is None else min(wait, left)
                        break
                if _start(trigger, batch):
                    started += 1
                else:
                    failed += 1
                matches = rest
    if wait is not None:
        _send_process(str(trigger_id), countdown=wait + 0.05)
    return {"started": started, "failed": failed}


def _start(trigger: Trigger, batch: list[TriggerFile]) -> bool:
    owner = batch[0].file.created_by
    key = f"trigger:{trigger.pk}:{batch[0].file_id}" if trigger.batch_size == 1 else \
        f"trigger:{trigger.pk}:batch:{batch[0].pk}"
    ids = [m.pk for m in batch]
    try:
        with transaction.atomic():
            execution = execution_start(pipeline=trigger.pipeline, inputs=[str(m.file_id) for m in batch],
                                        parameters=trigger.parameters or None, user=owner, idempotency_key=key)
    except (ValidationError, DagValidationError) as exc:
        # The pipeline no longer validates, a file went away: these files will not run (the
        # reason is on their match); an outage is raised, and the sweep tries again.
        reason = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        TriggerFile.objects.filter(pk__in=ids).update(status=TriggerFileStatus.FAILED, error_message=reason[:2000])
        logger.warning("trigger %s could not start a run: %s", trigger.pk, reason)
        return False
    TriggerFile.objects.filter(pk__in=ids).update(status=TriggerFileStatus.STARTED, execution=execution)
    return True


def triggers_sweep() -> int:
    """Beat: process every trigger with pending files (lost messages, batch windows run out)."""
    stale = timezone.now() - timedelta(seconds=settings.TRIGGER_SWEEP_INTERVAL_SECONDS)
    ids = list(TriggerFile.objects.filter(status=TriggerFileStatus.PENDING, created_at__lte=stale)
               .values_list("trigger_id", flat=True).distinct())
    for trigger_id in ids:
        try:
            trigger_process(trigger_id=trigger_id)
        except Exception:
            logger.exception("trigger %s could not be processed", trigger_id)
    return len(ids)
