from __future__ import annotations

from rest_framework import serializers

from files.models import File


class FileSerializer(serializers.ModelSerializer):
    metadata = serializers.JSONField(read_only=True, help_text="format, width, height, mode, exif (JSON)")
    created_by = serializers.UUIDField(source="created_by_id", read_only=True, allow_null=True)
    download_url = serializers.HyperlinkedIdentityField(view_name="api:file-download", read_only=True)

    class Meta:
        model = File
        fields = ["id", "original_name", "mime_type", "file_size", "checksum", "metadata", "created_by", "created_at",
                  "download_url"]
        read_only_fields = fields


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The image (JPEG, PNG, TIFF, BMP, GIF, WebP, ...).",
                                 allow_empty_file=True, use_url=False)
    tags = serializers.ListField(child=serializers.CharField(max_length=50), required=False, max_length=20,
                                 help_text="Optional tags (repeat the field, or comma-separated), kept in "
                                           "metadata.tags; triggers may match them (docs/automation.md).")


class DownloadSerializer(serializers.Serializer):
    url = serializers.URLField(help_text="Presigned GET URL of the object; expires after S3_PRESIGNED_EXPIRY_SECONDS.")
