"""Uploads against the real object store."""

import hashlib
import io

import boto3
import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.test import override_settings

from files.models import File
from tests.api.conftest import jpeg_with_exif, png_bytes
from tests.factories import FileFactory

pytestmark = pytest.mark.django_db


def upload(api, content: bytes, name: str):
    handle = io.BytesIO(content)
    handle.name = name
    return api.post("/api/v1/files/", {"file": handle}, format="multipart")


def object_exists(key: str) -> bool:
    return default_storage.exists(key)


def test_upload_jpeg_with_exif(api, owner):
    content = jpeg_with_exif()
    response = upload(api, content, "holiday.jpg")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["mime_type"] == "image/jpeg" and body["file_size"] == len(content)
    assert body["checksum"] == hashlib.sha256(content).hexdigest()
    assert body["metadata"]["width"] == 40 and body["metadata"]["height"] == 30
    assert body["metadata"]["exif"]["Make"] == "ImageFlow Camera"
    assert body["original_name"] == "holiday.jpg" and body["created_by"] == str(owner.pk)
    row = File.objects.get(pk=body["id"])
    assert "holiday" not in row.storage_path
    with default_storage.open(row.storage_path, "rb") as stored:
        assert stored.read() == content


def test_upload_png_sniffed_from_bytes_not_name(api):
    response = upload(api, png_bytes(size=(32, 16)), "picture.jpg")
    assert response.status_code == 201
    body = response.json()
    assert body["mime_type"] == "image/png"
    assert (body["metadata"]["format"], body["metadata"]["width"], body["metadata"]["height"]) == ("PNG", 32, 16)


@pytest.mark.parametrize("content, message", [
    (b"hello, I am text\n" * 10, "not an image"),
    (jpeg_with_exif(size=(64, 64))[:-200], "truncated"),
    (b"", "empty"),
])
def test_bad_files_are_400_and_nothing_stored(api, content, message):
    response = upload(api, content, "photo.jpg")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["type"] == "validation_error" and message in " ".join(body["errors"]["file"]).lower()
    assert not File.objects.exists()


def test_missing_file_field_is_400(api):
    response = api.post("/api/v1/files/", {"other": "x"}, format="multipart")
    assert response.status_code == 400 and "file" in response.json()["errors"]


def test_json_body_is_415(api):
    response = api.post("/api/v1/files/", {"file": "x"}, format="json")
    assert response.status_code == 415 and response.json()["type"] == "unsupported_media_type"


@override_settings(FILE_UPLOAD_MAX_BYTES=10_000)
def test_over_the_limit_is_413_and_nothing_stored(api, issued_keys):
    big = png_bytes(size=(300, 300), color=None) + b"\0" * 20_000
    response = upload(api, big, "big.png")
    assert response.status_code == 413
    assert response.json()["type"] == "payload_too_large" and "10000" in response.json()["detail"]
    assert not File.objects.exists()
    assert issued_keys == []  # refused before any object key was even made


def test_path_traversal_name_is_sanitized(api):
    response = upload(api, png_bytes(), "../../etc/passwd")
    assert response.status_code == 201
    row = File.objects.get(pk=response.json()["id"])
    assert row.original_name == "passwd.png"  # no directories; the extension of what the bytes are
    assert ".." not in row.storage_path and "etc" not in row.storage_path and "passwd" not in row.storage_path
    assert row.storage_path.startswith("uploads/")


def test_download_redirects_to_a_presigned_url_that_works(api):
    import requests

    content = png_bytes()
    file_id = upload(api, content, "a.png").json()["id"]
    response = api.get(f"/api/v1/files/{file_id}/download/")
    assert response.status_code == 302
    location = response["Location"]
    assert "X-Amz-Signature" in location and "X-Amz-Expires=300" in location
    assert requests.get(location, timeout=10).content == content


def test_thumbnail_is_the_image_as_a_viewer_shows_it_once_a_worker_made_it(api, settings):
    import requests
    from PIL import Image, ImageOps

    from files.services import file_thumbnails_generate

    photo = settings.BASE_DIR.parent / "shared" / "photos" / "orientation" / "landscape_6.jpg"
    file_id = upload(api, photo.read_bytes(), "landscape_6.jpg").json()["id"]
    # before the worker made it: 409 (the file is there; 404 would say it is not, or not yours)
    pending = api.get(f"/api/v1/files/{file_id}/thumbnail/")
    assert pending.status_code == 409 and "worker" in pending.json()["detail"]
    # once made (the worker's task body, on the real store): a presigned URL of the upright image
    file_thumbnails_generate(file_id=file_id)
    response = api.get(f"/api/v1/files/{file_id}/thumbnail/")
    assert response.status_code == 302 and response["X-Content-Type-Options"] == "nosniff"
    fetched = requests.get(response["Location"], timeout=10)
    assert fetched.headers["Content-Type"] == "image/jpeg"
    thumbnail = Image.open(io.BytesIO(fetched.content))
    upright = ImageOps.exif_transpose(Image.open(photo))
    assert thumbnail.width > thumbnail.height and upright.width > upright.height  # stored 450x600, shown 600x450
    assert abs(thumbnail.width / thumbnail.height - upright.width / upright.height) < 0.02
    assert max(thumbnail.size) == settings.FILE_THUMBNAIL_SIZE
    # and a size that is not made is a 400 naming the sizes
    assert api.get(f"/api/v1/files/{file_id}/thumbnail/?size=77").status_code == 400


def test_delete_removes_row_and_object(api, django_capture_on_commit_callbacks):
    file_id = upload(api, png_bytes(), "a.png").json()["id"]
    key = File.objects.get(pk=file_id).storage_path
    assert object_exists(key)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/v1/files/{file_id}/").status_code == 204
    assert not File.objects.filter(pk=file_id).exists()
    assert not object_exists(key)


def test_list_and_filter_by_checksum(api):
    content = png_bytes()
    upload(api, content, "a.png")
    upload(api, png_bytes(color=(1, 2, 3)), "b.png")
    listing = api.get("/api/v1/files/").json()
    assert listing["count"] == 2
    found = api.get(f"/api/v1/files/?checksum={hashlib.sha256(content).hexdigest()}").json()["results"]
    assert [f["original_name"] for f in found] == ["a.png"]


def test_other_users_file_is_404(api, stranger_api, staff_api, owner):
    row = FileFactory(created_by=owner)
    for call in (stranger_api.get(f"/api/v1/files/{row.pk}/"), stranger_api.get(f"/api/v1/files/{row.pk}/download/"),
                 stranger_api.delete(f"/api/v1/files/{row.pk}/")):
        assert call.status_code == 404
    assert stranger_api.get("/api/v1/files/").json()["count"] == 0
    assert staff_api.get(f"/api/v1/files/{row.pk}/").status_code == 200
    assert File.objects.filter(pk=row.pk).exists()


def test_files_need_authentication(anon):
    assert anon.get("/api/v1/files/").status_code == 401
    assert upload(anon, png_bytes(), "a.png").status_code == 401


# --- streaming large uploads to the object store while parsing ---------------------------------

def bmp_bytes(width: int, height: int) -> bytes:
    import struct

    row = width * 3
    pixels = bytes((x * 7 + y) % 256 for y in range(height) for x in range(row))
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


@pytest.fixture
def issued_keys(monkeypatch):
    """Spy (calls through) on object-key creation, to check exactly those objects afterwards."""
    from files import services

    keys = []
    real = services.object_key_for

    def recording(**kwargs):
        key = real(**kwargs)
        keys.append(key)
        return key

    monkeypatch.setattr(services, "object_key_for", recording)
    return keys


STREAM_SETTINGS = {"FILE_UPLOAD_STREAM_PART_BYTES": 5 * 1024 * 1024, "FILE_UPLOAD_STREAM_PARTS_IN_FLIGHT": 2}


@override_settings(**STREAM_SETTINGS)
def test_large_upload_is_streamed_in_parts_and_stored_intact(api, issued_keys):
    content = bmp_bytes(1200, 3200)  # 11.5 MB: three parts of 5 MiB, 5 MiB, rest
    response = upload(api, content, "large.bmp")
    assert response.status_code == 201, response.json()
    body = response.json()
    row = File.objects.get(pk=body["id"])
    assert issued_keys == [row.storage_path] and row.storage_path.endswith(f"{row.pk.hex}.bmp")
    assert body["checksum"] == hashlib.sha256(content).hexdigest() and body["file_size"] == len(content)
    assert (body["metadata"]["width"], body["metadata"]["height"]) == (1200, 3200)
    with default_storage.open(row.storage_path, "rb") as stored:
        assert hashlib.sha256(stored.read()).hexdigest() == body["checksum"]


@override_settings(**STREAM_SETTINGS)
def test_streamed_upload_that_is_corrupt_leaves_no_object(api, issued_keys):
    content = bmp_bytes(1200, 3200)
    corrupt = content[:-3_000_000]  # header promises more pixel rows than arrive
    response = upload(api, corrupt, "broken.bmp")
    assert response.status_code == 400 and "file" in response.json()["errors"]
    assert len(issued_keys) == 1 and not object_exists(issued_keys[0])
    assert not File.objects.exists()


@override_settings(**STREAM_SETTINGS)
def test_streamed_file_under_another_field_name_leaves_no_object(api, issued_keys):
    handle = io.BytesIO(bmp_bytes(1200, 3200))
    handle.name = "large.bmp"
    response = api.post("/api/v1/files/", {"photo": handle}, format="multipart")
    assert response.status_code == 400 and "file" in response.json()["errors"]
    assert len(issued_keys) == 1 and not object_exists(issued_keys[0])


@override_settings(FILE_UPLOAD_MAX_BYTES=7 * 1024 * 1024, **STREAM_SETTINGS)
def test_limit_passed_while_streaming_aborts_the_multipart_upload(issued_keys):
    """Without a Content-Length (chunked request) the limit is only known while streaming."""
    from django.http.multipartparser import MultiPartParser

    from files.api.upload import StreamingUploadHandler
    from imageflow.api.errors import PayloadTooLarge

    content = bmp_bytes(1200, 3200)
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bmp\"\r\n"
            f"Content-Type: image/bmp\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    handler = StreamingUploadHandler()
    meta = {"CONTENT_TYPE": f"multipart/form-data; boundary={boundary}", "CONTENT_LENGTH": str(len(body))}
    parser = MultiPartParser(meta, io.BytesIO(body), [handler], "utf-8")
    handler.handle_raw_input = lambda *args, **kwargs: None  # behave as if no Content-Length was declared
    with pytest.raises(PayloadTooLarge):
        parser.parse()
    assert len(issued_keys) == 1 and not object_exists(issued_keys[0])
    s3 = boto3.client("s3", endpoint_url=settings.S3_ENDPOINT_URL, aws_access_key_id=settings.AWS_ACCESS_KEY_ID,
                      aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY, region_name=settings.S3_REGION)
    pending = s3.list_multipart_uploads(Bucket=settings.S3_BUCKET, Prefix=issued_keys[0]).get("Uploads", [])
    assert pending == []


@override_settings(**STREAM_SETTINGS)
def test_body_cut_off_mid_upload_leaves_no_multipart_upload(issued_keys):
    """The client goes away after the first parts were streamed: the view's cleanup aborts it."""
    from django.http.multipartparser import MultiPartParser

    from files.api.upload import StreamingUploadHandler, discard_streamed_objects

    content = bmp_bytes(1200, 3200)
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bmp\"\r\n"
            f"Content-Type: image/bmp\r\n\r\n").encode()

    class Disconnecting(io.BytesIO):
        def read(self, size=-1):
            data = super().read(size)
            if not data:
                raise OSError("client disconnected")
            return data

    handler = StreamingUploadHandler()
    meta = {"CONTENT_TYPE": f"multipart/form-data; boundary={boundary}", "CONTENT_LENGTH": str(len(head) + len(content) + 40)}
    with pytest.raises(OSError):
        MultiPartParser(meta, Disconnecting(head + content[:8_000_000]), [handler], "utf-8").parse()
    assert handler.stream is not None  # the multipart upload had started
    discard_streamed_objects(handler)
    s3 = boto3.client("s3", endpoint_url=settings.S3_ENDPOINT_URL, aws_access_key_id=settings.AWS_ACCESS_KEY_ID,
                      aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY, region_name=settings.S3_REGION)
    assert s3.list_multipart_uploads(Bucket=settings.S3_BUCKET, Prefix=issued_keys[0]).get("Uploads", []) == []
    assert not object_exists(issued_keys[0])
