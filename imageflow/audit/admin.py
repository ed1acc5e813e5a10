from django.contrib import admin

from imageflow.admin_utils import ImageFlowModelAdmin, pretty_json

from .models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(ImageFlowModelAdmin):
    """Read-only: entries are written by the services and model receivers, never by hand."""

    list_display = ("created_at", "actor_username", "action", "object_type", "object_repr", "source")
    list_filter = ("action", "object_type", "source", "created_at")
    search_fields = ("object_repr", "actor_username", "object_id")
    date_hierarchy = "created_at"
    exclude = ("before", "after", "extra")
    readonly_fields = ("actor", "actor_username", "action", "source", "object_type", "object_id", "object_repr",
                       "before_pretty", "after_pretty", "extra_pretty")

    @admin.display(description="before")
    def before_pretty(self, obj):
        return pretty_json(obj.before)

    @admin.display(description="after")
    def after_pretty(self, obj):
        return pretty_json(obj.after)

    @admin.display(description="extra")
    def extra_pretty(self, obj):
        return pretty_json(obj.extra)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
