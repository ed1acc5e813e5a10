"""Admin actions that start, cancel and retry runs; each calls the service, never re-implements it."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse

from executions.services import execution_cancel, execution_retry, execution_start
from registry.dag import DagValidationError


def _problem(exc: Exception) -> str:
    if isinstance(exc, DagValidationError):
        return "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors[:5])
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)
    return str(exc)


@admin.action(description="Cancel selected executions")
def cancel_executions(modeladmin, request, queryset) -> None:
    done = 0
    for execution in queryset:
        try:
            execution_cancel(execution=execution, user=request.user)
            done += 1
        except ValidationError as exc:
            modeladmin.message_user(request, f"{execution.pk}: {_problem(exc)}", messages.WARNING)
    if done:
        modeladmin.message_user(request, f"Cancelled {done} execution(s).", messages.SUCCESS)


@admin.action(description="Retry selected failed/cancelled executions (reusing completed steps)")
def retry_executions(modeladmin, request, queryset) -> None:
    for execution in queryset:
        try:
            retry = execution_retry(execution=execution, user=request.user)
            modeladmin.message_user(request, f"{execution.pk}: retry {retry.pk} started.", messages.SUCCESS)
        except ValidationError as exc:
            modeladmin.message_user(request, f"{execution.pk}: {_problem(exc)}", messages.WARNING)


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
                    modeladmin.message_user(request, f"{pipeline.name}: execution {execution.pk} started.", messages.SUCCESS)
                except (ValidationError, DagValidationError) as exc:
                    modeladmin.message_user(request, f"{pipeline.name}: {_problem(exc)}", messages.ERROR)
            return None
    else:
        form = RunPipelineForm()
    return TemplateResponse(request, "admin/executions/run_pipelines.html", {
        **modeladmin.admin_site.each_context(request), "title": "Run pipelines", "form": form,
        "pipelines": queryset, "action": "run_pipelines", "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    })
