"""Writes of files: bytes go to the object store, metadata to the `files` table.

Object keys are built from a fresh UUID (never from the user's file name); the sanitized
original name is kept only as metadata. The object is written first and removed again if the
row cannot be stored, so a failure leaves neither a row without an object nor an orphan object.
"""

from __future__ import annotations

import io
import logging
import uuid
from typing import IO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from .inspection import inspect_image, name_for_type, sanitize_file_name, sha256_of
from .models import File

logger = logging.getLogger(__name__)


def object_key_for(*, file_id: uuid.UUID, extension: str, prefix: str = "uploads") -> str:
    today = timezone.now()
    return f"{prefix}/{today:%Y/%m/%d}/{file_id.hex}{extension}"


def file_store(
    *,
    stream: IO[bytes],
    original_name: str | None,
    created_by=None,
    prefix: str = "uploads",
    extra_metadata: dict | None = None,
    checksum: str | None = None,
    size: int | None = None,
    stored_key: str | None = None,
    file_id: uuid.UUID | None = None,
    created_by_id=None,
) -> File:
    """Store an image from a seekable binary stream (a temporary upload file, BytesIO, ...).

    `checksum` (SHA-256 hex) and `size` may be passed when the caller already computed them
    while receiving the bytes (the upload handler does), saving a second pass over the file.
    `stored_key` names an object the caller already wrote with these bytes (the streaming upload
    handler does, while receiving): it is not written again, and it is deleted if the bytes are
    refused or the row cannot be stored. `file_id` is then the id its key was built from.
    `created_by_id` names the owner by id (an engine step knows only its run's owner id).

    Raises django.core.exceptions.ValidationError for an empty, non-image or corrupt file;
    nothing is stored then.
    """
    try:
        facts = inspect_image(stream)
    except ValidationError:
        if stored_key is not None:
            _delete_object(stored_key)
        raise
    if checksum is None or size is None:
        checksum, size = sha256_of(stream)
    file_id = file_id or uuid.uuid4()
    if stored_key is None:
        key = object_key_for(file_id=file_id, extension=facts.extension, prefix=prefix)
        stored_key = _save_object(key, stream, content_type=facts.mime_type)
    metadata = {**facts.metadata, **(extra_metadata or {})}
    try:
        with transaction.atomic():
            return File.objects.create(
                id=file_id,
                original_name=name_for_type(sanitize_file_name(original_name, fallback=f"{file_id.hex}{facts.extension}"),
                                            facts),
                mime_type=facts.mime_type,
                file_size=size,
                storage_path=stored_key,
                checksum=checksum,
                metadata=metadata,
                created_by=created_by,
                **({"created_by_id": created_by_id} if created_by is None and created_by_id is not None else {}),
            )
    except Exception:
        default_storage.delete(stored_key)
        raise


def _save_object(key: str, stream: IO[bytes], *, content_type: str) -> str:
    """Write the object. A spooled upload on disk goes through boto3's upload_file, which streams
    parts from the file; upload_fileobj would buffer up to ten 8 MB parts in memory."""
    path = getattr(stream, "temporary_file_path", None)
    bucket = getattr(default_storage, "bucket", None)
    if path is not None and bucket is not None:
        bucket.Object(key).upload_file(path(), ExtraArgs={"ContentType": content_type},
                                       Config=getattr(default_storage, "transfer_config", None))
        return key
    return default_storage.save(key, stream)


def file_store_bytes(*, content: bytes, original_name: str, created_by=None, prefix: str = "outputs",
                     extra_metadata: dict | None = None, created_by_id=None) -> File:
    """Store an in-memory image (a step's output)."""
    return file_store(stream=io.BytesIO(content), original_name=original_name, created_by=created_by,
                      prefix=prefix, extra_metadata=extra_metadata, created_by_id=created_by_id)


def file_open(file: File) -> IO[bytes]:
    """A readable binary file object of the stored bytes (the caller closes it)."""
    return default_storage.open(file.storage_path, "rb")


def file_read_bytes(file: File) -> bytes:
    with file_open(file) as handle:
        return handle.read()


def file_delete(*, file: File) -> None:
    """Delete the row; its object is deleted once the deletion has committed."""
    key = file.storage_path
    with transaction.atomic():
        file.delete()
        transaction.on_commit(lambda: _delete_object(key))


def _delete_object(key: str) -> None:
    try:
        default_storage.delete(key)
    except Exception:  # the row is gone; a leftover object is logged, not fatal
        logger.exception("could not delete object %s", key)


def file_presigned_url(file: File, *, expires_in: int | None = None) -> str:
    """A short-lived GET URL of the object. The signed URL tells the store which headers to
    answer with (S3 response-content-*), so the object is served as an attachment under its
    sanitized name and as its sniffed type, not as whatever the store or a browser guesses."""
    from .downloads import content_disposition, download_content_type

    name = file.original_name or file.storage_path.rsplit("/", 1)[-1]
    return default_storage.url(
        file.storage_path,
        parameters={"ResponseContentDisposition": content_disposition(name),
                    "ResponseContentType": download_content_type(file.mime_type)},
        expire=expires_in or settings.S3_PRESIGNED_EXPIRY_SECONDS,
    )
