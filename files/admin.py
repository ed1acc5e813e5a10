from django.contrib import admin

from imageflow.admin_utils import ImageFlowModelAdmin, ServiceDeleteMixin

from .models import File


@admin.register(File)
class FileAdmin(ServiceDeleteMixin, ImageFlowModelAdmin):
    """A file's fields are facts about stored bytes (written by files.services when they are
    stored): read-only, as in the API. A file is added by uploading it (the API's upload, not a
    form of hand-typed paths and checksums) and deleted with its object by file_delete."""

    list_display = ("original_name", "mime_type", "file_size", "checksum", "created_by", "created_at")
    list_filter = ("mime_type", "created_at")
    search_fields = ("original_name", "checksum", "storage_path")
    date_hierarchy = "created_at"
    list_select_related = ("created_by",)
    readonly_fields = ("original_name", "mime_type", "file_size", "storage_path", "checksum", "metadata",
                       "created_by")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def service_delete(self, request, obj):
        from files.services import file_delete

        file_delete(file=obj)
