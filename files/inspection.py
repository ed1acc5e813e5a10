"""What a stored file is, read from its bytes (never from its name): MIME type, format,
dimensions and EXIF. Validation is streaming-friendly: a large image is not decoded whole."""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from PIL import ExifTags, Image, TiffImagePlugin, UnidentifiedImageError

Image.init()
Image.MAX_IMAGE_PIXELS = getattr(settings, "IMAGE_MAX_PIXELS", 400_000_000)

# Images up to this many pixels are decoded fully to catch corrupt pixel data; larger ones are
# checked structurally (header, PNG CRCs, JPEG end marker) so memory stays bounded.
FULL_DECODE_MAX_PIXELS = 40_000_000
HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ImageFacts:
    mime_type: str
    format: str
    width: int
    height: int
    mode: str
    extension: str
    metadata: dict[str, Any] = field(default_factory=dict)


def sanitize_file_name(name: str | None, *, fallback: str = "upload") -> str:
    """A display name with no directories, control characters or traversal left in it."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").split("/")[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip().strip(".")
    name = re.sub(r"\s+", " ", name)
    if not name:
        name = fallback
    stem, ext = os.path.splitext(name)
    return stem[: 200 - len(ext[:20])] + ext[:20]


def sha256_of(stream: IO[bytes]) -> tuple[str, int]:
    """SHA-256 hex and size of a seekable stream, read in chunks; the stream is rewound."""
    digest = hashlib.sha256()
    size = 0
    stream.seek(0)
    while chunk := stream.read(HASH_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    stream.seek(0)
    return digest.hexdigest(), size


def _jsonable(value: Any) -> Any:
    if isinstance(value, TiffImagePlugin.IFDRational):
        return float(value) if value.denominator else None
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace").rstrip("\x00")
        return text if text.isprintable() else None
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def exif_as_json(image: Image.Image) -> dict[str, Any]:
    exif = image.getexif()
    result: dict[str, Any] = {}
    for tag, value in exif.items():
        result[ExifTags.TAGS.get(tag, str(tag))] = _jsonable(value)
    for ifd_id, prefix in ((ExifTags.IFD.Exif, ""), (ExifTags.IFD.GPSInfo, "GPS")):
        try:
            sub = exif.get_ifd(ifd_id)
        except (KeyError, ValueError, OSError):
            continue
        names = ExifTags.GPSTAGS if prefix else ExifTags.TAGS
        for tag, value in sub.items():
            result[f"{prefix}{names.get(tag, str(tag))}"] = _jsonable(value)
    result.pop("ExifOffset", None)
    result.pop("GPSInfo", None)
    return {k: v for k, v in result.items() if v is not None}


def _has_jpeg_end_marker(stream: IO[bytes]) -> bool:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(max(0, size - 4096))
    tail = stream.read()
    stream.seek(0)
    return b"\xff\xd9" in tail


def inspect_image(stream: IO[bytes]) -> ImageFacts:
    """Identify and check an image from its bytes; raises ValidationError for anything else."""
    stream.seek(0)
    if not stream.read(1):
        raise ValidationError("The file is empty.", code="empty")
    stream.seek(0)
    try:
        with Image.open(stream) as image:
            image_format = image.format or ""
            width, height = image.size
            mode = image.mode
            exif = exif_as_json(image)
            info = {k: _jsonable(v) for k, v in image.info.items() if k in {"dpi", "progressive", "interlace", "loop", "duration"}}
            frames = getattr(image, "n_frames", 1)
        stream.seek(0)
        with Image.open(stream) as image:
            image.verify()
        if image_format == "JPEG" and not _has_jpeg_end_marker(stream):
            raise ValidationError("The JPEG image is truncated (no end-of-image marker).", code="corrupt")
        if width * height <= FULL_DECODE_MAX_PIXELS:
            stream.seek(0)
            with Image.open(stream) as image:
                image.load()
    except UnidentifiedImageError as exc:
        raise ValidationError("The file is not an image of a supported format.", code="not_image") from exc
    except Image.DecompressionBombError as exc:
        raise ValidationError(f"The image has too many pixels: {exc}", code="too_large") from exc
    except ValidationError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValidationError(f"The image is corrupt or truncated: {exc}", code="corrupt") from exc
    finally:
        stream.seek(0)
    mime_type = Image.MIME.get(image_format, "application/octet-stream")
    extension = {"JPEG": ".jpg", "TIFF": ".tif"}.get(image_format, f".{image_format.lower()}")
    metadata = {"format": image_format, "width": width, "height": height, "mode": mode, "exif": exif}
    if frames and frames > 1:
        metadata["frames"] = frames
    if info:
        metadata["info"] = info
    return ImageFacts(mime_type=mime_type, format=image_format, width=width, height=height, mode=mode,
                      extension=extension, metadata=metadata)
