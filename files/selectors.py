"""Reads of files, scoped by ownership (imageflow.api.ownership)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from imageflow.api.ownership import scope_to_user

from .models import File


def file_list(*, user, checksum: str | None = None, mime_type: str | None = None) -> QuerySet[File]:
    queryset = scope_to_user(File.objects.all(), user=user).order_by("-created_at", "-id")
    if checksum:
        queryset = queryset.filter(checksum=checksum.lower())
    if mime_type:
        queryset = queryset.filter(mime_type=mime_type)
    return queryset


def files_visible_to(*, user, file_ids: Iterable) -> dict:
    """{id: File} of those ids the user may use (missing ids are not visible or do not exist)."""
    ids = list(file_ids)
    return {f.pk: f for f in scope_to_user(File.objects.filter(pk__in=ids), user=user)}
