"""The ONNX runner (`Component.runner == "onnx"`): a model run by onnxruntime in the worker.

A component names its model (`model_file`, checked with onnx.checker when it was made) and a
completed pre-/post-processing spec (`model_spec`, registry/onnx_spec.py; docs/components.md).
Each input image is decoded as the built-ins decode it (orientation applied), resized and laid
out as the spec says, inferred, and its result (classify: top-k labels; detect: boxes after the
threshold and non-maximum suppression; segment: classes and their areas) is stored in the output
image's `metadata["results"]` and reported as the step's data, which the engine checks against the
component's output_schema, generated from the task (executions/engine/contracts.py). Boxes are in
the pixels of the output image (the input as shown).

Models are loaded once per worker process and kept in an LRU of ONNX_MODEL_CACHE_SIZE sessions
keyed by the model file's id and checksum (a fork starts an empty one), never per image.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from PIL import Image

from executions.engine.errors import StepFailure
from executions.engine.runners import RunResult, StepContext
from executions.engine.runners.annotation import draw_results, overlay_mask
from executions.engine.runners.builtin import OperationError, _encode, _open
from registry.models import Component

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
                 "DmlExecutionProvider", "CoreMLExecutionProvider")

_sessions: OrderedDict = OrderedDict()
_sessions_lock = threading.Lock()
_sessions_pid: int | None = None
# Models loaded by this process (a test proves a model is loaded once, not per image or step).
load_count = 0


def execution_providers() -> list[str]:
    """ONNX_EXECUTION_PROVIDERS when set (those this build has), else a GPU provider when there
    is one, then the CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = list(settings.ONNX_EXECUTION_PROVIDERS) or [p for p in GPU_PROVIDERS if p in available]
    chosen = [p for p in wanted if p in available]
    return [*chosen, "CPUExecutionProvider"] if "CPUExecutionProvider" not in chosen else chosen


def model_session(model_file) -> tuple[Any, float | None]:
    """The process's InferenceSession of the model (loaded on first use; LRU), and the seconds
    the load took when this call loaded it (None: it was loaded already)."""
    global _sessions_pid, load_count
    import onnxruntime

    from files.services import file_read_bytes

    key = (str(model_file.pk), model_file.checksum)
    with _sessions_lock:
        if _sessions_pid != os.getpid():
            _sessions.clear()
            _sessions_pid = os.getpid()
        session = _sessions.get(key)
        if session is not None:
            _sessions.move_to_end(key)
            return session, None
    started = time.perf_counter()
    content = file_read_bytes(model_file)  # outside the lock: another model may be served meanwhile
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(content, sess_options=options, providers=execution_providers())
    with _sessions_lock:
        load_count += 1
        _sessions[key] = session
        _sessions.move_to_end(key)
        while len(_sessions) > max(1, settings.ONNX_MODEL_CACHE_SIZE):
            _sessions.popitem(last=False)
    return session, time.perf_counter() - started


def sessions_clear() -> None:
    with _sessions_lock:
        _sessions.clear()


@dataclass(frozen=True)
class Placement:
    """Where the image went in the model's input: model pixel (x, y) is image pixel
    ((x - left) / scale_x, (y - top) / scale_y)."""
    scale_x: float
    scale_y: float
    left: float
    top: float

    def to_image(self, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        out = boxes.astype(np.float64).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.left) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.top) / self.scale_y
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, size[0])
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, size[1])
        return out


def preprocess(image: Image.Image, spec: dict[str, Any]) -> tuple[np.ndarray, Placement]:
    """The model's input tensor of one image (batch of 1) and where the image was placed."""
    width, height = spec["width"], spec["height"]
    channels = spec["channels"]
    picture = image.convert("L" if channels == "L" else "RGB")
    w0, h0 = picture.size
    if spec["resize"] == "letterbox":
        ratio = min(width / w0, height / h0)
        size = (max(1, round(w0 * ratio)), max(1, round(h0 * ratio)))
        fill = spec["pad_value"] if channels == "L" else (spec["pad_value"],) * 3
        canvas = Image.new(picture.mode, (width, height), fill)
        left, top = (width - size[0]) // 2, (height - size[1]) // 2
        canvas.paste(picture.resize(size, Image.Resampling.BILINEAR), (left, top))
        picture, placement = canvas, Placement(size[0] / w0, size[1] / h0, left, top)
    elif spec["resize"] == "center_crop":
        ratio = max(width / w0, height / h0)
        size = (max(width, round(w0 * ratio)), max(height, round(h0 * ratio)))
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        picture = picture.resize(size, Image.Resampling.BILINEAR).crop((left, top, left + width, top + height))
        placement = Placement(size[0] / w0, size[1] / h0, -left, -top)
    else:
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.BILINEAR)
        placement = Placement(width / w0, height / h0, 0, 0)
    array = np.asarray(picture)
    if array.ndim == 2:
        array = array[:, :, None]
    if channels == "BGR":
        array = array[:, :, ::-1]
    if spec["dtype"] == "uint8":
        tensor = array.astype(np.uint8)
    else:
        mean = np.asarray(spec["mean"], dtype=np.float32)
        std = np.asarray(spec["std"], dtype=np.float32)
        tensor = (array.astype(np.float32) * np.float32(spec["scale"]) - mean) / std
    if spec["layout"] == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[None, ...]), placement


def _activate(values: np.ndarray, activation: str) -> np.ndarray:
    values = values.astype(np.float64)
    if activation == "softmax":
        shifted = np.exp(values - values.max())
        return shifted / shifted.sum()
    if activation == "sigmoid":
        return 1 / (1 + np.exp(-values))
    return values


def _label(labels: list[str], class_id: int | None) -> str | None:
    return labels[class_id] if class_id is not None and 0 <= class_id < len(labels) else None


def classify(outputs: dict[str, np.ndarray], spec: dict[str, Any], params: dict) -> dict[str, Any]:
    task = spec["classify"]
    scores = _activate(np.asarray(outputs[task["output_name"]]).reshape(-1), task["activation"])
    top_k = min(params.get("top_k", task["top_k"]), scores.size)
    order = sorted(range(scores.size), key=lambda i: (-scores[i], i))[:top_k]
    return {"labels": [{"class_id": int(i), "label": _label(spec["labels"], int(i)),
                        "score": round(float(scores[i]), 6)} for i in order]}


def _xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    boxes = boxes.astype(np.float64)
    if box_format == "xywh":
        return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], axis=1)
    if box_format == "cxcywh":
        half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
        return np.stack([boxes[:, 0] - half_w, boxes[:, 1] - half_h, boxes[:, 0] + half_w, boxes[:, 1] + half_h],
                        axis=1)
    return boxes


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS: indexes kept, highest score first (ties: lower index first)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    areas = np.maximum(0, boxes[:, 2] - boxes[:, 0]) * np.maximum(0, boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    for i in order:
        suppressed = False
        for j in kept:
            w = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            h = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            inter = max(0.0, w) * max(0.0, h)
            union = areas[i] + areas[j] - inter
            if union > 0 and inter / union > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    return kept


def detect(outputs: dict[str, np.ndarray], spec: dict[str, Any], params: dict, placement: Placement,
           size: tuple[int, int]) -> dict[str, Any]:
    task = spec["detect"]
    if task["format"] == "yolo":
        raw = np.asarray(outputs[task["output_name"]])
        raw = raw.reshape(raw.shape[-2:]) if raw.ndim >= 2 else raw.reshape(1, -1)
        features = 4 + len(spec["labels"]) if spec["labels"] else None
        if (features is not None and raw.shape[0] == features and raw.shape[1] != features) or (
                features is None and raw.shape[0] < raw.shape[1]):
            raw = raw.T  # [4 + classes, N] (as YOLOv8 exports) -> [N, 4 + classes]
        boxes, class_scores = raw[:, :4], raw[:, 4:]
    else:
        boxes = np.asarray(outputs[task["boxes_output"]]).reshape(-1, 4)
        class_scores = np.asarray(outputs[task["scores_output"]])
        class_scores = class_scores.reshape(boxes.shape[0], -1)
    if class_scores.shape[1] == 1:
        class_ids, scores = np.zeros(len(boxes), dtype=int), class_scores[:, 0].astype(np.float64)
    else:
        class_ids, scores = class_scores.argmax(axis=1), class_scores.max(axis=1).astype(np.float64)
    boxes = _xyxy(boxes, task["box_format"])
    if task["box_units"] == "normalized":
        boxes = boxes * np.array([spec["input"]["width"], spec["input"]["height"]] * 2, dtype=np.float64)
    threshold = params.get("confidence_threshold", task["confidence_threshold"])
    keep = [i for i in range(len(scores)) if scores[i] >= threshold]
    boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
    iou = params.get("iou_threshold", task["iou_threshold"])
    if task["class_agnostic_nms"] or len(boxes) == 0:
        kept = non_max_suppression(boxes, scores, iou) if len(boxes) else []
    else:
        kept = []
        for class_id in sorted(set(class_ids.tolist())):
            members = [i for i in range(len(scores)) if class_ids[i] == class_id]
            kept.extend(members[k] for k in non_max_suppression(boxes[members], scores[members], iou))
        kept.sort(key=lambda i: (-scores[i], i))
    kept = kept[:params.get("max_detections", task["max_detections"])]
    placed = placement.to_image(boxes[kept], size) if kept else np.zeros((0, 4))
    return {"detections": [
        {"box": [round(float(v), 2) for v in placed[n]], "score": round(float(scores[i]), 6),
         "class_id": int(class_ids[i]), "label": _label(spec["labels"], int(class_ids[i]))}
        for n, i in enumerate(kept)]}


def segment(outputs: dict[str, np.ndarray], spec: dict[str, Any], params: dict, placement: Placement,
            size: tuple[int, int]) -> tuple[dict[str, Any], Image.Image]:
    """The classes found and the mask (mode L, class id per pixel, the image's size)."""
    task = spec["segment"]
    raw = np.asarray(outputs[task["output_name"]])
    layout_nhwc = spec["input"]["layout"] == "NHWC"
    raw = raw[0] if raw.ndim == 4 else raw
    if raw.ndim == 2:
        raw = raw[None, ...]
    if layout_nhwc and raw.shape[-1] <= raw.shape[0]:
        raw = raw.transpose(2, 0, 1)
    if raw.shape[0] == 1:
        values = raw[0].astype(np.float64)
        if values.min() < 0 or values.max() > 1:
            values = 1 / (1 + np.exp(-values))
        classes = (values >= params.get("mask_threshold", task["mask_threshold"])).astype(np.uint8)
    else:
        classes = raw.argmax(axis=0).astype(np.uint8)
    small = Image.fromarray(classes, "L")
    # The mask covers the model's input; the image is the part of it that `placement` says.
    scale_x, scale_y = small.width / spec["input"]["width"], small.height / spec["input"]["height"]
    left, top = placement.left * scale_x, placement.top * scale_y
    right, bottom = left + size[0] * placement.scale_x * scale_x, top + size[1] * placement.scale_y * scale_y
    mask = small.transform(size, Image.Transform.EXTENT, (left, top, right, bottom), Image.Resampling.NEAREST)
    array = np.asarray(mask)
    total = array.size
    background = task["background_class"]
    found = []
    for class_id in sorted(int(c) for c in np.unique(array)):
        if class_id == background:
            continue
        ys, xs = np.nonzero(array == class_id)
        found.append({"class_id": class_id, "label": _label(spec["labels"], class_id), "pixels": int(xs.size),
                      "fraction": round(xs.size / total, 6),
                      "box": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]})
    return {"classes": found}, mask


class OnnxRunner:
    def run(self, context: StepContext) -> RunResult:
        from files.services import file_read_bytes

        component = Component.objects.select_related("model_file").get(pk=context.step.component_id)
        if component.model_file is None or not component.model_spec:
            raise StepFailure(f"component {component} has no model")
        spec = component.model_spec
        task = spec["task"]
        params = context.parameters
        session, load_seconds = model_session(component.model_file)
        if load_seconds is not None:
            providers = session.get_providers()
            context.log("info", f"{component.name}: model {component.model_file.original_name} loaded in "
                                f"{load_seconds * 1000:.0f} ms ({', '.join(providers)}), pid {os.getpid()}",
                        event="model_loaded", pid=os.getpid(), providers=providers)
        input_name = spec["input"]["name"]
        outputs, reported = [], []
        inference_seconds = 0.0
        for source in context.inputs:
            if context.cancelled.is_set():
                raise StepFailure("step cancelled")
            name = source.original_name or str(source.id)
            try:
                decoded = _open(file_read_bytes(source), name, _DECODE, params)
            except OperationError as exc:
                raise StepFailure(f"{component.name}: {exc}") from exc
            image = decoded.image
            tensor, placement = preprocess(image, spec["input"])
            started = time.perf_counter()
            try:
                values = session.run(None, {input_name: tensor})
            except Exception as exc:  # onnxruntime's errors (shape, type) are the model's, not transient
                raise StepFailure(f"{component.name}: inference failed on {name}: {str(exc)[:500]}") from exc
            inference_seconds += time.perf_counter() - started
            by_name = {meta.name: value for meta, value in zip(session.get_outputs(), values)}
            mask = None
            if task == "classify":
                found = classify(by_name, spec, params)
            elif task == "detect":
                found = detect(by_name, spec, params, placement, image.size)
            else:
                found, mask = segment(by_name, spec, params, placement, image.size)
            result = {"task": task, "component": str(component), "source": str(source.id), "width": image.width,
                      "height": image.height, **found}
            kind = params.get("output", "source")
            if kind == "annotated":
                picture = (overlay_mask(image, mask, alpha=params.get("alpha", spec[task].get("alpha", 0.5)),
                                        background=spec[task]["background_class"]) if mask is not None
                           else draw_results(image, result)[0])
            elif kind == "mask" and mask is not None:
                picture = mask
            else:
                picture = image
            # A mask (class ids) is written losslessly whatever the source's format.
            content, extension = _encode(picture, source=decoded, parameters={**params, "format": "PNG"} if
                                         picture is mask else params, operation="convert" if picture is mask else "")
            outputs.append(context.store_output(content=content, name=context.output_name(source, extension),
                                                derived_from=[source], metadata={"results": result}))
            reported.append(result)
            context.log("info", f"{component.name}: {name} {image.width}x{image.height} -> {task} "
                                f"{_summary(result)}")
        return RunResult(outputs=outputs, data=reported, metrics={
            "images": len(outputs), "decoded": len(outputs), "inference_seconds": round(inference_seconds, 4),
            "results": reported})


def _summary(result: dict[str, Any]) -> str:
    if "labels" in result:
        return ", ".join(f"{entry['label'] or entry['class_id']} {entry['score']:.3f}"
                         for entry in result["labels"][:3])
    if "detections" in result:
        return f"{len(result['detections'])} detections"
    return f"{len(result.get('classes', []))} classes"


@dataclass(frozen=True)
class _Decode:
    """What builtin._open needs of an operation: no reduced decode (the model resizes itself)."""
    reduce_for: Any = None


_DECODE = _Decode()
