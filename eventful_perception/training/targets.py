"""Per-token training targets: which patch tokens predict which box, and which are ignored."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eventful_perception.models.token_head import encode_boxes, token_centers


@dataclass(frozen=True)
class TokenTargets:
    """Targets of one frame over its N tokens.

    `positive` (N,) bool: the token predicts the box `boxes[i]` (N, 4, model-input pixels) of class
    `classes[i]` (N,); `ignore` (N,) bool: no objectness loss (box borders, ignore regions).
    """

    positive: torch.Tensor
    ignore: torch.Tensor
    boxes: torch.Tensor
    classes: torch.Tensor


def assign(boxes: torch.Tensor, classes: torch.Tensor, ignore_regions: torch.Tensor,
           grid: tuple[int, int], patch_size: int, center_fraction: float = 0.5) -> TokenTargets:
    """Assign ground-truth boxes (K, 4) to tokens whose centre lies in the box's central part.

    The central part is the box shrunk to `center_fraction` of its size, widened to at least one
    patch so that every box gets the token under its centre. A token in several central parts
    takes the smallest box; tokens elsewhere inside a box or inside an ignore region (M, 4) are
    ignored rather than negative.
    """
    centers = token_centers(grid, patch_size)  # (N, 2)
    n = len(centers)
    if len(boxes) == 0:
        return TokenTargets(torch.zeros(n, dtype=torch.bool), _inside(centers, ignore_regions).any(1),
                            torch.zeros(n, 4), torch.zeros(n, dtype=torch.long))
    box_centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # (K, 2)
    half = ((boxes[:, 2:] - boxes[:, :2]) * center_fraction / 2).clamp(min=patch_size / 2)  # (K, 2)
    central = ((centers[:, None] - box_centers[None]).abs() <= half[None]).all(-1)  # (N, K)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(-1)  # (K,)
    cost = torch.where(central, area[None].expand(n, -1), torch.full((n, len(boxes)), float("inf")))
    best = cost.argmin(dim=1)  # (N,) smallest box among the central ones
    positive = central.any(dim=1)
    assigned = boxes[best]  # (N, 4)
    ignore = (_inside(centers, boxes).any(1) | _inside(centers, ignore_regions).any(1)) & ~positive
    return TokenTargets(positive, ignore, assigned, classes[best])


def _inside(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(N, K) whether point n lies inside box k."""
    if len(boxes) == 0:
        return torch.zeros(len(points), 0, dtype=torch.bool)
    return ((points[:, None] >= boxes[None, :, :2]) & (points[:, None] <= boxes[None, :, 2:])).all(-1)


def box_targets(targets: TokenTargets, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Log-distance regression targets (N, 4); meaningful only where `targets.positive`."""
    return encode_boxes(targets.boxes, grid, patch_size)
