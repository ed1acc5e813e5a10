"""Upload handling that never holds a whole upload in memory.

`HashingUploadHandler` (every multipart request) writes each file to a temporary file chunk by
chunk while computing its SHA-256 and size, and stops with 413 as soon as the size limit is
passed (or at once, when the declared Content-Length is already over it), removing what it had
written. `StreamingUploadHandler` (`POST /files/`) also sends a large file to the object store
while it is parsed, so storing it does not wait for the whole request first.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from imageflow.api.errors import PayloadTooLarge

logger = logging.getLogger(__name__)

# Multipart framing (boundaries, part headers, other small fields) allowed on top of the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def max_upload_bytes() -> int:
    return settings.FILE_UPLOAD_MAX_BYTES


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The upload is larger than the limit of {limit} bytes.")


class HashedTemporaryUploadedFile(TemporaryUploadedFile):
    sha256: str | None = None
    # Set by StreamingUploadHandler when the bytes are already in the object store.
    object_key: str | None = None
    file_id: uuid.UUID | None = None


class HashingUploadHandler(FileUploadHandler):
    chunk_size = 1024 * 1024

    def __init__(self, request=None):
        super().__init__(request)
        self.limit = max_upload_bytes()
        self.file: HashedTemporaryUploadedFile | None = None
        self.digest = hashlib.sha256()
        self.received = 0

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length and content_length > self.limit + MULTIPART_OVERHEAD_BYTES:
            raise too_large(self.limit)
        return None

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.digest = hashlib.sha256()
        self.received = 0
        self.file = HashedTemporaryUploadedFile(self.file_name, self.content_type, 0, self.charset,
                                                self.content_type_extra)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self.file.close()
            raise too_large(self.limit)
        self.digest.update(raw_data)
        self.file.write(raw_data)
        return None

    def file_complete(self, file_size):
        self.file.seek(0)
        self.file.size = file_size
        self.file.sha256 = self.digest.hexdigest()
        return self.file

    def upload_interrupted(self):
        if self.file is not None:
            self.file.close()


class StreamingObjectUpload:
    """An S3 multipart upload of a file that is still being written (the upload's temporary file).

    Parts are read back from the file on disk by byte range (s3transfer's ReadFileChunk), so no
    part is held in memory; at most `max_in_flight` parts are on the wire, and a writer that gets
    ahead waits (back-pressure).
    """

    def __init__(self, *, key: str, content_type: str, path: str, part_size: int, max_in_flight: int) -> None:
        from django.core.files.storage import default_storage

        self.client = default_storage.connection.meta.client
        self.bucket = default_storage.bucket_name
        self.key = key
        self.path = path
        self.part_size = part_size
        self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key,
                                                             ContentType=content_type)["UploadId"]
        self.pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="upload-part")
        self.slots = threading.BoundedSemaphore(max_in_flight)
        self.futures: list = []
        self.sent = 0  # bytes handed to part uploads so far

    def advance(self, written: int) -> None:
        """`written` bytes of the file are on disk (flushed): send every full part among them."""
        while written - self.sent >= self.part_size:
            self._send(self.sent, self.part_size)

    def _send(self, offset: int, length: int) -> None:
        from s3transfer.utils import ReadFileChunk

        for future in self.futures:
            if future.done() and future.exception() is not None:
                raise future.exception()
        self.slots.acquire()
        number = len(self.futures) + 1
        self.sent = offset + length

        def upload_part() -> dict:
            try:
                with ReadFileChunk.from_filename(self.path, offset, length) as body:
                    answer = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                     PartNumber=number, Body=body, ContentLength=length)
                return {"PartNumber": number, "ETag": answer["ETag"]}
            finally:
                self.slots.release()

        self.futures.append(self.pool.submit(upload_part))

    def complete(self, total: int) -> None:
        self.advance(total)
        if total > self.sent or not self.futures:
            self._send(self.sent, total - self.sent)
        parts = [future.result() for future in self.futures]
        self.pool.shutdown()
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": parts})

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception:  # already gone or the store is down: nothing more to clean here
            logger.warning("could not abort multipart upload %s of %s", self.upload_id, self.key, exc_info=True)


def sniff_extension(head: bytes) -> tuple[str, str] | None:
    """(extension, MIME type) of an image from its first bytes, or None if not recognised; the
    same names files.inspection gives the whole file (files.imaging.format_facts)."""
    from PIL import Image, UnidentifiedImageError

    from files.imaging import format_facts, format_name

    try:
        with Image.open(io.BytesIO(head)) as image:
            image_format = format_name(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if not image_format:
        return None
    facts = format_facts(image_format)
    return facts.extension, facts.mime_type


class StreamingUploadHandler(HashingUploadHandler):
    """HashingUploadHandler that also streams a large file to the object store while receiving it.

    Used by `POST /files/` only. Once the first part is on disk and its bytes look like an image,
    a multipart upload to a fresh UUID key starts, fed from the temporary file as it grows; it
    finishes with the request. The object is then validated like any other (files.services.
    file_store with `stored_key`) and deleted if refused. Smaller files, or ones whose start is not
    recognised, take the plain path (temporary file, stored after validation).
    """

    def __init__(self, request=None):
        super().__init__(request)
        self.part_size = settings.FILE_UPLOAD_STREAM_PART_BYTES
        self.max_in_flight = settings.FILE_UPLOAD_STREAM_PARTS_IN_FLIGHT
        self.stream: StreamingObjectUpload | None = None
        self.decided = False
        self.file_id: uuid.UUID | None = None
        self.streamed: list[HashedTemporaryUploadedFile] = []

    def new_file(self, *args, **kwargs):
        self._discard_stream()
        super().new_file(*args, **kwargs)
        self.decided = False

    def receive_data_chunk(self, raw_data, start):
        try:
            super().receive_data_chunk(raw_data, start)
        except PayloadTooLarge:
            self._discard_stream()
            raise
        if self.stream is not None:
            if self.received - self.stream.sent >= self.part_size:
                self.file.flush()
                self._guarded(self.stream.advance, self.received)
        elif not self.decided and self.received >= self.part_size:
            self._start_stream()
        return None

    def _start_stream(self) -> None:
        from files.services import object_key_for

        self.decided = True
        self.file.flush()
        path = self.file.temporary_file_path()
        with open(path, "rb") as head:
            sniffed = sniff_extension(head.read(1024 * 1024))
        if sniffed is None:
            return
        extension, content_type = sniffed
        self.file_id = uuid.uuid4()
        self.stream = StreamingObjectUpload(key=object_key_for(file_id=self.file_id, extension=extension),
                                            content_type=content_type, path=path, part_size=self.part_size,
                                            max_in_flight=self.max_in_flight)
        self._guarded(self.stream.advance, self.received)

    def _guarded(self, call, *args) -> None:
        try:
            call(*args)
        except Exception:
            self._discard_stream()
            raise

    def _discard_stream(self) -> None:
        if self.stream is not None:
            self.stream.abort()
            self.stream = None

    def file_complete(self, file_size):
        uploaded = super().file_complete(file_size)
        if self.stream is not None:
            uploaded.flush()
            self._guarded(self.stream.complete, file_size)
            uploaded.object_key = self.stream.key
            uploaded.file_id = self.file_id
            self.streamed.append(uploaded)
            self.stream = None
        return uploaded

    def upload_interrupted(self):
        self._discard_stream()
        super().upload_interrupted()


def discard_streamed_objects(handler: "StreamingUploadHandler") -> None:
    """Delete objects streamed for files of a request that no row took (a file sent under another
    field name, a request refused after parsing), and abort a multipart upload that parsing
    left unfinished (the client went away mid-body): nothing is left behind in the store."""
    from files.services import _delete_object

    handler._discard_stream()
    for uploaded in handler.streamed:
        if uploaded.object_key:
            _delete_object(uploaded.object_key)
            uploaded.object_key = None
