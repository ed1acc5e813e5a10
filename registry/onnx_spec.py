"""The pre- and post-processing spec of an ONNX component (runner "onnx"), and the parameter and
output schemas generated from it. The registry checks a spec against the model's signature when a
component is made (registry.services); the engine's ONNX runner
(executions/engine/runners/inference.py) applies the stored, completed spec. docs/components.md
describes every field.
"""

from __future__ import annotations

import copy
from typing import Any

from django.core.exceptions import ValidationError
from jsonschema import Draft202012Validator

from files.metadata import DEFAULT_METADATA_POLICY, METADATA_POLICIES

TASKS = ("classify", "detect", "segment")
# What the output image of each task is, the first being the default (parameter "output").
TASK_OUTPUTS = {"classify": ("source", "annotated"), "detect": ("annotated", "source"),
                "segment": ("annotated", "mask", "source")}

# The parameters every image step takes (as the built-ins do: docs/images.md).
IMAGE_PARAMETERS: dict[str, Any] = {
    "auto_orient": {"type": "boolean", "default": True,
                    "description": "Apply the EXIF orientation first (results are in the shown image's pixels)."},
    "metadata": {"type": "string", "enum": list(METADATA_POLICIES), "default": DEFAULT_METADATA_POLICY,
                 "description": "What the output image keeps of the source's metadata: keep, strip_location, strip."},
}

_NAME = {"type": ["string", "null"], "minLength": 1, "maxLength": 500}
_UNIT = {"type": "number", "minimum": 0, "maximum": 1}

MODEL_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["task"],
    "properties": {
        "task": {"enum": list(TASKS)},
        "input": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "name": _NAME,
                "width": {"type": "integer", "minimum": 1, "maximum": 8192},
                "height": {"type": "integer", "minimum": 1, "maximum": 8192},
                "resize": {"enum": ["stretch", "letterbox", "center_crop"]},
                "channels": {"enum": ["RGB", "BGR", "L"]},
                "layout": {"enum": ["NCHW", "NHWC"]},
                "dtype": {"enum": ["float32", "uint8"]},
                "scale": {"type": "number"},
                "mean": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 3},
                "std": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1,
                        "maxItems": 3},
                "pad_value": {"type": "integer", "minimum": 0, "maximum": 255},
            },
        },
        "labels": {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 100000},
        "classify": {
            "type": "object", "additionalProperties": False,
            "properties": {"output_name": _NAME, "top_k": {"type": "integer", "minimum": 1, "maximum": 1000},
                           "activation": {"enum": ["softmax", "sigmoid", "none"]}},
        },
        "detect": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "format": {"enum": ["boxes_scores", "yolo"]},
                "boxes_output": _NAME, "scores_output": _NAME, "output_name": _NAME,
                "box_format": {"enum": ["xyxy", "xywh", "cxcywh"]},
                "box_units": {"enum": ["pixels", "normalized"]},
                "confidence_threshold": _UNIT, "iou_threshold": _UNIT,
                "max_detections": {"type": "integer", "minimum": 1, "maximum": 10000},
                "class_agnostic_nms": {"type": "boolean"},
            },
        },
        "segment": {
            "type": "object", "additionalProperties": False,
            "properties": {"output_name": _NAME, "mask_threshold": _UNIT, "alpha": _UNIT,
                           "background_class": {"type": ["integer", "null"], "minimum": 0}},
        },
    },
}

_INPUT_DEFAULTS = {"name": None, "resize": "stretch", "channels": "RGB", "layout": "NCHW", "scale": 1 / 255,
                   "mean": [0.0], "std": [1.0], "pad_value": 114}
_TASK_DEFAULTS = {
    "classify": {"output_name": None, "top_k": 5, "activation": "softmax"},
    "detect": {"format": "boxes_scores", "boxes_output": None, "scores_output": None, "output_name": None,
               "box_format": "xyxy", "box_units": "pixels", "confidence_threshold": 0.25, "iou_threshold": 0.45,
               "max_detections": 100, "class_agnostic_nms": False},
    "segment": {"output_name": None, "mask_threshold": 0.5, "alpha": 0.5, "background_class": 0},
}


def _problem(message: str) -> ValidationError:
    return ValidationError({"model_spec": [message]})


def model_spec_resolve(spec: Any, *, signature: dict[str, Any]) -> dict[str, Any]:
    """The spec with every default filled in from the model's signature, checked against it.
    Raises ValidationError on `model_spec` naming the first problem."""
    errors = sorted(Draft202012Validator(MODEL_SPEC_SCHEMA).iter_errors(spec), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path)
        raise _problem(f"{where + ': ' if where else ''}{errors[0].message}")
    task = spec["task"]
    resolved = {"task": task, "input": {**_INPUT_DEFAULTS, **copy.deepcopy(spec.get("input") or {})},
                "labels": list(spec.get("labels") or []), task: {**_TASK_DEFAULTS[task], **(spec.get(task) or {})}}
    for other in TASKS:
        if other != task and other in spec:
            raise _problem(f"{other}: given, but the task is {task}")
    inputs = {entry["name"]: entry for entry in signature["inputs"]}
    outputs = [entry["name"] for entry in signature["outputs"]]
    spec_input = resolved["input"]
    name = spec_input["name"] or signature["inputs"][0]["name"]
    if name not in inputs:
        raise _problem(f"input.name: the model has no input {name!r} (inputs: {', '.join(inputs)})")
    if len(inputs) > 1:
        raise _problem(f"the model has {len(inputs)} inputs ({', '.join(inputs)}); an image model has one")
    spec_input["name"] = name
    shape = inputs[name]["shape"]
    if len(shape) != 4:
        raise _problem(f"input {name!r} has shape {shape}: an image model takes a 4-dimensional tensor")
    layout = spec_input["layout"]
    channel_dim, height_dim, width_dim = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (
        shape[3], shape[1], shape[2])
    channels = 1 if spec_input["channels"] == "L" else 3
    if isinstance(channel_dim, int) and channel_dim != channels:
        raise _problem(f"input {name!r} has {channel_dim} channels in layout {layout} (shape {shape}); "
                       f"channels {spec_input['channels']} gives {channels}")
    for key, dim in (("width", width_dim), ("height", height_dim)):
        if key not in spec_input:
            if not isinstance(dim, int):
                raise _problem(f"input.{key}: needed, the model's input {name!r} has a dynamic {key} ({shape})")
            spec_input[key] = dim
        elif isinstance(dim, int) and dim != spec_input[key]:
            raise _problem(f"input.{key} is {spec_input[key]}, the model's input {name!r} takes {dim} ({shape})")
    model_type = inputs[name]["type"]
    if "dtype" not in spec_input:
        spec_input["dtype"] = "uint8" if model_type == "uint8" else "float32"
    if spec_input["dtype"] != model_type:
        raise _problem(f"input.dtype is {spec_input['dtype']}, the model's input {name!r} is {model_type}")
    for key in ("mean", "std"):
        if len(spec_input[key]) not in {1, channels}:
            raise _problem(f"input.{key}: one value or one per channel ({channels})")

    task_spec = resolved[task]
    names = [key for key in ("output_name", "boxes_output", "scores_output") if key in task_spec]
    for key in names:
        if task_spec[key] is not None and task_spec[key] not in outputs:
            raise _problem(f"{task}.{key}: the model has no output {task_spec[key]!r} (outputs: {', '.join(outputs)})")
    if task == "detect" and task_spec["format"] == "boxes_scores":
        if len(outputs) < 2 and not (task_spec["boxes_output"] and task_spec["scores_output"]):
            raise _problem("detect: format boxes_scores needs two outputs (boxes, scores); the model has "
                           f"{', '.join(outputs)}")
        task_spec["boxes_output"] = task_spec["boxes_output"] or outputs[0]
        task_spec["scores_output"] = task_spec["scores_output"] or next(
            o for o in outputs if o != task_spec["boxes_output"])
    else:
        task_spec["output_name"] = task_spec["output_name"] or outputs[0]
    if task == "classify" and resolved["labels"]:
        out_shape = next(o["shape"] for o in signature["outputs"] if o["name"] == task_spec["output_name"])
        classes = out_shape[-1] if out_shape else None
        if isinstance(classes, int) and classes != len(resolved["labels"]):
            raise _problem(f"labels: {len(resolved['labels'])} given, the model's output "
                           f"{task_spec['output_name']!r} scores {classes} classes ({out_shape})")
    return resolved


def onnx_input_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """The parameters of an ONNX component: a run may change the thresholds and what the output
    image is; the defaults come from the spec."""
    task = spec["task"]
    task_spec = spec[task]
    properties: dict[str, Any] = {"output": {"enum": list(TASK_OUTPUTS[task]), "default": TASK_OUTPUTS[task][0],
                                             "description": "The output image: source (the input, re-encoded), "
                                                            "annotated (results drawn), mask (segment only)."}}
    if task == "classify":
        properties["top_k"] = {"type": "integer", "minimum": 1, "maximum": 1000, "default": task_spec["top_k"]}
    elif task == "detect":
        properties.update({
            "confidence_threshold": {**_UNIT, "default": task_spec["confidence_threshold"]},
            "iou_threshold": {**_UNIT, "default": task_spec["iou_threshold"]},
            "max_detections": {"type": "integer", "minimum": 1, "maximum": 10000,
                               "default": task_spec["max_detections"]}})
    else:
        properties.update({"mask_threshold": {**_UNIT, "default": task_spec["mask_threshold"]},
                           "alpha": {**_UNIT, "default": task_spec["alpha"]}})
    return {"type": "object", "properties": {**properties, **IMAGE_PARAMETERS}, "additionalProperties": False}


_BOX = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
        "description": "[left, top, right, bottom] in pixels of the image the result describes"}
_LABEL = {"type": ["string", "null"]}
RESULT_BASE = {"task": {"type": "string"}, "component": {"type": "string"}, "source": {"type": "string"},
               "width": {"type": "integer", "minimum": 1}, "height": {"type": "integer", "minimum": 1}}
DETECTIONS = {"type": "array", "items": {
    "type": "object", "required": ["box", "label"],
    "properties": {"box": _BOX, "score": {"type": ["number", "null"]}, "class_id": {"type": ["integer", "null"]},
                   "label": _LABEL}}}


def result_schema(task: str) -> dict[str, Any]:
    """JSON Schema of one image's result (File.metadata["results"], the step's data)."""
    if task == "classify":
        specific = {"labels": {"type": "array", "items": {
            "type": "object", "required": ["class_id", "label", "score"],
            "properties": {"class_id": {"type": "integer"}, "label": _LABEL, "score": {"type": "number"}}}}}
    elif task == "segment":
        specific = {"classes": {"type": "array", "items": {
            "type": "object", "required": ["class_id", "label", "pixels", "fraction", "box"],
            "properties": {"class_id": {"type": "integer"}, "label": _LABEL, "pixels": {"type": "integer"},
                           "fraction": {"type": "number"}, "box": _BOX}}}}
    else:
        specific = {"detections": DETECTIONS}
    return {"type": "object", "required": ["task", "width", "height", *specific],
            "properties": {**RESULT_BASE, **specific}}


def onnx_output_schema(task: str) -> dict[str, Any]:
    """The output data of a step of this task: files, metrics and one result per input image."""
    return {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "uuid"}},
        "metrics": {"type": "object"},
        "data": {"type": "array", "items": result_schema(task)}}}
