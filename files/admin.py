"""Files in the admin: uploaded through the API's upload service, shown with the thumbnails a
worker derived from them (never decoded on a page view), deleted with their objects by file_delete.
What each page shows and why: docs/admin.md ("Uploading images", "Thumbnails", "The file page")."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import default_storage
from django.http import Http404, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from imageflow.admin_utils import ImageFlowModelAdmin, LargeListAdminMixin, ServiceDeleteMixin, service_refusal_text

from .models import File
from .admin_display import metadata_rows, thumbnail_html
from .imaging import KNOWN_MIME_TYPES


class MimeTypeFilter(admin.SimpleListFilter):
    """The image types a file can have (files.imaging), not a SELECT DISTINCT over every file."""

    title = "mime type"
    parameter_name = "mime_type"

    def lookups(self, request, model_admin):
        return [(mime_type, mime_type) for mime_type in KNOWN_MIME_TYPES]

    def queryset(self, request, queryset):
        return queryset.filter(mime_type=self.value()) if self.value() else queryset


def upload_files_from_admin(request, uploads) -> list[File]:
    """Store each uploaded file through the API's upload service (files.services.file_store_upload);
    each refusal is a message naming the file, and a refused file leaves no row and no object."""
    from files.services import file_store_upload

    stored: list[File] = []
    for upload in uploads:
        try:
            stored.append(file_store_upload(upload=upload, created_by=request.user))
        except ValidationError as exc:
            messages.error(request, f"Not stored: {upload.name}: {service_refusal_text(exc)}")
    if stored:
        messages.success(request, f"Stored {len(stored)} image(s): {', '.join(f.original_name for f in stored)}. "
                                  "A worker is making their thumbnails.")
    return stored


@admin.register(File)
class FileAdmin(LargeListAdminMixin, ServiceDeleteMixin, ImageFlowModelAdmin):
    """A file's fields are facts about stored bytes (written by files.services when they are
    stored): read-only, as in the API. A file is added by uploading it (the "Upload images" page,
    the API's upload service; not a form of hand-typed paths and checksums) and deleted with its
    object and thumbnails by file_delete."""

    change_list_template = "admin/files/file/change_list.html"
    change_form_template = "admin/files/file/change_form.html"
    list_display = ("thumbnail", "original_name", "dimensions", "mime_type", "file_size", "created_by", "created_at")
    list_display_links = ("thumbnail", "original_name")
    # Dates by the created_at filter (today, past 7 days, ...: no query), not a date_hierarchy,
    # whose month links are a SELECT DISTINCT date_trunc over every file.
    list_filter = (MimeTypeFilter, "created_at")
    search_fields = ("original_name", "checksum", "storage_path")
    list_select_related = ("created_by",)
    # The metadata is shown as a table by the page's template (change_form.html), not as raw JSON.
    fields = ("original_name", "mime_type", "file_size", "storage_path", "checksum", "created_by")
    readonly_fields = fields
    actions = ["generate_missing_thumbnails"]

    @admin.display(description="thumbnail")
    def thumbnail(self, obj: File):
        return thumbnail_html(obj, size=64)

    @admin.display(description="dimensions")
    def dimensions(self, obj: File):
        meta = obj.metadata or {}
        width, height = meta.get("oriented_width") or meta.get("width"), meta.get("oriented_height") or meta.get("height")
        return f"{width} × {height}" if width and height else "—"

    @admin.action(description="Generate missing thumbnails")
    def generate_missing_thumbnails(self, request, queryset):
        from files.services import file_thumbnails_enqueue

        missing = list(queryset.filter(thumbnails__isnull=True).values_list("pk", flat=True))
        for file_id in missing:
            file_thumbnails_enqueue(file_id=file_id)
        self.message_user(request, f"Asked a worker for the thumbnails of {len(missing)} file(s).", messages.INFO)

    def has_add_permission(self, request):
        return False

    def has_upload_permission(self, request) -> bool:
        return request.user.has_perm("files.add_file")

    def has_change_permission(self, request, obj=None):
        return False

    def service_delete(self, request, obj):
        from files.services import file_delete

        file_delete(file=obj)

    def get_urls(self):
        info = (self.model._meta.app_label, self.model._meta.model_name)
        return [
            path("upload/", self.admin_site.admin_view(self.upload_view), name="%s_%s_upload" % info),
            path("<path:object_id>/thumbnail/<int:size>/", self.admin_site.admin_view(self.thumbnail_view),
                 name="%s_%s_thumbnail" % info),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_upload": self.has_upload_permission(request)}
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        from files.services import file_presigned_url, file_thumbnails_enqueue

        file = self.get_object(request, unquote(object_id))
        extra_context = dict(extra_context or {})
        if file is not None:
            if file.thumbnails is None:  # lost or not made yet: ask again (never decoded here)
                file_thumbnails_enqueue(file_id=file.pk)
            extra_context.update(file_object=file, preview_html=thumbnail_html(file, size=None),
                                 download_url=file_presigned_url(file), metadata_rows=metadata_rows(file.metadata),
                                 metadata_json=json.dumps(file.metadata or {}, indent=2, ensure_ascii=False,
                                                          sort_keys=True))
        return super().change_view(request, object_id, form_url, extra_context)

    # -- the upload page ------------------------------------------------------------------------

    @method_decorator(csrf_exempt)
    def upload_view(self, request):
        """Several images at once, each through the API's upload service. The body is parsed by the
        API's StreamingUploadHandler (hashing while receiving, a large file streamed to the store as
        it arrives), so it must be set before anything reads the body: the CSRF check runs after."""
        if not self.has_upload_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            from files.api.upload import StreamingUploadHandler

            handler = StreamingUploadHandler(request)
            request.upload_handlers = [handler]
            return csrf_protect(self._upload_post)(request, handler)
        return self._upload_page(request)

    def _upload_post(self, request, handler):
        from files.api.upload import discard_streamed_objects
        from imageflow.api.errors import PayloadTooLarge

        try:
            try:
                uploads = request.FILES.getlist("images")
            except PayloadTooLarge as exc:
                messages.error(request, f"Nothing stored: {exc.detail}")
                return HttpResponseRedirect(request.path)
            if not uploads:
                messages.warning(request, "Choose one or more images to upload.")
                return HttpResponseRedirect(request.path)
            stored = upload_files_from_admin(request, uploads)
        finally:
            discard_streamed_objects(handler)
        if stored and len(stored) == len(uploads):
            return HttpResponseRedirect(reverse("admin:files_file_changelist", current_app=self.admin_site.name))
        return HttpResponseRedirect(request.path)

    def _upload_page(self, request):
        from django.conf import settings

        return TemplateResponse(request, "admin/files/file/upload.html", {
            **self.admin_site.each_context(request), "title": "Upload images", "opts": self.model._meta,
            "max_bytes": settings.FILE_UPLOAD_MAX_BYTES, "max_pixels": settings.IMAGE_MAX_PIXELS,
        })

    # -- thumbnails -----------------------------------------------------------------------------

    def thumbnail_view(self, request, object_id, size):
        """The derived object only (never the original), streamed with headers that keep a browser
        from treating it as anything but an image of ours: a fixed image type, nosniff, inline,
        a sandboxing CSP; private caching (the URL carries the key, which never changes)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        file = get_object_or_404(File.objects.only("id", "thumbnails"), pk=unquote(object_id))
        entry = (file.thumbnails or {}).get(str(size))
        if not isinstance(entry, dict) or entry.get("mime_type") not in {"image/jpeg", "image/png"}:
            raise Http404("no thumbnail of this size (yet)")
        handle = default_storage.open(entry["key"], "rb")
        response = StreamingHttpResponse(iter(lambda: handle.read(64 * 1024), b""), content_type=entry["mime_type"])
        response["Content-Length"] = str(entry["bytes"])
        response["Content-Disposition"] = "inline"
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Cache-Control"] = "private, max-age=86400"
        response._resource_closers.append(handle.close)
        return response
