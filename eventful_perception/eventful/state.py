"""Typed per-block state of a stream: gate references, buffers and the attention's own state.

Every field starts as None ("no state yet": the next frame computes every token) and is
allocated once, on the first frame after a reset; later frames write into it in place.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Iterator

import torch


@dataclass
class GateState:
    """A gate's reference: each token's input when it was last selected; `vacated`: a shift left
    cells with no reference (infinite), which the next frame must recompute whatever the budget."""

    reference: torch.Tensor | None = None  # (B, N, D)
    vacated: bool = False


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

    def shift(self, patches: PatchGrid, rows: int, cols: int) -> None:
        """Move every per-token tensor's patch tokens by (rows, cols) grid cells in place; the
        cells the shift vacates get an infinite gate reference, so every gate selects them."""
        assert self.attention.sparse is None, "the sparse cache cannot be shifted; reset instead"
        for gate in (self.qkv_gate, self.proj_gate, self.mlp_gate):
            if gate.reference is not None:
                patches.shift_(gate.reference, rows, cols, fill=float("inf"))
                gate.vacated = True
        for tensor in (self.attention.qkv, self.attention.rows, self.proj.values, self.mlp.values):
            if tensor is not None:
                patches.shift_(tensor, rows, cols)


@dataclass(frozen=True)
class PatchGrid:
    """Where the patch tokens sit in a sequence: `start` and a row-major (height, width) grid."""

    start: int
    height: int
    width: int

    def shift_(self, tokens: torch.Tensor, rows: int, cols: int, fill: float | None = None) -> None:
        """Roll the patch tokens of `tokens` (B, N, C) by (rows, cols) cells in place; `fill`
        overwrites the vacated cells (the rolled-in values are kept when None)."""
        b, _, c = tokens.shape
        cells = tokens[:, self.start:self.start + self.height * self.width]  # a view
        grid = torch.roll(cells.reshape(b, self.height, self.width, c), (rows, cols), dims=(1, 2))
        if fill is not None:
            _vacated(grid, rows, 1).fill_(fill)
            _vacated(grid, cols, 2).fill_(fill)
        cells.copy_(grid.reshape(b, -1, c))


def _tensors(obj: object, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, torch.Tensor):
            yield prefix + f.name, value
        elif is_dataclass(value):
            yield from _tensors(value, f"{prefix}{f.name}.")


def _vacated(grid: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    """The slice of `grid` along `dim` that a roll by `shift` filled with wrapped-around cells."""
    size = grid.shape[dim]
    return grid.narrow(dim, 0, shift) if shift >= 0 else grid.narrow(dim, size + shift, -shift)
