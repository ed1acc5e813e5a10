"""The demo: a generated image and a pipeline of built-in operations on it (`manage.py load_demo`,
`make run`); the image generator also feeds the tests and benchmarks."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

from executions.catalogue import builtin_components_register
from files.models import File
from files.services import file_store_bytes
from registry.models import Pipeline
from registry.services import pipeline_create


DEMO_PIPELINE_NAME = "Demo: resize, then grayscale / edges / sharpen side by side"


def demo_definition() -> dict:
    def ref(name: str) -> dict:
        return {"name": name, "version": "1.0.0"}

    return {
        "nodes": [
            {"id": "resize", "component": ref("resize"), "parameters": {"width": 480}},
            {"id": "gray", "component": ref("grayscale"), "parameters": {}},
            {"id": "edges", "component": ref("edge_detect"), "parameters": {}},
            {"id": "sharpen", "component": ref("sharpen"), "parameters": {"percent": 200}},
            {"id": "board", "component": ref("side_by_side"), "parameters": {"gap": 8}},
        ],
        "edges": [
            {"from": "resize", "to": "gray"}, {"from": "resize", "to": "edges"}, {"from": "resize", "to": "sharpen"},
            {"from": "gray", "to": "board"}, {"from": "edges", "to": "board"}, {"from": "sharpen", "to": "board"},
        ],
    }


def demo_image_bytes(*, width: int = 1024, height: int = 768, seed: int = 0) -> bytes:
    """A generated JPEG with gradients and shapes (something for the filters to act on)."""
    rng = random.Random(seed)
    red = Image.linear_gradient("L").resize((width, height))
    green = Image.linear_gradient("L").rotate(90 + seed * 13 % 180).resize((width, height))
    blue = Image.effect_noise((width, height), 40 + seed % 30)
    image = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = (x0, y0, x0 + rng.randrange(40, width // 3), y0 + rng.randrange(40, height // 3))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill, outline=(255, 255, 255), width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def demo_load(*, user) -> dict:
    """Register the built-ins, upload one generated demo image and create the demo pipeline;
    running it again changes nothing."""
    components = builtin_components_register()
    image = File.objects.filter(created_by=user, metadata__demo=True).first()
    if image is None:
        image = file_store_bytes(content=demo_image_bytes(), original_name="imageflow-demo.jpg", created_by=user,
                                 prefix="uploads", extra_metadata={"demo": True})
    pipeline = Pipeline.objects.filter(name=DEMO_PIPELINE_NAME, created_by=user).first()
    if pipeline is None:
        pipeline = pipeline_create(name=DEMO_PIPELINE_NAME, definition=demo_definition(), created_by=user,
                                   description="Built-in operations on one image, branches merged into a board.")
    return {"components": components, "file": image, "pipeline": pipeline}
