"""Built-in image operations (Pillow), run inside the worker.

`BUILTIN_OPERATIONS` is the catalogue `manage.py register_builtin_components` loads as
components (runner "builtin", version BUILTIN_VERSION). A "map" operation turns each input image
into one output image; a "merge" operation turns all its inputs into one output.

Every operation sees its inputs through files.imaging.image_decode (as a viewer shows them:
`auto_orient`, on by default; first frame; a working mode, CMYK and 16-bit included) and writes
its output through files.imaging.image_encode with the source's ICC profile and the EXIF its
`metadata` policy allows (docs/images.md).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from PIL import Image, ImageColor, ImageFilter, ImageOps

from executions.engine.errors import StepFailure
from executions.engine.runners import RunResult, StepContext, annotation, privacy
from files.imaging import (
    OUTPUT_FORMATS,
    DecodedImage,
    ImageRefused,
    ImageTooLarge,
    flatten,
    image_decode,
    image_encode,
    output_format,
)
from files.metadata import DEFAULT_METADATA_POLICY, METADATA_POLICIES

BUILTIN_VERSION = "1.0.0"
BUILTIN_IMAGE = "imageflow/builtin"

_FORMAT_EXTENSIONS = OUTPUT_FORMATS


class OperationError(Exception):
    """The operation cannot be applied to these inputs (a permanent failure)."""


@dataclass(frozen=True)
class Operation:
    name: str
    description: str
    input_schema: dict[str, Any]
    apply: Callable[..., Any]
    kind: str = "map"  # map: one output per input; merge: one output from all inputs; passthrough
    min_inputs: int = 1
    max_inputs: int | None = None
    # (parameters, input size as shown) -> the smallest size the operation needs, so a big JPEG
    # can be decoded already reduced (files.imaging.image_decode); None: the whole image.
    reduce_for: Callable[[dict, tuple[int, int]], tuple[int, int] | None] | None = None
    # apply(image, parameters, source=<the input File>): for operations that read the input's
    # metadata (annotate). An apply may return (image, results): the results (a JSON object) are
    # stored in the output's metadata["results"] and reported as the step's data.
    with_source: bool = False


# Parameters every image operation takes (docs/images.md, "Orientation" and "Metadata policy").
IMAGE_PARAMETERS: dict[str, Any] = {
    "auto_orient": {"type": "boolean", "default": True,
                    "description": "Apply the EXIF orientation first, so the operation sees the image as a viewer "
                                   "shows it; off: the stored pixel grid. Outputs always carry orientation 1."},
    "metadata": {"type": "string", "enum": list(METADATA_POLICIES), "default": DEFAULT_METADATA_POLICY,
                 "description": "What the output keeps of the source's metadata: keep (EXIF and XMP, less "
                                "orientation and thumbnail), strip_location (EXIF less GPS, serial numbers and "
                                "maker notes), strip (none). The ICC color profile is kept in every case."},
}


def _schema(properties: dict[str, Any], required: list[str] | None = None, *, image: bool = True) -> dict[str, Any]:
    if image:
        properties = {**properties, **IMAGE_PARAMETERS}
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
_RESAMPLE_PROP = {"type": "string", "enum": list(_RESAMPLE), "default": "lanczos"}


def _resize_target(p: dict, size: tuple[int, int]) -> tuple[int, int] | None:
    width, height = p.get("width"), p.get("height")
    if width is None and height is None:
        return None
    if p.get("keep_aspect", True):
        ratio_w = width / size[0] if width else float("inf")
        ratio_h = height / size[1] if height else float("inf")
        ratio = min(ratio_w, ratio_h)
        return max(1, round(size[0] * ratio)), max(1, round(size[1] * ratio))
    return width or size[0], height or size[1]


def _resize(image: Image.Image, p: dict) -> Image.Image:
    size = _resize_target(p, image.info.get("shown_size", image.size))
    if size is None:
        raise OperationError("resize needs width, height or both")
    return image.resize(size, _RESAMPLE[p["resample"]], reducing_gap=3.0)


def _reduce_for_resize(p: dict, shown: tuple[int, int]) -> tuple[int, int] | None:
    # The decode may be reduced only as far as the target (a reduced decode then scales exactly
    # to the size the full one would have given: the target is computed from the shown size).
    return _resize_target(p, shown)


def _fit(box: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    ratio = min(box[0] / size[0], box[1] / size[1], 1.0)
    return max(1, round(size[0] * ratio)), max(1, round(size[1] * ratio))


def _grayscale(image: Image.Image, p: dict) -> Image.Image:
    if image.mode in {"RGBA", "LA"}:
        return image.convert("LA")  # transparency is kept
    return ImageOps.grayscale(image) if image.mode != "L" else image.copy()


def _blur(image: Image.Image, p: dict) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=p["radius"]))


def _sharpen(image: Image.Image, p: dict) -> Image.Image:
    return _as_filterable(image).filter(ImageFilter.UnsharpMask(radius=p["radius"], percent=p["percent"],
                                                                threshold=p["threshold"]))


def _edge_detect(image: Image.Image, p: dict) -> Image.Image:
    # Transparent pixels hold arbitrary colors: edges are found on the picture over white.
    return ImageOps.grayscale(flatten(image)).filter(ImageFilter.FIND_EDGES)


def _rotate(image: Image.Image, p: dict) -> Image.Image:
    fill = ImageColor.getcolor(p["fill"], image.mode) if image.mode in {"RGB", "RGBA", "L", "LA"} else None
    return image.rotate(p["angle"], expand=p["expand"], resample=Image.Resampling.BICUBIC, fillcolor=fill)


def _crop(image: Image.Image, p: dict) -> Image.Image:
    box = (p["left"], p["top"], p["right"], p["bottom"])
    if not (0 <= box[0] < box[2] <= image.width and 0 <= box[1] < box[3] <= image.height):
        raise OperationError(f"crop box {box} is not inside the {image.width}x{image.height} image")
    return image.crop(box)


def _thumbnail(image: Image.Image, p: dict) -> Image.Image:
    copy = image.copy()
    copy.thumbnail((p["size"], p["size"]), Image.Resampling.LANCZOS)
    return copy


def _reduce_for_thumbnail(p: dict, shown: tuple[int, int]) -> tuple[int, int]:
    return _fit((p["size"], p["size"]), shown)


def _convert(image: Image.Image, p: dict) -> Image.Image:
    return image.copy()


def _threshold(image: Image.Image, p: dict) -> Image.Image:
    level = p["level"]
    return ImageOps.grayscale(flatten(image)).point(lambda value: 255 if value >= level else 0).convert("1")


def _side_by_side(images: list[Image.Image], p: dict) -> Image.Image:
    images = [flatten(i, p["background"]).convert("RGB") for i in images]
    gap = p["gap"]
    if p["direction"] == "horizontal":
        size = (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images))
    else:
        size = (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1))
    canvas = Image.new("RGB", size, ImageColor.getrgb(p["background"]))
    offset = 0
    for image in images:
        if p["direction"] == "horizontal":
            canvas.paste(image, (offset, 0))
            offset += image.width + gap
        else:
            canvas.paste(image, (0, offset))
            offset += image.height + gap
    return canvas


def _composite(images: list[Image.Image], p: dict) -> Image.Image:
    base = flatten(images[0]).convert("RGB")
    overlay = flatten(images[1]).convert("RGB").resize(base.size, Image.Resampling.LANCZOS)
    return Image.blend(base, overlay, p["alpha"])


def _as_filterable(image: Image.Image) -> Image.Image:
    return image if image.mode in {"L", "RGB", "RGBA"} else image.convert("RGB")


_COLOR = {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"}

BUILTIN_OPERATIONS: dict[str, Operation] = {op.name: op for op in [
    Operation("resize", "Resize to a width and/or height; keep_aspect fits inside the box.", _schema({
        "width": {"type": "integer", "minimum": 1, "maximum": 20000},
        "height": {"type": "integer", "minimum": 1, "maximum": 20000},
        "keep_aspect": {"type": "boolean", "default": True},
        "resample": _RESAMPLE_PROP,
    }), _resize, reduce_for=_reduce_for_resize),
    Operation("grayscale", "Convert to 8-bit grayscale (mode L).", _schema({}), _grayscale),
    Operation("blur", "Gaussian blur.", _schema({
        "radius": {"type": "number", "minimum": 0, "maximum": 100, "default": 2}}), _blur),
    Operation("sharpen", "Unsharp mask.", _schema({
        "radius": {"type": "number", "minimum": 0, "maximum": 50, "default": 2},
        "percent": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 150},
        "threshold": {"type": "integer", "minimum": 0, "maximum": 255, "default": 3}}), _sharpen),
    Operation("edge_detect", "Edges of the grayscale image (mode L).", _schema({}), _edge_detect),
    Operation("rotate", "Rotate counter-clockwise by angle degrees.", _schema({
        "angle": {"type": "number", "minimum": -360, "maximum": 360, "default": 90},
        "expand": {"type": "boolean", "default": True},
        "fill": {**_COLOR, "default": "#000000"}}), _rotate),
    Operation("crop", "Crop to the box (left, top, right, bottom), in pixels.", _schema({
        "left": {"type": "integer", "minimum": 0}, "top": {"type": "integer", "minimum": 0},
        "right": {"type": "integer", "minimum": 1}, "bottom": {"type": "integer", "minimum": 1}},
        required=["left", "top", "right", "bottom"]), _crop),
    Operation("thumbnail", "Shrink to fit a size x size square, keeping the aspect ratio.", _schema({
        "size": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 128}}), _thumbnail,
        reduce_for=_reduce_for_thumbnail),
    Operation("convert", "Re-encode in another format (alpha going into JPEG or BMP is flattened on background).",
              _schema({
                  "format": {"type": "string", "enum": list(_FORMAT_EXTENSIONS), "default": "PNG"},
                  "quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": 90,
                              "description": "JPEG, WEBP and AVIF quality; other formats are lossless."},
                  "background": {**_COLOR, "default": "#ffffff"}}), _convert),
    Operation("threshold", "Black and white (mode 1): pixels >= level become white.", _schema({
        "level": {"type": "integer", "minimum": 0, "maximum": 255, "default": 128}}), _threshold),
    Operation("side_by_side", "Place all inputs next to each other in one image.", _schema({
        "direction": {"type": "string", "enum": ["horizontal", "vertical"], "default": "horizontal"},
        "gap": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 0},
        "background": {**_COLOR, "default": "#ffffff"}}), _side_by_side, kind="merge", min_inputs=1),
    Operation("composite", "Blend the second input over the first (resized to the first's size).", _schema({
        "alpha": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5}}), _composite,
        kind="merge", min_inputs=2, max_inputs=2),
    # Privacy filters (executions/engine/runners/privacy.py) and drawing results (annotation.py).
    Operation("anonymize_faces", "Find faces (OpenCV's bundled Haar cascade) and blur or pixelate them; the "
              "regions are reported in the output's metadata.", _schema(privacy.privacy_properties(
                  min_size=24, min_neighbors=5)), privacy.anonymize_faces),
    Operation("anonymize_plates", "Find licence plates (OpenCV's bundled Haar cascade) and blur or pixelate them; "
              "the regions are reported in the output's metadata.", _schema(privacy.privacy_properties(
                  min_size=40, min_neighbors=5)), privacy.anonymize_plates),
    Operation("annotate", "Draw the results the input image carries (boxes, labels, classes of an upstream ONNX "
              "or privacy step).", _schema({}), annotation.annotate, with_source=True),
    Operation("passthrough", "Pass the inputs on unchanged, optionally after a pause (demos, benchmarks).", _schema({
        "sleep_seconds": {"type": "number", "minimum": 0, "maximum": 3600, "default": 0}}, image=False),
        lambda images, p: None, kind="passthrough", min_inputs=0),
]}


def _open(content: bytes, name: str, operation: Operation, parameters: dict) -> DecodedImage:
    """The one decode (files.imaging.image_decode), reduced on decode where the operation allows."""
    reduce_to = None
    if operation.reduce_for is not None:
        reduce_to = lambda shown: operation.reduce_for(parameters, shown)  # noqa: E731
    try:
        return image_decode(content, auto_orient=parameters.get("auto_orient", True), reduce_to=reduce_to)
    except ImageTooLarge as exc:
        raise OperationError(f"input {name} is too large: {exc}") from exc
    except ImageRefused as exc:
        raise OperationError(f"input {name} is not a readable image: {exc}") from exc


def _encode(image: Image.Image, *, source: DecodedImage, parameters: dict, operation: str) -> tuple[bytes, str]:
    requested = parameters["format"] if operation == "convert" else None
    fmt = output_format(source_format=source.format, image=image, requested=requested)
    policy = parameters.get("metadata", DEFAULT_METADATA_POLICY)
    content = image_encode(image, fmt=fmt, quality=parameters.get("quality", 90), icc_profile=source.icc_profile,
                           exif=source.exif_for_output(policy=policy, size=image.size),
                           xmp=source.xmp_for_output(policy=policy), background=parameters.get("background", "#ffffff"))
    return content, _FORMAT_EXTENSIONS[fmt]


_pool: ThreadPoolExecutor | None = None
_pool_connections: dict = {}  # the pool threads' database connections (closed on shutdown)
_pool_key: tuple[int, int] | None = None


def _image_pool(size: int) -> ThreadPoolExecutor:
    """One pool per worker process (re-made after a fork): its threads live on, and so do their
    object-store clients."""
    global _pool, _pool_key
    if _pool is None or _pool_key != (os.getpid(), size):
        _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="step-image")
        _pool_key = (os.getpid(), size)
    return _pool


def shutdown_image_pool() -> None:
    """Stop the pool's threads and close their database connections."""
    global _pool, _pool_key
    if _pool is not None:
        _pool.shutdown(wait=True)
    _pool, _pool_key = None, None
    _close_pool_connections()


def _close_pool_connections() -> None:
    """Close the database connections the (now idle) pool threads opened, so no connection stays
    open between steps on a thread nobody else manages (a test database must be droppable)."""
    while _pool_connections:
        _, wrapper = _pool_connections.popitem()
        wrapper.inc_thread_sharing()
        try:
            wrapper.close()
        finally:
            wrapper.dec_thread_sharing()


class BuiltinRunner:
    def _map(self, operation: Operation, context: StepContext, pool_cpu: list[float], decodes: list[int]) -> list:
        """Apply a map operation to every input. Several inputs are processed by a thread pool of
        STEP_IMAGE_CONCURRENCY threads (Pillow and the object-store I/O release the GIL);
        outputs keep the order of the inputs. Each decode appends to `decodes`."""
        from files.services import file_read_bytes

        name, params = operation.name, context.parameters

        def pooled(source):
            started = time.thread_time()
            try:
                return one(source)
            finally:
                pool_cpu.append(time.thread_time() - started)
                wrapper = connections[DEFAULT_DB_ALIAS]
                _pool_connections[id(wrapper)] = wrapper

        def one(source):
            if context.cancelled.is_set():
                raise StepFailure("step cancelled")
            decoded = _open(file_read_bytes(source), source.original_name or str(source.id), operation, params)
            decodes.append(1)
            image = decoded.image
            result = operation.apply(image, params, source=source) if operation.with_source else operation.apply(
                image, params)
            results = None
            if isinstance(result, tuple):
                result, results = result
            content, extension = _encode(result, source=decoded, parameters=params, operation=name)
            stored = context.store_output(
                content=content, name=context.output_name(source, extension), derived_from=[source],
                metadata=None if results is None else {"results": {**results, "source": str(source.id)}})
            context.log("info", f"{name}: {source.original_name} {decoded.stored_size[0]}x{decoded.stored_size[1]} "
                                f"orientation {decoded.orientation}, decoded {image.width}x{image.height} "
                                f"{image.mode} -> {result.width}x{result.height} {result.mode}")
            return stored

        size = settings.STEP_IMAGE_CONCURRENCY
        if len(context.inputs) < 2 or size < 2:
            return [one(source) for source in context.inputs]
        futures = [_image_pool(size).submit(pooled, source) for source in context.inputs]
        wait(futures)  # all settle before an error propagates: no file is stored after the cleanup
        _close_pool_connections()
        return [future.result() for future in futures]

    def run(self, context: StepContext) -> RunResult:
        from files.services import file_read_bytes

        name = context.step.component.name
        operation = BUILTIN_OPERATIONS.get(name)
        if operation is None:
            raise StepFailure(f"no built-in operation named {name!r}")
        count = len(context.inputs)
        if count < operation.min_inputs or (operation.max_inputs is not None and count > operation.max_inputs):
            wanted = (f"exactly {operation.min_inputs}" if operation.max_inputs == operation.min_inputs
                      else f"at least {operation.min_inputs}")
            raise StepFailure(f"{name} needs {wanted} input images, got {count}")
        params = context.parameters
        if operation.kind == "passthrough":
            if params.get("sleep_seconds"):
                deadline = time.monotonic() + params["sleep_seconds"]
                while time.monotonic() < deadline and not context.cancelled.is_set():
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            return RunResult(outputs=list(context.inputs), metrics={"passed_through": count, "decoded": 0})

        pool_cpu: list[float] = []  # CPU seconds spent on the pool's threads
        # Image decodes done (metrics "decoded"): what the step cache saves shows as 0 here.
        decodes: list[int] = []
        try:
            if operation.kind == "merge":
                loaded = [(source, _open(file_read_bytes(source), source.original_name or str(source.id), operation,
                                         params)) for source in context.inputs]
                decodes.extend(1 for _ in loaded)
                result = operation.apply([decoded.image for _, decoded in loaded], params)
                # The output's format, profile and metadata are the first input's.
                source, first = loaded[0]
                content, extension = _encode(result, source=first, parameters=params, operation=name)
                outputs = [context.store_output(content=content, name=context.output_name(source, extension))]
                context.log("info", f"{name}: {count} images -> {result.width}x{result.height} {result.mode}")
            else:
                outputs = self._map(operation, context, pool_cpu, decodes)
        except OperationError as exc:
            raise StepFailure(f"{name}: {exc}") from exc
        metrics = {"images": len(outputs), "decoded": len(decodes)}
        reported = [output.metadata["results"] for output in outputs if "results" in (output.metadata or {})]
        if reported:  # per-image results (privacy filters, annotate): kept in the item's metrics too
            metrics["results"] = reported
        return RunResult(outputs=outputs, metrics=metrics, child_cpu_seconds=sum(pool_cpu),
                         data=reported or None)
