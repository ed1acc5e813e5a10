"""Every real camera photo in ../shared/photos uploads through the API with the metadata a user
looks for, stored as JSON PostgreSQL accepts; truncated ones are a clear 400."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from django.core.files.storage import default_storage
from django.test import override_settings
from PIL import Image, ImageChops, ImageCms, ImageStat

from files.models import File
from tests.api.conftest import client_for
from tests.photos import ALL_PHOTOS, CAMERA, HEIC, ORIENTATION, PHOTOS, photo_id, shown

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(user):
    return client_for(user)


def upload(api, content: bytes, name: str):
    handle = io.BytesIO(content)
    handle.name = name
    return api.post("/api/v1/files/", {"file": handle}, format="multipart")


@pytest.mark.parametrize("path", ALL_PHOTOS, ids=photo_id)
def test_every_photo_uploads_with_its_size_as_shown(api, path):
    content = path.read_bytes()
    response = upload(api, content, path.name)
    assert response.status_code == 201, response.json()
    body = response.json()
    metadata = body["metadata"]
    assert body["checksum"] == hashlib.sha256(content).hexdigest()
    assert (metadata["oriented_width"], metadata["oriented_height"]) == shown(content).size
    assert metadata["orientation"] in range(1, 9)
    # what the API answers is what PostgreSQL stored, and nothing in it is a NUL or a GPSGPS key
    assert File.objects.get(pk=body["id"]).metadata == metadata
    text = json.dumps(metadata)
    assert "\\u0000" not in text and "GPSGPS" not in text


@pytest.mark.parametrize("name, make, model, orientation", [
    ("Canon_40D.jpg", "Canon", "Canon EOS 40D", 1),
    ("Nikon_D70.jpg", "NIKON CORPORATION", "NIKON D70", 1),
    ("Pentax_K10D.jpg", "PENTAX Corporation", "PENTAX K10D", 1),
    ("Fujifilm_FinePix_E500.jpg", "FUJIFILM", "FinePix E500", 1),
    ("WWL_(Polaroid)_ION230.jpg", "WWL", "ION230", 1),  # "ION230\0F": a C string ends at its NUL
    ("Samsung_Digimax_i50_MP3.jpg", "Samsung Techwin", "<Digimax i50 MP3, Samsung #1 MP3>", 1),
    ("Ricoh_Caplio_RR330.jpg", "Caplio", "RR330", 1),  # no Orientation tag: 1
    ("corrupted.jpg", "OLYMPUS IMAGING CORP.", "u1020,S1020", 1),  # damaged EXIF, pixels decodable
])
def test_camera_make_model_and_orientation(api, name, make, model, orientation):
    body = upload(api, (PHOTOS / "camera" / name).read_bytes(), name).json()
    metadata = body["metadata"]
    assert metadata["camera"]["make"] == make and metadata["camera"]["model"] == model
    assert metadata["orientation"] == orientation
    assert metadata["exif"]["Model"] == model


def test_date_taken_exposure_and_lens_fields_are_named_once(api):
    body = upload(api, (PHOTOS / "camera" / "Canon_40D.jpg").read_bytes(), "Canon_40D.jpg").json()
    metadata = body["metadata"]
    assert metadata["taken_at"] == "2008-05-30T15:56:01"
    assert metadata["exposure"] == {"exposure_time": "1/160", "exposure_seconds": 0.00625, "f_number": 7.1,
                                    "iso": 100, "focal_length_mm": 135.0, "exposure_bias_ev": 0.0,
                                    "flash_fired": True}
    assert metadata["icc_profile"]["color_space"] == "RGB"


def test_gps_in_decimal_degrees_south_is_negative(api):
    body = upload(api, (PHOTOS / "camera" / "Kodak_CX7530.jpg").read_bytes(), "kodak.jpg").json()
    # S 0° 22.278'  E 36° 3.385'
    assert body["metadata"]["gps"] == {"latitude": -0.3713, "longitude": 36.0564167}
    assert body["metadata"]["exif"]["GPSLatitudeRef"] == "S"


def test_heic_phone_photo_with_gps_altitude_and_offset(api):
    response = upload(api, (PHOTOS / "heic" / "IMG_5195.HEIC").read_bytes(), "IMG_5195.HEIC")
    assert response.status_code == 201, response.json()
    body = response.json()
    metadata = body["metadata"]
    assert body["mime_type"] == "image/heif" and body["original_name"] == "IMG_5195.HEIC"
    assert File.objects.get(pk=body["id"]).storage_path.endswith(".heic")
    assert metadata["camera"]["make"] == "Apple" and metadata["camera"]["model"] == "iPhone 11 Pro Max"
    assert metadata["gps"]["latitude"] == 39.0513444 and metadata["gps"]["longitude"] == -94.2887722
    assert metadata["gps"]["altitude_m"] == 260.56
    assert metadata["taken_at"] == "2021-04-11T15:47:53-05:00"
    assert metadata["exif"]["GPSImgDirectionRef"] == "M"  # named once, not GPSGPSImgDirectionRef


@pytest.mark.parametrize("path", [p for p in ORIENTATION if p.stem.endswith(("_5", "_6", "_7", "_8"))], ids=photo_id)
def test_rotated_orientations_report_the_viewers_size(api, path):
    metadata = upload(api, path.read_bytes(), path.name).json()["metadata"]
    assert (metadata["width"], metadata["height"]) == tuple(reversed((metadata["oriented_width"],
                                                                       metadata["oriented_height"])))
    expected = (600, 450) if path.stem.startswith("landscape") else (450, 600)
    assert (metadata["oriented_width"], metadata["oriented_height"]) == expected


@pytest.mark.parametrize("path", [p for p in CAMERA if p.name != "corrupted.jpg"] + ORIENTATION[:2], ids=photo_id)
def test_truncated_photos_are_a_clear_400(api, path):
    content = path.read_bytes()
    response = upload(api, content[: len(content) // 2], path.name)
    assert response.status_code == 400, response.json()
    assert "truncated" in " ".join(response.json()["errors"]["file"])
    assert not File.objects.exists()


@pytest.mark.parametrize("path", HEIC, ids=photo_id)
def test_a_truncated_heic_is_a_clear_400(api, path):
    # libheif itself decodes an iPhone photo cut in half (gray tiles): the box structure tells
    content = path.read_bytes()
    response = upload(api, content[: len(content) // 2], path.name)
    assert response.status_code == 400
    assert "corrupt or truncated" in " ".join(response.json()["errors"]["file"])


def test_data_after_the_jpeg_end_marker_is_kept_as_sent_and_counted(api):
    # A motion-photo style trailer: the object is the client's bytes, its checksum theirs.
    content = (PHOTOS / "camera" / "Canon_40D.jpg").read_bytes() + b"MotionPhoto_Data" + b"\x00" * 5000
    body = upload(api, content, "motion.jpg").json()
    assert body["metadata"]["trailing_bytes"] == 5016
    assert body["checksum"] == hashlib.sha256(content).hexdigest()
    with default_storage.open(File.objects.get(pk=body["id"]).storage_path, "rb") as stored:
        assert stored.read() == content


def test_an_ff_d9_inside_the_exif_thumbnail_does_not_hide_a_truncation(api):
    # Canon_40D.jpg carries an EXIF thumbnail (a whole JPEG, FF D9 included) in its APP1 segment.
    content = (PHOTOS / "camera" / "Canon_40D.jpg").read_bytes()
    assert content.count(b"\xff\xd9") >= 2
    response = upload(api, content[:-50], "cut.jpg")
    assert response.status_code == 400 and "truncated" in " ".join(response.json()["errors"]["file"])


def test_the_name_takes_the_extension_of_what_the_bytes_are(api):
    heic = upload(api, (PHOTOS / "heic" / "samplefilehub.heif").read_bytes(), "holiday.jpg").json()
    assert heic["mime_type"] == "image/heif" and heic["original_name"] == "holiday.heic"
    jpeg = upload(api, (PHOTOS / "camera" / "Canon_40D.jpg").read_bytes(), "canon.JPEG").json()
    assert jpeg["mime_type"] == "image/jpeg" and jpeg["original_name"] == "canon.JPEG"
    noext = upload(api, (PHOTOS / "camera" / "Canon_40D.jpg").read_bytes(), "canon").json()
    assert noext["original_name"] == "canon.jpg"


def test_avif_uploads(api):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buffer, "AVIF", quality=80)
    response = upload(api, buffer.getvalue(), "green.avif")
    assert response.status_code == 201, response.json()
    assert response.json()["mime_type"] == "image/avif"
    assert (response.json()["metadata"]["width"], response.json()["metadata"]["height"]) == (64, 48)


@override_settings(IMAGE_MAX_PIXELS=10_000)
def test_a_decompression_bomb_is_a_clear_400(api):
    buffer = io.BytesIO()
    Image.new("L", (200, 100)).save(buffer, "PNG")
    response = upload(api, buffer.getvalue(), "bomb.png")
    assert response.status_code == 400
    message = " ".join(response.json()["errors"]["file"])
    assert "too many pixels" in message and "20,000 pixels" in message and "IMAGE_MAX_PIXELS" in message
    assert not File.objects.exists()


def test_animated_gif_and_multipage_tiff_report_their_frames(api):
    frames = [Image.new("RGB", (40, 30), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    tiff = io.BytesIO()
    frames[0].save(tiff, "TIFF", save_all=True, append_images=frames[1:2])
    assert upload(api, gif.getvalue(), "a.gif").json()["metadata"]["frames"] == 3
    assert upload(api, tiff.getvalue(), "a.tif").json()["metadata"]["frames"] == 2


@pytest.mark.parametrize("name", ["orientation/landscape_6.jpg", "orientation/portrait_7.jpg", "heic/IMG_5195.HEIC"])
def test_a_preview_is_the_picture_the_pipeline_sees_in_srgb(name):
    from files.imaging import SRGB_ICC, image_decode, image_preview

    content = (PHOTOS / name).read_bytes()
    preview, mime_type = image_preview(content, size=256)
    image = Image.open(io.BytesIO(preview))
    reference = shown(content)
    profile = Image.open(io.BytesIO(content)).info.get("icc_profile")
    if profile:  # the reference in sRGB, converted by little CMS directly
        reference = ImageCms.profileToProfile(reference, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                              ImageCms.createProfile("sRGB"), outputMode="RGB")
    assert mime_type == "image/jpeg" and max(image.size) == 256
    assert abs(image.width / image.height - reference.width / reference.height) < 0.02
    # the same picture the right way up (a sideways or mirrored preview differs by far more)
    def difference(other: Image.Image) -> float:
        return sum(ImageStat.Stat(ImageChops.difference(image.convert("RGB"), other.resize(image.size))).mean) / 3

    assert difference(reference) < 8  # JPEG at quality 85 and a different resampling
    assert difference(reference.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) > 2 * difference(reference)
    if image_decode(content).icc_profile:  # a profiled photo (Display P3 on the iPhone) is shown in sRGB
        assert image.info["icc_profile"] == SRGB_ICC
