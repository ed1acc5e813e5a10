"""ONNX model files: what an uploaded model is, read from its bytes with the `onnx` package.

A model is stored as a File like an image (bytes in the object store, a row with its checksum),
with MIME type MODEL_MIME_TYPE and `metadata = {"format": "ONNX", "onnx": <signature>}`. The
signature (inputs and outputs: name, element type, shape with symbolic dimensions as names) is
what a component's pre- and post-processing spec is checked against (registry.services).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

MODEL_MIME_TYPE = "application/onnx"
MODEL_FORMAT = "ONNX"


def _tensor_type(value_info) -> tuple[str, list[int | str | None]]:
    import onnx

    tensor = value_info.type.tensor_type
    element = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "unknown"
    shape: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or None)
    return element, shape


def onnx_signature(content: bytes) -> dict[str, Any]:
    """Check the bytes are a valid ONNX model (onnx.checker) and return its signature:
    `{"inputs": [{"name", "type", "shape"}], "outputs": [...], "opset": n, "ir_version": n,
    "producer": "..."}`. Raises ValidationError naming what is wrong."""
    import onnx
    from google.protobuf.message import DecodeError

    if not content:
        raise ValidationError("The model file is empty.", code="empty")
    try:
        model = onnx.load_model_from_string(content)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ValidationError(f"The file is not an ONNX model: {exc}", code="not_onnx") from None
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [""])[0][:500]
        raise ValidationError(f"The ONNX model is not valid: {first}", code="invalid_onnx") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if not inputs or not model.graph.output:
        raise ValidationError("The ONNX model has no inputs or no outputs.", code="invalid_onnx")

    def described(values) -> list[dict[str, Any]]:
        out = []
        for value in values:
            element, shape = _tensor_type(value)
            out.append({"name": value.name, "type": element, "shape": shape})
        return out

    opset = max((entry.version for entry in model.opset_import if entry.domain in {"", "ai.onnx"}), default=None)
    return {"inputs": described(inputs), "outputs": described(model.graph.output), "opset": opset,
            "ir_version": model.ir_version, "producer": f"{model.producer_name} {model.producer_version}".strip()}
