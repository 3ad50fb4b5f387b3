"""Frame -> model input: validation, aspect-preserving resize to a patch multiple, normalisation.

Convention shared by every model in this package: the frame is an RGB uint8 array (H, W, 3);
it is resized so its short side equals `short_side` and its long side keeps the aspect ratio
(capped at `max_long_side` when given), each side rounded to the nearest multiple of the patch
size; then scaled to 0..1 and normalised with the ImageNet mean/std. The per-axis scale factors
(original pixels per model-input pixel) map boxes back to the original frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInput:
    """A preprocessed frame: `pixels` (1, 3, H, W) in the model's dtype and how it maps to the original."""

    pixels: torch.Tensor
    scale: tuple[float, float]
    original_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        """Model-input (height, width) in pixels."""
        return int(self.pixels.shape[-2]), int(self.pixels.shape[-1])


def check_frame(frame: np.ndarray) -> None:
    """Raise ValueError unless `frame` is an RGB uint8 array (H, W, 3)."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"expected a numpy RGB uint8 array (H, W, 3), got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB uint8 array of shape (H, W, 3), got dtype {frame.dtype} shape {frame.shape}"
        )
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"expected a non-empty frame, got shape {frame.shape}")


def input_size(
    height: int, width: int, short_side: int, patch_size: int, max_long_side: int | None = None
) -> tuple[int, int]:
    """Model-input (height, width) for a frame: short side -> `short_side`, both patch multiples.

    Example: a 576x768 frame with short side 448 and patch 14 becomes 448x602 (32x43 patches).
    """
    if short_side < patch_size:
        raise ValueError(f"short_side must be >= patch size {patch_size}, got {short_side}")
    factor = short_side / min(height, width)
    if max_long_side is not None:
        factor = min(factor, max_long_side / max(height, width))
    return _round_to(height * factor, patch_size), _round_to(width * factor, patch_size)


def _round_to(value: float, multiple: int) -> int:
    return max(1, round(value / multiple)) * multiple


def preprocess(
    frame: np.ndarray,
    short_side: int,
    patch_size: int,
    max_long_side: int | None = None,
    device: torch.device | str = "cpu",
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
) -> ModelInput:
    """Turn an RGB uint8 frame (H, W, 3) into a normalised (1, 3, H', W') tensor (normalised in
    float32, then cast to `dtype`)."""
    check_frame(frame)
    height, width = frame.shape[:2]
    new_h, new_w = input_size(height, width, short_side, patch_size, max_long_side)
    if (new_h, new_w) != (height, width):
        # INTER_AREA averages when shrinking (no aliasing); cubic when enlarging.
        shrink = new_h * new_w < height * width
        interpolation = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    pixels = torch.from_numpy(np.ascontiguousarray(frame)).to(device)
    pixels = pixels.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)  # (1, 3, H', W')
    mean_t = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1)
    pixels = ((pixels - mean_t) / std_t).to(dtype)
    return ModelInput(pixels, (width / new_w, height / new_h), (height, width))
