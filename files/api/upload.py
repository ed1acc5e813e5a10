"""Upload handling that never holds a whole upload in memory.

`HashingUploadHandler` writes each multipart file to a temporary file chunk by chunk while
computing its SHA-256 and size, and stops with 413 as soon as the size limit is passed (or at
once, when the declared Content-Length is already over it), removing what it had written.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from imageflow.api.errors import PayloadTooLarge

# Multipart framing (boundaries, part headers, other small fields) allowed on top of the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def max_upload_bytes() -> int:
    return settings.FILE_UPLOAD_MAX_BYTES


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The upload is larger than the limit of {limit} bytes.")


class HashedTemporaryUploadedFile(TemporaryUploadedFile):
    sha256: str | None = None


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
