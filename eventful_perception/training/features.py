"""Frozen backbone tokens of training samples, cached one safetensors file per sample (float16).

The tokens come from this package's own dense DINOv2 (`load_checkpoint` + `model.dense`), built
once per input short side, so training sees exactly what the detector computes at run time.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from eventful_perception.models.base import EventfulViT

PATCH_SIZE = 14


@dataclass(frozen=True)
class SampleFeatures:
    """Patch tokens (h*w, D) of one image, grid (h, w) and scale (x, y) = original per input pixel."""

    tokens: torch.Tensor
    grid: tuple[int, int]
    scale: tuple[float, float]


class Backbones:
    """The default backbone at several short sides, loaded lazily (weights read once per side)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._models: dict[int, EventfulViT] = {}

    def __call__(self, rgb: np.ndarray, short_side: int) -> SampleFeatures:
        """Dense patch tokens of an RGB uint8 image at `short_side`."""
        from eventful_perception.models.loading import load_checkpoint

        if short_side not in self._models:
            self._models[short_side] = load_checkpoint(self.folder, short_side).eval()
        result = self._models[short_side].dense(rgb)
        height, width = result.input_size
        scale = (rgb.shape[1] / width, rgb.shape[0] / height)
        return SampleFeatures(result.features[1:].to(torch.float16), result.grid, scale)  # (h*w, D)


def save_features(features: SampleFeatures, path: Path) -> None:
    """Write one sample's features as safetensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"tokens": features.tokens.contiguous(),
               "grid": torch.tensor(features.grid, dtype=torch.int64),
               "scale": torch.tensor(features.scale, dtype=torch.float64)}, str(path))


def load_features(path: Path) -> SampleFeatures:
    """Read features written by `save_features`."""
    data = load_file(str(path))
    return SampleFeatures(data["tokens"], tuple(data["grid"].tolist()), tuple(data["scale"].tolist()))


def scale_boxes(boxes: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Original-frame boxes (K, 4) -> model-input pixels, given scale = original per input pixel."""
    return boxes / np.array([scale[0], scale[1], scale[0], scale[1]], np.float32)
