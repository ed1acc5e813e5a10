"""Storing files puts real objects in the S3 store and the facts of the bytes in the table."""

import hashlib
import io

import pytest
import requests
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from PIL import Image

from files.models import File
from files.services import file_delete, file_presigned_url, file_read_bytes, file_store

pytestmark = pytest.mark.django_db(transaction=True)


def _png(width=32, height=16, color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_with_exif() -> bytes:
    image = Image.new("RGB", (40, 30), (0, 128, 255))
    exif = Image.Exif()
    exif[0x010F] = "ImageFlow Camera"  # Make
    exif[0x0110] = "Model 7"  # Model
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def test_stored_png_has_its_facts_and_its_object(user):
    content = _png()
    stored = file_store(stream=io.BytesIO(content), original_name="red.png", created_by=user)
    row = File.objects.get(pk=stored.pk)
    assert row.mime_type == "image/png"
    assert row.file_size == len(content)
    assert row.checksum == hashlib.sha256(content).hexdigest()
    assert (row.metadata["width"], row.metadata["height"], row.metadata["format"]) == (32, 16, "PNG")
    assert row.original_name == "red.png"
    assert stored.pk.hex in row.storage_path and "red" not in row.storage_path
    assert file_read_bytes(row) == content


def test_exif_of_a_jpeg_is_kept_as_json(user):
    stored = file_store(stream=io.BytesIO(_jpeg_with_exif()), original_name="photo.jpg", created_by=user)
    assert stored.mime_type == "image/jpeg"
    assert stored.metadata["exif"]["Make"] == "ImageFlow Camera"
    assert stored.metadata["exif"]["Model"] == "Model 7"


def test_mime_type_comes_from_the_bytes_not_the_name(user):
    stored = file_store(stream=io.BytesIO(_png()), original_name="looks-like.jpg", created_by=user)
    assert stored.mime_type == "image/png"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"just some text, not an image\n" * 10, "not an image"),
        (_jpeg_with_exif()[:-400], "truncated"),
    ],
    ids=["empty", "text", "truncated-jpeg"],
)
def test_bad_content_is_refused_and_nothing_is_stored(user, content, message):
    objects_before = set(default_storage.listdir("uploads")[0]) if default_storage.exists("uploads") else set()
    with pytest.raises(ValidationError, match=message):
        file_store(stream=io.BytesIO(content), original_name="x.jpg", created_by=user)
    assert File.objects.count() == 0
    objects_after = set(default_storage.listdir("uploads")[0]) if default_storage.exists("uploads") else set()
    assert objects_after == objects_before


def test_path_traversal_in_the_name_is_removed(user):
    stored = file_store(stream=io.BytesIO(_png()), original_name="../../etc/passwd", created_by=user)
    assert stored.original_name == "passwd.png"  # no directories; the extension of what the bytes are
    assert ".." not in stored.storage_path


def test_presigned_url_serves_the_bytes_and_delete_removes_the_object(user):
    content = _png(color=(1, 2, 3))
    stored = file_store(stream=io.BytesIO(content), original_name="a.png", created_by=user)
    response = requests.get(file_presigned_url(stored), timeout=10)
    assert response.status_code == 200 and response.content == content
    key = stored.storage_path
    file_delete(file=stored)
    assert not File.objects.filter(pk=stored.pk).exists()
    assert not default_storage.exists(key)
