"""Built-in operations on real photos and awkward image kinds (the step service called directly):
right way up, metadata policies, color modes, formats, big photos and the pixel limit."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest
from django.test import override_settings
from PIL import Image, ImageChops, ImageCms, ImageStat

from executions.engine.runners.builtin import BUILTIN_OPERATIONS
from executions.models import StepStatus
from executions.services import execution_start
from files.imaging import image_decode
from files.models import File
from files.services import file_read_bytes, file_store_bytes
from tests.executions.conftest import node, open_image, run_here
from tests.photos import HEIC, ORIENTATION, PHOTOS, photo_id, shown


def run_single(pipeline_of, user, files, component: str, run_parameters: dict | None = None, **params):
    execution = execution_start(pipeline=pipeline_of([node("op", component, **params)]),
                                inputs=[f.id for f in files], user=user, parameters=run_parameters)
    step = execution.steps.get()
    run_here(step)
    step.refresh_from_db()
    return step


def outputs_of(step) -> list[File]:
    return [File.objects.get(pk=i) for i in step.output_data["files"]]


def store(content: bytes, name: str, user) -> File:
    return file_store_bytes(content=content, original_name=name, created_by=user, prefix="uploads")


def photo(folder: str, name: str, user) -> File:
    return store((PHOTOS / folder / name).read_bytes(), name, user)


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


@pytest.mark.parametrize("path", ORIENTATION, ids=photo_id)
def test_every_orientation_comes_out_of_resize_the_right_way_up(builtins, pipeline_of, user, path):
    content = path.read_bytes()
    reference = shown(content)  # what a viewer shows (Pillow's exif_transpose of the original)
    step = run_single(pipeline_of, user, [store(content, path.name, user)], "resize", width=300)
    assert step.status == StepStatus.COMPLETED, step.error_message
    (output,) = outputs_of(step)
    image = open_image(output)
    assert image.size == (300, round(300 * reference.height / reference.width))
    assert image.getexif().get(0x0112, 1) == 1  # the pixels are turned: orientation 1
    # the same picture, not only the same shape: mirrored (2, 4, 5, 7) or upside-down (3) would differ
    assert mean_difference(image, reference.resize(image.size)) < 6
    assert output.metadata["orientation"] == 1


def test_auto_orient_off_works_on_the_stored_pixel_grid(builtins, pipeline_of, user):
    step = run_single(pipeline_of, user, [photo("orientation", "landscape_6.jpg", user)], "resize", width=300,
                      auto_orient=False)
    assert open_image(outputs_of(step)[0]).size == (300, 400)  # stored 450x600, not turned


def test_a_crop_box_is_in_the_coordinates_the_viewer_sees(builtins, pipeline_of, user):
    source = photo("orientation", "portrait_8.jpg", user)  # stored 600x450, shown 450x600
    step = run_single(pipeline_of, user, [source], "crop", left=0, top=0, right=450, bottom=600)
    assert step.status == StepStatus.COMPLETED, step.error_message
    assert open_image(outputs_of(step)[0]).size == (450, 600)


# --- metadata policies -------------------------------------------------------------------------------

def test_strip_location_is_the_default_and_keeps_the_camera(builtins, pipeline_of, user):
    step = run_single(pipeline_of, user, [photo("heic", "IMG_5195.HEIC", user)], "resize", width=200)
    (output,) = outputs_of(step)
    assert step.input_data["parameters"]["metadata"] == "strip_location"
    assert output.mime_type == "image/jpeg"  # a HEIF source gives a JPEG
    assert output.metadata["camera"]["model"] == "iPhone 11 Pro Max"
    assert output.metadata["taken_at"] == "2021-04-11T15:47:53-05:00"
    assert "gps" not in output.metadata
    assert not [key for key in output.metadata["exif"] if key.startswith("GPS")]
    assert output.metadata["icc_profile"]["color_space"] == "RGB"


def test_keep_copies_gps_and_camera_but_not_orientation(builtins, pipeline_of, user):
    step = run_single(pipeline_of, user, [photo("heic", "IMG_5195.HEIC", user)], "resize", width=200,
                      metadata="keep")
    (output,) = outputs_of(step)
    assert output.metadata["gps"]["latitude"] == 39.0513444
    assert output.metadata["camera"]["make"] == "Apple"
    assert output.metadata["orientation"] == 1
    assert output.metadata["exif"]["ExifImageWidth"] == 200


def test_strip_leaves_no_exif_but_keeps_the_color_profile(builtins, pipeline_of, user):
    source = photo("camera", "Canon_40D.jpg", user)
    assert source.metadata["icc_profile"]
    step = run_single(pipeline_of, user, [source], "blur", metadata="strip")
    (output,) = outputs_of(step)
    assert output.metadata["exif"] == {} and "camera" not in output.metadata
    assert output.metadata["icc_profile"] == source.metadata["icc_profile"]


def test_a_run_overrides_the_pipelines_policy(builtins, pipeline_of, user):
    source = photo("camera", "Kodak_CX7530.jpg", user)
    kept = run_single(pipeline_of, user, [source], "blur", metadata="keep")
    assert outputs_of(kept)[0].metadata["gps"] == {"latitude": -0.3713, "longitude": 36.0564167}
    stripped = run_single(pipeline_of, user, [source], "blur", metadata="keep",
                          run_parameters={"op": {"metadata": "strip"}})
    assert outputs_of(stripped)[0].metadata["exif"] == {}


def test_a_serial_number_goes_with_strip_location(builtins, pipeline_of, user):
    image = Image.new("RGB", (64, 48), (90, 90, 90))
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    exif.get_ifd(0x8769)[0xA431] = "BODY-123456"  # BodySerialNumber
    exif.get_ifd(0x8769)[0x927C] = b"vendor" * 50  # MakerNote
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    source = store(buffer.getvalue(), "serial.jpg", user)
    assert source.metadata["camera"]["serial"] == "BODY-123456"
    assert source.metadata["exif"]["MakerNote"] == {"binary_bytes": 300}
    output = outputs_of(run_single(pipeline_of, user, [source], "blur"))[0]
    assert output.metadata["camera"] == {"make": "Maker"}
    assert "MakerNote" not in output.metadata["exif"] and "BodySerialNumber" not in output.metadata["exif"]


# --- color modes and formats through every built-in --------------------------------------------------

def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (80, 60), (255, 0, 0, 0)).save(buffer, "JPEG", quality=95)  # pure cyan
    return buffer.getvalue()


def _gray16_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("I;16", (80, 60), 40000).save(buffer, "PNG")
    return buffer.getvalue()


def _gray16_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("I;16", (80, 60), 40000).save(buffer, "TIFF")
    return buffer.getvalue()


def _palette_alpha_png() -> bytes:
    image = Image.new("P", (80, 60), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (40, 0, 80, 60))  # right half blue, left half index 0 (transparent)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0)
    return buffer.getvalue()


def _avif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), (20, 160, 60)).save(buffer, "AVIF", quality=90)
    return buffer.getvalue()


KINDS = {
    "cmyk-jpeg": (_cmyk_jpeg, "cmyk.jpg"),
    "16bit-png": (_gray16_png, "gray16.png"),
    "16bit-tiff": (_gray16_tiff, "gray16.tif"),
    "palette-alpha-png": (_palette_alpha_png, "palette.png"),
    "avif": (_avif, "green.avif"),
    "heic": (lambda: (PHOTOS / "heic" / "samplefilehub.heif").read_bytes(), "sample.heif"),
}
OPERATION_PARAMETERS = {
    "resize": {"width": 40}, "crop": {"left": 1, "top": 1, "right": 30, "bottom": 20}, "thumbnail": {"size": 32},
    "convert": {"format": "JPEG"}, "rotate": {"angle": 90},
}
OPERATIONS = [name for name, op in BUILTIN_OPERATIONS.items() if op.kind != "passthrough"]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_builtin_handles_every_kind_of_image(builtins, pipeline_of, user, kind, operation):
    make, name = KINDS[kind]
    source = store(make(), name, user)
    inputs = [source, source] if BUILTIN_OPERATIONS[operation].kind == "merge" else [source]
    step = run_single(pipeline_of, user, inputs, operation, **OPERATION_PARAMETERS.get(operation, {}))
    assert step.status == StepStatus.COMPLETED, step.error_message
    (output,) = outputs_of(step)
    image = open_image(output)
    assert image.width > 0 and image.mode in {"1", "L", "LA", "RGB", "RGBA", "P"}
    assert output.mime_type in {"image/jpeg", "image/png", "image/tiff", "image/avif"}


def test_cmyk_becomes_the_same_color_in_rgb(builtins, pipeline_of, user):
    step = run_single(pipeline_of, user, [store(_cmyk_jpeg(), "cmyk.jpg", user)], "resize", width=40)
    image = open_image(outputs_of(step)[0])
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((20, 15))
    assert red < 60 and green > 150 and blue > 200  # cyan, not inverted or black


def test_sixteen_bit_gray_is_scaled_not_clipped(builtins, pipeline_of, user):
    for make, name in ((_gray16_png, "g.png"), (_gray16_tiff, "g.tif")):
        step = run_single(pipeline_of, user, [store(make(), name, user)], "blur", radius=1)
        image = open_image(outputs_of(step)[0])
        assert image.mode == "L" and image.getpixel((40, 30)) == pytest.approx(40000 / 257, abs=1)


def test_palette_transparency_survives_and_flattens_into_jpeg_on_the_background(builtins, pipeline_of, user):
    source = store(_palette_alpha_png(), "palette.png", user)
    kept = open_image(outputs_of(run_single(pipeline_of, user, [source], "blur", radius=0))[0])
    assert kept.mode == "RGBA" and kept.getpixel((10, 30))[3] == 0 and kept.getpixel((70, 30)) == (0, 0, 255, 255)
    jpeg = outputs_of(run_single(pipeline_of, user, [source], "convert", format="JPEG", background="#00ff00"))[0]
    image = open_image(jpeg)
    assert jpeg.mime_type == "image/jpeg" and image.mode == "RGB"
    red, green, blue = image.getpixel((10, 30))
    assert green > 200 and red < 40 and blue < 40  # the transparent half is on the chosen background


def test_an_icc_profile_travels_with_the_pixels(builtins, pipeline_of, user):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # not RGB: must not be kept
    adobe_like = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, "PNG", icc_profile=adobe_like)
    source = store(buffer.getvalue(), "profiled.png", user)
    for operation, params in (("resize", {"width": 20}), ("rotate", {"angle": 90}), ("convert", {"format": "WEBP"})):
        output = outputs_of(run_single(pipeline_of, user, [source], operation, **params))[0]
        assert open_image(output).info.get("icc_profile") == adobe_like, operation
    gray = outputs_of(run_single(pipeline_of, user, [source], "grayscale"))[0]
    assert "icc_profile" not in gray.metadata  # an RGB profile does not describe gray pixels
    assert profile != adobe_like


def test_first_frame_of_an_animated_gif_or_webp_and_first_page_of_a_tiff(builtins, pipeline_of, user):
    frames = [Image.new("RGB", (40, 30), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    gif, tiff, webp = io.BytesIO(), io.BytesIO(), io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[1].save(tiff, "TIFF", save_all=True, append_images=[frames[2]])
    frames[2].save(webp, "WEBP", save_all=True, append_images=frames[:2], duration=100, lossless=True)
    for content, name, color in ((gif.getvalue(), "a.gif", (255, 0, 0)), (tiff.getvalue(), "a.tif", (0, 255, 0)),
                                 (webp.getvalue(), "a.webp", (0, 0, 255))):
        output = outputs_of(run_single(pipeline_of, user, [store(content, name, user)], "resize", width=20))[0]
        image = open_image(output)
        assert getattr(image, "n_frames", 1) == 1
        assert image.convert("RGB").getpixel((10, 7)) == pytest.approx(color, abs=8)


def test_trailing_data_is_not_carried_into_outputs(builtins, pipeline_of, user):
    source = store((PHOTOS / "camera" / "Canon_40D.jpg").read_bytes() + b"TRAILER" * 100, "t.jpg", user)
    output = outputs_of(run_single(pipeline_of, user, [source], "resize", width=50))[0]
    assert source.metadata["trailing_bytes"] == 700
    assert "trailing_bytes" not in output.metadata and b"TRAILER" not in file_read_bytes(output)


# --- big photos and the pixel limit -----------------------------------------------------------------

def test_a_big_jpeg_is_decoded_reduced_for_a_resize(user):
    buffer = io.BytesIO()
    Image.new("L", (8000, 6000), 128).save(buffer, "JPEG", quality=70)
    decoded = image_decode(buffer.getvalue(), reduce_to=lambda shown: (480, 360))
    # DCT scaling: 1/8 of 8000x6000 is 1000x750, at least twice the target in both directions
    assert decoded.image.size == (1000, 750)
    assert decoded.image.info["shown_size"] == (8000, 6000) and decoded.stored_size == (8000, 6000)


def test_a_100_megapixel_photo_is_resized_within_bounded_memory(tmp_path):
    # Each decode in a fresh process: its peak memory (ru_maxrss) is the decode's own.
    path = tmp_path / "big.jpg"
    Image.new("RGB", (10000, 10000), (120, 60, 200)).save(path, "JPEG", quality=60)
    script = textwrap.dedent(f"""
        import os, django
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imageflow.settings")
        django.setup()
        from files.imaging import image_decode
        from executions.engine.runners.builtin import BUILTIN_OPERATIONS
        op = BUILTIN_OPERATIONS["resize"]
        params = {{"width": 480, "keep_aspect": True, "resample": "lanczos"}}
        reduce = (lambda shown: op.reduce_for(params, shown)) if os.environ["REDUCE"] == "1" else None
        with open({str(path)!r}, "rb") as handle:
            decoded = image_decode(handle, reduce_to=reduce)
        out = op.apply(decoded.image, params)
        # VmHWM: this process's own peak resident memory (ru_maxrss would include the parent's)
        peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
        print(out.size, int(peak) * 1024)
    """)

    def peak(reduce: str) -> tuple[str, int]:
        from django.conf import settings
        import os

        env = {**os.environ, "REDUCE": reduce}
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                                cwd=settings.BASE_DIR, check=True)
        size, rss = result.stdout.strip().rsplit(" ", 1)
        return size, int(rss)

    reduced_size, reduced_rss = peak("1")
    full_size, full_rss = peak("0")
    assert reduced_size == full_size == "(480, 480)"
    assert full_rss - reduced_rss > 250 * 1024 * 1024  # the full decode holds 300 MB of pixels
    assert reduced_rss < 200 * 1024 * 1024


@override_settings(IMAGE_MAX_PIXELS=50_000)
def test_an_image_over_the_pixel_limit_is_a_clear_step_failure(builtins, pipeline_of, user):
    with override_settings(IMAGE_MAX_PIXELS=1_000_000):
        source = photo("camera", "Canon_PowerShot_S40.jpg", user)  # 480x360, stored under a higher limit
    step = run_single(pipeline_of, user, [source], "resize", width=100)
    assert step.status == StepStatus.FAILED
    assert step.error_message == ("resize: input Canon_PowerShot_S40.jpg is too large: 480x360 is 172,800 pixels, "
                                  "more than the limit of 50,000 (IMAGE_MAX_PIXELS)")


@pytest.mark.parametrize("path", HEIC, ids=photo_id)
def test_heic_photos_go_through_resize_as_shown(builtins, pipeline_of, user, path):
    content = path.read_bytes()
    step = run_single(pipeline_of, user, [store(content, path.name, user)], "resize", width=200)
    assert step.status == StepStatus.COMPLETED, step.error_message
    reference = shown(content)
    image = open_image(outputs_of(step)[0])
    assert image.format == "JPEG" and image.size == (200, round(200 * reference.height / reference.width))
