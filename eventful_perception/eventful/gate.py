"""Token gates and buffers. Both hold nothing: their tensors live in the stream's block state.

A gate keeps a reference copy of its input tokens; each frame it measures every token's L2 error
to the reference, asks the policy which tokens to update (tokens that are always computed are
added), gathers those and writes them into the reference. A buffer keeps the full output of the
token-wise operation that follows a gate and scatters the recomputed rows in. On the first frame
of a stream (no reference yet) or when the policy picks every token, all tokens pass and the
gate returns `index=None`. Neither hands out a tensor it keeps: a gate stores a copy of its
first input, a buffer returns `x + output` as a new tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .policy import Policy
from .state import BufferState, GateState


@dataclass(frozen=True)
class TokenLayout:
    """Which tokens of a sequence of `n` the policy may skip and which are always computed."""

    always: torch.Tensor  # (K,) long
    gated: torch.Tensor  # (n - K,) long

    @classmethod
    def build(cls, n: int, always: list[int], device: torch.device) -> TokenLayout:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[always] = True
        return cls(mask.nonzero()[:, 0].to(device), (~mask).nonzero()[:, 0].to(device))


def _flat_rows(index: torch.Tensor, n: int) -> torch.Tensor:
    """(B, M) token indices -> (B*M,) row indices into a (B*N, C) view."""
    if index.shape[0] == 1:
        return index[0]
    offsets = torch.arange(0, index.shape[0] * n, n, device=index.device).unsqueeze(1)  # (B, 1)
    return (index + offsets).flatten()


# index_select / index_copy_ on a (B*N, C) view: 3-8x faster on a CPU than gather / scatter_
# with an expanded (B, M, C) index (measured at N=1377, C=384, M=139).
def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows `index` (B, M) of `x` (B, N, C) -> (B, M, C)."""
    b, n, c = x.shape
    return x.reshape(b * n, c).index_select(0, _flat_rows(index, n)).view(b, -1, c)


def scatter_rows_(x: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Write `rows` (B, M, C) into rows `index` (B, M) of the contiguous `x` (B, N, C) in place."""
    b, n, c = x.shape
    x.view(b * n, c).index_copy_(0, _flat_rows(index, n), rows.reshape(-1, c))
    return x


class TokenGate:
    """Selects the tokens to recompute, against the reference in a `GateState`."""

    def __call__(
        self, state: GateState, x: torch.Tensor, policy: Policy, layout: TokenLayout
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Returns (index (B, M) or None for all tokens, the selected rows (B, M, D))."""
        reference = state.reference
        if reference is None:
            state.reference = x.clone()
            return None, x
        errors = torch.linalg.vector_norm(x - reference, dim=-1)  # (B, N)
        picks = policy(errors[:, layout.gated])  # (B, M') into layout.gated
        if state.vacated:  # checked only after a shift: no host sync on ordinary frames
            picks, state.vacated = _with_vacated(picks, errors[:, layout.gated]), False
        if picks.shape[1] >= layout.gated.numel() and _covers_all(picks, layout.gated.numel()):
            reference.copy_(x)
            return None, x
        always = layout.always.expand(x.shape[0], -1)  # (B, K)
        index = torch.cat([always, layout.gated[picks]], dim=1)  # (B, M)
        rows = gather_rows(x, index)  # (B, M, D)
        scatter_rows_(reference, index, rows)
        return index, rows


def _with_vacated(picks: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
    """`picks` (B, M) plus every token whose error is infinite (a cell a shift vacated), even
    beyond the budget. Rows are padded to the longest by repeating their first pick (a repeated
    index rewrites the same value)."""
    selected = torch.zeros_like(errors, dtype=torch.bool).scatter_(1, picks, True) | errors.isinf()
    rows = [row.nonzero()[:, 0] for row in selected]
    width = max(len(r) for r in rows)
    return torch.stack([torch.cat([r, r[:1].expand(width - len(r))]) for r in rows])


def _covers_all(picks: torch.Tensor, n: int) -> bool:
    counts = torch.zeros(picks.shape[0], n, dtype=torch.bool, device=picks.device)
    return bool(counts.scatter_(1, picks, True).all())


class TokenBuffer:
    """Keeps the full output of a token-wise operation in a `BufferState`."""

    def add(self, state: BufferState, x: torch.Tensor, rows: torch.Tensor,
            index: torch.Tensor | None) -> torch.Tensor:
        """Scatter `rows` (B, M, C) into the buffer at `index` (B, M); return x + buffer (new tensor)."""
        state.values = buffer_rows(state.values, rows, index)
        return x + state.values


def buffer_rows(buffer: torch.Tensor | None, rows: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Write `rows` into `buffer` at `index` (every row when None); the first write stores a copy."""
    if buffer is None:
        assert index is None, "buffer updated before a full frame"
        return rows.clone()
    if index is None:
        return buffer.copy_(rows)
    return scatter_rows_(buffer, index, rows)
