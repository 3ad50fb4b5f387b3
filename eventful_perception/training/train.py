"""Train the token head on cached features of samples at many input scales.

Every token is a training example on its own (the head is token-wise), so samples of different
grids are flattened into one token table and mini-batches are random tokens from all of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from eventful_perception.models.token_head import TokenHead, TokenHeadConfig, decode_at, token_centers
from eventful_perception.training.features import PATCH_SIZE, SampleFeatures, scale_boxes
from eventful_perception.training.labels import FrameLabels
from eventful_perception.training.targets import assign

LABELS = ("person",)


@dataclass(frozen=True)
class TrainConfig:
    """Head training hyper-parameters."""

    epochs: int = 16
    batch_tokens: int = 8192
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    mlp_dim: int = 256
    seed: int = 0


@dataclass(frozen=True)
class TokenTable:
    """T training tokens from all samples, flattened; boxes and centres in model-input pixels."""

    tokens: torch.Tensor  # (T, D) float16
    centers: torch.Tensor  # (T, 2)
    positive: torch.Tensor  # (T,) bool
    weight: torch.Tensor  # (T,) centreness of positives (box-loss weight), 0 elsewhere
    ignore: torch.Tensor  # (T,) bool
    boxes: torch.Tensor  # (T, 4) assigned boxes


def token_table(samples: list[tuple[SampleFeatures, FrameLabels]]) -> TokenTable:
    """Targets of every token of every (features, labels-in-sample-pixels) pair."""
    parts = []
    for features, labels in samples:
        boxes = torch.from_numpy(scale_boxes(labels.boxes, features.scale))
        ignore = torch.from_numpy(scale_boxes(labels.ignore, features.scale))
        targets = assign(boxes, torch.zeros(len(boxes), dtype=torch.long), ignore, features.grid, PATCH_SIZE)
        parts.append((features.tokens, token_centers(features.grid, PATCH_SIZE), targets.positive,
                      targets.quality, targets.ignore, targets.boxes))
    tokens, centers, positive, quality, ignore, boxes = (torch.cat(p) for p in zip(*parts))
    return TokenTable(tokens, centers, positive, quality, ignore, boxes)


def train_head(table: TokenTable, config: TrainConfig) -> TokenHead:
    """Fit a fresh token head with AdamW and a one-cycle learning-rate schedule."""
    torch.manual_seed(config.seed)
    head = TokenHead(TokenHeadConfig(LABELS, table.tokens.shape[-1], config.mlp_dim))
    optimizer = torch.optim.AdamW(head.parameters(), config.learning_rate, weight_decay=config.weight_decay)
    batches = -(-len(table.tokens) // config.batch_tokens)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate,
                                                   total_steps=config.epochs * batches)
    head.train()
    progress = tqdm(range(config.epochs), desc="train head", unit="epoch")
    for _ in progress:
        losses = []
        for batch in torch.randperm(len(table.tokens)).split(config.batch_tokens):
            loss = detection_loss(head, table, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        progress.set_postfix(loss=f"{np.mean(losses):.3f}")
    return head.eval()


def detection_loss(head: TokenHead, table: TokenTable, batch: torch.Tensor) -> torch.Tensor:
    """Quality focal loss with IoU targets + centreness-weighted GIoU and L1 box losses.

    The objectness target of a positive token is the IoU of its own predicted box with its
    assigned box (GFL / VarifocalNet), so a score estimates box quality the same way at every
    input scale, and tokens whose boxes are poor (duplicates that NMS could not merge) score low.
    """
    outputs = head(table.tokens[batch].float())
    positive, counted = table.positive[batch], ~table.ignore[batch]
    centers = table.centers[batch][positive]  # (P, 2)
    predicted = decode_at(outputs.log_distances[positive], centers, PATCH_SIZE)  # (P, 4)
    assigned = table.boxes[batch][positive]  # (P, 4)
    quality = torch.zeros(len(batch))
    quality[positive] = paired_iou(predicted.detach(), assigned)
    weight = table.weight[batch][positive]  # (P,) border tokens matter less
    norm = weight.sum().clamp(min=1.0)
    objectness = quality_focal_loss(outputs.objectness[counted], quality[counted]) / norm
    giou = ((1 - generalized_iou(predicted, assigned)) * weight).sum() / norm
    target = _log_distances(assigned, centers)
    l1 = ((outputs.log_distances[positive] - target).abs().sum(-1) * weight).sum() / norm
    return objectness + 2.0 * giou + 0.5 * l1


def _log_distances(boxes: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    distances = torch.cat([centers - boxes[:, :2], boxes[:, 2:] - centers], dim=1)  # (P, 4)
    return (distances.clamp(min=1e-3) / PATCH_SIZE).log()


def quality_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Summed quality focal loss (Li et al. 2020, GFL): focal loss with soft targets in 0..1."""
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (ce * (torch.sigmoid(logits) - targets).abs() ** gamma).sum()


def _inter_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inter = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)  # (P,)
    union = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1) + (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1) - inter
    return inter, union.clamp(min=1e-9)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU (P,) of boxes a (P, 4) and b (P, 4)."""
    inter, union = _inter_union(a, b)
    return inter / union


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise GIoU (P,) of boxes a (P, 4) and b (P, 4)."""
    inter, union = _inter_union(a, b)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(-1)  # (P,)
    return inter / union - (hull - union) / hull.clamp(min=1e-9)
