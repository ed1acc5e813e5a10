"""Runs and their steps in the admin: records written by the engine, shown read-only (the API
can neither change nor delete them either). What staff do with a run is an action on the list
or a button on its page (Cancel, Retry from failure, Re-run with the same inputs), each calling
the engine's service (executions/admin_actions.py)."""

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.html import format_html
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from imageflow.admin_utils import ImageFlowModelAdmin, LargeListAdminMixin, ReadOnlyAdminMixin, pretty_json

from .admin_actions import (
    cancel_executions,
    execution_cancel_from_admin,
    execution_rerun_from_admin,
    execution_retry_from_admin,
    has_run_permission,
    rerun_executions,
    retry_executions,
)
from .admin_live import LiveProgressAdminMixin, items_percentage, items_text
from .admin_pictures import execution_picture_html, execution_timeline_html
from .item_counts import step_item_counts
from .models import (
    FINISHED_EXECUTION_STATUSES,
    FINISHED_STEP_STATUSES,
    ComponentExecution,
    ExecutionStatus,
    PipelineExecution,
    StepStatus,
)
from registry.admin_pictures import PICTURE_MEDIA_CSS


def _step_count(**filters) -> Coalesce:
    """A correlated count of the run's steps (no GROUP BY on the list's query, so the bulk
    actions can still lock the rows they get)."""
    steps = (ComponentExecution.objects.filter(execution_id=OuterRef("pk"), **filters).order_by()
             .values("execution_id").annotate(n=Count("id")).values("n"))
    return Coalesce(Subquery(steps, output_field=IntegerField()), Value(0))


def status_badge(status: str, label: str):
    return format_html('<span class="status-badge status-{}">{}</span>', status, label)


def duration_text(started, completed, now) -> str:
    if started is None:
        return "—"
    seconds = ((completed or now) - started).total_seconds()
    text = f"{seconds * 1000:.0f} ms" if seconds < 1 else (f"{seconds:.1f} s" if seconds < 60 else
                                                          f"{int(seconds // 60)} min {int(seconds % 60)} s")
    return text if completed else f"{text} so far"


class ComponentExecutionInline(admin.TabularInline):
    """What the live panel does not show of each step. Status and times are left to the panel,
    which follows the run: a copy rendered with the page would contradict it once the run moves."""

    model = ComponentExecution
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("node_id", "component", "attempts", "reused_from", "worker", "error_message")
    readonly_fields = fields
    ordering = ("created_at",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("component", "reused_from")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RunDataMixin:
    """A run's and a step's recorded input and output data, shown as read-only JSON."""

    @admin.display(description="input data")
    def inputs_pretty(self, obj):
        return pretty_json(obj.input_data)

    @admin.display(description="output data")
    def outputs_pretty(self, obj):
        return pretty_json(obj.output_data)


@admin.register(PipelineExecution)
class PipelineExecutionAdmin(LargeListAdminMixin, LiveProgressAdminMixin, ReadOnlyAdminMixin, RunDataMixin,
                             ImageFlowModelAdmin):
    # No status field: the live panel above the fields shows the status and follows the run.
    list_display = ("short_id", "pipeline_column", "status_column", "progress_column", "duration_column",
                    "created_by", "created_at")
    list_display_links = ("short_id",)
    # Dates by the created_at / started_at filters (no query), not a date_hierarchy, whose links
    # are a SELECT DISTINCT date_trunc over every run.
    list_filter = ("status", "pipeline", "created_at", "started_at")
    search_fields = ("id", "pipeline__name", "error_message")
    list_select_related = ("pipeline", "created_by")
    fields = ("picture", "timeline", "pipeline", "pipeline_version", "workflow", "workflow_version", "created_by",
              "retry_of", "idempotency_key", "inputs_pretty", "outputs_pretty", "error_message", "started_at",
              "completed_at")
    readonly_fields = fields
    inlines = [ComponentExecutionInline]
    actions = [cancel_executions, retry_executions, rerun_executions]

    class Media:
        css = PICTURE_MEDIA_CSS
        js = ("executions/dag_live.js", "executions/timeline_live.js")

    @admin.display(description="picture")
    def picture(self, obj):
        return execution_picture_html(obj)

    @admin.display(description="timeline")
    def timeline(self, obj):
        return execution_timeline_html(obj, now=timezone.now())

    @admin.display(description="run", ordering="id")
    def short_id(self, obj):
        # The first block of the UUID: the full one makes the list too wide for its status columns.
        return format_html('<span title="{}">{}</span>', obj.pk, str(obj.pk)[:8])

    @admin.display(description="pipeline (version run)", ordering="pipeline__name")
    def pipeline_column(self, obj):
        return format_html('<span title="{}">{}</span> v{}', obj.pipeline.name,
                           obj.pipeline.name if len(obj.pipeline.name) <= 48 else obj.pipeline.name[:47] + "…",
                           obj.pipeline_version)

    @admin.display(description="status", ordering="status")
    def status_column(self, obj):
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="progress")
    def progress_column(self, obj):
        total, done = getattr(obj, "steps_total", None), getattr(obj, "steps_finished", None)
        if total is None:
            return "—"
        percent = round(100 * done / total) if total else 100
        return format_html('<span class="run-progress" title="{}%"><span style="width:{}%"></span></span>{} / {}',
                           percent, percent, done, total)

    @admin.display(description="duration")
    def duration_column(self, obj):
        return duration_text(obj.started_at, obj.completed_at, timezone.now())


    def has_run_permission(self, request):
        return has_run_permission(request)

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related("pipeline", "created_by", "workflow", "retry_of")
        match = getattr(request, "resolver_match", None)
        if match is not None and match.url_name == "executions_pipelineexecution_changelist":
            # The list's progress column, in the list's one query; the JSON the list does not show
            # (inputs, outputs, the pipeline's definition) is not read and decoded for each row.
            queryset = queryset.defer("input_data", "output_data", "pipeline__definition").annotate(steps_total=_step_count(),
                                         steps_finished=_step_count(status__in=list(FINISHED_STEP_STATUSES)))
        return queryset

    def get_urls(self):
        info = (self.model._meta.app_label, self.model._meta.model_name)
        buttons = [
            path(f"<path:object_id>/{name}/", self.admin_site.admin_view(view), name=f"{info[0]}_{info[1]}_{name}")
            for name, view in (("cancel", self.cancel_view), ("retry", self.retry_view), ("rerun", self.rerun_view))
        ]
        return [*buttons, *super().get_urls()]

    def _button(self, request, object_id, act):
        """A button of the run's page: POST only, by staff who may act on runs; back to the page of
        the run it made (retry, re-run) or of this one."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        execution = get_object_or_404(self.get_queryset(request), pk=unquote(object_id))
        if not self.has_run_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        made = act(request, execution)
        target = made if isinstance(made, PipelineExecution) else execution
        return HttpResponseRedirect(reverse("admin:executions_pipelineexecution_change", args=[target.pk],
                                            current_app=self.admin_site.name))

    def cancel_view(self, request, object_id):
        return self._button(request, object_id, execution_cancel_from_admin)

    def retry_view(self, request, object_id):
        return self._button(request, object_id, execution_retry_from_admin)

    def rerun_view(self, request, object_id):
        return self._button(request, object_id, execution_rerun_from_admin)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        execution = self.get_object(request, unquote(object_id))
        if execution is not None and self.has_run_permission(request):
            finished = execution.status in FINISHED_EXECUTION_STATUSES
            extra_context["run_buttons"] = [
                {"name": name, "label": label, "url": reverse(f"admin:executions_pipelineexecution_{name}",
                                                              args=[execution.pk], current_app=self.admin_site.name)}
                for name, label, shown in (
                    ("cancel", "Cancel", not finished),
                    ("retry", "Retry from failure",
                     execution.status in {ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}),
                    ("rerun", "Re-run with the same inputs", execution.workflow_id is None),
                ) if shown
            ]
        if execution is not None and execution.status not in FINISHED_EXECUTION_STATUSES:
            extra_context["waiting_for"] = steps_waiting_for(execution)
        return super().change_view(request, object_id, form_url, extra_context)


def steps_waiting_for(execution) -> list[dict]:
    """The run's unfinished steps that wait for a worker nobody runs: [{node_id, message}]."""
    from executions.engine.presence import live_queues, waiting_for

    steps = list(execution.steps.filter(status__in=[StepStatus.PENDING, StepStatus.RUNNING])
                 .only("id", "execution_id", "node_id", "status", "input_data").order_by("created_at", "node_id"))
    live = live_queues() if steps else None
    return [{"node_id": step.node_id, "message": note} for step in steps
            if (note := waiting_for(step, live)) is not None]


@admin.register(ComponentExecution)
class ComponentExecutionAdmin(LargeListAdminMixin, ReadOnlyAdminMixin, RunDataMixin, ImageFlowModelAdmin):
    list_display = ("node_id", "execution", "component", "status", "execution_time_ms", "started_at", "completed_at")
    list_filter = ("status", "started_at")
    search_fields = ("node_id", "component__name", "execution__id")
    list_select_related = ("execution", "component")
    fields = ("execution", "node_id", "component", "status", "items_column", "attempts", "worker", "reused_from",
              "waiting_parents", "inputs_pretty", "outputs_pretty", "results_pretty", "error_message",
              "execution_time_ms", "resource_usage_pretty", "heartbeat_at", "started_at", "completed_at")
    readonly_fields = fields

    class Media:
        css = PICTURE_MEDIA_CSS  # the progress bar's style

    @admin.display(description="items")
    def items_column(self, obj):
        items = step_item_counts(obj)
        if items is None:
            return "— (not run as items)"
        return format_html('<span class="run-progress" title="{}%"><span style="width:{}%"></span></span>{}',
                           items_percentage(items), items_percentage(items), items_text(items))


    @admin.display(description="results per image")
    def results_pretty(self, obj):
        # The JSON results of ONNX, privacy and annotate steps live with each output image
        # (metadata["results"]), in output order; other steps have none.
        from django.db.models.fields.json import KeyTransform

        from files.models import File

        ids = [str(i) for i in (obj.output_data or {}).get("files", [])][:500]
        found = {str(pk): results for pk, results in File.objects.filter(pk__in=ids).annotate(
            results=KeyTransform("results", "metadata")).values_list("id", "results")}
        results = [found[i] for i in ids if found.get(i) is not None]
        return pretty_json(results) if results else "—"

    @admin.display(description="resource usage")
    def resource_usage_pretty(self, obj):
        return pretty_json(obj.resource_usage)
from executions import automation_admin  # noqa: E402,F401  (triggers and webhooks: docs/automation.md)
