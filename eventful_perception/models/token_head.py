"""Token-wise detection head: every patch token predicts objectness, class and its own box.

Each token looks only at itself, so under the Eventful method a token that was not updated keeps
exactly its previous prediction. A token predicts the distances from its centre to the four box
sides (FCOS-style, in patch units, log-encoded); scores are `sigmoid(objectness) * p(class)`,
followed by a score threshold and class-aware NMS in plain torch.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from eventful_perception.models.results import Detections

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "head.safetensors"
# exp() of larger log-distances overflows the box far past any frame (e^6 = 403 patches).
_MAX_LOG_DISTANCE = 6.0


@dataclass(frozen=True)
class TokenHeadConfig:
    """Head hyper-parameters, stored as `config.json` beside the weights."""

    labels: tuple[str, ...]
    hidden_size: int  # width of the backbone tokens
    mlp_dim: int = 256
    nms_iou: float = 0.5
    # A box mostly inside a better one (or around it) is the same object: a large person's tokens
    # predict nested boxes whose IoU stays below nms_iou (a face box inside the person's box).
    nms_containment: float = 0.6
    # Box voting (Gidaris & Komodakis, ICCV 2015): each box NMS keeps becomes the score-weighted
    # mean of the boxes of the tokens scoring >= vote_floor that overlap it by IoU >= vote_iou,
    # then NMS runs again. Each token of a large person predicts a box shifted toward itself;
    # voting merges them into one. vote_iou 0 turns it off.
    vote_iou: float = 0.4
    vote_floor: float = 0.3
    max_candidates: int = 300  # best-scoring tokens kept before NMS (and voting), bounds their cost
    max_detections: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if not self.labels:
            raise ValueError("a TokenHead needs at least one label")
        for name in ("nms_iou", "nms_containment", "vote_iou", "vote_floor"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")


@dataclass(frozen=True)
class TokenOutputs:
    """Raw per-token outputs: objectness logits (B, N), class logits (B, N, C), log-distances (B, N, 4)."""

    objectness: torch.Tensor
    class_logits: torch.Tensor
    log_distances: torch.Tensor


class TokenHead(nn.Module):
    """A small MLP applied to each patch token independently."""

    def __init__(self, config: TokenHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.mlp_dim), nn.GELU(),
            nn.Linear(config.mlp_dim, config.mlp_dim), nn.GELU(),
        )
        self.objectness = nn.Linear(config.mlp_dim, 1)
        self.classes = nn.Linear(config.mlp_dim, len(config.labels))
        self.box = nn.Linear(config.mlp_dim, 4)

    @property
    def labels(self) -> list[str]:
        """Class names, indexed like the class logits."""
        return list(self.config.labels)

    @classmethod
    def from_folder(cls, path: str | Path) -> TokenHead:
        """Load `config.json` and `head.safetensors` from `path` (strict key check), in eval mode."""
        folder = Path(path)
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise ValueError(f"expected {CONFIG_FILE} and {WEIGHTS_FILE} in {folder}")
        config = TokenHeadConfig(**json.loads((folder / CONFIG_FILE).read_text()))
        head = cls(config)
        head.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
        return head.eval()

    def save(self, path: str | Path) -> None:
        """Write `config.json` and `head.safetensors` into the folder `path`."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = asdict(self.config) | {"labels": list(self.config.labels)}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        weights = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(weights, str(folder / WEIGHTS_FILE))

    def forward(self, patch_tokens: torch.Tensor) -> TokenOutputs:
        """Raw outputs for patch tokens (B, N, D), each token on its own."""
        hidden = self.mlp(patch_tokens)  # (B, N, M)
        return TokenOutputs(
            objectness=self.objectness(hidden).squeeze(-1),  # (B, N)
            class_logits=self.classes(hidden),  # (B, N, C)
            log_distances=self.box(hidden),  # (B, N, 4)
        )

    @torch.inference_mode()
    def predict(
        self,
        patch_tokens: torch.Tensor,
        grid: tuple[int, int],
        patch_size: int = 14,
        score_threshold: float = 0.5,
    ) -> list[Detections]:
        """Detections per image for patch tokens (B, h*w, D) in row-major grid order.

        Boxes are x1, y1, x2, y2 in model-input pixels, clipped to the (h*14, w*14) input.
        """
        return self.predict_with_scores(patch_tokens, grid, patch_size, score_threshold)[0]

    @torch.inference_mode()
    def predict_with_scores(
        self,
        patch_tokens: torch.Tensor,
        grid: tuple[int, int],
        patch_size: int = 14,
        score_threshold: float = 0.5,
    ) -> tuple[list[Detections], torch.Tensor]:
        """`predict`, plus every token's best class score (B, h*w) from the same pass."""
        height, width = grid
        if patch_tokens.ndim != 3 or patch_tokens.shape[1] != height * width:
            raise ValueError(
                f"expected patch tokens (B, {height}*{width}, D) for grid {grid}, "
                f"got {tuple(patch_tokens.shape)}")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        outputs = self(patch_tokens.to(self.objectness.weight.dtype))
        boxes = decode_boxes(outputs.log_distances, grid, patch_size)  # (B, N, 4)
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, width * patch_size)
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, height * patch_size)
        scores, classes = token_scores(outputs).max(dim=-1)  # (B, N), (B, N)
        detections = [select(b, s, c, score_threshold, self.config) for b, s, c in zip(boxes, scores, classes)]
        return detections, scores


def select(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, score_threshold: float,
           config: TokenHeadConfig) -> Detections:
    """One image's detections from its tokens' boxes (N, 4), best scores (N,) and classes (N,):
    threshold, NMS, box voting and NMS again (`config.vote_iou` > 0), the detection cap."""
    keep = _nms(boxes, scores, classes, _best(scores, score_threshold, config), config)
    if config.vote_iou > 0 and len(keep):
        # The voters depend on vote_floor only, so the detections above any threshold are the
        # same whatever lower threshold is asked for (the bench ranks down to 0.05).
        voters = _best(scores, config.vote_floor, config)
        boxes = boxes.clone()
        boxes[keep] = box_vote(boxes[keep], classes[keep], boxes[voters], scores[voters], classes[voters],
                               config.vote_iou)
        keep = _nms(boxes, scores, classes, keep, config)
    keep = keep[: config.max_detections]
    return Detections(
        boxes=boxes[keep].cpu().float().numpy(),
        scores=scores[keep].cpu().float().numpy(),
        labels=[config.labels[i] for i in classes[keep].tolist()],
    )


def _best(scores: torch.Tensor, floor: float, config: TokenHeadConfig) -> torch.Tensor:
    """Indices of the `max_candidates` best tokens scoring >= floor, by decreasing score."""
    candidates = torch.nonzero(scores >= floor).squeeze(1)
    return candidates[scores[candidates].argsort(descending=True)][: config.max_candidates]


def _nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, candidates: torch.Tensor,
         config: TokenHeadConfig) -> torch.Tensor:
    return candidates[batched_nms(boxes[candidates], scores[candidates], classes[candidates],
                                  config.nms_iou, config.nms_containment)]


def token_scores(outputs: TokenOutputs) -> torch.Tensor:
    """Per-token, per-class detection scores (B, N, C): sigmoid(objectness) * softmax(classes)."""
    return torch.sigmoid(outputs.objectness).unsqueeze(-1) * outputs.class_logits.softmax(dim=-1)


def token_centers(grid: tuple[int, int], patch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Pixel centres (h*w, 2) as x, y of the patches of a grid, in row-major order."""
    height, width = grid
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * patch_size
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * patch_size
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)  # (h*w, 2)


def decode_boxes(log_distances: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Boxes (..., N, 4) x1, y1, x2, y2 in pixels from log-distances (..., N, 4) left, top, right, bottom."""
    return decode_at(log_distances, token_centers(grid, patch_size, log_distances.device), patch_size)


def decode_at(log_distances: torch.Tensor, centers: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Boxes (..., N, 4) from log-distances (..., N, 4) around the pixel centres (N, 2)."""
    distances = log_distances.float().clamp(max=_MAX_LOG_DISTANCE).exp() * patch_size  # (..., N, 4)
    return torch.cat([centers - distances[..., :2], centers + distances[..., 2:]], dim=-1)


def encode_boxes(boxes: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Inverse of `decode_boxes` for boxes (N, 4) that contain their token centre."""
    centers = token_centers(grid, patch_size, boxes.device)  # (N, 2)
    distances = torch.cat([centers - boxes[:, :2], boxes[:, 2:] - centers], dim=-1)  # (N, 4)
    return (distances.clamp(min=1e-3) / patch_size).log()


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairwise intersection areas (K, M) of boxes a (K, 4) and b (M, 4), and their areas."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])  # (K, M, 2)
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (K, M, 2)
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)  # (K, M)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=-1)  # (K,)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=-1)  # (M,)
    return intersection, area_a, area_b


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU (K, M) of boxes a (K, 4) and b (M, 4), x1, y1, x2, y2."""
    intersection, area_a, area_b = _overlaps(a, b)
    union = area_a[:, None] + area_b[None, :] - intersection
    return intersection / union.clamp(min=1e-9)


def box_vote(kept: torch.Tensor, kept_classes: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor,
             classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Each kept box (K, 4) as the score-weighted mean of the voter boxes (V, 4) of its class that
    overlap it by IoU >= `iou_threshold`; one with no such voter (or zero weight) stays as it is."""
    weights = ((box_iou(kept, boxes) >= iou_threshold) & (kept_classes[:, None] == classes[None])) * scores[None]
    total = weights.sum(dim=1, keepdim=True)  # (K, 1)
    return torch.where(total > 0, (weights @ boxes) / total.clamp(min=1e-12), kept)


def box_containment(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over the smaller area (K, M) of boxes a (K, 4) and b (M, 4)."""
    intersection, area_a, area_b = _overlaps(a, b)
    return intersection / torch.minimum(area_a[:, None], area_b[None, :]).clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
        containment_threshold: float = 1.0) -> torch.Tensor:
    """Greedy non-maximum suppression; indices of kept boxes (K,) by decreasing score.

    A box is suppressed by a better kept one when their IoU exceeds `iou_threshold` or when the
    smaller of the two lies inside the other by more than `containment_threshold` of its area.
    """
    order = scores.argsort(descending=True)
    ordered = boxes[order]
    overlap = (box_iou(ordered, ordered) > iou_threshold) | (
        box_containment(ordered, ordered) > containment_threshold)  # (K, K) in score order
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= ~overlap[i, i + 1:]
    return order[keep]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                iou_threshold: float, containment_threshold: float = 1.0) -> torch.Tensor:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # Shift each class to its own disjoint region so one NMS pass handles all classes.
    offsets = classes.to(boxes.dtype) * (boxes.max() - boxes.min() + 1)  # (K,)
    return nms(boxes + offsets[:, None], scores, iou_threshold, containment_threshold)
