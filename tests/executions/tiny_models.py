"""Tiny ONNX models built with the onnx helper API, whose answers are known in advance (no model
is downloaded). p = (r, g, b), the image's channel means scaled to 0-1 (scale 1/255, mean 0, std 1).

- classifier: 1x1 convolution (weights 2 x identity, bias [0, 0.1, 0.2]) + global average pooling
  -> scores [1, 3] = [2r, 2g + 0.1, 2b + 0.2] (labels red, green, blue).
- detector: global average pooling -> boxes [1, 3, 4] and scores [1, 3, 2] linear in p:
  box 0 = [2, 2, 18 + 12r, 18 + 12r] scores [r, 0]; box 1 = box 0 + 1 scores [r/2, 0] (suppressed by
  NMS); box 2 = [20, 20, 30, 30] scores [0, g]; in the pixels of the 32x32 input.
- segmenter: 1x1 convolution -> logits [1, 2, 16, 16]: class 0 = 0, class 1 = r - 0.5 per pixel,
  so the pixels whose red is above half are class 1.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSIFIER_WEIGHTS = np.eye(3, dtype=np.float32) * 2
CLASSIFIER_BIAS = np.array([0.0, 0.1, 0.2], dtype=np.float32)
CLASSIFIER_LABELS = ["red", "green", "blue"]


def _model(nodes, inputs, outputs, initializers) -> bytes:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="imageflow-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def classifier(size: int = 8) -> bytes:
    return _model(
        [helper.make_node("Conv", ["image", "w", "b"], ["conv"]),
         helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["scores"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(CLASSIFIER_WEIGHTS.reshape(3, 3, 1, 1), "w"),
         numpy_helper.from_array(CLASSIFIER_BIAS, "b")])


def classifier_scores(r: float, g: float, b: float) -> np.ndarray:
    return CLASSIFIER_WEIGHTS @ np.array([r, g, b], dtype=np.float32) + CLASSIFIER_BIAS


DETECTOR_BOX_SLOPE = np.zeros((3, 12), dtype=np.float32)
DETECTOR_BOX_SLOPE[0, [2, 3, 6, 7]] = 12  # r grows box 0 and box 1
DETECTOR_BOX_BASE = np.array([2, 2, 18, 18, 3, 3, 19, 19, 20, 20, 30, 30], dtype=np.float32)
DETECTOR_SCORES = np.zeros((3, 6), dtype=np.float32)
DETECTOR_SCORES[0, 0], DETECTOR_SCORES[0, 2], DETECTOR_SCORES[1, 5] = 1.0, 0.5, 1.0
DETECTOR_LABELS = ["thing", "other"]


def detector(size: int = 32) -> bytes:
    return _model(
        [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["p"]),
         helper.make_node("MatMul", ["p", "box_slope"], ["box_raw"]),
         helper.make_node("Add", ["box_raw", "box_base"], ["box_flat"]),
         helper.make_node("Reshape", ["box_flat", "box_shape"], ["boxes"]),
         helper.make_node("MatMul", ["p", "score_weights"], ["score_flat"]),
         helper.make_node("Reshape", ["score_flat", "score_shape"], ["scores"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3, 2])],
        [numpy_helper.from_array(DETECTOR_BOX_SLOPE, "box_slope"),
         numpy_helper.from_array(DETECTOR_BOX_BASE, "box_base"),
         numpy_helper.from_array(np.array([1, 3, 4], dtype=np.int64), "box_shape"),
         numpy_helper.from_array(DETECTOR_SCORES, "score_weights"),
         numpy_helper.from_array(np.array([1, 3, 2], dtype=np.int64), "score_shape")])


def detector_boxes(r: float, g: float) -> tuple[np.ndarray, np.ndarray]:
    p = np.array([r, g, 0], dtype=np.float32)
    return (p @ DETECTOR_BOX_SLOPE + DETECTOR_BOX_BASE).reshape(3, 4), (p @ DETECTOR_SCORES).reshape(3, 2)


def segmenter(size: int = 16) -> bytes:
    weights = np.zeros((2, 3, 1, 1), dtype=np.float32)
    weights[1, 0] = 1.0
    return _model(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, size, size])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array([0, -0.5], dtype=np.float32), "b")])
