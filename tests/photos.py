"""The shared camera photos (../shared/photos from the project root; read in place, never copied
into the repository). Source: the exif-samples collection (CC BY-SA 4.0), see its README."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / ".." / "shared" / "photos"


def photos(folder: str) -> list[Path]:
    return sorted(p for p in (PHOTOS / folder).iterdir() if p.is_file() and p.suffix.lower() != ".md")


CAMERA = photos("camera")
INVALID_EXIF = photos("invalid-exif")
ORIENTATION = photos("orientation")
HEIC = photos("heic")
ALL_PHOTOS = CAMERA + INVALID_EXIF + ORIENTATION + HEIC


def photo_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def shown(content: bytes) -> Image.Image:
    """The picture as a viewer shows it, computed with Pillow alone (the reference)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    image = Image.open(io.BytesIO(content))
    return ImageOps.exif_transpose(image).convert("RGB")
