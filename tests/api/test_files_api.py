"""Uploads against the real object store."""

import hashlib
import io

import boto3
import pytest
from botocore.exceptions import ClientError
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
def test_over_the_limit_is_413_and_nothing_stored(api):
    client = boto3.client("s3", endpoint_url=settings.S3_ENDPOINT_URL, aws_access_key_id=settings.AWS_ACCESS_KEY_ID,
                          aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY, region_name=settings.S3_REGION)
    before = client.list_objects_v2(Bucket=settings.S3_BUCKET).get("KeyCount", 0)
    big = png_bytes(size=(300, 300), color=None) + b"\0" * 20_000
    response = upload(api, big, "big.png")
    assert response.status_code == 413
    assert response.json()["type"] == "payload_too_large" and "10000" in response.json()["detail"]
    assert not File.objects.exists()
    assert client.list_objects_v2(Bucket=settings.S3_BUCKET).get("KeyCount", 0) == before


def test_path_traversal_name_is_sanitized(api):
    response = upload(api, png_bytes(), "../../etc/passwd")
    assert response.status_code == 201
    row = File.objects.get(pk=response.json()["id"])
    assert row.original_name == "passwd"
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
