"""Automation (issue #16): triggers that start runs on new files, and webhooks that announce
what runs did. In the executions app because a trigger starts runs (execution_start) and a
webhook hangs off the run's status signals; both may reference registry and files, not the
other way round (docs/automation.md)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Now

from imageflow.models import TimestampedModel, choices_check


# --- triggers ------------------------------------------------------------------------------------

class Trigger(TimestampedModel):
    """Run `pipeline` on every new upload that matches the rule: one run per file (batch_size 1)
    or one run per batch of up to batch_size files, started when the batch is full or when its
    oldest file has waited batch_window_seconds. A user's trigger matches their own uploads; an
    organization's matches the uploads of its members. A run belongs to the uploader."""

    name = models.CharField(max_length=255)
    pipeline = models.ForeignKey("registry.Pipeline", on_delete=models.CASCADE, related_name="triggers")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_column="created_by",
                                   related_name="triggers")
    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, null=True, blank=True,
                                     related_name="triggers",
                                     help_text="Set: the uploads of every member match, not only the owner's.")
    active = models.BooleanField(default=True)
    match_tag = models.CharField(max_length=100, blank=True, default="",
                                 help_text="Only uploads carrying this tag (empty: any).")
    match_mime_type = models.CharField(max_length=100, blank=True, default="",
                                       help_text="image/png, or image/* (empty: any).")
    match_name_pattern = models.CharField(max_length=255, blank=True, default="",
                                          help_text="A glob over the file's name, case-insensitive: *.jpg, "
                                                    "scan-*.tif (empty: any).")
    parameters = models.JSONField(default=dict, blank=True, help_text="Per-run parameter overrides {node_id: {...}}.")
    batch_size = models.PositiveIntegerField(default=1, help_text="1: one run per file; N: one run per N files.")
    batch_window_seconds = models.PositiveIntegerField(
        default=60, help_text="With batch_size > 1: a batch that is not full starts this long after its first file.")

    class Meta:
        db_table = "triggers"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(batch_size__gte=1, batch_size__lte=1000),
                                   name="triggers_batch_size_range"),
        ]
        indexes = [models.Index(fields=["created_by"], name="triggers_owner_idx"),
                   models.Index(fields=["organization"], name="triggers_org_idx")]

    def __str__(self) -> str:
        return self.name


class TriggerFileStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    STARTED = "started", "Started"
    FAILED = "failed", "Failed"


class TriggerFile(models.Model):
    """A file a trigger matched: written in the upload's transaction (so a match is never lost,
    broker down or not), unique per (trigger, file) (so a file notified twice is matched once),
    and given the run that took it."""

    id = models.BigAutoField(primary_key=True)
    trigger = models.ForeignKey(Trigger, on_delete=models.CASCADE, related_name="matches", db_index=False)
    file = models.ForeignKey("files.File", on_delete=models.CASCADE, related_name="trigger_matches")
    status = models.CharField(max_length=20, choices=TriggerFileStatus.choices, default=TriggerFileStatus.PENDING)
    execution = models.ForeignKey("executions.PipelineExecution", on_delete=models.SET_NULL, null=True, blank=True,
                                  related_name="trigger_files")
    error_message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        db_table = "trigger_files"
        ordering = ["trigger", "id"]
        constraints = [
            models.UniqueConstraint(fields=["trigger", "file"], name="trigger_files_uniq"),
            choices_check(field="status", choices=TriggerFileStatus, name="trigger_files_status_valid"),
        ]
        indexes = [models.Index(fields=["trigger", "id"], condition=models.Q(status="pending"),
                                name="trigger_files_pending_idx")]

    def __str__(self) -> str:
        return f"{self.file_id} for trigger {self.trigger_id} ({self.status})"


# --- schedules -----------------------------------------------------------------------------------

class CatchUp(models.TextChoices):
    LATEST = "latest", "Run the latest missed occurrence once"
    ALL = "all", "Run every missed occurrence (up to SCHEDULE_CATCH_UP_MAX)"
    NONE = "none", "Skip missed occurrences"


class PipelineSchedule(TimestampedModel):
    """Run `pipeline` on `inputs` at every occurrence of a cron expression in a time zone
    (executions/schedules.py). Each occurrence starts at most one run: the run's idempotency key
    names the schedule and the occurrence. `next_run_at` is the next occurrence not yet handled."""

    name = models.CharField(max_length=255)
    pipeline = models.ForeignKey("registry.Pipeline", on_delete=models.CASCADE, related_name="schedules")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_column="created_by",
                                   related_name="pipeline_schedules")
    cron = models.CharField(max_length=100, help_text="Five fields: minute hour day-of-month month day-of-week.")
    timezone = models.CharField(max_length=64, default="UTC", help_text="An IANA zone: Europe/Paris.")
    inputs = models.JSONField(default=list, blank=True, help_text="The file ids every run takes.")
    parameters = models.JSONField(default=dict, blank=True, help_text="Per-run parameter overrides.")
    catch_up = models.CharField(max_length=10, choices=CatchUp.choices, default=CatchUp.LATEST,
                                help_text="What a tick does with occurrences it missed (beat down, schedule paused).")
    active = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True, help_text="The occurrence of the last run started.")
    last_execution = models.ForeignKey("executions.PipelineExecution", on_delete=models.SET_NULL, null=True,
                                       blank=True, related_name="+")
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "pipeline_schedules"
        ordering = ["next_run_at"]
        constraints = [choices_check(field="catch_up", choices=CatchUp, name="pipeline_schedules_catch_up_valid")]
        indexes = [models.Index(fields=["next_run_at"], condition=models.Q(active=True),
                                name="pipeline_schedules_due_idx"),
                   models.Index(fields=["created_by"], name="pipeline_schedules_owner_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.cron} {self.timezone})"


# --- webhooks ------------------------------------------------------------------------------------

class WebhookEvent(models.TextChoices):
    EXECUTION_COMPLETED = "execution.completed", "execution.completed"
    EXECUTION_FAILED = "execution.failed", "execution.failed"
    EXECUTION_CANCELLED = "execution.cancelled", "execution.cancelled"
    STEP_FAILED = "step.failed", "step.failed"


class WebhookSubscription(TimestampedModel):
    """Where to POST run events. A user's subscription hears about the runs they started; an
    organization's about the runs of the organization's pipelines."""

    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=255, blank=True, default="")
    secret = models.CharField(max_length=200, help_text="The HMAC-SHA256 key of the signature header.")
    events = ArrayField(models.CharField(max_length=50, choices=WebhookEvent.choices))
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_column="created_by",
                                   related_name="webhook_subscriptions")
    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, null=True, blank=True,
                                     related_name="webhook_subscriptions")

    class Meta:
        db_table = "webhook_subscriptions"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["created_by"], name="webhooks_owner_idx"),
                   models.Index(fields=["organization"], name="webhooks_org_idx")]

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event for one subscription: its body (built once, so every attempt sends the same
    bytes), its status and the attempts so far. `event_key` (the run or step and what happened)
    is unique per subscription, so a signal received twice makes one delivery."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries",
                                     db_index=False)
    event = models.CharField(max_length=50, choices=WebhookEvent.choices)
    event_key = models.CharField(max_length=200)
    execution = models.ForeignKey("executions.PipelineExecution", on_delete=models.SET_NULL, null=True, blank=True,
                                  related_name="webhook_deliveries")
    step_id = models.UUIDField(null=True, blank=True)
    payload = models.JSONField(null=True, blank=True, help_text="The body, built at the first attempt.")
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.IntegerField(default=0)
    first_attempt_at = models.DateTimeField(null=True, blank=True,
                                            help_text="Retries stop WEBHOOK_RETRY_WINDOW_SECONDS after this.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    last_duration_ms = models.IntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        db_table = "webhook_deliveries"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "event_key"], name="webhook_deliveries_event_uniq"),
            choices_check(field="status", choices=DeliveryStatus, name="webhook_deliveries_status_valid"),
        ]
        indexes = [
            # The sweep: pending deliveries whose next attempt is due.
            models.Index(fields=["next_attempt_at"], condition=models.Q(status="pending"),
                         name="webhook_deliveries_due_idx"),
            models.Index(fields=["subscription", "-created_at"], name="webhook_deliveries_sub_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.subscription_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One POST of a delivery: when, the answer's status code (none: no answer) and its time."""

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log",
                                 db_index=False)
    number = models.IntegerField()
    started_at = models.DateTimeField()
    status_code = models.IntegerField(null=True, blank=True)
    duration_ms = models.IntegerField()
    error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "webhook_attempts"
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempts_uniq")]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"
