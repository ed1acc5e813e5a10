from django import forms
from django.contrib import admin

from executions.admin_actions import run_pipelines
from imageflow.admin_utils import ImageFlowInline, ImageFlowModelAdmin, pretty_json

from .models import (
    Component,
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


class ReadOnlyAdminMixin:
    """History and logs are written by services only: viewable, never editable."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Component)
class ComponentAdmin(ImageFlowModelAdmin):
    list_display = ("name", "version", "runner", "docker_image", "updated_at")
    list_filter = ("runner", "updated_at")
    search_fields = ("name", "description", "docker_image")
    date_hierarchy = "created_at"


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


@admin.register(Pipeline)
class PipelineAdmin(ImageFlowModelAdmin):
    list_display = ("name", "version", "category", "organization", "created_by", "updated_at")
    list_filter = ("updated_at", "category", "tags", "organization")
    filter_horizontal = ("tags",)
    search_fields = ("name", "description")
    date_hierarchy = "updated_at"
    list_select_related = ("created_by", "organization")
    raw_id_fields = ("created_by",)
    inlines = [PipelineVersionInline]
    actions = [run_pipelines]


@admin.register(PipelineVersion)
class PipelineVersionAdmin(ImageFlowModelAdmin):
    list_display = ("pipeline", "version", "name", "created_by", "created_at")
    search_fields = ("name", "pipeline__name")
    date_hierarchy = "created_at"
    list_select_related = ("pipeline", "created_by")
    readonly_fields = ("pipeline", "version", "name", "description", "definition_pretty", "created_by")
    exclude = ("definition",)

    @admin.display(description="definition")
    def definition_pretty(self, obj):
        return pretty_json(obj.definition)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class WorkflowNodeInline(ImageFlowInline, admin.TabularInline):
    model = WorkflowNode
    extra = 0
    fields = ("order_index", "node_type", "name", "parameters")


class WorkflowEdgeInline(ImageFlowInline, admin.TabularInline):
    model = WorkflowEdge
    extra = 0
    fields = ("parent_node", "child_node", "handoff_data")

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


class WorkflowParamInline(ImageFlowInline, admin.TabularInline):
    model = WorkflowParam
    extra = 0
    fields = ("key", "value_type", "required", "default_value", "metadata")


class WorkflowVersionInline(admin.TabularInline):
    model = WorkflowVersion
    extra = 0
    can_delete = False
    fields = ("version", "change", "restored_from", "created_by", "created_at")
    readonly_fields = fields
    ordering = ("-version",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("created_by")

    def has_add_permission(self, request, obj=None):
        return False


@admin.action(description="Apply with default param values (runs the current version)")
def apply_with_defaults(modeladmin, request, queryset):
    from django.contrib import messages
    from django.core.exceptions import ValidationError

    from registry.workflow_apply import workflow_apply

    for workflow in queryset:
        try:
            execution, _ = workflow_apply(workflow=workflow, user=request.user, params={})
        except ValidationError as exc:
            details = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
            text = "; ".join(f"{k}: {' '.join(v)}" if k else " ".join(v) for k, v in details.items())
            modeladmin.message_user(request, f"{workflow.name}: not applied: {text}", messages.ERROR)
        else:
            modeladmin.message_user(request, f"{workflow.name} v{workflow.version}: execution {execution.pk} started.",
                                    messages.SUCCESS)


class WorkflowAdminForm(forms.ModelForm):
    """Carries the version the page was loaded at: saving over a newer version (an API edit made
    meanwhile) is refused instead of silently overwriting it, as in the API (409)."""

    based_on_version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Workflow
        fields = "__all__"

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
        return data


@admin.register(Workflow)
class WorkflowAdmin(ImageFlowModelAdmin):
    """Edits through the form and its inlines become a new version (snapshot + audit entry) once
    saved, and deletes go through the service, exactly like API writes."""

    form = WorkflowAdminForm
    list_display = ("name", "version", "category", "organization", "created_by", "apply_count", "read_count",
                    "updated_at")
    list_filter = ("updated_at", "category", "tags", "organization")
    search_fields = ("name", "description")
    date_hierarchy = "updated_at"
    list_select_related = ("created_by", "organization")
    raw_id_fields = ("created_by",)
    filter_horizontal = ("tags",)
    readonly_fields = ("version", "request_id", "read_count", "apply_count", "reuse_count")
    inlines = [WorkflowNodeInline, WorkflowEdgeInline, WorkflowParamInline, WorkflowVersionInline]
    actions = [apply_with_defaults]

    def save_model(self, request, obj, form, change):
        from registry.workflow_selectors import workflow_document

        previous = Workflow.objects.get(pk=obj.pk) if change else None
        request._workflow_before = workflow_document(previous) if previous else None
        request._workflow_organization_before = previous.organization_id if previous else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        from registry.workflow_services import workflow_record_external_change

        super().save_related(request, form, formsets, change)
        workflow_record_external_change(workflow=form.instance, user=request.user,
                                        before=getattr(request, "_workflow_before", None),
                                        organization_before=getattr(request, "_workflow_organization_before", None))

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
    readonly_fields = ("workflow", "version", "change", "restored_from", "created_by", "snapshot_pretty")

    @admin.display(description="snapshot")
    def snapshot_pretty(self, obj):
        return pretty_json(obj.snapshot)


@admin.register(WorkflowAccess)
class WorkflowAccessAdmin(ReadOnlyAdminMixin, ImageFlowModelAdmin):
    list_display = ("created_at", "kind", "workflow", "version", "user")
    list_filter = ("kind", "created_at")
    search_fields = ("workflow__name", "user__username")
    date_hierarchy = "created_at"
    list_select_related = ("workflow", "user")


@admin.register(Tag)
class TagAdmin(ImageFlowModelAdmin):
    list_display = ("name", "created_at")
    search_fields = ("name",)
