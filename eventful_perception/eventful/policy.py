"""Token selection policies: stateless callables `(errors (B, N)) -> indices (B, M)`.

A policy never sees the tokens that are always computed (class, register, detection tokens);
the gate adds those itself. Policies can be swapped between any two frames. `Prioritized` scales
the errors first, e.g. by where the previous frame's detections were (`detection_priority`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


class Policy(Protocol):
    """Chooses which tokens to update from their errors (B, N); returns long indices (B, M)."""

    def __call__(self, errors: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class TopR:
    """The `r` tokens with the largest error (all of them when r >= N)."""

    r: int

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 0:
            raise ValueError(f"r must be a non-negative int, got {self.r!r}")

    def __call__(self, errors: torch.Tensor) -> torch.Tensor:
        k = min(self.r, errors.shape[-1])
        return errors.topk(k, dim=-1, sorted=False).indices  # (B, k)


@dataclass(frozen=True)
class BudgetFraction:
    """The ceil(fraction * N) tokens with the largest error; fraction in (0, 1]."""

    fraction: float

    def __post_init__(self) -> None:
        if not 0.0 < float(self.fraction) <= 1.0:
            raise ValueError(f"budget fraction must be in (0, 1], got {self.fraction!r}")

    def __call__(self, errors: torch.Tensor) -> torch.Tensor:
        return TopR(math.ceil(self.fraction * errors.shape[-1]))(errors)


@dataclass(frozen=True)
class Threshold:
    """Every token whose error norm exceeds `threshold`.

    With a batch, rows select different counts; the result is padded to the largest count by
    repeating each row's highest-error index. A repeated index rewrites the same value, so a row
    that selects at least one token gets exactly the update it would get alone (a row selecting
    none, beside one that selects some, updates its highest-error token).
    """

    threshold: float

    def __post_init__(self) -> None:
        if not float(self.threshold) >= 0.0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold!r}")

    def __call__(self, errors: torch.Tensor) -> torch.Tensor:
        selected = errors > self.threshold  # (B, N)
        m = int(selected.sum(dim=-1).max()) if errors.numel() else 0
        masked = errors.masked_fill(~selected, float("-inf"))
        values, indices = masked.topk(m, dim=-1)  # (B, m)
        best = errors.argmax(dim=-1, keepdim=True)  # (B, 1)
        return torch.where(values > float("-inf"), indices, best)


# A token within this many patches of a scored token shares its priority: the box of a person
# comes from any of its tokens, and the best one moves to a neighbour as the person walks.
PRIORITY_REACH = 1


@dataclass(frozen=True)
class Prioritized:
    """`policy` on the errors scaled per token by `weights` (B, N), e.g. `detection_priority`."""

    policy: Policy
    weights: torch.Tensor

    def __call__(self, errors: torch.Tensor) -> torch.Tensor:
        if errors.shape != self.weights.shape:
            raise ValueError(f"priority weights {tuple(self.weights.shape)} do not match the gated "
                             f"tokens {tuple(errors.shape)}")
        return self.policy(errors * self.weights)


def detection_priority(scores: torch.Tensor, grid: tuple[int, int], strength: float) -> torch.Tensor:
    """Weights (B, h*w) = 1 + strength * the highest detection score (B, h*w, row-major) of a
    token within `PRIORITY_REACH` patches."""
    reach = 2 * PRIORITY_REACH + 1
    nearby = F.max_pool2d(scores.reshape(-1, 1, *grid), reach, stride=1, padding=PRIORITY_REACH)
    return 1.0 + strength * nearby.reshape(scores.shape)
