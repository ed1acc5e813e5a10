from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from files import selectors, services
from imageflow.api.params import text_param
from imageflow.api.permissions import IsOwnerOrStaff
from imageflow.api.schema import ERROR_RESPONSES

from .serializers import DownloadSerializer, FileSerializer, FileUploadSerializer
from .upload import StreamingUploadHandler, discard_streamed_objects


@extend_schema_view(
    list=extend_schema(parameters=[
        OpenApiParameter("checksum", str, description="SHA-256 hex of the bytes."),
        OpenApiParameter("mime_type", str, description="e.g. image/png"),
    ]),
    destroy=extend_schema(responses={204: None, **ERROR_RESPONSES(404)}, summary="Delete the file and its object"),
)
class FileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                  viewsets.GenericViewSet):
    """Images uploaded by the signed-in user (staff: all)."""

    serializer_class = FileSerializer
    permission_classes = [IsAuthenticated, IsOwnerOrStaff]
    # Uploads are multipart only (streamed through files.api.upload.HashingUploadHandler).
    parser_classes = [MultiPartParser]

    def get_queryset(self):
        return selectors.file_list(user=self.request.user, checksum=text_param(self.request, "checksum"),
                                   mime_type=text_param(self.request, "mime_type"))

    @extend_schema(
        request={"multipart/form-data": FileUploadSerializer},
        responses={201: FileSerializer, **ERROR_RESPONSES(400, 413, 415)},
        summary="Upload an image (multipart field `file`)",
        description="Streams the upload to a temporary file while hashing it, checks the bytes are an image "
                    "(the extension is ignored) and stores it in the object store. A non-image or corrupt "
                    "file is a 400, an upload over FILE_UPLOAD_MAX_BYTES a 413; nothing is stored then.",
    )
    def create(self, request, *args, **kwargs):
        # Only this endpoint streams to the object store while parsing (must be set before parsing).
        handler = StreamingUploadHandler(request._request)
        request._request.upload_handlers = [handler]
        try:
            serializer = FileUploadSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            upload = serializer.validated_data["file"]
            try:
                stored = services.file_store_upload(upload=upload, created_by=request.user,
                                                    tags=serializer.validated_data.get("tags"))
            except DjangoValidationError as exc:
                if hasattr(exc, "error_dict") and "tags" in exc.error_dict:
                    raise
                raise DjangoValidationError({"file": exc.messages}) from None
        finally:
            discard_streamed_objects(handler)
        return Response(FileSerializer(stored, context={"request": request}).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request={"multipart/form-data": FileUploadSerializer},
        responses={201: FileSerializer, **ERROR_RESPONSES(400, 413)},
        summary="Upload an ONNX model (multipart field `file`) for an ONNX component",
        description="Checks the bytes with onnx.checker and stores the model with its input/output signature in "
                    "`metadata.onnx`; a component names it as `model_file` (docs/components.md). Bytes that are "
                    "not a valid ONNX model are a 400.",
    )
    @action(detail=False, methods=["post"], url_path="models")
    def models(self, request):
        serializer = FileUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        try:
            stored = services.file_store_model(content=upload.read(), original_name=upload.name,
                                               created_by=request.user)
        except DjangoValidationError as exc:
            raise DjangoValidationError({"file": exc.messages}) from None
        return Response(FileSerializer(stored, context={"request": request}).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        services.file_delete(file=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[OpenApiParameter("size", int, description="One of the made sizes (FILE_THUMBNAIL_SIZE, "
                                                                "FILE_PREVIEW_SIZE); default the thumbnail size.")],
        responses={302: OpenApiResponse(DownloadSerializer, description="Redirect to a short-lived presigned URL "
                                                                        "of the derived image, also in the body."),
                   **ERROR_RESPONSES(400, 404, 409)},
        summary="Thumbnail or preview: the image as a viewer shows it, made once by a worker",
    )
    @action(detail=True, methods=["get"], url_path="thumbnail")
    def thumbnail(self, request, pk=None):
        from django.conf import settings
        from rest_framework.exceptions import ValidationError

        from imageflow.api.errors import Conflict

        file = self.get_object()
        raw = request.query_params.get("size", str(settings.FILE_THUMBNAIL_SIZE))
        if not raw.isdigit() or int(raw) not in services.thumbnail_sizes():
            raise ValidationError({"size": [f"One of {services.thumbnail_sizes()}."]})
        url = services.file_thumbnail_url(file, size=int(raw))
        if url is None:  # the file is there (404 would say it is not, or not yours): it is not ready
            raise Conflict("No thumbnail of this file yet: a worker makes it after the upload; try again shortly.")
        return Response({"url": url}, status=status.HTTP_302_FOUND,
                        headers={"Location": url, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    @extend_schema(
        responses={302: OpenApiResponse(DownloadSerializer, description="Redirect (Location header) to a short-lived "
                                                                        "presigned URL, also given in the body."),
                   **ERROR_RESPONSES(404)},
        summary="Download: redirect to a presigned object-store URL",
    )
    @action(detail=True, methods=["get"], url_path="download")
    def download(self, request, pk=None):
        from files.downloads import content_disposition

        file = self.get_object()
        url = services.file_presigned_url(file)
        # The store answers the redirect with the same disposition and the sniffed type (signed
        # into the URL); it cannot add nosniff itself (docs/security.md).
        return Response({"url": url}, status=status.HTTP_302_FOUND, headers={
            "Location": url,
            "Content-Disposition": content_disposition(file.original_name or file.storage_path.rsplit("/", 1)[-1]),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",  # the URL is a short-lived credential for the object
        })
