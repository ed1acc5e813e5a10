"""Audit log: who created, changed, deleted, applied or restored what and when, with the
before/after of the change. Rows are written by `imageflow.audit.services` only; the admin
and the API show them read-only."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from imageflow.models import UUIDModel, choices_check


class AuditAction(models.TextChoices):
    CREATE = "create", "Created"
    UPDATE = "update", "Changed"
    DELETE = "delete", "Deleted"
    APPLY = "apply", "Applied"
    RESTORE = "restore", "Restored"
    IMPORT = "import", "Imported"


class AuditSource(models.TextChoices):
    API = "api", "REST API"
    ADMIN = "admin", "Admin"
    COMMAND = "command", "Management command"
    SYSTEM = "system", "System"


class AuditEntry(UUIDModel):
    Action = AuditAction
    Source = AuditSource

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_entries",
    )
    actor_username = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted.")
    action = models.CharField(max_length=20, choices=Action.choices)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.SYSTEM)
    object_type = models.CharField(max_length=50, help_text="workflow, pipeline or component")
    object_id = models.UUIDField()
    object_repr = models.CharField(max_length=300, blank=True)
    before = models.JSONField(blank=True, null=True)
    after = models.JSONField(blank=True, null=True)
    extra = models.JSONField(blank=True, null=True, help_text="version numbers, execution id, ...")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "audit_log"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"
        constraints = [
            choices_check(field="action", choices=AuditAction, name="audit_log_action_valid"),
            choices_check(field="source", choices=AuditSource, name="audit_log_source_valid"),
        ]
        indexes = [
            models.Index(fields=["object_type", "object_id", "-created_at"], name="audit_log_object_idx"),
            models.Index(fields=["actor", "-created_at"], name="audit_log_actor_idx"),
            models.Index(fields=["-created_at"], name="audit_log_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_username or 'system'} {self.action} {self.object_type} {self.object_repr}"
