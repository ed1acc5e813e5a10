from django.contrib import admin

from imageflow.admin_utils import ImageFlowModelAdmin

from .admin_actions import cancel_executions, retry_executions
from .admin_live import LiveProgressAdminMixin
from .models import ComponentExecution, PipelineExecution


class ComponentExecutionInline(admin.TabularInline):
    model = ComponentExecution
    extra = 0
    can_delete = False
    fields = ("node_id", "component", "status", "attempts", "reused_from", "execution_time_ms", "started_at", "completed_at",
              "error_message")
    readonly_fields = fields
    ordering = ("created_at",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("component", "reused_from")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(PipelineExecution)
class PipelineExecutionAdmin(LiveProgressAdminMixin, ImageFlowModelAdmin):
    list_display = ("id", "pipeline", "pipeline_version", "status", "created_by", "created_at", "started_at", "completed_at")
    list_filter = ("status", "created_at", "started_at")
    search_fields = ("id", "pipeline__name", "error_message")
    date_hierarchy = "created_at"
    list_select_related = ("pipeline", "created_by")
    raw_id_fields = ("pipeline", "created_by", "retry_of")
    readonly_fields = ("status", "started_at", "completed_at")
    inlines = [ComponentExecutionInline]
    actions = [cancel_executions, retry_executions]


@admin.register(ComponentExecution)
class ComponentExecutionAdmin(ImageFlowModelAdmin):
    list_display = ("node_id", "execution", "component", "status", "execution_time_ms", "started_at", "completed_at")
    list_filter = ("status", "started_at")
    search_fields = ("node_id", "component__name", "execution__id")
    date_hierarchy = "created_at"
    list_select_related = ("execution", "component")
    raw_id_fields = ("execution", "component")
    readonly_fields = ("status", "started_at", "completed_at", "heartbeat_at", "attempts", "worker", "reused_from")
