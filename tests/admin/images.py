"""Helpers of the admin image tests: uploads of the shared photos through the admin page, and a
count of object-store requests made on the real S3 client (botocore's event hooks)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.photos import PHOTOS

ORIENTATION_6 = PHOTOS / "orientation" / "landscape_6.jpg"
CANON = PHOTOS / "camera" / "Canon_40D.jpg"
NIKON = PHOTOS / "camera" / "Nikon_D70.jpg"
HEIC = PHOTOS / "heic" / "samplefilehub.heif"


def upload(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes())


def admin_upload(client, *paths_or_files, follow: bool = True):
    files = [p if isinstance(p, SimpleUploadedFile) else upload(p) for p in paths_or_files]
    return client.post(reverse("admin:files_file_upload"), {"images": files}, follow=follow)


@contextlib.contextmanager
def store_requests():
    """Every HTTP request this thread's storage client sends to the object store while the block
    runs, as (method, object key): the real client, only observed (botocore's before-send hook;
    presigning a URL sends nothing and is not counted)."""
    from urllib.parse import unquote, urlsplit

    seen: list[tuple[str, str]] = []
    client = default_storage.connection.meta.client
    bucket_prefix = f"/{default_storage.bucket_name}/"

    def record(request, **kwargs):
        path = unquote(urlsplit(request.url).path)
        seen.append((request.method, path[len(bucket_prefix):] if path.startswith(bucket_prefix) else path))

    client.meta.events.register("before-send.s3", record)
    try:
        yield seen
    finally:
        client.meta.events.unregister("before-send.s3", record)


def reads_of(seen, keys) -> list:
    """The reads (GET, HEAD) among `seen` of any of the object keys."""
    keys = set(keys)
    return [(method, key) for method, key in seen if method in {"GET", "HEAD"} and key in keys]


def object_exists(key: str) -> bool:
    return default_storage.exists(key)


def read_object(key: str) -> bytes:
    with default_storage.open(key, "rb") as handle:
        return handle.read()


def png_of_pixels(size=(40, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", size, (10, 200, 30, 128)).save(buffer, format="PNG")
    return buffer.getvalue()
