from django.contrib import admin

from executions.admin_actions import run_pipelines
from imageflow.admin_utils import ImageFlowInline, ImageFlowModelAdmin, pretty_json

from .models import Component, Pipeline, PipelineVersion, Workflow, WorkflowEdge, WorkflowNode, WorkflowParam


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

    @admin.display(description="definition")
    def definition_pretty(self, obj):
        return pretty_json(obj.definition)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Pipeline)
class PipelineAdmin(ImageFlowModelAdmin):
    list_display = ("name", "version", "created_by", "updated_at")
    list_filter = ("updated_at",)
    search_fields = ("name", "description")
    date_hierarchy = "updated_at"
    list_select_related = ("created_by",)
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
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class WorkflowParamInline(ImageFlowInline, admin.TabularInline):
    model = WorkflowParam
    extra = 0
    fields = ("key", "value_type", "required", "default_value", "metadata")


@admin.register(Workflow)
class WorkflowAdmin(ImageFlowModelAdmin):
    list_display = ("name", "version", "created_by", "updated_at")
    list_filter = ("updated_at",)
    search_fields = ("name", "description")
    date_hierarchy = "updated_at"
    list_select_related = ("created_by",)
    raw_id_fields = ("created_by",)
    inlines = [WorkflowNodeInline, WorkflowEdgeInline, WorkflowParamInline]


@admin.register(WorkflowNode)
class WorkflowNodeAdmin(ImageFlowModelAdmin):
    list_display = ("name", "node_type", "workflow", "order_index")
    list_filter = ("node_type",)
    search_fields = ("name", "workflow__name")
    list_select_related = ("workflow",)
    raw_id_fields = ("workflow",)


@admin.register(WorkflowEdge)
class WorkflowEdgeAdmin(ImageFlowModelAdmin):
    list_display = ("id", "workflow", "parent_node", "child_node")
    search_fields = ("workflow__name", "parent_node__name", "child_node__name")
    list_select_related = ("workflow", "parent_node", "child_node")
    raw_id_fields = ("workflow", "parent_node", "child_node")


@admin.register(WorkflowParam)
class WorkflowParamAdmin(ImageFlowModelAdmin):
    list_display = ("key", "value_type", "required", "default_value", "workflow")
    list_filter = ("value_type", "required")
    search_fields = ("key", "workflow__name")
    list_select_related = ("workflow",)
    raw_id_fields = ("workflow",)
