"""What a stored file is, read from its bytes (never from its name): MIME type, format,
dimensions and metadata (files.metadata). Validation is streaming-friendly: a large image is not
decoded whole, and the JPEG structure walk reads the file in chunks."""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from PIL import Image

from imageflow.validators import strip_unsafe_characters

from .imaging import ImageRefused, format_facts, format_name, open_image
from .metadata import image_metadata

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
    extensions: frozenset[str] = frozenset()


def sanitize_file_name(name: str | None, *, fallback: str = "upload") -> str:
    """A display name with no directories, control characters or traversal left in it."""
    # NFC first, then the characters the name rule refuses (bidirectional overrides such as
    # U+202E would make "invoice\u202egpj.exe" display as "invoiceexe.jpg").
    name = strip_unsafe_characters(unicodedata.normalize("NFC", name or ""))
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


_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length


def jpeg_end_offset(stream: IO[bytes]) -> int | None:
    """Offset just past a JPEG's end-of-image marker, or None when the file stops before it
    (truncated). The segments and the entropy-coded data after each scan are walked in chunks
    (memory stays flat for any size), so an FF D9 inside an embedded EXIF thumbnail does not
    count, unlike a search of the file's tail. Damaged scan data (which libjpeg decodes anyway)
    falls back to the last FF D9 after the first scan."""
    end, first_scan = _walk_jpeg(stream)
    if end is None and first_scan is not None:
        end = _last_end_marker(stream, after=first_scan)
    stream.seek(0)
    return end


def _walk_jpeg(stream: IO[bytes]) -> tuple[int | None, int | None]:
    """(end offset, None) of a well-formed JPEG; (None, first scan offset) when the walk could
    not finish (truncated or damaged)."""
    stream.seek(0)
    data = stream.read(HASH_CHUNK)
    base = 0  # file offset of data[0]
    pos = 2
    first_scan: int | None = None
    if not data.startswith(b"\xff\xd8"):
        return None, None

    def ensure(count: int) -> bool:
        nonlocal data, base, pos
        while len(data) - pos < count:
            more = stream.read(HASH_CHUNK)
            if not more:
                return False
            data = data[pos:] + more
            base += pos
            pos = 0
        return True

    in_scan = False
    while True:
        if in_scan:
            # Entropy-coded data: FF 00 is a stuffed byte, FF D0-D7 a restart; any other marker ends it.
            while True:
                found = data.find(b"\xff", pos)
                if found < 0 or found + 1 >= len(data):
                    pos = len(data) if found < 0 else found
                    if not ensure(2):
                        return None, first_scan
                    continue
                following = data[found + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    pos = found + 1 if following == 0xFF else found + 2
                    continue
                pos = found
                break
            in_scan = False
        if not ensure(2) or data[pos] != 0xFF:
            return None, first_scan
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return base + pos + 2, first_scan
        if marker in _STANDALONE_MARKERS or marker == 0xD8:
            pos += 2
            continue
        if not ensure(4):
            return None, first_scan
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2:
            return None, first_scan
        if marker == 0xDA and first_scan is None:
            first_scan = base + pos
        skip = pos + 2 + length
        while len(data) < skip:
            more = stream.read(HASH_CHUNK)
            if not more:
                return None, first_scan
            data += more
            if len(data) > 4 * HASH_CHUNK:  # a big segment (an APP of a few MB): drop what is behind
                data, base, skip, pos = data[pos:], base + pos, skip - pos, 0
        pos = skip
        in_scan = marker == 0xDA


def _last_end_marker(stream: IO[bytes], *, after: int) -> int | None:
    stream.seek(after)
    last = None
    offset = after
    carry = b""
    while chunk := stream.read(HASH_CHUNK):
        window = carry + chunk
        found = window.rfind(b"\xff\xd9")
        if found >= 0:
            last = offset - len(carry) + found + 2
        carry = window[-1:]
        offset += len(chunk)
    return last


def bmff_is_truncated(stream: IO[bytes]) -> bool:
    """Whether an ISO base media file (HEIF, AVIF) stops inside one of its top-level boxes. A
    decoder is no help here: libheif decodes an iPhone photo cut in half without complaint (the
    missing tiles come out gray), so the structure is checked instead."""
    size = _size_of(stream)
    offset = 0
    while offset + 8 <= size:
        stream.seek(offset)
        header = stream.read(16)
        length = int.from_bytes(header[:4], "big")
        if length == 1:  # a 64-bit size follows the type
            if len(header) < 16:
                return True
            length = int.from_bytes(header[8:16], "big")
        elif length == 0:  # the box runs to the end of the file
            return False
        if length < 8:
            return True
        offset += length
    stream.seek(0)
    return offset > size


def _size_of(stream: IO[bytes]) -> int:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


def inspect_image(stream: IO[bytes]) -> ImageFacts:
    """Identify and check an image from its bytes; raises ValidationError for anything else.

    A JPEG must reach its end-of-image marker (else it is truncated); bytes after the marker
    are kept as uploaded and counted in `metadata["trailing_bytes"]` (docs/images.md: motion
    photos and MPO files carry data there, and the checksum is of the bytes the client sent)."""
    stream.seek(0)
    if not stream.read(1):
        raise ValidationError("The file is empty.", code="empty")
    stream.seek(0)
    try:
        with open_image(stream) as image:
            image_format = format_name(image)
            width, height = image.size
            mode = image.mode
            metadata = image_metadata(image, image_format=image_format)
            info = {k: v for k, v in image.info.items() if k in {"dpi", "progressive", "interlace", "loop", "duration"}}
            frames = getattr(image, "n_frames", 1) or 1
        if image_format not in {"HEIF", "AVIF"}:  # pillow-heif and AVIF decode to check instead
            stream.seek(0)
            with Image.open(stream) as image:
                image.verify()
        if image_format == "JPEG":
            end = jpeg_end_offset(stream)
            if end is None:
                raise ValidationError("The JPEG image is truncated (no end-of-image marker).", code="corrupt")
            trailing = _size_of(stream) - end
            if trailing > 0:
                metadata["trailing_bytes"] = trailing
        if image_format in {"HEIF", "AVIF"} and bmff_is_truncated(stream):
            raise ValidationError("The image is corrupt or truncated: its last box runs past the end of the file.",
                                  code="corrupt")
        if width * height <= settings.IMAGE_UPLOAD_FULL_DECODE_MAX_PIXELS:
            stream.seek(0)
            with Image.open(stream) as image:
                image.load()
    except ImageRefused as exc:
        if exc.code == "not_image":
            raise ValidationError("The file is not an image of a supported format.", code="not_image") from exc
        if exc.code == "too_large":
            raise ValidationError(f"The image has too many pixels: {exc}.", code="too_large") from exc
        raise ValidationError(f"The image is corrupt or truncated: {exc}", code="corrupt") from exc
    except Image.DecompressionBombError as exc:
        raise ValidationError(f"The image has too many pixels: {exc}", code="too_large") from exc
    except ValidationError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValidationError(f"The image is corrupt or truncated: {exc}", code="corrupt") from exc
    finally:
        stream.seek(0)
    facts = format_facts(image_format)
    if frames > 1:
        metadata["frames"] = frames
    from .metadata import json_safe

    info = json_safe(info)
    if info:
        metadata["info"] = info
    return ImageFacts(mime_type=facts.mime_type, format=image_format, width=width, height=height, mode=mode,
                      extension=facts.extension, metadata=metadata, extensions=facts.extensions)


def name_for_type(name: str, facts: ImageFacts) -> str:
    """The display name with an extension that agrees with the bytes: a PNG uploaded as
    "photo.jpg" is named "photo.png" (a download is then opened by what it is); a name with
    one of the format's usual extensions (".jpeg", ".HEIC") is left alone."""
    stem, extension = os.path.splitext(name)
    if extension.lower() in facts.extensions:
        return name
    if extension and len(extension) <= 6:
        name = stem
    return f"{name}{facts.extension}"
