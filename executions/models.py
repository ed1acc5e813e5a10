"""Pipeline executions and their steps (seed 000: pipeline_executions, component_executions)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from imageflow.models import TimestampedModel, choices_check


class ExecutionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


# Allowed moves of the status state machines; anything else is refused.
EXECUTION_TRANSITIONS: dict[str, frozenset[str]] = {
    ExecutionStatus.PENDING: frozenset({ExecutionStatus.RUNNING, ExecutionStatus.CANCELLED, ExecutionStatus.FAILED}),
    ExecutionStatus.RUNNING: frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}),
    ExecutionStatus.COMPLETED: frozenset(),
    ExecutionStatus.FAILED: frozenset(),
    ExecutionStatus.CANCELLED: frozenset(),
}
STEP_TRANSITIONS: dict[str, frozenset[str]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED, StepStatus.CANCELLED}),
    StepStatus.RUNNING: frozenset({StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.CANCELLED}),
    StepStatus.COMPLETED: frozenset(),
    StepStatus.FAILED: frozenset(),
    StepStatus.SKIPPED: frozenset(),
    StepStatus.CANCELLED: frozenset(),
}
FINISHED_EXECUTION_STATUSES = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED})
FINISHED_STEP_STATUSES = frozenset(
    {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)


def progress_percentage(finished: int, total: int) -> float:
    """The share of a run's steps in a finished status; a run without steps has nothing left."""
    return round(100.0 * finished / total, 1) if total else 100.0


class PipelineExecution(TimestampedModel):
    pipeline = models.ForeignKey("registry.Pipeline", on_delete=models.PROTECT, related_name="executions")
    pipeline_version = models.IntegerField(help_text="The pipeline version this run executes.")
    status = models.CharField(max_length=50, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING)
    input_data = models.JSONField(blank=True, null=True)
    output_data = models.JSONField(blank=True, null=True)
    error_message = models.TextField(blank=True, null=True)
    started_at = models.DateTimeField(blank=True, null=True)
    completed_at = models.DateTimeField(blank=True, null=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        db_column="created_by", related_name="pipeline_executions",
    )
    idempotency_key = models.CharField(max_length=255, blank=True, null=True)
    retry_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries",
        help_text="The failed execution this one re-runs.",
    )
    # Workflow registry: an applied workflow runs as a pipeline execution pinned to its version.
    workflow = models.ForeignKey(
        "registry.Workflow", on_delete=models.SET_NULL, null=True, blank=True, related_name="executions",
    )
    workflow_version = models.IntegerField(blank=True, null=True, help_text="The workflow version applied.")

    class Meta:
        db_table = "pipeline_executions"
        ordering = ["-created_at", "-id"]
        constraints = [
            choices_check(field="status", choices=ExecutionStatus, name="pipeline_executions_status_valid"),
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="pipeline_executions_idempotency_uniq",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "-created_at", "-id"], name="pexec_status_created_idx"),
            models.Index(fields=["status", "-started_at"], name="pexec_status_started_idx"),
            models.Index(fields=["pipeline", "status", "-created_at", "-id"], name="pexec_pipe_status_created_idx"),
            models.Index(fields=["-created_at", "-id"], name="pexec_created_idx"),
            # A non-staff user's history (the API scopes every list to created_by).
            models.Index(fields=["created_by", "-created_at", "-id"], name="pexec_owner_created_idx"),
            models.Index(fields=["workflow", "-created_at"], name="pexec_workflow_created_idx"),
        ]

    def __str__(self) -> str:
        # No status: the label is shown beside the live status (admin title, breadcrumbs) and a
        # copy rendered with the page would contradict it once the run moves on.
        return f"run {self.id} of pipeline {self.pipeline_id}"


class ComponentExecution(TimestampedModel):
    """One step of a run: the execution of one DAG node's component."""

    execution = models.ForeignKey(PipelineExecution, on_delete=models.CASCADE, related_name="steps")
    component = models.ForeignKey("registry.Component", on_delete=models.PROTECT, related_name="executions")
    node_id = models.CharField(max_length=255, help_text="The id of the DAG node this step runs.")
    status = models.CharField(max_length=50, choices=StepStatus.choices, default=StepStatus.PENDING)
    input_data = models.JSONField(blank=True, null=True)
    output_data = models.JSONField(blank=True, null=True)
    error_message = models.TextField(blank=True, null=True)
    execution_time_ms = models.IntegerField(blank=True, null=True)
    resource_usage = models.JSONField(blank=True, null=True, help_text="cpu_seconds, peak_memory_bytes")
    attempts = models.IntegerField(default=0)
    heartbeat_at = models.DateTimeField(blank=True, null=True)
    started_at = models.DateTimeField(blank=True, null=True)
    completed_at = models.DateTimeField(blank=True, null=True)
    worker = models.CharField(max_length=255, blank=True, default="", help_text="host:pid of the worker running the step.")
    waiting_parents = models.IntegerField(
        default=0,
        db_default=0,  # rows inserted by code that does not know the column (during a deploy) get 0
        help_text="Parents of a pending step not completed yet: each parent's completion counts it down "
                  "in the same statement, and the one that reaches 0 enqueues the step (a row lock, so two "
                  "parents finishing at once cannot both miss it). The claim still checks the parents.",
    )
    enqueue_failed = models.BooleanField(
        default=False,
        db_default=False,
        help_text="The step was ready but its task could not be sent (broker down): the next sweep sends it.",
    )
    reused_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reused_by",
        help_text="The completed step of an earlier run whose outputs this step reuses (retry from failure).",
    )
    # A map step runs as items (StepItem): how many, and how many have finished each way. The
    # counters move in the statement that finishes an item (a row lock on the step, so the item
    # that finishes the last one is known to exactly one worker). NULL: the step is not itemized
    # (a merge step) or its items are not made yet.
    item_count = models.IntegerField(blank=True, null=True)
    items_completed = models.IntegerField(default=0, db_default=0)
    items_failed = models.IntegerField(default=0, db_default=0)
    items_skipped = models.IntegerField(default=0, db_default=0)
    items_cached = models.IntegerField(default=0, db_default=0, help_text="Completed items reused from the cache.")

    class Meta:
        db_table = "component_executions"
        ordering = ["execution", "created_at"]
        constraints = [
            choices_check(field="status", choices=StepStatus, name="component_executions_status_valid"),
            models.UniqueConstraint(fields=["execution", "node_id"], name="component_executions_node_uniq"),
        ]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="cexec_status_heartbeat_idx"),
            # The sweep's outbox: steps whose task was never sent (empty but for a broker outage).
            models.Index(fields=["id"], condition=models.Q(enqueue_failed=True), name="cexec_enqueue_failed_idx"),
            # The dashboard's slowest components: completed steps of the last 14 days, read from
            # the index alone (not a scan of every step with its JSON).
            models.Index(fields=["created_at"], include=["component", "execution_time_ms"],
                         condition=models.Q(status="completed"), name="cexec_completed_created_idx"),
        ]

    def __str__(self) -> str:
        return f"step {self.node_id} of run {self.execution_id}"


    @property
    def itemized(self) -> bool:
        return bool((self.input_data or {}).get("items"))


class StepItem(models.Model):
    """One item of a map step: up to STEP_ITEM_BATCH of the step's inputs, claimed, run, completed,
    retried, timed out, cancelled and taken over on its own, by any worker on any host
    (executions/engine/items.py). Item i of a step that streams from its parent (a map -> map
    edge) takes the outputs of the parent's item i as its inputs, and becomes ready (`waiting`
    0) in the statement that completes that item."""

    id = models.BigAutoField(primary_key=True)
    execution = models.ForeignKey(PipelineExecution, on_delete=models.CASCADE, related_name="items",
                                  db_index=False)  # the claim's partial index and (execution, status) serve it
    step = models.ForeignKey(ComponentExecution, on_delete=models.CASCADE, related_name="items",
                             db_index=False)  # the unique (step, index) serves it
    index = models.IntegerField(help_text="The item's place in its step: its inputs follow those of item index-1.")
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING)
    inputs = models.JSONField(blank=True, null=True, help_text="File ids; NULL until the parent's item is done.")
    outputs = models.JSONField(blank=True, null=True, help_text="File ids, in the order of the inputs.")
    waiting = models.SmallIntegerField(default=0, help_text="Parent items not completed yet (0 or 1).")
    attempts = models.IntegerField(default=0)
    heartbeat_at = models.DateTimeField(blank=True, null=True)
    not_before = models.DateTimeField(blank=True, null=True, help_text="A transient error's retry waits until then.")
    started_at = models.DateTimeField(blank=True, null=True)
    completed_at = models.DateTimeField(blank=True, null=True)
    worker = models.CharField(max_length=255, blank=True, default="")
    execution_time_ms = models.IntegerField(blank=True, null=True)
    error_message = models.TextField(blank=True, null=True)
    metrics = models.JSONField(blank=True, null=True)
    reused_from = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reused_by",
                                    db_index=False,
                                    help_text="The item whose outputs this one reuses (the cache, or a retry).")

    class Meta:
        db_table = "step_items"
        ordering = ["step", "index"]
        constraints = [
            choices_check(field="status", choices=StepStatus, name="step_items_status_valid"),
            models.UniqueConstraint(fields=["step", "index"], name="step_items_step_index_uniq"),
        ]
        indexes = [
            # The claim: the lowest ready item of a run (lowest index first, so the first images
            # reach the last step early), skipping locked rows.
            models.Index(fields=["execution", "index"], name="step_items_ready_idx",
                         condition=models.Q(status="pending", waiting=0)),
            models.Index(fields=["execution", "status"], name="step_items_exec_status_idx"),
            # The sweep: running items whose heartbeat stopped.
            models.Index(fields=["heartbeat_at"], name="step_items_running_idx", condition=models.Q(status="running")),
        ]

    def __str__(self) -> str:
        return f"item {self.index} of step {self.step_id}"


class FileLineage(models.Model):
    """One edge of the files' lineage: `file` was derived from `derived_from` by `step`.

    A map step's output i has one row (its input i), a merge step's output one row per input; a
    file a step passes through unchanged has none (it is its own input). Written by the engine in
    the statement that completes the step (executions.engine.statements), so a completed step
    always has its lineage and a discarded result never does. It lives in executions (which may
    reference files, not the other way round); `item` names the item of a map step that made it.
    """

    id = models.BigAutoField(primary_key=True)
    file = models.ForeignKey("files.File", on_delete=models.CASCADE, related_name="lineage_sources",
                             db_index=False,  # the unique (file, derived_from) serves it
                             help_text="The derived file (a step's output).")
    derived_from = models.ForeignKey("files.File", on_delete=models.CASCADE, related_name="lineage_derived",
                                     help_text="A file it was made from (one of the step's inputs).")
    step = models.ForeignKey(ComponentExecution, on_delete=models.SET_NULL, null=True, blank=True,
                             related_name="lineage", help_text="The step that produced `file`.")
    item = models.ForeignKey(StepItem, on_delete=models.SET_NULL, null=True, blank=True, related_name="lineage",
                             db_index=False, help_text="The item of the step that produced `file` (map steps).")
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        db_table = "file_lineage"
        constraints = [
            models.UniqueConstraint(fields=["file", "derived_from"], name="file_lineage_edge_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.file_id} <- {self.derived_from_id}"


class StepCacheEntry(models.Model):
    """The outputs of one finished item of a deterministic component, under the hash of what made
    them (executions/engine/cache.py: component, parameters, input checksums). A later item with
    the same key gets new File rows pointing at the same objects instead of running.

    `storage_paths` are the objects the entry keeps alive: files.services.file_delete removes an
    object only when no File row and no entry names it (GIN index: "which entries name this key").
    Least recently used entries are evicted down to STEP_CACHE_MAX_BYTES (`last_used_at`)."""

    key = models.CharField(max_length=64, primary_key=True, help_text="SHA-256 hex of the item's component, "
                                                                       "parameters and input checksums.")
    component_name = models.CharField(max_length=255)
    component_version = models.CharField(max_length=50)
    outputs = models.JSONField(help_text="One descriptor per output, in order: name, mime_type, size, "
                                         "storage_path, checksum, metadata (without the run's tags).")
    storage_paths = ArrayField(models.TextField(), help_text="The outputs' object keys.")
    bytes = models.BigIntegerField(help_text="The outputs' sizes summed (the eviction budget counts them).")
    item = models.ForeignKey(StepItem, on_delete=models.SET_NULL, null=True, blank=True, related_name="cache_entries",
                             help_text="The item whose outputs these are.")
    hits = models.BigIntegerField(default=0, db_default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    last_used_at = models.DateTimeField(default=timezone.now, db_default=Now())

    class Meta:
        db_table = "step_cache"
        indexes = [
            GinIndex(fields=["storage_paths"], name="step_cache_paths_gin"),
            models.Index(fields=["last_used_at"], name="step_cache_lru_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.component_name}:{self.component_version} {self.key[:12]}"


class StepCacheCounter(models.Model):
    """The step cache's running totals, kept in a few slots a writer picks at random and a reader
    sums: a lookup counts its hit in the statement that finds the entry, with no single row every
    worker waits for. `entries` and `bytes` move in the statements that add and evict entries, so
    the statistics are a sum over the slots, not a scan of the cache."""

    slot = models.SmallIntegerField(primary_key=True)
    hits = models.BigIntegerField(default=0, db_default=0)
    misses = models.BigIntegerField(default=0, db_default=0)
    entries = models.BigIntegerField(default=0, db_default=0)
    bytes = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        db_table = "step_cache_counters"

    def __str__(self) -> str:
        return f"step cache counters, slot {self.slot}"


from executions.log_models import ExecutionLogRecord, LogLevel  # noqa: E402,F401  (durable log buffer)
from executions.automation_models import (  # noqa: E402,F401  (triggers and webhooks: docs/automation.md)
    CatchUp,
    DeliveryStatus,
    PipelineSchedule,
    Trigger,
    TriggerFile,
    TriggerFileStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)
