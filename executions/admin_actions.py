"""What staff do with runs in the admin: start, cancel, retry and re-run. Each is an admin
action (on the list) and, for one run, a button on its page; all of them call the engine's
services (executions/services.py), and every refusal of a service becomes a message."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from executions.models import PipelineExecution
from executions.services import execution_cancel, execution_retry, execution_start
from imageflow.admin_utils import service_refusal_text
from imageflow.exceptions import ConflictError
from registry.dag import DagValidationError

# What the run services refuse with (a state that does not allow it, bad inputs, a definition
# that no longer validates): shown as a message, never a 500.
RUN_REFUSALS = (ValidationError, DagValidationError, ConflictError)


def _problem(exc: Exception) -> str:
    if isinstance(exc, DagValidationError):
        return "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors[:5])
    return service_refusal_text(exc)


def _link(execution: PipelineExecution) -> str:
    url = reverse("admin:executions_pipelineexecution_change", args=[execution.pk])
    return format_html('<a href="{}">{}</a>', url, execution.pk)


def has_run_permission(request) -> bool:
    """Runs are read-only records; acting on them (cancel, retry, re-run) takes the permission
    to change executions, which the page itself never uses."""
    return request.user.has_perm("executions.change_pipelineexecution")


def execution_cancel_from_admin(request, execution: PipelineExecution) -> bool:
    try:
        execution_cancel(execution=execution, user=request.user)
    except RUN_REFUSALS as exc:
        messages.warning(request, f"{execution.pk}: not cancelled: {_problem(exc)}")
        return False
    messages.success(request, format_html("Execution {} cancelled.", _link(execution)))
    return True


def execution_retry_from_admin(request, execution: PipelineExecution) -> PipelineExecution | None:
    already = execution.retries.order_by("created_at").first()
    try:
        retry = execution_retry(execution=execution, user=request.user)
    except RUN_REFUSALS as exc:
        messages.warning(request, f"{execution.pk}: not retried: {_problem(exc)}")
        return None
    if already is not None and already.pk == retry.pk:
        messages.info(request, format_html("{} was retried before: its retry is {}.", execution.pk, _link(retry)))
    else:
        messages.success(request, format_html("{}: retry {} started (completed steps reused).", execution.pk,
                                              _link(retry)))
    return retry


def execution_rerun_from_admin(request, execution: PipelineExecution) -> PipelineExecution | None:
    """A new run of the pipeline's current version on the same input files and parameter
    overrides (every step runs again; a retry reuses the completed ones)."""
    if execution.workflow_id is not None:
        messages.warning(request, f"{execution.pk}: not re-run: it is an applied workflow; apply the workflow "
                                  "again from its page (Apply action), or retry this run.")
        return None
    data = execution.input_data or {}
    try:
        rerun = execution_start(pipeline=execution.pipeline, inputs=list(data.get("inputs") or []),
                                parameters=data.get("parameters") or None, user=request.user)
    except RUN_REFUSALS as exc:
        messages.warning(request, f"{execution.pk}: not re-run: {_problem(exc)}")
        return None
    messages.success(request, format_html("{}: re-run {} started with the same inputs.", execution.pk, _link(rerun)))
    return rerun


@admin.action(description="Cancel selected executions", permissions=["run"])
def cancel_executions(modeladmin, request, queryset) -> None:
    for execution in queryset:
        execution_cancel_from_admin(request, execution)


@admin.action(description="Retry selected failed/cancelled executions (reusing completed steps)", permissions=["run"])
def retry_executions(modeladmin, request, queryset) -> None:
    for execution in queryset:
        execution_retry_from_admin(request, execution)


@admin.action(description="Re-run selected executions with the same inputs", permissions=["run"])
def rerun_executions(modeladmin, request, queryset) -> None:
    for execution in queryset.select_related("pipeline"):
        execution_rerun_from_admin(request, execution)


class RunPipelineForm(forms.Form):
    inputs = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        help_text="Input file ids, one per line (or separated by commas or spaces).",
    )
    parameters = forms.JSONField(required=False, help_text='Optional overrides per node, e.g. {"resize": {"width": 200}}.')

    def clean_inputs(self) -> list[str]:
        raw = self.cleaned_data.get("inputs") or ""
        return [part for part in raw.replace(",", " ").split() if part]


@admin.action(description="Run selected pipelines on input files")
def run_pipelines(modeladmin, request, queryset):
    if "apply" in request.POST:
        form = RunPipelineForm(request.POST)
        if form.is_valid():
            for pipeline in queryset:
                try:
                    execution = execution_start(pipeline=pipeline, inputs=form.cleaned_data["inputs"],
                                                parameters=form.cleaned_data.get("parameters") or None, user=request.user)
                    modeladmin.message_user(request, format_html("{}: execution {} started.", pipeline.name,
                                                                 _link(execution)), messages.SUCCESS)
                except RUN_REFUSALS as exc:
                    modeladmin.message_user(request, f"{pipeline.name}: {_problem(exc)}", messages.ERROR)
            return None
    else:
        form = RunPipelineForm()
    return TemplateResponse(request, "admin/executions/run_pipelines.html", {
        **modeladmin.admin_site.each_context(request), "title": "Run pipelines", "form": form,
        "pipelines": queryset, "action": "run_pipelines", "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    })
