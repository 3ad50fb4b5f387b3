"""Train the token head on cached features and evaluate mAP50 on the held-out tail of each clip."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from eventful_perception.models.results import Detections
from eventful_perception.models.token_head import TokenHead, TokenHeadConfig, box_iou, decode_boxes
from eventful_perception.training.features import PATCH_SIZE, ClipFeatures, scale_boxes
from eventful_perception.training.labels import FrameLabels
from eventful_perception.training.metrics import GroundTruth, mean_average_precision, precision_recall
from eventful_perception.training.targets import assign, box_targets

LABELS = ("person",)


@dataclass(frozen=True)
class TrainConfig:
    """Head training hyper-parameters."""

    epochs: int = 50
    batch_frames: int = 8
    learning_rate: float = 3e-3
    weight_decay: float = 0.05
    mlp_dim: int = 256
    holdout: float = 0.2  # the last 20 % of every clip is never trained on
    seed: int = 0
    eval_score_threshold: float = 0.05  # keep low-score detections so AP sees the whole curve


@dataclass(frozen=True)
class TrainingSet:
    """Stacked training tensors of F frames with N tokens each."""

    tokens: torch.Tensor  # (F, N, D) float16
    positive: torch.Tensor  # (F, N) bool
    quality: torch.Tensor  # (F, N) objectness targets
    ignore: torch.Tensor  # (F, N) bool
    boxes: torch.Tensor  # (F, N, 4) assigned boxes, model-input pixels
    log_distances: torch.Tensor  # (F, N, 4)
    classes: torch.Tensor  # (F, N)
    grid: tuple[int, int]


def split(frames: list[int], holdout: float) -> tuple[list[int], list[int]]:
    """Contiguous split of a clip's sorted frames: (training head, held-out tail)."""
    cut = round(len(frames) * (1 - holdout))
    return frames[:cut], frames[cut:]


def build_training_set(features: list[ClipFeatures], labels: list[dict[int, FrameLabels]],
                       keep: list[list[int]]) -> TrainingSet:
    """Targets of the frames `keep[c]` of every clip `c`, stacked with their tokens."""
    if len({clip.grid for clip in features}) != 1:
        raise ValueError("all clips must share one token grid; use one input size for every clip")
    rows = []
    for clip, clip_labels, frames in zip(features, labels, keep):
        for frame in frames:
            label = clip_labels[frame]
            boxes = torch.from_numpy(scale_boxes(label.boxes, clip.scale))
            ignore = torch.from_numpy(scale_boxes(label.ignore, clip.scale))
            targets = assign(boxes, torch.zeros(len(boxes), dtype=torch.long), ignore, clip.grid, PATCH_SIZE)
            rows.append((clip.tokens[clip.frames.index(frame)], targets,
                         box_targets(targets, clip.grid, PATCH_SIZE)))
    return TrainingSet(
        tokens=torch.stack([r[0] for r in rows]),
        positive=torch.stack([r[1].positive for r in rows]),
        quality=torch.stack([r[1].quality for r in rows]),
        ignore=torch.stack([r[1].ignore for r in rows]),
        boxes=torch.stack([r[1].boxes for r in rows]),
        log_distances=torch.stack([r[2] for r in rows]),
        classes=torch.stack([r[1].classes for r in rows]),
        grid=features[0].grid,
    )


def train_head(data: TrainingSet, config: TrainConfig) -> TokenHead:
    """Fit a fresh token head to `data` with AdamW and a one-cycle learning-rate schedule."""
    torch.manual_seed(config.seed)
    head = TokenHead(TokenHeadConfig(LABELS, data.tokens.shape[-1], config.mlp_dim))
    optimizer = torch.optim.AdamW(head.parameters(), config.learning_rate, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(data.tokens) // config.batch_frames)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=steps)
    head.train()
    progress = tqdm(range(config.epochs), desc="train head", unit="epoch")
    for _ in progress:
        for batch in torch.randperm(len(data.tokens)).split(config.batch_frames):
            loss = detection_loss(head, data, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")
    return head.eval()


def detection_loss(head: TokenHead, data: TrainingSet, batch: torch.Tensor) -> torch.Tensor:
    """Quality focal loss on objectness + centreness-weighted GIoU and L1 box losses + class CE."""
    outputs = head(data.tokens[batch].float())
    positive, counted = data.positive[batch], ~data.ignore[batch]
    quality = data.quality[batch]
    norm = quality[positive].sum().clamp(min=1.0)
    objectness = quality_focal_loss(outputs.objectness[counted], quality[counted]) / norm
    weight = quality[positive]  # (P,) border tokens matter less
    predicted = decode_boxes(outputs.log_distances, data.grid, PATCH_SIZE)[positive]  # (P, 4)
    giou = ((1 - generalized_iou(predicted, data.boxes[batch][positive])) * weight).sum() / norm
    l1 = (outputs.log_distances[positive] - data.log_distances[batch][positive]).abs().sum(-1)  # (P,)
    classes = F.cross_entropy(outputs.class_logits[positive], data.classes[batch][positive], reduction="none")
    return objectness + 2.0 * giou + 0.5 * (l1 * weight).sum() / norm + (classes * weight).sum() / norm


def quality_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Summed quality focal loss (Li et al. 2020, GFL): focal loss with soft targets in 0..1."""
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (ce * (torch.sigmoid(logits) - targets).abs() ** gamma).sum()


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise GIoU (P,) of boxes a (P, 4) and b (P, 4)."""
    iou = box_iou(a, b).diagonal() if len(a) else a.new_zeros(0)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(-1)  # (P,)
    inter = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    union = (a[:, 2:] - a[:, :2]).prod(-1) + (b[:, 2:] - b[:, :2]).prod(-1) - inter
    return iou - (hull - union) / hull.clamp(min=1e-9)


@torch.inference_mode()
def predict_clip(head: TokenHead, clip: ClipFeatures, frames: list[int],
                 score_threshold: float) -> list[Detections]:
    """Head detections (original-frame pixels) for the cached frames `frames` of a clip."""
    out = []
    for frame in frames:
        tokens = clip.tokens[clip.frames.index(frame)][None].float()  # (1, N, D)
        (detections,) = head.predict(tokens, clip.grid, PATCH_SIZE, score_threshold)
        out.append(detections.scaled(*clip.scale))
    return out


def evaluate(head: TokenHead, features: list[ClipFeatures], labels: list[dict[int, FrameLabels]],
             keep: list[list[int]], config: TrainConfig) -> float:
    """mAP50 against the labels over the frames `keep[c]` of every clip `c`."""
    return mean_average_precision(*_collect(head, features, labels, keep, config.eval_score_threshold))


def evaluate_at_threshold(head: TokenHead, features: list[ClipFeatures], labels: list[dict[int, FrameLabels]],
                          keep: list[list[int]], score_threshold: float) -> tuple[float, float]:
    """(precision, recall) at IoU 0.5 of the detections scoring >= `score_threshold`."""
    return precision_recall(*_collect(head, features, labels, keep, score_threshold), score_threshold)


def _collect(head, features, labels, keep, score_threshold: float) -> tuple[list[Detections], list[GroundTruth]]:
    predictions, truths = [], []
    for clip, clip_labels, frames in zip(features, labels, keep):
        predictions += predict_clip(head, clip, frames, score_threshold)
        truths += [GroundTruth(clip_labels[f].boxes, list(LABELS) * len(clip_labels[f].boxes),
                               clip_labels[f].ignore) for f in frames]
    return predictions, truths
