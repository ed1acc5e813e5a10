"""Drawing results on images: the boxes of detections (ONNX detect, the privacy filters), the top
labels of a classification, the classes of a segmentation. Used by the ONNX runner's annotated
output and by the built-in `annotate`, which draws the results its input image carries in
`metadata["results"]` (docs/components.md).
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw, ImageFont

from files.imaging import flatten

# Distinct colors by class id (a label keeps its color across images).
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255)]


def color_for(class_id: int | None) -> tuple[int, int, int]:
    return PALETTE[(class_id or 0) % len(PALETTE)]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # an older Pillow without scalable default font
        return ImageFont.load_default()


def results_scaled(results: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """The results with their boxes in the pixels of an image of `size` (the image they were
    made on may have been resized since)."""
    width, height = results.get("width") or size[0], results.get("height") or size[1]
    sx, sy = size[0] / width, size[1] / height
    if (sx, sy) == (1.0, 1.0):
        return results

    def box(b):
        return [round(b[0] * sx, 2), round(b[1] * sy, 2), round(b[2] * sx, 2), round(b[3] * sy, 2)]

    scaled = {**results, "width": size[0], "height": size[1]}
    for key in ("detections", "classes"):
        if key in results:
            scaled[key] = [{**entry, "box": box(entry["box"])} for entry in results[key]]
    return scaled


def _caption(entry: dict[str, Any]) -> str:
    label = entry.get("label") or (f"class {entry['class_id']}" if entry.get("class_id") is not None else "")
    score = entry.get("score")
    return f"{label} {score:.2f}".strip() if isinstance(score, (int, float)) else label


def draw_results(image: Image.Image, results: dict[str, Any] | None) -> tuple[Image.Image, int]:
    """An RGB copy of `image` with the results drawn; and how many things were drawn."""
    canvas = flatten(image).convert("RGB")
    if not results:
        return canvas, 0
    results = results_scaled(results, canvas.size)
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(min(canvas.size) / 200))
    font = _font(max(12, round(min(canvas.size) / 30)))
    drawn = 0
    for entry in results.get("detections", []) + results.get("classes", []):
        color = color_for(entry.get("class_id"))
        x0, y0, x1, y1 = entry["box"]
        draw.rectangle([x0, y0, x1, y1], outline=color, width=line)
        text = _caption(entry)
        if text:
            left, top, right, bottom = draw.textbbox((x0, y0), text, font=font)
            lift = bottom - top + 2 * line
            ty = y0 - lift if y0 - lift >= 0 else y0
            draw.rectangle([x0, ty, x0 + right - left + 2 * line, ty + lift], fill=color)
            draw.text((x0 + line, ty + line - (top - y0)), text, fill=(0, 0, 0), font=font)
        drawn += 1
    labels = results.get("labels") or []
    if labels:
        y = line
        for entry in labels:
            text = _caption(entry)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            draw.rectangle([line, y, line + right - left + 2 * line, y + bottom - top + 2 * line], fill=(0, 0, 0))
            draw.text((2 * line, y + line - top), text, fill=color_for(entry.get("class_id")), font=font)
            y += bottom - top + 3 * line
            drawn += 1
    return canvas, drawn


def overlay_mask(image: Image.Image, mask: Image.Image, *, alpha: float, background: int | None) -> Image.Image:
    """The image with each class of the mask (mode L, class ids) tinted in its color."""
    base = flatten(image).convert("RGB")
    import numpy as np

    lut = np.array([color_for(i) for i in range(256)], dtype=np.uint8)
    colors = Image.fromarray(lut[np.asarray(mask.convert("L"))], "RGB")
    weight = mask.point(lambda v: 0 if v == background else round(alpha * 255))
    return Image.composite(colors, base, weight)


def annotate(image: Image.Image, p: dict, *, source) -> tuple[Image.Image, dict[str, Any] | None]:
    """The built-in `annotate`: the results the input carries (an upstream ONNX, privacy or
    annotate step's `metadata["results"]`) drawn on it; the output carries them on, scaled to it."""
    results = (source.metadata or {}).get("results")
    canvas, drawn = draw_results(image, results)
    if not results:
        return canvas, None
    return canvas, {**results_scaled(results, canvas.size), "drawn": drawn}
