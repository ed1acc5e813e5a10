"""The durable log buffer: every execution log record is first a row here.

A record is written in the caller's database transaction (so a run's state change and its log
line commit together), shipped in bulk to the search server by a periodic Celery task, and kept
afterwards, for LOG_BUFFER_RETENTION_DAYS (then an hourly task deletes shipped rows): the table is
what `manage.py reindex_logs` rebuilds the search index from (the local search server keeps its
indices in memory only). Unshipped rows are never deleted.
"""

from __future__ import annotations

from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.utils import timezone

from imageflow.models import choices_check


class LogLevel(models.TextChoices):
    DEBUG = "debug", "debug"
    INFO = "info", "info"
    WARNING = "warning", "warning"
    ERROR = "error", "error"
    CRITICAL = "critical", "critical"


class ExecutionLogRecord(models.Model):
    """One structured log line of a run. The bigint id is the record's `_id` in the search index,
    which makes shipping idempotent, and its order of arrival."""

    Level = LogLevel

    id = models.BigAutoField(primary_key=True)
    execution = models.ForeignKey(
        "executions.PipelineExecution", on_delete=models.CASCADE, related_name="log_records", db_index=False,
    )
    step_id = models.UUIDField(blank=True, null=True, help_text="The component execution that wrote it, if any.")
    node_id = models.CharField(max_length=255, blank=True, default="")
    component = models.CharField(max_length=255, blank=True, default="")
    level = models.CharField(max_length=10, choices=LogLevel.choices)
    message = models.TextField()
    extra = models.JSONField(default=dict, blank=True)
    timestamp = models.DateTimeField(default=timezone.now)
    shipped_at = models.DateTimeField(blank=True, null=True, help_text="When the search server acknowledged it.")
    ship_error = models.TextField(
        blank=True, null=True,
        help_text="Why the search server refused this record; the shipper skips it (reindex_logs retries).",
    )

    class Meta:
        db_table = "execution_log_records"
        ordering = ["execution", "id"]
        constraints = [choices_check(field="level", choices=LogLevel, name="execution_log_records_level_valid")]
        indexes = [
            models.Index(fields=["execution", "id"], name="exlog_execution_idx"),
            # The shipper's work queue: small, because shipped rows leave it.
            models.Index(fields=["id"], condition=models.Q(shipped_at__isnull=True, ship_error__isnull=True),
                         name="exlog_unshipped_idx"),
            # Retention finds old rows by time: a BRIN index (rows arrive in time order) costs almost
            # nothing to keep up on this insert-heavy table.
            BrinIndex(fields=["timestamp"], name="exlog_timestamp_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.execution_id} #{self.id} {self.level}: {self.message[:60]}"
