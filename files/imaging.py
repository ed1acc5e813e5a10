"""The one decode of an image for anything that looks at its pixels (pipeline steps, previews), and
the one encode of a step's output.

`image_decode` returns the picture as a viewer shows it: EXIF orientation applied, first frame or
page, a working mode every operation handles (L, LA, RGB, RGBA: CMYK goes to sRGB through its
profile, 16-bit to 8-bit, palettes to RGB/RGBA), the ICC profile that describes those pixels, and
the source's EXIF and XMP for the output's metadata. It refuses images over IMAGE_MAX_PIXELS
before decoding a pixel, and decodes a JPEG already reduced (libjpeg DCT scaling, `draft`) when
the caller says how small the result may be, so a 100-megapixel photo resized for the web never
occupies 300 MB. Rules and reasons: docs/images.md.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

import pillow_heif
from django.conf import settings
from PIL import Image, ImageCms, ImageColor, ImageOps, UnidentifiedImageError

from .metadata import exif_for_output, icc_color_space, orientation_of, oriented_size, xmp_for_output

# HEIF/HEIC (phones) through pillow-heif; AVIF through Pillow's own plugin.
pillow_heif.register_heif_opener()
Image.init()
# Pillow's own guard is a backstop (it raises at twice this); ours (check_pixels) says more.
Image.MAX_IMAGE_PIXELS = settings.IMAGE_MAX_PIXELS


@dataclass(frozen=True)
class FormatFacts:
    mime_type: str
    extension: str  # the one written for this format
    extensions: frozenset[str]  # every extension people use for it


_FORMATS: dict[str, FormatFacts] = {
    "JPEG": FormatFacts("image/jpeg", ".jpg", frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})),
    "PNG": FormatFacts("image/png", ".png", frozenset({".png", ".apng"})),
    "GIF": FormatFacts("image/gif", ".gif", frozenset({".gif"})),
    "WEBP": FormatFacts("image/webp", ".webp", frozenset({".webp"})),
    "TIFF": FormatFacts("image/tiff", ".tif", frozenset({".tif", ".tiff"})),
    "BMP": FormatFacts("image/bmp", ".bmp", frozenset({".bmp", ".dib"})),
    "HEIF": FormatFacts("image/heif", ".heic", frozenset({".heic", ".heif", ".hif"})),
    "AVIF": FormatFacts("image/avif", ".avif", frozenset({".avif"})),
}
KNOWN_MIME_TYPES: tuple[str, ...] = tuple(facts.mime_type for facts in _FORMATS.values())
# Formats Pillow names differently from what the file is to a user: an MPO is a JPEG with more
# pictures appended (many cameras write one), served and named as a JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}

# Formats a step writes; a source in any other format gives a PNG (lossless, keeps alpha), and a
# HEIF gives a JPEG (what every browser and editor shows).
OUTPUT_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff",
                  "AVIF": ".avif"}
_NO_ALPHA_FORMATS = {"JPEG", "BMP"}
_WORKING_MODES = {"L", "LA", "RGB", "RGBA"}


class ImageRefused(Exception):
    """The bytes cannot be used as an image; `code` says why (not_image, corrupt, too_large)."""

    code = "corrupt"


class ImageUnreadable(ImageRefused):
    code = "not_image"


class ImageTooLarge(ImageRefused):
    code = "too_large"


def format_name(image: Image.Image) -> str:
    name = image.format or ""
    return _FORMAT_ALIASES.get(name, name)


def format_facts(image_format: str) -> FormatFacts:
    known = _FORMATS.get(image_format)
    if known is not None:
        return known
    extension = f".{image_format.lower()}" if image_format else ".bin"
    return FormatFacts(Image.MIME.get(image_format, "application/octet-stream"), extension, frozenset({extension}))


def check_pixels(image: Image.Image) -> None:
    """Refuse an image over IMAGE_MAX_PIXELS from its header alone (a decompression bomb)."""
    limit = settings.IMAGE_MAX_PIXELS
    width, height = image.size
    if width * height > limit:
        raise ImageTooLarge(f"{width}x{height} is {width * height:,} pixels, more than the limit of {limit:,} "
                            f"(IMAGE_MAX_PIXELS)")


def open_image(source: bytes | IO[bytes]) -> Image.Image:
    """Image.open with our refusals (unknown format, bomb) as ImageRefused."""
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        image = Image.open(stream)
    except UnidentifiedImageError as exc:
        raise ImageUnreadable("not an image of a supported format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRefused(f"corrupt or truncated: {exc}") from exc
    check_pixels(image)
    return image


@dataclass
class DecodedImage:
    image: Image.Image  # as shown: oriented (if asked), first frame, a working mode
    format: str  # of the source (MPO reported as JPEG)
    icc_profile: bytes | None  # describes `image`'s pixels (sRGB after a CMYK conversion)
    exif: Image.Exif  # the source's, orientation as stored
    xmp: bytes | None
    orientation: int  # the source's EXIF orientation (1 when absent or invalid)
    stored_size: tuple[int, int]  # the source's pixel grid, before reduction and orientation
    frames: int

    def exif_for_output(self, *, policy: str, size: tuple[int, int]) -> bytes | None:
        return exif_for_output(self.exif, policy=policy, size=size)

    def xmp_for_output(self, *, policy: str) -> bytes | None:
        return xmp_for_output(self.xmp, policy=policy)


_SRGB = ImageCms.createProfile("sRGB")
SRGB_ICC = ImageCms.ImageCmsProfile(_SRGB).tobytes()


def image_decode(source: bytes | IO[bytes], *, auto_orient: bool = True,
                 reduce_to: Callable[[tuple[int, int]], tuple[int, int] | None] | None = None,
                 to_srgb: bool = False) -> DecodedImage:
    """Decode an image as a viewer shows it (module docstring). `reduce_to(shown_size)` may name
    the smallest size the caller needs; the decode may then be smaller than the original but
    never smaller than that. `to_srgb` converts pixels with a profile to sRGB (previews: a browser
    shows them right); steps keep the source's profile instead. Raises ImageRefused."""
    image = open_image(source)
    try:
        image_format = format_name(image)
        frames = getattr(image, "n_frames", 1) or 1
        try:
            exif = image.getexif()
        except Exception:  # damaged EXIF: the pixels are still a picture
            exif = Image.Exif()
        orientation = 1 if image_format == "HEIF" else orientation_of(exif)  # pillow-heif turns HEIF itself
        stored_size = image.size
        xmp = image.info.get("xmp")
        if frames > 1:
            image.seek(0)
        wanted = reduce_to(oriented_size(stored_size, orientation if auto_orient else 1)) if reduce_to else None
        if wanted and image_format == "JPEG":
            # Reducing gap of 2, like Image.thumbnail: the scaled decode is at least twice the
            # target, so the final resample still has detail to work with.
            grid = oriented_size(wanted, orientation) if auto_orient else wanted
            image.draft(image.mode if image.mode in {"RGB", "L", "CMYK"} else None, (grid[0] * 2, grid[1] * 2))
        image.load()
        icc = image.info.get("icc_profile") or None
        if auto_orient and orientation != 1:
            image = ImageOps.exif_transpose(image)
        image, icc = _working(image, icc)
        if to_srgb and icc and icc != SRGB_ICC and icc_color_space(icc) == "RGB":
            image, icc = _to_srgb(image, icc), SRGB_ICC
        if wanted and image_format != "JPEG":
            factor = min(image.width // max(1, wanted[0]), image.height // max(1, wanted[1])) // 2
            if factor >= 2:
                image = image.reduce(factor)
    except ImageRefused:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRefused(f"corrupt or truncated: {exc}") from exc
    if wanted:
        # A reduced decode remembers the size it stands for, so a resize to "width 480" gives the
        # height the full image would have given, to the pixel.
        image.info["shown_size"] = oriented_size(stored_size, orientation if auto_orient else 1)
    return DecodedImage(image=image, format=image_format, icc_profile=icc, exif=exif, xmp=xmp,
                        orientation=orientation, stored_size=stored_size, frames=frames)


def _working(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """The pixels in a mode every operation handles, with the profile that still describes them."""
    mode = image.mode
    if mode in _WORKING_MODES:
        pass
    elif mode == "CMYK":
        # No operation or web format handles CMYK: to sRGB through the file's profile (Adobe CMYK
        # JPEGs are inverted by Pillow's decoder already), or Pillow's plain formula without one.
        if icc and icc_color_space(icc) == "CMYK":
            try:
                profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                converted = ImageCms.profileToProfile(image, profile, _SRGB, outputMode="RGB")
                return converted, SRGB_ICC
            except (ImageCms.PyCMSError, OSError):
                pass
        return image.convert("RGB"), None
    elif mode.startswith("I;16") or mode == "I":
        # 16-bit gray: scaled to 8 bits (Pillow's convert("L") would clip everything above 255).
        image = image.convert("I").point(lambda value: value / 257).convert("L")
    elif mode == "F":
        image = image.convert("L")
    elif mode in {"P", "PA"}:
        transparent = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if transparent else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    else:  # YCbCr, LAB, HSV, RGBX, I;16 variants Pillow may add: the profile no longer fits
        image = image.convert("RGB")
        icc = None if icc_color_space(icc) != "RGB" else icc
    wanted_space = "GRAY" if image.mode in {"L", "LA"} else "RGB"
    if icc and icc_color_space(icc) != wanted_space:
        icc = None
    return image, icc


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        alpha = image.getchannel("A") if image.mode == "RGBA" else None
        converted = ImageCms.profileToProfile(image.convert("RGB"), profile, _SRGB, outputMode="RGB")
        if alpha is not None:
            converted.putalpha(alpha)
        return converted
    except (ImageCms.PyCMSError, OSError):
        return image


def flatten(image: Image.Image, background: str = "#ffffff") -> Image.Image:
    """Alpha composited over a solid background (for formats without transparency)."""
    if image.mode not in {"RGBA", "LA"} and not (image.mode == "P" and "transparency" in image.info):
        return image
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, ImageColor.getrgb(background) + (255,))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB" if image.mode != "LA" else "L")


def output_format(*, source_format: str, image: Image.Image, requested: str | None = None) -> str:
    """The format a step writes: the requested one (convert), else the source's where we write
    it (HEIF -> JPEG, other -> PNG); a JPEG source whose result is bilevel or has alpha gives a
    PNG, because JPEG would blur the one and drop the other."""
    if requested:
        return requested
    fmt = "JPEG" if source_format == "HEIF" else source_format
    if fmt not in OUTPUT_FORMATS:
        return "PNG"
    if fmt in _NO_ALPHA_FORMATS and image.mode not in {"L", "RGB"}:
        return "PNG"
    return fmt


def image_encode(image: Image.Image, *, fmt: str, quality: int = 90, icc_profile: bytes | None = None,
                 exif: bytes | None = None, xmp: bytes | None = None, background: str = "#ffffff") -> bytes:
    """Encode a step's output. Alpha going into JPEG or BMP is flattened onto `background`;
    the ICC profile is written where the format carries one and it fits the output's mode."""
    if fmt in _NO_ALPHA_FORMATS:
        image = flatten(image, background)
        if image.mode not in {"L", "RGB"}:
            image = image.convert("RGB")
    elif fmt == "GIF" and image.mode not in {"L", "P", "RGB", "RGBA", "1"}:
        image = image.convert("RGBA")
    elif image.mode == "1" and fmt in {"WEBP", "AVIF"}:
        image = image.convert("L")
    # Some writers (PNG, TIFF) fall back on the image's own info: only what is passed here is written.
    image.info = {key: value for key, value in image.info.items() if key in {"transparency", "dpi"}}
    options: dict = {}
    if fmt in {"JPEG", "WEBP", "AVIF"}:
        options["quality"] = quality
    space = "GRAY" if image.mode in {"L", "LA", "1"} else "RGB"
    if icc_profile and icc_color_space(icc_profile) == space and fmt in {"JPEG", "PNG", "WEBP", "TIFF", "AVIF"}:
        options["icc_profile"] = icc_profile
    if exif and fmt in {"JPEG", "PNG", "WEBP", "TIFF", "AVIF"}:
        options["exif"] = exif
    if xmp and fmt in {"JPEG", "WEBP", "AVIF"}:
        options["xmp"] = xmp
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **options)
    except (ValueError, OSError):
        if "exif" not in options and "xmp" not in options:
            raise
        # A metadata block the writer refuses (too big for a segment): the pixels matter more.
        options.pop("exif", None)
        options.pop("xmp", None)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def image_preview(source: bytes | IO[bytes], *, size: int = 512, quality: int = 85) -> tuple[bytes, str]:
    """A preview for people (admin thumbnails, API clients): the same decode a step gets, turned
    to sRGB (browsers assume it) and fitted into size x size. JPEG, or PNG when it has alpha.
    Returns (bytes, MIME type); raises ImageRefused like image_decode."""
    def fit(shown: tuple[int, int]) -> tuple[int, int]:
        ratio = min(size / shown[0], size / shown[1], 1.0)
        return max(1, round(shown[0] * ratio)), max(1, round(shown[1] * ratio))

    decoded = image_decode(source, reduce_to=fit, to_srgb=True)
    image = decoded.image.copy()
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    fmt = "PNG" if image.mode in {"RGBA", "LA"} else "JPEG"
    return image_encode(image, fmt=fmt, quality=quality, icc_profile=decoded.icc_profile), format_facts(fmt).mime_type
