"""The file admin: uploading several images through the API's upload service, thumbnails made
once per file as derived objects (files.services.file_thumbnails_generate, the worker's task
body, called here directly; tests/admin/test_images_worker.py runs it on a real worker), served
by the admin's thumbnail view, and the file list and file page built from rows only."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from PIL import Image, ImageOps

from files.models import File
from files.services import file_delete, file_store_bytes, file_thumbnails_generate
from tests.admin.images import (CANON, HEIC, NIKON, ORIENTATION_6, admin_upload, object_exists, png_of_pixels,
                                read_object, reads_of, store_requests, upload)
from tests.photos import shown


def test_the_file_list_links_to_an_upload_page_with_a_multi_file_input(staff_client):
    listing = staff_client.get(reverse("admin:files_file_changelist")).content.decode()
    assert reverse("admin:files_file_upload") in listing
    page = staff_client.get(reverse("admin:files_file_upload")).content.decode()
    assert 'type="file" name="images"' in page and " multiple " in page and 'enctype="multipart/form-data"' in page


def test_several_photos_are_stored_at_once_as_the_api_stores_them(staff_client, staff_user):
    response = admin_upload(staff_client, ORIENTATION_6, CANON, HEIC)
    assert response.redirect_chain[-1][0] == reverse("admin:files_file_changelist")
    stored = {f.original_name: f for f in File.objects.all()}
    assert set(stored) == {"landscape_6.jpg", "Canon_40D.jpg", "samplefilehub.heif"}
    for path in (ORIENTATION_6, CANON, HEIC):
        file = stored[path.name]
        content = path.read_bytes()
        assert file.checksum == hashlib.sha256(content).hexdigest() and file.file_size == len(content)
        assert file.created_by == staff_user
        assert read_object(file.storage_path) == content
    assert stored["landscape_6.jpg"].metadata["orientation"] == 6
    assert stored["samplefilehub.heif"].mime_type == "image/heif"
    assert "Stored 3 image(s)" in response.content.decode()


def test_a_refused_file_is_a_message_naming_it_and_the_others_are_stored(staff_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    page = b"<html><script>alert(1)</script></html>"
    truncated = CANON.read_bytes()[:3000]
    response = admin_upload(staff_client, NIKON, SimpleUploadedFile("page.jpg", page),
                            SimpleUploadedFile("half.jpg", truncated))
    shown_messages = [str(m) for m in response.context["messages"]]
    assert list(File.objects.values_list("original_name", flat=True)) == ["Nikon_D70.jpg"]
    # The words of the API's 400 for the same bytes (both go through files.services.file_store_upload).
    for name, content in (("page.jpg", page), ("half.jpg", truncated)):
        api = staff_client.post(reverse("api:file-list"), {"file": SimpleUploadedFile(name, content)})
        assert api.status_code == 400
        reason = json.dumps(api.json())
        message = next(m for m in shown_messages if m.startswith(f"Not stored: {name}: "))
        assert message.removeprefix(f"Not stored: {name}: ") in reason
    assert File.objects.count() == 1
    assert "<script>alert" not in response.content.decode()


def test_an_empty_upload_form_stores_nothing_and_says_so(staff_client):
    response = staff_client.post(reverse("admin:files_file_upload"), {}, follow=True)
    assert "Choose one or more images" in response.content.decode() and File.objects.count() == 0


def test_staff_without_the_add_permission_cannot_upload(client, db):
    from django.contrib.auth.models import Permission

    from tests.factories import UserFactory

    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_file"))
    client.force_login(viewer)
    assert client.get(reverse("admin:files_file_upload")).status_code == 403
    assert admin_upload(client, CANON, follow=False).status_code == 403 and File.objects.count() == 0
    assert reverse("admin:files_file_upload") not in client.get(reverse("admin:files_file_changelist")).content.decode()


# --- thumbnails ------------------------------------------------------------------------------------

def _stored(path, user):
    return file_store_bytes(content=path.read_bytes(), original_name=path.name, created_by=user, prefix="uploads")


def _mean_difference(image, reference) -> float:
    a = image.convert("L").tobytes()
    b = reference.resize(image.size, Image.Resampling.LANCZOS).convert("L").tobytes()
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


def test_an_orientation_6_photo_gets_upright_thumbnails_of_both_sizes(staff_user, settings):
    file = _stored(ORIENTATION_6, staff_user)
    record = file_thumbnails_generate(file_id=file.pk)
    upright = shown(ORIENTATION_6.read_bytes())
    with Image.open(ORIENTATION_6) as raw:  # stored on its side: a viewer turns it by 90 degrees
        assert raw.size == (upright.height, upright.width) and upright.width > upright.height
    for size in (settings.FILE_THUMBNAIL_SIZE, settings.FILE_PREVIEW_SIZE):
        entry = record[str(size)]
        assert entry["key"] == f"thumbnails/{file.pk}/{size}.jpg" and entry["mime_type"] == "image/jpeg"
        content = read_object(entry["key"])
        assert len(content) == entry["bytes"]
        with Image.open(io.BytesIO(content)) as thumb:
            assert thumb.size == (entry["width"], entry["height"])
            assert max(thumb.size) == min(size, max(upright.size))
            assert abs(thumb.width / thumb.height - upright.width / upright.height) < 0.02
            # The same picture, the right way up: compared with Pillow's own exif_transpose.
            # (about 13 apart on average from JPEG and the color conversion; turned wrong, over 60)
            assert _mean_difference(thumb, upright) < 25
            assert _mean_difference(thumb, upright.transpose(Image.Transpose.ROTATE_180)) > 40
    file.refresh_from_db()
    assert file.thumbnails == record


def test_generation_is_idempotent_a_second_call_changes_nothing(staff_user):
    file = _stored(CANON, staff_user)
    first = file_thumbnails_generate(file_id=file.pk)
    with store_requests() as seen:
        second = file_thumbnails_generate(file_id=file.pk)
    assert second == first and seen == []  # no read of the original, no write


def test_an_image_with_alpha_gets_png_thumbnails(staff_user):
    file = file_store_bytes(content=png_of_pixels(), original_name="alpha.png", created_by=staff_user)
    record = file_thumbnails_generate(file_id=file.pk)
    assert record["256"]["mime_type"] == "image/png" and record["256"]["key"].endswith("/256.png")
    with Image.open(io.BytesIO(read_object(record["256"]["key"]))) as thumb:
        assert thumb.mode == "RGBA" and thumb.size == (40, 30)


def test_an_image_that_cannot_be_decoded_now_is_recorded_as_an_error_and_shown_as_such(staff_client, staff_user,
                                                                                         settings):
    file = _stored(CANON, staff_user)
    settings.IMAGE_MAX_PIXELS = 100  # lowered after the upload: the decode refuses it
    record = file_thumbnails_generate(file_id=file.pk)
    assert set(record) == {"error"} and "IMAGE_MAX_PIXELS" in record["error"]
    page = staff_client.get(reverse("admin:files_file_change", args=[file.pk])).content.decode()
    assert "no preview" in page and 'data-role="thumbnail"' not in page


def test_a_missing_file_has_nothing_generated(db):
    import uuid

    assert file_thumbnails_generate(file_id=uuid.uuid4()) is None


def test_deleting_a_file_deletes_its_thumbnails(staff_user, django_capture_on_commit_callbacks):
    file = _stored(NIKON, staff_user)
    record = file_thumbnails_generate(file_id=file.pk)
    keys = [record[s]["key"] for s in ("256", "1024")] + [file.storage_path]
    assert all(object_exists(k) for k in keys)
    with django_capture_on_commit_callbacks(execute=True):
        file_delete(file=File.objects.get(pk=file.pk))
    assert not any(object_exists(k) for k in keys)


def test_deleting_from_the_admin_deletes_the_thumbnails(staff_client, staff_user, django_capture_on_commit_callbacks):
    file = _stored(NIKON, staff_user)
    record = file_thumbnails_generate(file_id=file.pk)
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:files_file_delete", args=[file.pk]), {"post": "yes"})
    assert not File.objects.filter(pk=file.pk).exists() and not object_exists(record["256"]["key"])


def test_storing_a_file_enqueues_its_thumbnails_once_it_commits(staff_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        _stored(CANON, staff_user)
    # file_store registers the enqueue inside its transaction: nothing is sent before the commit.
    assert any(getattr(c, "__qualname__", "").startswith("file_thumbnails_enqueue") for c in callbacks)


# --- the thumbnail view --------------------------------------------------------------------------

def test_the_thumbnail_view_streams_the_derived_object_with_safe_headers(staff_client, staff_user):
    file = _stored(CANON, staff_user)
    record = file_thumbnails_generate(file_id=file.pk)
    with store_requests() as seen:
        response = staff_client.get(reverse("admin:files_file_thumbnail", args=[file.pk, 256]))
        body = b"".join(response.streaming_content)
    assert response.status_code == 200 and body == read_object(record["256"]["key"])
    assert response["Content-Type"] == "image/jpeg" and response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"] == "inline" and "sandbox" in response["Content-Security-Policy"]
    assert response["Cache-Control"].startswith("private")
    assert reads_of(seen, [file.storage_path]) == [] and reads_of(seen, [record["256"]["key"]])


def test_the_thumbnail_view_refuses_non_staff_and_unknown_sizes(client, staff_client, user, staff_user):
    file = _stored(CANON, staff_user)
    file_thumbnails_generate(file_id=file.pk)
    assert staff_client.get(reverse("admin:files_file_thumbnail", args=[file.pk, 99])).status_code == 404
    client.force_login(user)  # not staff: the admin's login page, not the image
    response = client.get(reverse("admin:files_file_thumbnail", args=[file.pk, 256]))
    assert response.status_code == 302 and "/login/" in response["Location"]


# --- the file list and the file page -------------------------------------------------------------

def test_the_file_list_shows_thumbnails_and_a_placeholder_without_reading_the_store(staff_client, staff_user):
    done = _stored(CANON, staff_user)
    file_thumbnails_generate(file_id=done.pk)
    pending = _stored(NIKON, staff_user)
    with store_requests() as seen:
        page = staff_client.get(reverse("admin:files_file_changelist")).content.decode()
    assert seen == []
    assert reverse("admin:files_file_thumbnail", args=[done.pk, 256]) in page
    assert 'data-role="thumbnail-placeholder"' in page and "thumbnail pending" in page
    assert reverse("admin:files_file_thumbnail", args=[pending.pk, 256]) not in page
    assert "230 × 155" in page or "×" in page


def test_the_file_list_makes_as_many_queries_for_40_files_as_for_2(staff_client, staff_user):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert staff_client.get(reverse("admin:files_file_changelist")).status_code == 200
        return len(queries)

    content = CANON.read_bytes()
    for index in range(2):
        file_store_bytes(content=content, original_name=f"a{index}.jpg", created_by=staff_user)
    few = count()
    for index in range(38):
        file_store_bytes(content=content, original_name=f"b{index}.jpg", created_by=staff_user)
    File.objects.update(thumbnails={"256": {"key": "thumbnails/x/256.jpg", "width": 10, "height": 8,
                                            "mime_type": "image/jpeg", "bytes": 1}})
    assert count() == few


def test_the_file_page_shows_the_camera_facts_a_download_link_and_the_preview(staff_client, staff_user):
    file = _stored(CANON, staff_user)
    file_thumbnails_generate(file_id=file.pk)
    with store_requests() as seen:
        response = staff_client.get(reverse("admin:files_file_change", args=[file.pk]))
    page = response.content.decode()
    assert reads_of(seen, [file.storage_path]) == []
    meta = file.metadata
    rows = dict(response.context["metadata_rows"])
    assert rows["Camera make"] == meta["camera"]["make"] == "Canon"
    assert rows["Camera model"] == meta["camera"]["model"]
    assert rows["Date taken"] == meta["taken_at"]
    assert f"f/{meta['exposure']['f_number']}" in rows["Exposure"] and f"ISO {meta['exposure']['iso']}" in rows["Exposure"]
    assert rows["Dimensions"].startswith(f"{meta['oriented_width']} × {meta['oriented_height']}")
    assert rows["Orientation"] == str(meta["orientation"])
    assert '<table data-role="metadata"' in page and "<details" in page
    assert json.loads(response.context["metadata_json"]) == meta  # the rest, collapsible
    assert reverse("admin:files_file_thumbnail", args=[file.pk, 1024]) in page
    download = response.context["download_url"]
    assert file.storage_path in download and "X-Amz-Signature" in download and "attachment" in download
    assert "Uploaded (not produced by a run)" in page
    assert 'name="metadata"' not in page  # no raw JSON box


def test_the_file_page_shows_gps_and_lens_of_a_phone_photo(staff_client, staff_user):
    from tests.photos import HEIC as HEICS

    phone = next(p for p in HEICS if p.name == "IMG_5195.HEIC")
    file = _stored(phone, staff_user)
    rows = dict(staff_client.get(reverse("admin:files_file_change", args=[file.pk])).context["metadata_rows"])
    gps = file.metadata.get("gps") or {}
    if gps.get("latitude") is not None:
        assert rows["GPS"].startswith(f"{gps['latitude']:.6f}, {gps['longitude']:.6f}")
    if (file.metadata.get("lens") or {}).get("model"):
        assert file.metadata["lens"]["model"] in rows["Lens"]


def test_the_file_page_escapes_a_hostile_name(staff_client, staff_user):
    file = file_store_bytes(content=CANON.read_bytes(), original_name='<img src=x onerror=alert(1)>.jpg',
                            created_by=staff_user)
    file_thumbnails_generate(file_id=file.pk)
    for url in (reverse("admin:files_file_change", args=[file.pk]), reverse("admin:files_file_changelist")):
        page = staff_client.get(url).content.decode()
        assert "<img src=x onerror" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_generate_missing_thumbnails_asks_only_for_files_without_a_record(staff_client, staff_user,
                                                                         django_capture_on_commit_callbacks):
    done = _stored(CANON, staff_user)
    file_thumbnails_generate(file_id=done.pk)
    missing = [_stored(NIKON, staff_user), _stored(ORIENTATION_6, staff_user)]
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(reverse("admin:files_file_changelist"), {
            "action": "generate_missing_thumbnails", "_selected_action": [str(done.pk), *(str(f.pk) for f in missing)]},
            follow=True)
    assert "Asked a worker for the thumbnails of 2 file(s)." in response.content.decode()
    assert len([c for c in callbacks if c.__qualname__.startswith("file_thumbnails_enqueue")]) == 2
