"""Frozen backbone features of the labelled frames, cached as float16 safetensors."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from eventful_perception.models.preprocess import preprocess
from eventful_perception.training.labels import iter_frames

SHORT_SIDE = 448  # the default detector's input: 768x576 -> 448x602, 32x43 patches
PATCH_SIZE = 14


@dataclass(frozen=True)
class ClipFeatures:
    """Patch tokens (F, h*w, D) of frames `frames` (F,), grid (h, w), and input scale (x, y)."""

    tokens: torch.Tensor
    frames: list[int]
    grid: tuple[int, int]
    scale: tuple[float, float]


def cache_features(video: Path, frames: list[int], backbone_dir: Path, path: Path) -> ClipFeatures:
    """Run the frozen DINOv2 (transformers' `Dinov2Model`) on `frames` of `video`; cache to `path`."""
    if path.is_file():
        cached = load_features(path)
        if cached.frames == sorted(frames):
            return cached
    from transformers import Dinov2Model

    model = Dinov2Model.from_pretrained(str(backbone_dir)).eval()
    tokens = []
    progress = tqdm(iter_frames(video, set(frames)), total=len(frames), desc=f"features {video.name}",
                    unit="frame")
    for _, image in progress:
        model_input = preprocess(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), SHORT_SIDE, PATCH_SIZE)
        with torch.inference_mode():
            hidden = model(model_input.pixels).last_hidden_state  # (1, 1 + h*w, D)
        tokens.append(hidden[0, 1:].to(torch.float16))  # (h*w, D) without the class token
    height, width = model_input.size
    features = ClipFeatures(torch.stack(tokens), sorted(frames),  # (F, h*w, D)
                            (height // PATCH_SIZE, width // PATCH_SIZE), model_input.scale)
    save_features(features, path)
    return features


def save_features(features: ClipFeatures, path: Path) -> None:
    """Write cached features as safetensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"tokens": features.tokens.contiguous(),
               "frames": torch.tensor(features.frames, dtype=torch.int64),
               "grid": torch.tensor(features.grid, dtype=torch.int64),
               "scale": torch.tensor(features.scale, dtype=torch.float64)}, str(path))


def load_features(path: Path) -> ClipFeatures:
    """Read features written by `save_features`."""
    data = load_file(str(path))
    return ClipFeatures(data["tokens"], data["frames"].tolist(), tuple(data["grid"].tolist()),
                        tuple(data["scale"].tolist()))


def scale_boxes(boxes: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Original-frame boxes (K, 4) -> model-input pixels, given scale = original per input pixel."""
    return boxes / np.array([scale[0], scale[1], scale[0], scale[1]], np.float32)
