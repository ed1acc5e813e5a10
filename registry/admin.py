"""The registry in the admin: every save and delete goes through the services the API calls
(registry/services.py, registry/workflow_services.py), and the forms run the services' own
validation first, so a refusal shows on the field it is about instead of a 500 or a bad row."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.contrib.admin.utils import unquote
from django.db.models import OuterRef, Subquery
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from imageflow.admin_utils import (
    ImageFlowInline,
    ImageFlowModelAdmin,
    ReadOnlyAdminMixin,
    ServiceDeleteMixin,
    pretty_json,
    service_refusal_text,
    validation_messages,
)
from imageflow.admin_widgets import PYTHON_WIDGETS
from imageflow.api.errors import dag_errors_to_fields
from imageflow.exceptions import ConflictError
from registry import services
from registry.admin_editor import DefinitionEditorWidget, component_choices, definition_preview_view
from registry.admin_pictures import (
    PICTURE_MEDIA_CSS,
    diff_html,
    pipeline_picture_html,
    pipeline_version_picture_html,
    workflow_picture_html,
    workflow_version_diff,
    workflow_version_picture_html,
)
from registry.dag import DagValidationError, validate_definition
from registry.engine_hooks import run_pipelines
from registry.workflow_document import ParamValueError, clean_document, describe_cycle, document_cycle
from registry.workflow_services import pipeline_labels_check, pipeline_set_labels

from .models import (
    Component,
    ComponentKind,
    Pipeline,
    PipelineVersion,
    Tag,
    Workflow,
    WorkflowAccess,
    WorkflowEdge,
    WorkflowNode,
    WorkflowParam,
    WorkflowVersion,
)


def add_errors(form: forms.BaseForm, exc: ValidationError, *, fields: dict[str, str] | None = None) -> None:
    """Put a service's ValidationError on the form: on the named field where the form has it
    (`fields` maps service keys to form fields), else as an error of the whole form."""
    for key, messages_ in validation_messages(exc).items():
        field = (fields or {}).get(key, key)
        if field not in form.fields:
            field = None
            messages_ = [m if key == "__all__" else f"{key}: {m}" for m in messages_]
        for message in messages_:
            form.add_error(field, message)


def _finish_as_saved(obj, saved) -> None:
    """The admin goes on with `obj` (its form's instance: change message, redirect): make it the
    row the service wrote."""
    obj.pk = saved.pk
    obj._state.adding = False
    obj.refresh_from_db()


# --- components ------------------------------------------------------------------------------

class ComponentAdminForm(forms.ModelForm):
    model_upload = forms.FileField(
        required=False, label="Upload an ONNX model",
        help_text="runner onnx: a .onnx file, checked with onnx.checker and stored as a file (or pick an uploaded "
                  "model file above).")

    class Meta:
        model = Component
        fields = services.COMPONENT_FIELDS + services.COMPONENT_CREATE_FIELDS + services.COMPONENT_MODEL_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "docker_image" in self.fields:
            self.fields["docker_image"].required = False  # an onnx component's is made from its model
        if "model_file" in self.fields:
            from files.onnx_models import MODEL_MIME_TYPE

            self.fields["model_file"].queryset = self.fields["model_file"].queryset.filter(mime_type=MODEL_MIME_TYPE)

    def clean(self):
        data = super().clean()
        try:
            services.component_check(data={k: data.get(k) for k in ("input_schema", "output_schema",
                                                                     "resource_requirements")})
        except ValidationError as exc:
            add_errors(self, exc)
        if self.instance._state.adding and data.get("runner") == Component.Runner.ONNX:
            data["kind"] = ComponentKind.MAP  # an onnx component's kind follows from its runner
            # The service's model checks, shown on the fields (save_model runs them again).
            upload = data.get("model_upload")
            try:
                if upload is None and data.get("model_file") is None:
                    raise ValidationError({"model_file": ["pick an ONNX model file or upload one."]})
                services.component_model_check(
                    content=upload.read() if upload is not None else None, model_file=data.get("model_file"),
                    model_spec=data.get("model_spec"))
            except ValidationError as exc:
                add_errors(self, exc, fields={"model_file": "model_upload" if upload is not None else "model_file"})
            finally:
                if upload is not None:
                    upload.seek(0)
        return data

    def _post_clean(self):
        super()._post_clean()  # the instance holds the form's values now
        if not self.instance._state.adding:
            try:  # a version a run used is fixed: shown on the changed fields (save_model checks again)
                services.component_change_check(component=self.instance)
            except ValidationError as exc:
                add_errors(self, exc)


@admin.register(Component)
class ComponentAdmin(ServiceDeleteMixin, ImageFlowModelAdmin):
    """Saved by component_create / component_update and deleted by component_delete, as in the
    API: a component that a pipeline names or a run used is not deleted."""

    form = ComponentAdminForm
    list_display = ("name", "version", "runner", "kind", "deterministic", "docker_image", "updated_at")
    list_filter = ("runner", "kind", "deterministic", "updated_at")
    search_fields = ("name", "description", "docker_image")
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        # Chosen when the component is made (registry.services.COMPONENT_CREATE_FIELDS, _MODEL_FIELDS).
        readonly = tuple(super().get_readonly_fields(request, obj))
        if obj is None:
            return readonly
        fixed = services.COMPONENT_CREATE_FIELDS + services.COMPONENT_MODEL_FIELDS
        return readonly + fixed + ("model_signature_pretty",)

    def get_fields(self, request, obj=None):
        fields = [f for f in super().get_fields(request, obj) if f != "model_signature_pretty"]
        if obj is not None:
            fields = [f for f in fields if f != "model_upload"]
            if obj.runner == Component.Runner.ONNX:
                fields.append("model_signature_pretty")
        return fields

    @admin.display(description="model signature")
    def model_signature_pretty(self, obj):
        return pretty_json(obj.model_signature)

    def save_form(self, request, form, change):
        # The model file is stored (and checked) before the component; a refused component then
        # leaves the uploaded model as a file the staff user can reuse.
        upload = form.cleaned_data.get("model_upload")
        if upload is not None and not change:
            from files.services import file_store_model

            form.cleaned_data["model_file"] = file_store_model(content=upload.read(), original_name=upload.name,
                                                               created_by=request.user)
        return super().save_form(request, form, change)

    def save_model(self, request, obj, form, change):
        data = {key: form.cleaned_data.get(key) for key in services.COMPONENT_FIELDS}
        if change:
            saved = services.component_update(component=Component.objects.get(pk=obj.pk), data=data)
        else:
            saved = services.component_create(
                **data, **{key: form.cleaned_data[key] for key in services.COMPONENT_CREATE_FIELDS},
                **{key: form.cleaned_data.get(key) for key in services.COMPONENT_MODEL_FIELDS})
        _finish_as_saved(obj, saved)

    def service_delete(self, request, obj):
        services.component_delete(component=obj)


class PipelineVersionInline(admin.TabularInline):
    model = PipelineVersion
    extra = 0
    can_delete = False
    fields = ("version", "name", "created_by", "created_at", "definition_pretty")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("created_by")

    @admin.display(description="definition")
    def definition_pretty(self, obj):
        return pretty_json(obj.definition)

    def has_add_permission(self, request, obj=None):
        return False


class PipelineAdminForm(forms.ModelForm):
    """The definition is validated by registry.dag, exactly as the API's create and update are;
    each problem is shown on the definition field, named as the API names it (field path, node)."""

    class Meta:
        model = Pipeline
        fields = ("name", "description", "definition", "category", "tags", "organization")
        help_texts = {"definition": 'The DAG: {"nodes": [{"id": "resize", "component": {"name": "resize", '
                                    '"version": "1.0.0"}, "parameters": {"width": 320}}], "edges": [{"from": '
                                    '"resize", "to": "gray"}]}. A changed definition becomes a new version.'}

    def clean_definition(self):
        definition = self.cleaned_data.get("definition")
        try:
            validate_definition(definition)
        except DagValidationError as exc:
            raise ValidationError([f"{key}: {message}" for key, found in dag_errors_to_fields(exc.errors).items()
                                   for message in found]) from None
        return definition

    def clean(self):
        data = super().clean()
        try:
            # Unchanged labels stand as they are (a carrier pipeline keeps its reserved category).
            pipeline_labels_check(
                category=data.get("category") if "category" in self.changed_data else None,
                tags=[t.name for t in data.get("tags") or []] if "tags" in self.changed_data else None)
        except ValidationError as exc:
            add_errors(self, exc)
        return data


class OutdatedComponentsFilter(admin.SimpleListFilter):
    title = "outdated components"
    parameter_name = "outdated"

    def lookups(self, request, model_admin):
        return [("yes", "Names an outdated component version")]

    def queryset(self, request, queryset):
        from registry.selectors import pipelines_outdated

        return pipelines_outdated(queryset) if self.value() == "yes" else queryset


# The components' newest versions, read once per list page (a context variable: admin instances
# are shared by the threads and tasks serving requests).
_latest_versions: ContextVar[dict | None] = ContextVar("registry_admin_latest_versions", default=None)


@admin.register(Pipeline)
class PipelineAdmin(ServiceDeleteMixin, ImageFlowModelAdmin):
    """Saved by pipeline_create / pipeline_update (a changed definition bumps the version and is
    stored in the history) and pipeline_set_labels, as in the API; deleted by pipeline_delete."""

    form = PipelineAdminForm
    list_display = ("name", "version", "outdated", "category", "organization", "created_by", "updated_at")
    list_filter = ("updated_at", "category", "tags", "organization", OutdatedComponentsFilter)
    filter_horizontal = ("tags",)
    search_fields = ("name", "description")
    date_hierarchy = "updated_at"
    list_select_related = ("created_by", "organization")
    readonly_fields = ("version", "created_by", "picture", "outdated_components")
    inlines = [PipelineVersionInline]
    actions = [run_pipelines]

    def changelist_view(self, request, extra_context=None):
        from registry.selectors import component_latest_versions

        token = _latest_versions.set(component_latest_versions())
        try:
            response = super().changelist_view(request, extra_context)
            if hasattr(response, "render"):
                response.render()  # the rows' columns are drawn now, while the versions are set
            return response
        finally:
            _latest_versions.reset(token)

    @admin.display(description="outdated")
    def outdated(self, obj):
        from registry.selectors import pipeline_outdated_components

        found = pipeline_outdated_components(obj, latest=_latest_versions.get())
        return ", ".join(f"{n['name']} {n['version']} → {n['latest']}" for n in found) or "—"

    @admin.display(description="outdated components")
    def outdated_components(self, obj):
        """Nodes naming a component version of which a newer one exists: the pipeline keeps the
        version it was built with until its definition names the new one."""
        from registry.selectors import pipeline_outdated_components

        if obj is None or obj.pk is None:
            return "—"
        found = pipeline_outdated_components(obj)
        return format_html_join(", ", "node {}: {} {} (newest {})",
                                ((n["node"], n["name"], n["version"], n["latest"]) for n in found)) or "—"

    class Media:
        css = PICTURE_MEDIA_CSS

    def get_fields(self, request, obj=None):
        fields = [f for f in super().get_fields(request, obj) if f != "picture"]
        # Who may change the pipeline sees the picture inside the definition's editor; who may only
        # view it, above the (read-only) definition.
        if obj is not None and not self.has_change_permission(request, obj):
            fields.insert(fields.index("definition") if "definition" in fields else 0, "picture")
        return fields

    @admin.display(description="picture")
    def picture(self, obj):
        return pipeline_picture_html(obj) if obj is not None and obj.pk else "—"

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if "definition" in form.base_fields:
            form.base_fields["definition"].widget = DefinitionEditorWidget(
                preview_url=reverse("admin:registry_pipeline_definition_preview", current_app=self.admin_site.name),
                components=component_choices(),
                stored=(obj.pk, obj.version, obj.definition) if obj is not None else None,
            )
        return form

    def get_urls(self):
        preview = path("definition-preview/", self.admin_site.admin_view(self.definition_preview),
                       name="registry_pipeline_definition_preview")
        return [preview, *super().get_urls()]

    def definition_preview(self, request):
        return definition_preview_view(self, request)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            saved = services.pipeline_update(pipeline=obj, user=request.user, data={
                "name": data["name"], "description": data.get("description"), "definition": data["definition"]})
        else:
            saved = services.pipeline_create(name=data["name"], description=data.get("description"),
                                             definition=data["definition"], created_by=request.user)
        _finish_as_saved(obj, saved)

    def save_related(self, request, form, formsets, change):
        # Labels by their service (not form.save_m2m()); the version history inline is read-only.
        data, changed = form.cleaned_data, set(form.changed_data)
        if changed & {"category", "tags", "organization"}:
            pipeline_set_labels(pipeline=form.instance, user=request.user,
                                category=(data.get("category") or "") if "category" in changed else None,
                                tags=[t.name for t in data.get("tags") or []] if "tags" in changed else None,
                                organization=data.get("organization"), set_organization="organization" in changed)
        form.instance.refresh_from_db()
        for formset in formsets:
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def service_delete(self, request, obj):
        services.pipeline_delete(pipeline=obj)


@admin.register(PipelineVersion)
class PipelineVersionAdmin(ReadOnlyAdminMixin, ImageFlowModelAdmin):
    list_display = ("pipeline", "version", "name", "created_by", "created_at")
    search_fields = ("name", "pipeline__name")
    date_hierarchy = "created_at"
    list_select_related = ("pipeline", "created_by")
    readonly_fields = ("pipeline", "version", "name", "description", "picture", "definition_pretty", "created_by")
    exclude = ("definition",)

    class Media:
        css = PICTURE_MEDIA_CSS

    @admin.display(description="picture")
    def picture(self, obj):
        return pipeline_version_picture_html(obj)

    @admin.display(description="definition")
    def definition_pretty(self, obj):
        return pretty_json(obj.definition)


# --- workflows ---------------------------------------------------------------------------------
#
# The workflow page (form and inlines) is turned into a workflow document and saved by
# workflow_create / workflow_replace, the services of the API's POST and PUT: the same cleaning
# (clean_document), version, snapshot and audit entry. Each form runs that cleaning on its own
# row first, so its errors show on the field they are about.

_PLACEHOLDER_NAME = "workflow"


def _row_errors(form: forms.BaseForm, document: dict[str, Any], *, collection: str) -> None:
    """clean_document of a document holding this one row: its `<collection>.0.<field>` errors go
    on the form's fields."""
    try:
        clean_document(document)
    except ValidationError as exc:
        prefix = f"{collection}.0"
        for key, found in validation_messages(exc).items():
            if key == prefix or key.startswith(prefix + "."):
                field = key[len(prefix) + 1:] or None
                for message in found:
                    form.add_error(field if field in form.fields else None, message)


class WorkflowNodeForm(forms.ModelForm):
    class Meta:
        model = WorkflowNode
        fields = ("order_index", "node_type", "name", "parameters")

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        row = {"node_type": data.get("node_type"), "name": data.get("name"), "parameters": data.get("parameters"),
               "order_index": data.get("order_index", 0)}
        _row_errors(self, {"name": _PLACEHOLDER_NAME, "nodes": [row]}, collection="nodes")
        return data


class WorkflowEdgeForm(forms.ModelForm):
    class Meta:
        model = WorkflowEdge
        fields = ("parent_node", "child_node", "handoff_data")

    def clean(self):
        data = super().clean()
        parent, child = data.get("parent_node"), data.get("child_node")
        if self.errors or parent is None or child is None:
            return data
        if parent.pk == child.pk:
            self.add_error("child_node", f"an edge cannot join node {parent.name!r} to itself.")
            return data
        nodes = [{"key": n.key, "node_type": n.node_type, "name": n.name} for n in (parent, child)]
        edge = {"parent": parent.key, "child": child.key, "handoff_data": data.get("handoff_data")}
        _row_errors(self, {"name": _PLACEHOLDER_NAME, "nodes": nodes, "edges": [edge]}, collection="edges")
        return data


def _deleted_inline_ids(data, prefix: str) -> set[str]:
    """Ids of the rows of inline `prefix` that this submission deletes."""
    try:
        total = int(data.get(f"{prefix}-TOTAL_FORMS") or 0)
    except ValueError:
        return set()
    return {data.get(f"{prefix}-{i}-id") for i in range(total) if data.get(f"{prefix}-{i}-DELETE")} - {None, ""}


def _stored_cycle(workflow: Workflow) -> list[dict] | None:
    if workflow is None or workflow._state.adding:
        return None
    nodes = [{"key": k, "name": n} for k, n in WorkflowNode.objects.filter(workflow=workflow).values_list("key", "name")]
    edges = [{"parent": p, "child": c} for p, c in WorkflowEdge.objects.filter(workflow=workflow)
             .values_list("parent_node__key", "child_node__key")]
    return document_cycle({"nodes": nodes, "edges": edges})


class WorkflowEdgeFormSet(forms.BaseInlineFormSet):
    """Edges that close a cycle are refused, nodes named by name: a cyclic workflow cannot be
    applied, and staff learn it when they draw the edge rather than when it runs. The API
    stores cycles (imported loops): a workflow that already has one stays editable in the
    admin, with a warning (WorkflowAdmin.save_related)."""

    def clean(self):
        super().clean()
        if any(form.errors for form in self.forms):
            return
        deleted_nodes = _deleted_inline_ids(self.data, "nodes")
        nodes: dict[str, dict] = {}
        edges = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None) or {}
            parent, child = data.get("parent_node"), data.get("child_node")
            if not data or data.get("DELETE") or parent is None or child is None:
                continue
            if str(parent.pk) in deleted_nodes or str(child.pk) in deleted_nodes:
                continue  # goes with its node
            for node in (parent, child):
                nodes[node.key] = {"key": node.key, "name": node.name}
            edges.append({"parent": parent.key, "child": child.key})
        cycle = document_cycle({"nodes": list(nodes.values()), "edges": edges})
        if cycle is not None and _stored_cycle(self.instance) is None:
            raise ValidationError(f"These edges make a cycle: {describe_cycle(cycle)}. A workflow with a cycle "
                                  "cannot be applied; remove one of its edges.", code="cycle")


class WorkflowParamForm(forms.ModelForm):
    class Meta:
        model = WorkflowParam
        fields = ("key", "value_type", "required", "default_value", "metadata")
        help_texts = {"default_value": "Text that parses as the type (int 3, bool true, json {...}); empty: no default."}

    def clean_default_value(self):
        # An empty box is no default (null), not an empty text.
        return self.cleaned_data.get("default_value") or None

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        row = {"key": data.get("key"), "value_type": data.get("value_type"), "required": bool(data.get("required")),
               "default_value": data.get("default_value"), "metadata": data.get("metadata")}
        _row_errors(self, {"name": _PLACEHOLDER_NAME, "params": [row]}, collection="params")
        return data


class PythonRowsInline:
    """A tabular inline whose rows (registry/templatetags/inline_rows.py) and widgets
    (imageflow/admin_widgets.py) are written in Python, with the markup of Django's templates:
    the workflow page has a form for every node, edge and param, and the templates' walk over
    every cell was most of its time."""

    template = "admin/registry/workflow/tabular_inline.html"

    def get_formset(self, request, obj=None, **kwargs):
        # The formset's renderer: its management form and every row's form use it.
        return super().get_formset(request, obj, renderer=PYTHON_WIDGETS, **kwargs)


class WorkflowNodeInline(PythonRowsInline, ImageFlowInline, admin.TabularInline):
    model = WorkflowNode
    form = WorkflowNodeForm
    extra = 0
    fields = ("order_index", "node_type", "name", "key", "parameters")
    readonly_fields = ("key",)


class WorkflowEdgeInline(PythonRowsInline, ImageFlowInline, admin.TabularInline):
    model = WorkflowEdge
    form = WorkflowEdgeForm
    formset = WorkflowEdgeFormSet
    extra = 0
    fields = ("parent_node", "child_node", "handoff_data")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        # The node dropdowns without the admin's related-object wrapper: its only link was "view
        # the selected node" on the node's read-only page, and the nodes are on this page; the
        # wrapper's template was a third of the rendering of an edge row.
        if db_field.name in {"parent_node", "child_node"}:
            return self.formfield_for_foreignkey(db_field, request, **kwargs)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Edges may only join nodes of the workflow being edited.
        if db_field.name in {"parent_node", "child_node"}:
            workflow_id = request.resolver_match.kwargs.get("object_id") if request.resolver_match else None
            kwargs["queryset"] = WorkflowNode.objects.filter(workflow_id=workflow_id) if workflow_id else WorkflowNode.objects.none()
            field = super().formfield_for_foreignkey(db_field, request, **kwargs)
            # Both dropdowns of every edge row list the same nodes: read them once per request
            # (each row's form would otherwise run the query again).
            if not hasattr(request, "_workflow_node_choices"):
                request._workflow_node_choices = list(field.choices)
            field.choices = request._workflow_node_choices
            return field
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class WorkflowParamInline(PythonRowsInline, ImageFlowInline, admin.TabularInline):
    model = WorkflowParam
    form = WorkflowParamForm
    extra = 0
    fields = ("key", "value_type", "required", "default_value", "metadata")


class WorkflowVersionInline(PythonRowsInline, admin.TabularInline):
    """The newest SHOWN versions: a workflow gains one a save, and the page must not grow with
    its history (the others are in Workflow versions, linked from the page's `history`). Its
    rows are written in Python too: Django's template walked 10 rows of 5 read-only cells."""

    SHOWN = 10
    model = WorkflowVersion
    extra = 0
    can_delete = False
    show_change_link = True  # the version's page: its picture, its diff, Restore
    fields = ("version", "change", "restored_from", "created_by", "created_at")
    readonly_fields = fields
    ordering = ("-version",)
    verbose_name_plural = f"versions (the newest {SHOWN})"

    def get_queryset(self, request):
        # A filter, not a slice: the formset filters the queryset by workflow after this.
        current = Workflow.objects.filter(pk=OuterRef("workflow_id")).values("version")[:1]
        return (super().get_queryset(request).select_related("created_by")
                .filter(version__gt=Subquery(current) - self.SHOWN))

    def has_add_permission(self, request, obj=None):
        return False


def _apply_problem(workflow: Workflow, exc: Exception) -> str:
    """What workflow_apply refused, with nodes named by name (the carrier's node ids are keys)."""
    names = dict(WorkflowNode.objects.filter(workflow=workflow).values_list("key", "name"))

    def node(key: Any) -> str:
        return f"node {names[key]!r}" if key in names else f"node {key!r}"

    if isinstance(exc, DagValidationError):
        return "; ".join(f"{node(e['node'])}: {e['field']}: {e['message']}" if e.get("node") else
                         f"{e['field']}: {e['message']}" for e in exc.errors[:5])
    if isinstance(exc, ValidationError):
        parts = []
        for key, found in validation_messages(exc).items():
            if key.startswith("nodes.") and key[len("nodes."):] in names:
                key = node(key[len("nodes."):])
            parts.append(" ".join(found) if key == "__all__" else f"{key}: {' '.join(found)}")
        return "; ".join(parts)
    return service_refusal_text(exc)


# Everything workflow_apply refuses with (ParamValueError: a stored default that does not
# parse, caught by resolve_params since; kept here so no later path can answer a 500).
APPLY_REFUSALS = (ValidationError, DagValidationError, ParamValueError, ConflictError)


@admin.action(description="Apply with default param values (runs the current version)")
def apply_with_defaults(modeladmin, request, queryset):
    from registry.engine_hooks import workflow_apply

    for workflow in queryset:
        try:
            execution, _ = workflow_apply(workflow=workflow, user=request.user, params={})
        except APPLY_REFUSALS as exc:
            modeladmin.message_user(request, f"{workflow.name}: not applied: {_apply_problem(workflow, exc)}",
                                    messages.ERROR)
        else:
            modeladmin.message_user(request, f"{workflow.name} v{workflow.version}: execution {execution.pk} started.",
                                    messages.SUCCESS)


class WorkflowAdminForm(forms.ModelForm):
    """Carries the version the page was loaded at: saving over a newer version (an API edit made
    meanwhile) is refused instead of silently overwriting it, as in the API (409)."""

    default_renderer = PYTHON_WIDGETS  # the same markup as Django's widget templates, drawn faster
    based_on_version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Workflow
        fields = ("name", "description", "category", "tags", "organization", "metadata")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding:
            self.fields["based_on_version"].initial = self.instance.version

    def clean(self):
        data = super().clean()
        if not self.instance._state.adding:
            # The admin's change view runs in one transaction: the lock holds until it commits.
            current = Workflow.objects.select_for_update().values_list("version", flat=True).get(pk=self.instance.pk)
            based_on = data.get("based_on_version")
            if based_on != current:
                raise forms.ValidationError(
                    f"This workflow changed while you edited it: it is at version {current}, this page was "
                    f"loaded at version {based_on}. Reload the page and make your change again.",
                    code="stale_version",
                )
        if not self.errors:
            try:
                clean_document(_document_fields(data))
            except ValidationError as exc:
                add_errors(self, exc)
        return data


def _document_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {"name": data.get("name"), "description": data.get("description") or None,
            "category": data.get("category") or "", "tags": [t.name for t in data.get("tags") or []],
            "metadata": data.get("metadata")}


def _kept_rows(formset) -> list[forms.ModelForm]:
    """The forms of an inline whose rows stay: not deleted, not an untouched extra row."""
    kept = []
    for form in formset.forms:
        data = getattr(form, "cleaned_data", None)
        if not data or data.get("DELETE") or (form.instance._state.adding and not form.has_changed()):
            continue
        kept.append(form)
    return kept


def workflow_document_from_page(form: WorkflowAdminForm, formsets) -> dict[str, Any]:
    """The workflow document the page describes (new nodes get their key from their name, as in
    the API)."""
    by_model = {formset.model: formset for formset in formsets}
    document = _document_fields(form.cleaned_data)
    kept_nodes = _kept_rows(by_model[WorkflowNode]) if WorkflowNode in by_model else []
    document["nodes"] = [
        {**({"key": f.instance.key} if not f.instance._state.adding else {}),
         "node_type": f.cleaned_data["node_type"], "name": f.cleaned_data["name"],
         "parameters": f.cleaned_data.get("parameters"), "order_index": f.cleaned_data.get("order_index") or 0}
        for f in kept_nodes
    ]
    kept_keys = {f.instance.key for f in kept_nodes if not f.instance._state.adding}
    document["edges"] = [
        {"parent": f.cleaned_data["parent_node"].key, "child": f.cleaned_data["child_node"].key,
         "handoff_data": f.cleaned_data.get("handoff_data")}
        for f in (_kept_rows(by_model[WorkflowEdge]) if WorkflowEdge in by_model else [])
        if f.cleaned_data["parent_node"].key in kept_keys and f.cleaned_data["child_node"].key in kept_keys
    ]
    document["params"] = [
        {"key": f.cleaned_data["key"], "value_type": f.cleaned_data["value_type"],
         "required": bool(f.cleaned_data.get("required")), "default_value": f.cleaned_data.get("default_value"),
         "metadata": f.cleaned_data.get("metadata")}
        for f in (_kept_rows(by_model[WorkflowParam]) if WorkflowParam in by_model else [])
    ]
    return document


@admin.register(Workflow)
class WorkflowAdmin(ImageFlowModelAdmin):
    """The page (form and inlines) is saved by workflow_create / workflow_replace, the services of
    the API: the same validation, a new version with its snapshot, and an audit entry. Deletes go
    through workflow_delete."""

    form = WorkflowAdminForm
    list_display = ("name", "version", "category", "organization", "created_by", "apply_count", "read_count",
                    "updated_at")
    list_filter = ("updated_at", "category", "tags", "organization")
    search_fields = ("name", "description")
    date_hierarchy = "updated_at"
    list_select_related = ("created_by", "organization")
    filter_horizontal = ("tags",)
    readonly_fields = ("picture", "version", "history", "created_by", "request_id", "read_count", "apply_count",
                       "reuse_count")
    inlines = [WorkflowNodeInline, WorkflowEdgeInline, WorkflowParamInline, WorkflowVersionInline]
    actions = [apply_with_defaults]

    class Media:
        css = PICTURE_MEDIA_CSS

    def get_fields(self, request, obj=None):
        fields = [f for f in super().get_fields(request, obj) if f != "picture"]
        return ["picture", *fields] if obj is not None else fields

    @admin.display(description="picture")
    def picture(self, obj):
        return workflow_picture_html(obj) if obj is not None and obj.pk else "—"

    @admin.display(description="history")
    def history(self, obj):
        if obj is None or not obj.pk:
            return "—"
        url = reverse("admin:registry_workflowversion_changelist", current_app=self.admin_site.name)
        return format_html('<a href="{}?workflow__id__exact={}">All versions of this workflow</a> (the newest {} '
                           "are listed below)", url, obj.pk, WorkflowVersionInline.SHOWN)

    def save_model(self, request, obj, form, change):
        # Saved with its nodes, edges and params by one service call in save_related.
        pass

    def save_related(self, request, form, formsets, change):
        from registry.workflow_services import workflow_create, workflow_replace

        document = workflow_document_from_page(form, formsets)
        organization = form.cleaned_data.get("organization")
        if change:
            saved = workflow_replace(workflow=form.instance, user=request.user, data=document,
                                     based_on_version=form.cleaned_data.get("based_on_version"),
                                     organization=organization)
        else:
            saved, _ = workflow_create(user=request.user, data=document, organization=organization)
        _finish_as_saved(form.instance, saved)
        for formset in formsets:  # read by the admin's change message
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        cycle = document_cycle(clean_document(document))
        if cycle is not None:
            self.message_user(request, f"{saved.name} has a cycle: {describe_cycle(cycle)}. It is stored (as the API "
                                       "stores imported loops) but cannot be applied until an edge of the cycle "
                                       "is removed.", messages.WARNING)

    def get_deleted_objects(self, objs, request):
        # Nodes, edges, params and versions are read-only in their own admins but belong to the
        # workflow: deleting the workflow (through the service) removes them with it.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def delete_model(self, request, obj):
        from registry.workflow_services import workflow_delete

        workflow_delete(workflow=obj, user=request.user)

    def delete_queryset(self, request, queryset):
        from registry.workflow_services import workflow_delete

        for workflow in queryset:
            workflow_delete(workflow=workflow, user=request.user)


@admin.register(WorkflowNode)
class WorkflowNodeAdmin(ReadOnlyAdminMixin, ImageFlowModelAdmin):
    # Read-only here: edit on the workflow's page, so the change becomes a version.
    list_display = ("name", "node_type", "workflow", "order_index")
    list_filter = ("node_type",)
    search_fields = ("name", "workflow__name")
    list_select_related = ("workflow",)
    raw_id_fields = ("workflow",)


@admin.register(WorkflowEdge)
class WorkflowEdgeAdmin(ReadOnlyAdminMixin, ImageFlowModelAdmin):
    # Read-only here: edit on the workflow's page, so the change becomes a version.
    list_display = ("id", "workflow", "parent_node", "child_node")
    search_fields = ("workflow__name", "parent_node__name", "child_node__name")
    list_select_related = ("workflow", "parent_node", "child_node")
    raw_id_fields = ("workflow", "parent_node", "child_node")


@admin.register(WorkflowParam)
class WorkflowParamAdmin(ReadOnlyAdminMixin, ImageFlowModelAdmin):
    # Read-only here: edit on the workflow's page, so the change becomes a version.
    list_display = ("key", "value_type", "required", "default_value", "workflow")
    list_filter = ("value_type", "required")
    search_fields = ("key", "workflow__name")
    list_select_related = ("workflow",)
    raw_id_fields = ("workflow",)


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdminMixin, ImageFlowModelAdmin):
    list_display = ("workflow", "version", "change", "restored_from", "created_by", "created_at")
    list_filter = ("change",)
    search_fields = ("workflow__name",)
    list_select_related = ("workflow", "created_by")
    exclude = ("snapshot",)
    readonly_fields = ("workflow", "version", "change", "restored_from", "created_by", "picture", "changes",
                       "snapshot_pretty")

    class Media:
        css = PICTURE_MEDIA_CSS

    @admin.display(description="snapshot")
    def snapshot_pretty(self, obj):
        return pretty_json(obj.snapshot)

    @admin.display(description="picture")
    def picture(self, obj):
        return workflow_version_picture_html(obj)

    @admin.display(description="changes from the previous version")
    def changes(self, obj):
        return diff_html(workflow_version_diff(obj))

    def has_restore_permission(self, request, obj=None) -> bool:
        # Restoring makes a new version of the workflow: a change of the workflow.
        return request.user.has_perm("registry.change_workflow")

    def get_urls(self):
        restore = path("<path:object_id>/restore/", self.admin_site.admin_view(self.restore_view),
                       name="registry_workflowversion_restore")
        return [restore, *super().get_urls()]

    def restore_view(self, request, object_id):
        """The Restore button: workflow_restore, the service of POST
        /workflows/{id}/versions/{n}/restore/, based on the version the page showed as current
        (so a change made meanwhile is not overwritten)."""
        from registry.workflow_services import WorkflowVersionConflict, workflow_restore

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        row = get_object_or_404(WorkflowVersion.objects.select_related("workflow"), pk=unquote(object_id))
        if not self.has_restore_permission(request, row):
            raise PermissionDenied
        try:
            based_on = int(request.POST.get("based_on_version") or 0) or None
        except ValueError:
            based_on = None
        try:
            workflow = workflow_restore(workflow=row.workflow, version=row.version, user=request.user,
                                        based_on_version=based_on)
        except WorkflowVersionConflict as exc:
            self.message_user(request, f"Not restored: the workflow is at version {exc.current}, this page showed "
                                       f"version {exc.based_on}. Reload the page and try again.", messages.ERROR)
        except (ValidationError, ConflictError) as exc:
            self.message_user(request, f"Not restored: {service_refusal_text(exc)}", messages.ERROR)
        else:
            self.message_user(request, f"{workflow.name}: version {row.version} restored as version "
                                       f"{workflow.version}.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:registry_workflow_change", args=[workflow.pk],
                                                current_app=self.admin_site.name))
        return HttpResponseRedirect(reverse("admin:registry_workflowversion_change", args=[row.pk],
                                            current_app=self.admin_site.name))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        row = self.get_object(request, unquote(object_id))
        if row is not None and self.has_restore_permission(request, row):
            current = Workflow.objects.filter(pk=row.workflow_id).values_list("version", flat=True).first()
            if current is not None and current != row.version:
                extra_context["restore_button"] = {
                    "url": reverse("admin:registry_workflowversion_restore", args=[row.pk],
                                   current_app=self.admin_site.name),
                    "based_on_version": current, "version": row.version,
                }
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(WorkflowAccess)
class WorkflowAccessAdmin(ReadOnlyAdminMixin, ImageFlowModelAdmin):
    list_display = ("created_at", "kind", "workflow", "version", "user")
    list_filter = ("kind", "created_at")
    search_fields = ("workflow__name", "user__username")
    date_hierarchy = "created_at"
    list_select_related = ("workflow", "user")


class TagAdminForm(forms.ModelForm):
    class Meta:
        model = Tag
        fields = ("name",)

    def clean_name(self):
        # The services label with stripped, lower-case names: a tag made here is the one they find.
        name = (self.cleaned_data.get("name") or "").strip().lower()
        if not name:
            raise ValidationError("a non-empty name is required.")
        if Tag.objects.filter(name=name).exclude(pk=self.instance.pk).exists():
            raise ValidationError(f"the tag {name!r} exists.")
        return name


@admin.register(Tag)
class TagAdmin(ImageFlowModelAdmin):
    form = TagAdminForm
    list_display = ("name", "created_at")
    search_fields = ("name",)
