"""What staff do with runs in the admin: start, cancel, retry and re-run. Each is an admin
action (on the list) and, for one run, a button on its page; all of them call the engine's
services (executions/services.py), and every refusal of a service becomes a message."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from executions.models import PipelineExecution
from executions.services import execution_cancel, execution_retry, execution_start
from imageflow.admin_utils import service_refusal_text
from imageflow.exceptions import ConflictError
from registry.dag import DagValidationError, merge_parameters, validate_definition
from registry.models import Pipeline

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


# --- the run form ----------------------------------------------------------------------------------

RECENT_FILES_IN_RUN_FORM = 48
_PARAMETER_PATH = re.compile(r"^nodes\[\d+\]\.parameters\.([^.\[]+)")


@dataclass(frozen=True)
class ParameterField:
    """One generated form field: which pipeline, node and component parameter it overrides."""

    name: str
    pipeline: Pipeline
    node_id: str
    parameter: str


def _json_text(value) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def parameter_form_field(schema: dict, *, label: str, current) -> forms.Field:
    """A form field for one property of a component's `input_schema`: its type, enum, bounds and
    pattern become the field's own checks; empty means "no override" (the node's value, or the
    schema's default, shown as the placeholder). The service checks the merged result again."""
    kind = schema.get("type")
    shown = "" if current is None else _json_text(current)
    help_text = " ".join(part for part in (
        schema.get("description") or "",
        f"Now: {shown}." if shown else "",
        f"Between {schema.get('minimum')} and {schema.get('maximum')}." if "minimum" in schema and "maximum" in schema
        else (f"At least {schema['minimum']}." if "minimum" in schema else
              (f"At most {schema['maximum']}." if "maximum" in schema else "")),
    ) if part)
    options = {"label": label, "required": False, "help_text": help_text}
    if isinstance(schema.get("enum"), list):
        choices = [("", f"— keep ({shown or 'unset'})")] + [(_json_text(v), str(v)) for v in schema["enum"]]
        return forms.TypedChoiceField(choices=choices, empty_value=None,
                                      coerce=lambda v: v if kind == "string" else json.loads(v), **options)
    if kind == "boolean":
        return forms.TypedChoiceField(choices=[("", f"— keep ({shown or 'unset'})"), ("true", "yes"), ("false", "no")],
                                      coerce=lambda v: v == "true", empty_value=None, **options)
    attrs = {"placeholder": shown} if shown else {}
    if kind == "integer":
        return forms.IntegerField(min_value=schema.get("minimum"), max_value=schema.get("maximum"),
                                  widget=forms.NumberInput(attrs=attrs), **options)
    if kind == "number":
        return forms.FloatField(min_value=schema.get("minimum"), max_value=schema.get("maximum"),
                                widget=forms.NumberInput(attrs={**attrs, "step": "any"}), **options)
    if kind == "string":
        validators = [RegexValidator(schema["pattern"], f"Must match {schema['pattern']}.")] if schema.get("pattern") else []
        return forms.CharField(max_length=schema.get("maxLength"), validators=validators, strip=True,
                               widget=forms.TextInput(attrs=attrs), empty_value=None, **options)
    return JSONValueField(widget=forms.TextInput(attrs=attrs), **options)  # arrays, objects: as JSON text


class JSONValueField(forms.CharField):
    """A JSON value typed in a box (arrays, objects); empty is no override (never a pre-filled null)."""

    def to_python(self, value):
        value = super().to_python(value)
        if value in (None, ""):
            return None
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValidationError(f"Not JSON: {exc}.") from None


class FileIdsField(forms.MultipleChoiceField):
    """The picked files' ids. Which ids are acceptable is the engine's call (execution_start: the
    API's "Not a file id" / "No such file"), not the picker's: an id need not be among the recent
    files shown, and the refusal reads as the API's."""

    def to_python(self, value):
        values = super().to_python(value)
        return [part for v in values for part in v.replace(",", " ").split() if part]

    def valid_value(self, value):
        return True


class RunPipelineForm(forms.Form):
    """Generated from the selected pipelines: input files picked from their thumbnails, and one
    field per parameter of every node's component (input_schema). Only filled-in fields become
    overrides ({node_id: {parameter: value}}), validated by the engine as the API validates them."""


    def __init__(self, *args, pipelines: list[Pipeline], user, checked: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        from files.selectors import file_list, files_visible_to

        self.fields["inputs"] = FileIdsField(required=False, widget=forms.CheckboxSelectMultiple,
                                             help_text="The images the run starts from.")

        self.pipelines = pipelines
        posted = [part for v in (self.data.getlist("inputs") if hasattr(self.data, "getlist") else [])
                  for part in v.replace(",", " ").split()]
        recent = list(file_list(user=user).only("id", "original_name", "thumbnails", "created_at")
                      [:RECENT_FILES_IN_RUN_FORM])
        known = {str(f.pk) for f in recent}
        extra_ids = [i for i in dict.fromkeys([*posted, *(checked or [])]) if i not in known and _is_uuid(i)]
        extra = list(files_visible_to(user=user, file_ids=extra_ids).values()) if extra_ids else []
        self.files = extra + recent
        self.fields["inputs"].choices = [(str(f.pk), f.original_name or str(f.pk)) for f in self.files]
        if checked:
            self.initial["inputs"] = checked
        self.parameter_fields: list[ParameterField] = []
        self.sections: list[dict] = []
        components = _components_of(pipelines)
        for p_index, pipeline in enumerate(pipelines):
            section = {"pipeline": pipeline, "nodes": []}
            for node in (pipeline.definition or {}).get("nodes") or []:
                if not isinstance(node, dict):
                    continue
                ref = node.get("component") or {}
                component = components.get((ref.get("name"), ref.get("version")))
                properties = ((component.input_schema or {}).get("properties") or {}) if component else {}
                names = []
                for parameter, schema in properties.items():
                    if not isinstance(schema, dict):
                        continue
                    current = (node.get("parameters") or {}).get(parameter, schema.get("default"))
                    name = f"p{p_index}-{len(self.parameter_fields)}"
                    self.fields[name] = parameter_form_field(schema, label=parameter, current=current)
                    self.parameter_fields.append(ParameterField(name, pipeline, str(node.get("id")), parameter))
                    names.append(name)
                section["nodes"].append({"id": node.get("id"), "component": component,
                                         "fields": [self[n] for n in names]})
            self.sections.append(section)

    def file_choices(self) -> list[dict]:
        from files.admin_display import thumbnail_html

        chosen = {str(v) for v in (self["inputs"].value() or [])}
        return [{"file": f, "id": str(f.pk), "checked": str(f.pk) in chosen, "html": thumbnail_html(f, size=96)}
                for f in self.files]

    def overrides_for(self, pipeline: Pipeline) -> dict[str, dict]:
        overrides: dict[str, dict] = {}
        for field in self.parameter_fields:
            value = self.cleaned_data.get(field.name)
            if field.pipeline.pk == pipeline.pk and value is not None:
                overrides.setdefault(field.node_id, {})[field.parameter] = value
        return overrides

    def add_service_errors(self, pipeline: Pipeline, exc: Exception) -> None:
        """A refusal of the engine on the field it is about: a parameter on its box, the inputs on
        the file picker, anything else above the form."""
        if isinstance(exc, DagValidationError):
            for error in exc.errors:
                match = _PARAMETER_PATH.match(str(error.get("field") or ""))
                target = next((f.name for f in self.parameter_fields if match and f.pipeline.pk == pipeline.pk
                               and f.node_id == error.get("node") and f.parameter == match.group(1)), None)
                text = str(error.get("message"))
                self.add_error(target, text if target else f"{pipeline.name}: {error.get('field')}: {text}")
            return
        if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
            for key, errors in exc.message_dict.items():
                self.add_error("inputs" if key == "inputs" else None,
                               [f"{pipeline.name}: {m}" if key != "inputs" else m for m in errors])
            return
        self.add_error(None, f"{pipeline.name}: {_problem(exc)}")


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _components_of(pipelines: list[Pipeline]) -> dict:
    from django.db.models import Q

    from registry.models import Component

    refs = {((n.get("component") or {}).get("name"), (n.get("component") or {}).get("version"))
            for p in pipelines for n in ((p.definition or {}).get("nodes") or []) if isinstance(n, dict)}
    query = Q()
    for name, version in refs:
        query |= Q(name=name, version=version)
    if not refs:
        return {}
    return {(c.name, c.version): c for c in Component.objects.filter(query).only("name", "version", "input_schema")}


@admin.action(description="Run selected pipelines on input files")
def run_pipelines(modeladmin, request, queryset):
    pipelines = list(queryset)
    checked: list[str] = []
    if "upload" in request.POST:  # images added from the run form: stored, then checked in the picker
        from files.admin import upload_files_from_admin

        stored = upload_files_from_admin(request, request.FILES.getlist("images"))
        checked = [*request.POST.getlist("inputs"), *(str(f.pk) for f in stored)]
        form = RunPipelineForm(pipelines=pipelines, user=request.user, checked=checked)
    elif "apply" in request.POST:
        form = RunPipelineForm(request.POST, pipelines=pipelines, user=request.user)
        if form.is_valid():
            started = _start_runs(request, form, pipelines)
            if started is not None:
                for pipeline, execution in started:
                    modeladmin.message_user(request, format_html("{}: execution {} started.", pipeline.name,
                                                                 _link(execution)), messages.SUCCESS)
                if len(started) == 1:
                    return HttpResponseRedirect(reverse("admin:executions_pipelineexecution_change",
                                                        args=[started[0][1].pk]))
                return None
    else:
        form = RunPipelineForm(pipelines=pipelines, user=request.user)
    return TemplateResponse(request, "admin/executions/run_pipelines.html", {
        **modeladmin.admin_site.each_context(request), "title": "Run pipelines", "form": form,
        "pipelines": pipelines, "action": "run_pipelines", "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    })


def _start_runs(request, form: RunPipelineForm, pipelines: list[Pipeline]) -> list | None:
    """Check every pipeline's merged parameters first (registry.dag, as execution_start does), so
    that a refusal of one starts none; then start each through execution_start."""
    inputs = list(form.cleaned_data["inputs"])
    for pipeline in pipelines:
        try:
            validate_definition(merge_parameters(pipeline.definition, form.overrides_for(pipeline)))
        except DagValidationError as exc:
            form.add_service_errors(pipeline, exc)
    if form.errors:
        return None
    started = []
    for pipeline in pipelines:
        try:
            started.append((pipeline, execution_start(pipeline=pipeline, inputs=inputs,
                                                      parameters=form.overrides_for(pipeline) or None,
                                                      user=request.user)))
        except RUN_REFUSALS as exc:
            form.add_service_errors(pipeline, exc)
            for done_pipeline, execution in started:
                messages.success(request, format_html("{}: execution {} started.", done_pipeline.name, _link(execution)))
            return None
    return started
