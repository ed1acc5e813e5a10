"""File metadata; the bytes live in the S3-compatible object store (seed 000: files)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from imageflow.models import UUIDModel
from imageflow.validators import validate_file_name


class File(UUIDModel):
    original_name = models.CharField(max_length=500, blank=True, null=True, validators=[validate_file_name])
    mime_type = models.CharField(max_length=100, blank=True, null=True)
    file_size = models.BigIntegerField(blank=True, null=True)
    storage_path = models.CharField(max_length=1000, help_text="Object key in the bucket.")
    checksum = models.CharField(max_length=64, blank=True, null=True, help_text="SHA-256, hex.")
    metadata = models.JSONField(blank=True, null=True, help_text="format, width, height, EXIF, ...")
    thumbnails = models.JSONField(
        blank=True, null=True,
        help_text="Derived previews in the object store, by size: {\"256\": {\"key\", \"width\", \"height\", "
                  "\"mime_type\", \"bytes\"}, ...}, or {\"error\": \"...\"} when the image could not be decoded. "
                  "Written once by the thumbnail task (files.services.file_thumbnails_generate).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        db_column="created_by", related_name="files",
    )

    class Meta:
        db_table = "files"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["checksum"], name="files_checksum_idx"),
            models.Index(fields=["created_by", "-created_at"], name="files_owner_created_idx"),
            # The admin's file list and the run form's picker: newest first, a page at a time.
            models.Index(fields=["-created_at", "-id"], name="files_created_idx"),
            # Rows share an object when the step cache made them (executions/engine/cache.py):
            # deleting one asks whether another still names its object.
            models.Index(fields=["storage_path"], name="files_storage_path_idx"),
        ]

    def __str__(self) -> str:
        return self.original_name or str(self.id)
