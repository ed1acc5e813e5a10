"""Writes of files: bytes go to the object store, metadata to the `files` table.

Object keys are built from a fresh UUID (never from the user's file name); the sanitized
original name is kept only as metadata. The object is written first and removed again if the
row cannot be stored, so a failure leaves neither a row without an object nor an orphan object.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Callable
from typing import IO

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone

from imageflow.exceptions import ConflictError

from .inspection import inspect_image, name_for_type, sanitize_file_name, sha256_of
from .models import File

logger = logging.getLogger(__name__)

# By its registered name (the name queued messages carry): files.tasks calls this module, so this
# module does not import it back; the app imports its tasks when it is ready (files/apps.py).
THUMBNAILS_TASK = "files.tasks.file_thumbnails_make"


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
            file_thumbnails_enqueue(file_id=file_id)
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
    """Delete the row; once the deletion has committed, its derived thumbnails (kept per file id)
    are deleted, and its object too unless something else still names it (file_objects_release):
    rows the step cache made share their objects with other rows and with cache entries.
    Thumbnails are found by their prefix, not by the row's record, so a thumbnail task that wrote
    its objects but had not recorded them yet leaves nothing behind (and a task that writes after
    this finds no row and removes its own objects: file_thumbnails_generate)."""
    key = file.storage_path
    file_id = file.pk
    with transaction.atomic():
        try:
            file.delete()
        except ProtectedError:  # an ONNX component names it as its model (registry.Component.model_file)
            raise ConflictError(f"file {file_id} is the model of a component and cannot be deleted.") from None
        transaction.on_commit(lambda: (file_objects_release(keys=[key]), _delete_thumbnails(file_id)))


# --- shared objects: a File row is one reference to its object ------------------------------------

# Who else may name an object: functions (object keys) -> the keys among them still referenced.
# The executions app provides the step cache's (executions/apps.py); files does not import it.
_object_referrers: list[Callable[[list[str]], set[str]]] = []


def file_object_referrer_provide(referrer: Callable[[list[str]], set[str]]) -> None:
    """Called once by an app whose rows keep objects alive (the step cache's entries)."""
    if referrer not in _object_referrers:
        _object_referrers.append(referrer)


def file_objects_referenced(*, keys: list[str]) -> set[str]:
    """The keys among `keys` that a File row or another referrer (a cache entry) still names."""
    if not keys:
        return set()
    referenced = set(File.objects.filter(storage_path__in=keys).values_list("storage_path", flat=True))
    for referrer in _object_referrers:
        rest = [key for key in keys if key not in referenced]
        if rest:
            referenced |= referrer(rest)
    return referenced


def file_objects_release(*, keys: list[str]) -> list[str]:
    """Delete the objects of `keys` that nothing names any more; returns those deleted.

    Called after the commit that removed a reference (a row, a cache entry), so it sees every
    reference committed by then: of two deletions of an object's last two references, whichever
    commits last sees neither and deletes it (never both keep it). A new reference to an existing
    object is only made while one that stays is locked (cache.cache_materialize holds its entry,
    cache.cache_record the output rows, FOR KEY SHARE), so the deletion of that one waits for it
    and then sees it. When the question cannot be answered (database error) the objects stay: a
    leftover object is logged, a broken file would not be."""
    keys = list(dict.fromkeys(keys))
    try:
        referenced = file_objects_referenced(keys=keys)
    except Exception:
        logger.exception("could not check the references of objects %s; they are kept", keys)
        return []
    released = [key for key in keys if key not in referenced]
    for key in released:
        _delete_object(key)
    return released


def _delete_object(key: str) -> None:
    try:
        default_storage.delete(key)
    except Exception:  # the row is gone; a leftover object is logged, not fatal
        logger.exception("could not delete object %s", key)


# --- thumbnails: derived previews, generated once per file by a worker ----------------------------

def thumbnail_prefix(file_id) -> str:
    return f"thumbnails/{file_id}/"


def thumbnail_sizes() -> list[int]:
    """The derived sizes, largest first: the preview of the file page and the list thumbnail."""
    return sorted({settings.FILE_PREVIEW_SIZE, settings.FILE_THUMBNAIL_SIZE}, reverse=True)


def file_thumbnails_enqueue(*, file_id) -> None:
    """Ask a worker for the file's thumbnails once the transaction commits. The file is stored
    whether or not the broker takes the message: a lost one is sent again by the file page, or the
    file list's action "Generate missing thumbnails"."""
    def send() -> None:
        try:
            current_app.tasks[THUMBNAILS_TASK].delay(str(file_id))
        except Exception as exc:  # broker unreachable: the file is there, its thumbnail comes later
            logger.warning("could not enqueue thumbnails of file %s (%s: %s)", file_id, type(exc).__name__, exc)

    transaction.on_commit(send)


def file_thumbnails_generate(*, file_id) -> dict | None:
    """Decode the original once (files.imaging.image_preview: oriented, sRGB, fitted) and store
    each size as a derived object `thumbnails/<file id>/<size>.<jpg|png>`; record them on the row.

    Idempotent: a file that has its record already (thumbnails or the reason there are none) is
    left alone, keys are fixed per file and size, and the record is written only where it is still
    empty, so a second delivery changes nothing. A file deleted meanwhile gets its objects removed
    again. An image that cannot be decoded (too many pixels, corrupt) is recorded as
    {"error": ...}, so no page asks for it again. Returns the record (None: no such file)."""
    from PIL import Image

    from .imaging import ImageRefused, image_preview

    file = File.objects.filter(pk=file_id).only("id", "storage_path", "thumbnails").first()
    if file is None or file.thumbnails:
        return None if file is None else file.thumbnails
    record: dict = {}
    written: list[str] = []
    try:
        with file_open(file) as handle:
            previous, previous_size = image_preview(handle, size=thumbnail_sizes()[0],
                                                    quality=settings.FILE_THUMBNAIL_QUALITY), thumbnail_sizes()[0]
        for size in thumbnail_sizes():
            # Smaller sizes from the largest preview: the original is decoded once.
            content, mime_type = previous if size == previous_size else image_preview(
                previous[0], size=size, quality=settings.FILE_THUMBNAIL_QUALITY)
            with Image.open(io.BytesIO(content)) as image:
                width, height = image.size
            key = f"{thumbnail_prefix(file.pk)}{size}{'.png' if mime_type == 'image/png' else '.jpg'}"
            default_storage.bucket.Object(key).put(Body=content, ContentType=mime_type,
                                                   CacheControl="private, max-age=86400")
            written.append(key)
            record[str(size)] = {"key": key, "width": width, "height": height, "mime_type": mime_type,
                                 "bytes": len(content)}
    except ImageRefused as exc:
        record = {"error": str(exc)[:500]}
    if File.objects.filter(pk=file.pk, thumbnails__isnull=True).update(thumbnails=record):
        return record
    if not File.objects.filter(pk=file.pk).exists():  # deleted while we worked: leave no orphans
        for key in written:
            _delete_object(key)
        return None
    return File.objects.values_list("thumbnails", flat=True).get(pk=file.pk)  # another delivery won


def _delete_thumbnails(file_id) -> None:
    try:
        default_storage.bucket.objects.filter(Prefix=thumbnail_prefix(file_id)).delete()
    except Exception:  # the row is gone; leftover derived objects are logged, not fatal
        logger.exception("could not delete thumbnails of file %s", file_id)


# --- uploads: announced to the apps that act on new files ----------------------------------------

# Called with each new upload inside the transaction that stores its row: the executions app
# registers its triggers' matching (executions/apps.py), which files does not import. A hook's
# writes commit with the file or not at all.
_upload_hooks: list[Callable[[File], object]] = []
UPLOAD_TAGS_MAX = 20


def file_upload_hook_provide(hook: Callable[[File], object]) -> None:
    """Called once by an app that acts on new uploads (the executions app's triggers)."""
    if hook not in _upload_hooks:
        _upload_hooks.append(hook)


def file_uploaded_announce(file: File) -> None:
    """Tell the hooks about a new upload (in the caller's transaction). Announcing a file twice
    is harmless: a hook records what it matched once (executions.triggers)."""
    for hook in _upload_hooks:
        hook(file)


def upload_tags_clean(tags) -> list[str]:
    """Tags an uploader puts on a file (metadata["tags"]; triggers match them): short words."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    cleaned = []
    for tag in tags:
        for part in str(tag).split(","):
            part = part.strip()
            if not part:
                continue
            if len(part) > 50 or not all(c.isalnum() or c in "-_.:" for c in part):
                raise ValidationError({"tags": [f"Not a tag: {part[:60]!r} (letters, digits, - _ . :, "
                                                f"at most 50 characters)."]})
            cleaned.append(part)
    cleaned = list(dict.fromkeys(cleaned))
    if len(cleaned) > UPLOAD_TAGS_MAX:
        raise ValidationError({"tags": [f"At most {UPLOAD_TAGS_MAX} tags."]})
    return cleaned


def file_store_model(*, content: bytes, original_name: str | None, created_by=None) -> File:
    """Store an ONNX model file (files.onnx_models): checked with onnx.checker, its signature in
    `metadata["onnx"]`. A model is not an image: no thumbnails. Raises ValidationError for bytes
    that are not a valid ONNX model; nothing is stored then."""
    from .onnx_models import MODEL_FORMAT, MODEL_MIME_TYPE, onnx_signature

    signature = onnx_signature(content)
    stream = io.BytesIO(content)
    checksum, size = sha256_of(stream)
    file_id = uuid.uuid4()
    key = _save_object(object_key_for(file_id=file_id, extension=".onnx", prefix="models"), stream,
                       content_type=MODEL_MIME_TYPE)
    name = sanitize_file_name(original_name, fallback=f"{file_id.hex}.onnx")
    if not name.lower().endswith(".onnx"):
        name = f"{name}.onnx"
    try:
        with transaction.atomic():
            return File.objects.create(id=file_id, original_name=name, mime_type=MODEL_MIME_TYPE, file_size=size,
                                       storage_path=key, checksum=checksum, created_by=created_by,
                                       metadata={"format": MODEL_FORMAT, "onnx": signature})
    except Exception:
        default_storage.delete(key)
        raise


def file_store_upload(*, upload, created_by, tags=None) -> File:
    """Store a file received by files.api.upload's handlers (the API's POST /files/ and the admin's
    upload page): the checksum computed while receiving, and the object already streamed to the
    store for a large file, are used as they are; `tags` go to metadata["tags"]. The upload is
    announced to the upload hooks (triggers) in the transaction that stores its row. Raises
    ValidationError like file_store."""
    tags = upload_tags_clean(tags)
    checksum = getattr(upload, "sha256", None)
    stored = None
    try:
        with transaction.atomic():
            stored = file_store(
                stream=upload, original_name=upload.name, created_by=created_by, checksum=checksum,
                size=upload.size if checksum else None, stored_key=getattr(upload, "object_key", None),
                file_id=getattr(upload, "file_id", None), extra_metadata={"tags": tags} if tags else None,
            )
            # file_store owns the streamed object now (it removes it itself on failure).
            upload.object_key = None
            file_uploaded_announce(stored)
    except Exception:
        if stored is not None:  # stored, then a hook failed: the row is rolled back, the object goes too
            _delete_object(stored.storage_path)
        raise
    return stored


def file_thumbnail_url(file: File, *, size: int, expires_in: int | None = None) -> str | None:
    """A short-lived GET URL of one of the file's derived thumbnails (the same oriented,
    color-managed decode the admin shows and the steps see), or None while it is not made."""
    entry = (file.thumbnails or {}).get(str(size))
    if not isinstance(entry, dict) or entry.get("mime_type") not in {"image/jpeg", "image/png"}:
        return None
    return default_storage.url(
        entry["key"], parameters={"ResponseContentType": entry["mime_type"], "ResponseContentDisposition": "inline"},
        expire=expires_in or settings.S3_PRESIGNED_EXPIRY_SECONDS,
    )


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
