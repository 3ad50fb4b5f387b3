"""The Eventful ViT block, shared by every backbone: gate/buffer pairs around token-wise ops.

Pre-norm block: x + scale1(proj(attention(qkv(norm1(x))))), then + scale2(mlp(norm2(.))).
Eventful version: a gate after norm1 selects tokens for q/k/v (buffered), the attention is
updated from the changed tokens (`StreamConfig.attention`), a gate before the output projection
and one after norm2 select the rows for the projection and the MLP; each buffer holds the full
output, so the residual additions always add aligned (B, N, D) tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .attention import EventfulAttention, dense_attention, merge_heads, split_heads
from .counting import FlopCounter
from .gate import TokenBuffer, TokenGate, TokenLayout
from .policy import Policy
from .state import BlockState
from .stream import StreamConfig


@dataclass(frozen=True)
class LayerOps:
    """One ViT layer's modules under uniform names (each model keeps its checkpoint names)."""

    norm1: nn.Module
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    proj: nn.Linear
    scale1: nn.Module
    norm2: nn.Module
    fc1: nn.Linear
    act: Callable[[torch.Tensor], torch.Tensor]
    fc2: nn.Linear
    scale2: nn.Module
    heads: int


@dataclass(frozen=True)
class FrameStep:
    """What every block needs to process one frame of a stream."""

    policy: Policy
    layout: TokenLayout
    config: StreamConfig
    counter: FlopCounter


class EventfulBlock:
    """Runs one ViT layer densely (`dense`) or eventfully on a stream's block state (`step`)."""

    def __init__(self, ops: LayerOps) -> None:
        self.ops = ops
        self.gate, self.buffer, self.attention = TokenGate(), TokenBuffer(), EventfulAttention()

    def dense(self, x: torch.Tensor, counter: FlopCounter) -> torch.Tensor:
        """The plain block on x (B, N, D)."""
        ops, n = self.ops, x.shape[0] * x.shape[1]
        q, k, v = split_heads(self._qkv(ops.norm1(x), n, counter), ops.heads)
        attended = merge_heads(dense_attention(q, k, v, counter))  # (B, N, D)
        x = x + ops.scale1(counter.linear(ops.proj, attended, n))
        return x + self._mlp(ops.norm2(x), n, counter)

    def step(self, x: torch.Tensor, state: BlockState, step: FrameStep) -> tuple[torch.Tensor, int]:
        """Eventful block on x (B, N, D); returns the output and the tokens updated at q/k/v."""
        ops, n, counter = self.ops, x.shape[0] * x.shape[1], step.counter
        policy, layout = step.policy, step.layout
        index, rows = self.gate(state.qkv_gate, ops.norm1(x), policy, layout)
        attended = self.attention(state.attention, self._qkv(rows, n, counter), index, ops.heads,
                                  step.config, counter)  # (B, N, D)
        proj_index, rows = self.gate(state.proj_gate, attended, policy, layout)
        x = self.buffer.add(state.proj, x, ops.scale1(counter.linear(ops.proj, rows, n)), proj_index)
        mlp_index, rows = self.gate(state.mlp_gate, ops.norm2(x), policy, layout)
        x = self.buffer.add(state.mlp, x, self._mlp(rows, n, counter), mlp_index)
        return x, x.shape[1] if index is None else index.shape[1]

    def _qkv(self, h: torch.Tensor, n: int, counter: FlopCounter) -> torch.Tensor:
        # h (B, M, D); n: the rows the dense model would compute (for the dense-equivalent count)
        ops = self.ops
        parts = [counter.linear(layer, h, n) for layer in (ops.query, ops.key, ops.value)]
        return torch.cat(parts, dim=-1)  # (B, M, 3D)

    def _mlp(self, h: torch.Tensor, n: int, counter: FlopCounter) -> torch.Tensor:
        ops = self.ops
        return ops.scale2(counter.linear(ops.fc2, ops.act(counter.linear(ops.fc1, h, n)), n))
