"""Privacy filters: faces and licence plates found and blurred or pixelated, the regions reported.

The detectors are OpenCV's Haar cascades as opencv-python-headless ships them
(`cv2.data.haarcascades`: frontal faces, Russian-style plate numbers): nothing is downloaded at
run time. A cascade is loaded once per thread (detectMultiScale is not safe to share between the
image pool's threads). Detection runs on a grayscale copy at most DETECT_MAX_SIDE pixels wide or
high, so a camera photo costs a fraction of a second; the boxes are scaled back.

The built-in operations `anonymize_faces` and `anonymize_plates` (registered by builtin.py) return
the anonymized image and the result `{"task", "mode", "width", "height", "detections": [{"box",
"label", "score", "class_id"}]}`, stored in the output's metadata (docs/components.md).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from PIL import Image, ImageFilter

DETECT_MAX_SIDE = 1600
CASCADES = {"face": "haarcascade_frontalface_default.xml", "plate": "haarcascade_russian_plate_number.xml"}
_local = threading.local()


def cascade_path(kind: str) -> str:
    import cv2

    return os.path.join(cv2.data.haarcascades, CASCADES[kind])


def _cascade(kind: str):
    import cv2

    loaded = getattr(_local, "cascades", None)
    if loaded is None:
        loaded = _local.cascades = {}
    if kind not in loaded:
        classifier = cv2.CascadeClassifier(cascade_path(kind))
        if classifier.empty():
            raise RuntimeError(f"the OpenCV cascade {CASCADES[kind]} could not be loaded")
        loaded[kind] = classifier
    return loaded[kind]


def detect_regions(image: Image.Image, *, kind: str, scale_factor: float, min_neighbors: int,
                   min_size: int) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) boxes of faces or plates in the image's pixels, top to bottom."""
    import cv2
    import numpy as np

    gray = image.convert("L")
    ratio = min(1.0, DETECT_MAX_SIDE / max(gray.size))
    if ratio < 1.0:
        gray = gray.resize((max(1, round(gray.width * ratio)), max(1, round(gray.height * ratio))),
                           Image.Resampling.BILINEAR)
    array = cv2.equalizeHist(np.asarray(gray))
    smallest = max(8, round(min_size * ratio))
    min_box = (smallest, max(4, round(smallest / 3))) if kind == "plate" else (smallest, smallest)
    found = _cascade(kind).detectMultiScale(array, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                            minSize=min_box)
    boxes = [(round(x / ratio), round(y / ratio), round((x + w) / ratio), round((y + h) / ratio))
             for x, y, w, h in (found if len(found) else [])]
    return sorted((min(b[0], image.width), min(b[1], image.height), min(b[2], image.width), min(b[3], image.height))
                  for b in boxes)


def _padded(box: tuple[int, int, int, int], padding: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    px, py = round((x1 - x0) * padding), round((y1 - y0) * padding)
    return max(0, x0 - px), max(0, y0 - py), min(size[0], x1 + px), min(size[1], y1 + py)


def anonymize_region(image: Image.Image, box: tuple[int, int, int, int], *, mode: str, strength: float) -> None:
    """Blur or pixelate one region of `image` in place. `strength` (0-1] scales the blur radius or
    the pixel blocks with the region's size, so a large face is as unreadable as a small one."""
    region = image.crop(box)
    side = max(region.size)
    if mode == "pixelate":
        blocks = max(2, round(16 * (1.05 - strength)))  # blocks across the region's longer side
        small = region.resize((max(1, round(region.width * blocks / side)),
                               max(1, round(region.height * blocks / side))), Image.Resampling.BILINEAR)
        region = small.resize(region.size, Image.Resampling.NEAREST)
    else:
        region = region.filter(ImageFilter.GaussianBlur(radius=max(2.0, side * strength / 4)))
    image.paste(region, box[:2])


def anonymize(image: Image.Image, p: dict, *, kind: str, task: str) -> tuple[Image.Image, dict[str, Any]]:
    working = image if image.mode in {"RGB", "RGBA", "L"} else image.convert("RGB")
    boxes = detect_regions(working, kind=kind, scale_factor=p["scale_factor"], min_neighbors=p["min_neighbors"],
                           min_size=p["min_size"])
    result = working.copy()
    regions = [_padded(box, p["padding"], result.size) for box in boxes]
    for region in regions:
        if region[2] > region[0] and region[3] > region[1]:
            anonymize_region(result, region, mode=p["mode"], strength=p["strength"])
    report = {"task": task, "mode": p["mode"], "width": result.width, "height": result.height,
              "detections": [{"box": list(map(float, region)), "label": kind, "score": None, "class_id": None}
                             for region in regions]}
    return result, report


def anonymize_faces(image: Image.Image, p: dict) -> tuple[Image.Image, dict[str, Any]]:
    return anonymize(image, p, kind="face", task="anonymize_faces")


def anonymize_plates(image: Image.Image, p: dict) -> tuple[Image.Image, dict[str, Any]]:
    return anonymize(image, p, kind="plate", task="anonymize_plates")


def privacy_properties(*, min_size: int, min_neighbors: int) -> dict[str, Any]:
    """The parameters of a privacy filter (builtin.py adds the image parameters)."""
    return {
        "mode": {"type": "string", "enum": ["blur", "pixelate"], "default": "blur"},
        "strength": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.5,
                     "description": "How strongly: the blur radius or pixel block size relative to the region."},
        "padding": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1,
                    "description": "Grow each detected region by this fraction of its size on every side."},
        "min_size": {"type": "integer", "minimum": 8, "maximum": 4096, "default": min_size,
                     "description": "Smallest region found, in pixels (its width)."},
        "min_neighbors": {"type": "integer", "minimum": 1, "maximum": 50, "default": min_neighbors,
                          "description": "The detector's confidence: higher finds fewer, surer regions."},
        "scale_factor": {"type": "number", "minimum": 1.01, "maximum": 2, "default": 1.1},
    }
