"""Per-token training targets: which patch tokens predict which box, and which are ignored."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eventful_perception.models.token_head import encode_boxes, token_centers


@dataclass(frozen=True)
class TokenTargets:
    """Targets of one frame over its N tokens.

    `positive` (N,) bool: the token regresses the box `boxes[i]` (N, 4, model-input pixels) of
    class `classes[i]` (N,); `quality` (N,) in 0..1: its objectness target (the centreness of the
    token in its box, 0 for background); `ignore` (N,) bool: no objectness loss (ignore regions).
    """

    positive: torch.Tensor
    quality: torch.Tensor
    ignore: torch.Tensor
    boxes: torch.Tensor
    classes: torch.Tensor


def assign(boxes: torch.Tensor, classes: torch.Tensor, ignore_regions: torch.Tensor,
           grid: tuple[int, int], patch_size: int) -> TokenTargets:
    """Assign ground-truth boxes (K, 4) to the tokens whose centre lies inside them (FCOS-style).

    The token under a box's centre is always assigned, so boxes narrower than a patch get one;
    a token inside several boxes takes the smallest. Objectness targets fall off towards the box
    border (centreness, scaled to 1 at each box's most central token), so border tokens, whose
    boxes are least reliable, score lower and lose against the centre tokens in NMS. Tokens in
    ignore regions (M, 4) get no objectness loss.
    """
    centers = token_centers(grid, patch_size)  # (N, 2)
    n = len(centers)
    in_ignore = _inside(centers, ignore_regions).any(1)
    if len(boxes) == 0:
        return TokenTargets(torch.zeros(n, dtype=torch.bool), torch.zeros(n), in_ignore,
                            torch.zeros(n, 4), torch.zeros(n, dtype=torch.long))
    box_centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # (K, 2)
    under_center = ((centers[:, None] - box_centers[None]).abs() <= patch_size / 2).all(-1)  # (N, K)
    member = _inside(centers, boxes) | under_center  # (N, K)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(-1)  # (K,)
    cost = torch.where(member, area[None].expand(n, -1), torch.full((n, len(boxes)), float("inf")))
    best = cost.argmin(dim=1)  # (N,) smallest box containing the token
    positive = member.any(dim=1)
    assigned = boxes[best]  # (N, 4)
    quality = torch.where(positive, centerness(centers, assigned), torch.zeros(n))
    # Scale so every box's most central token has target 1: scores then read as confidences.
    best_quality = torch.zeros(len(boxes)).scatter_reduce(0, best[positive], quality[positive], "amax")  # (K,)
    quality = torch.where(positive, quality / best_quality[best].clamp(min=1e-6), quality)
    return TokenTargets(positive, quality, in_ignore & ~positive, assigned, classes[best])


def centerness(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """FCOS centreness (N,) of points (N, 2) in boxes (N, 4): 1 at the centre, 0 on the border.

    """
    distances = torch.cat([points - boxes[:, :2], boxes[:, 2:] - points], dim=1).clamp(min=0)  # (N, 4)
    sides = boxes[:, 2:] - boxes[:, :2]  # (N, 2)
    # A floor of 1/8 side keeps border tokens, and the centre token of a box narrower than a
    # patch (which may lie outside it), at a small positive target.
    distances = torch.maximum(distances, sides.repeat(1, 2) / 8)
    horizontal = distances[:, [0, 2]].min(1).values / distances[:, [0, 2]].max(1).values
    vertical = distances[:, [1, 3]].min(1).values / distances[:, [1, 3]].max(1).values
    return (horizontal * vertical).sqrt()


def _inside(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(N, K) whether point n lies inside box k."""
    if len(boxes) == 0:
        return torch.zeros(len(points), 0, dtype=torch.bool)
    return ((points[:, None] >= boxes[None, :, :2]) & (points[:, None] <= boxes[None, :, 2:])).all(-1)


def box_targets(targets: TokenTargets, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Log-distance regression targets (N, 4); meaningful only where `targets.positive`."""
    return encode_boxes(targets.boxes, grid, patch_size)
