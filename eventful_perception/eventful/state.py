"""Typed per-block state of a stream: gate references, buffers and the attention's own state.

Every field starts as None ("no state yet": the next frame computes every token) and is
allocated once, on the first frame after a reset; later frames write into it in place.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Iterator

import torch


@dataclass
class GateState:
    """A gate's reference: each token's input when it was last selected."""

    reference: torch.Tensor | None = None  # (B, N, D)


@dataclass
class BufferState:
    """The full output of the token-wise operation after a gate."""

    values: torch.Tensor | None = None  # (B, N, C)


@dataclass
class SparseCache:
    """The exact sparse attention update's cache (attention "sparse"), per batch element and head."""

    exp: torch.Tensor  # (B, H, N keys, N queries): exp(logit - row max), key-major
    num: torch.Tensor  # (B, H, N, dh): exp @ v
    den: torch.Tensor  # (B, H, N, 1): row sums of exp
    den_peak: torch.Tensor  # (B, H, N, 1): largest denominator since the row was last computed
    row_max: torch.Tensor  # (B, H, N, 1)


@dataclass
class AttentionState:
    """What the attention keeps between frames.

    `qkv` buffers q, k and v of every token (all modes); `rows` holds each query row's output at
    its last update (attention "query_rows"); `sparse` the exact update's cache ("sparse").
    """

    qkv: torch.Tensor | None = None  # (B, N, 3D)
    rows: torch.Tensor | None = None  # (B, N, D)
    sparse: SparseCache | None = None


@dataclass
class BlockState:
    """Everything one eventful block keeps for one stream."""

    qkv_gate: GateState = field(default_factory=GateState)
    attention: AttentionState = field(default_factory=AttentionState)
    proj_gate: GateState = field(default_factory=GateState)
    proj: BufferState = field(default_factory=BufferState)
    mlp_gate: GateState = field(default_factory=GateState)
    mlp: BufferState = field(default_factory=BufferState)

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(dotted name, tensor) of every allocated state tensor."""
        yield from _tensors(self, "")


def _tensors(obj: object, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, torch.Tensor):
            yield prefix + f.name, value
        elif value is not None:
            yield from _tensors(value, f"{prefix}{f.name}.")
