from django.contrib import admin

from imageflow.admin_utils import ImageFlowModelAdmin

from .models import File


@admin.register(File)
class FileAdmin(ImageFlowModelAdmin):
    list_display = ("original_name", "mime_type", "file_size", "checksum", "created_by", "created_at")
    list_filter = ("mime_type", "created_at")
    search_fields = ("original_name", "checksum", "storage_path")
    date_hierarchy = "created_at"
    list_select_related = ("created_by",)
    raw_id_fields = ("created_by",)
