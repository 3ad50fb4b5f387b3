"""Result types returned by every model: per-frame features, compute usage and detections."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Detections:
    """Detected objects of one frame.

    `boxes` is float32 (K, 4) as x1, y1, x2, y2 in pixels (original-frame pixels in a `Result`),
    `scores` float32 (K,) in 0..1, `labels` one class name per box.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(boxes) != len(scores) or len(boxes) != len(self.labels):
            raise ValueError(
                f"boxes, scores and labels must have equal lengths, got "
                f"{len(boxes)}, {len(scores)}, {len(self.labels)}"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", list(self.labels))

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), [])

    def __len__(self) -> int:
        return len(self.labels)

    def shifted(self, dx: float, dy: float) -> Detections:
        """The same detections moved by (dx, dy) pixels."""
        if dx == 0 and dy == 0:
            return self
        offset = np.array([dx, dy, dx, dy], dtype=np.float32)
        return Detections(self.boxes + offset, self.scores.copy(), list(self.labels))

    def scaled(self, scale_x: float, scale_y: float) -> Detections:
        """The same detections with x coordinates multiplied by `scale_x` and y by `scale_y`."""
        factors = np.array([scale_x, scale_y, scale_x, scale_y], dtype=np.float32)
        return Detections(self.boxes * factors, self.scores.copy(), list(self.labels))


@dataclass(frozen=True)
class Usage:
    """Compute spent on one frame.

    `tokens_updated` is the mean over blocks of tokens recomputed at each block's first gate
    (all tokens for a dense or full frame); `gflops` counts the matmuls/linears actually executed and
    `gflops_dense` what the dense model needs for the same input, both with 1 multiply-add = 1 FLOP.
    """

    tokens_updated: int
    tokens_total: int
    gflops: float
    gflops_dense: float
    tokens_per_block: tuple[int, ...] = ()
    latency_ms: float = 0.0

    @property
    def savings(self) -> float:
        """Fraction of the dense compute that was skipped (0 for a dense frame)."""
        return 1.0 - self.gflops / self.gflops_dense if self.gflops_dense > 0 else 0.0


@dataclass(frozen=True)
class Result:
    """Everything a model returns for one frame.

    `features` is a copy of the final backbone tokens (N, D) (class/register/detection tokens
    included, in the model's token order); `detections` is None for feature-only backbones.
    """

    features: torch.Tensor
    usage: Usage
    detections: Detections | None = None
    grid: tuple[int, int] = (0, 0)
    input_size: tuple[int, int] = (0, 0)
    frame_index: int = 0
    full_update: bool = True
