"""Dense attention and the sparse (incremental) attention update of Eventful Transformers.

The sparse path caches, per block and head, E = exp(logits - row max) (N x N), the numerator
E @ v (N x dh) and the denominator sum(E) (N x 1). When the tokens M changed (their q, k and v):
  - columns M of every row: E[:, M] is recomputed from the new keys, the numerator gains
    E_new[:, M] @ v_new[M] - E_old[:, M] @ v_old[M] and the denominator the matching sums;
  - rows M (changed queries) are recomputed in full (new row max);
  - rows whose denominator collapsed (the keys that dominated them changed, so the delta
    update cancelled almost everything) or whose new logits far exceed the cached row max are
    recomputed too; without this guard those rows lose all precision or overflow.
Given the same buffered q, k, v, the result equals dense attention up to rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .counting import FlopCounter
from .stream import Scope, StreamConfig

# Recompute a row once its denominator fell below this fraction of its value at the last full
# computation: float32 deltas then lose about log10(1/DEN_FLOOR) more digits.
DEN_FLOOR = 1e-2
# Recompute a row when a new logit exceeds its cached max by this much (exp overflows at ~88).
MAX_LOGIT_DRIFT = 30.0
_CACHE_KEYS = ("exp", "num", "den", "den_ref", "max", "v")


def split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, N, 3D) -> q, k, v each (B, H, N, D/H) (4-D, as torch's fused attention needs)."""
    b, n, _ = qkv.shape
    qkv = qkv.view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, N, dh)
    return qkv[0], qkv[1], qkv[2]


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, dh) -> (B, N, H*dh)."""
    b, _, n, _ = x.shape
    return x.transpose(1, 2).reshape(b, n, -1)  # (B, N, D)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, counter: FlopCounter) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh)) v for (B, H, N, dh) inputs, counted as 2 * N^2 * D."""
    b, h, n, dh = q.shape
    macs = 2 * b * h * n * k.shape[2] * dh
    counter.add(macs, macs)
    return F.scaled_dot_product_attention(q, k, v)  # (B, H, N, dh)


def _cached(e: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(values to compute with, values to store): equal, so later subtractions cancel exactly."""
    if dtype == torch.float32:
        return e, e
    stored = e.to(dtype)
    return stored.float(), stored


class SparseAttention:
    """Attention over buffered q, k, v that recomputes only what the changed tokens affect.

    Holds nothing; the cache lives in the block's scope. Chooses torch's fused dense attention
    when more than `config.sparse_max_fraction` of the tokens changed (mode "auto").
    """

    def __call__(
        self,
        scope: Scope,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        index: torch.Tensor | None,
        config: StreamConfig,
        counter: FlopCounter,
    ) -> torch.Tensor:
        """q, k, v (B, H, N, dh); index (B, M) of changed tokens or None (all) -> (B, H, N, dh)."""
        n = q.shape[2]
        changed = n if index is None else index.shape[1]
        too_many = changed > config.sparse_max_fraction * n
        if config.attention == "dense" or (config.attention == "auto" and too_many):
            scope.drop(*_CACHE_KEYS)
            return dense_attention(q, k, v, counter)
        q = q * q.shape[-1] ** -0.5
        if index is None or scope.get("exp") is None:
            return self._build(scope, q, k, v, config.cache_dtype, counter)
        for b in range(q.shape[0]):
            self._update(scope, b, q[b], k[b], v[b], index[b].unique(), config.cache_dtype, counter)
        return scope.get("num") / scope.get("den")

    @staticmethod
    def _build(scope: Scope, q, k, v, dtype: torch.dtype, counter: FlopCounter) -> torch.Tensor:
        logits = q @ k.transpose(-1, -2)  # (B, H, N, N)
        row_max = logits.amax(dim=-1, keepdim=True)  # (B, H, N, 1)
        e, stored = _cached(logits.sub_(row_max).exp_(), dtype)
        num, den = e @ v, e.sum(dim=-1, keepdim=True)  # (B, H, N, dh), (B, H, N, 1)
        b, h, n, dh = q.shape
        counter.add(2 * b * h * n * n * dh, 2 * b * h * n * n * dh)
        for key, value in zip(_CACHE_KEYS, (stored, num, den, den.clone(), row_max, v.clone())):
            scope.put(key, value)
        return num / den

    def _update(self, scope: Scope, b: int, q, k, v, index, dtype, counter: FlopCounter) -> None:
        """Update batch element b for changed tokens `index` (M,); q, k, v are (H, N, dh)."""
        exp, num, den, den_ref, row_max, v_cache = (scope.get(key)[b] for key in _CACHE_KEYS)
        v_new = v.index_select(1, index)  # (H, M, dh)
        e_old = exp.index_select(2, index).float()  # (H, N, M)
        logits = q @ k.index_select(1, index).transpose(-1, -2)  # (H, N, M)
        drift = logits.amax(dim=-1, keepdim=True) - row_max > MAX_LOGIT_DRIFT  # (H, N, 1)
        e_new, stored = _cached(logits.sub_(row_max).exp_(), dtype)
        num.add_(e_new @ v_new).sub_(e_old @ v_cache.index_select(1, index))
        den.add_(e_new.sum(dim=-1, keepdim=True)).sub_(e_old.sum(dim=-1, keepdim=True))
        exp.index_copy_(2, index, stored)
        v_cache.index_copy_(1, index, v_new)
        stale = drift | (den < DEN_FLOOR * den_ref) | ~torch.isfinite(den)  # (H, N, 1)
        rows = stale[..., 0].any(dim=0)  # (N,)
        rows[index] = True
        rows = rows.nonzero()[:, 0]  # (R,)
        self._recompute_rows(exp, num, den, den_ref, row_max, q.index_select(1, rows), k, v_cache, rows, dtype)
        h, n, dh = q.shape
        macs = 3 * h * n * index.numel() * dh + 2 * h * rows.numel() * n * dh
        counter.add(macs, 2 * h * n * n * dh)

    @staticmethod
    def _recompute_rows(exp, num, den, den_ref, row_max, q_rows, k, v, rows, dtype) -> None:
        """Recompute rows `rows` (R,) of every head from their queries q_rows (H, R, dh)."""
        logits = q_rows @ k.transpose(-1, -2)  # (H, R, N)
        new_max = logits.amax(dim=-1, keepdim=True)  # (H, R, 1)
        e, stored = _cached(logits.sub_(new_max).exp_(), dtype)
        new_den = e.sum(dim=-1, keepdim=True)
        exp.index_copy_(1, rows, stored)
        num.index_copy_(1, rows, e @ v)
        den.index_copy_(1, rows, new_den)
        den_ref.index_copy_(1, rows, new_den)
        row_max.index_copy_(1, rows, new_max)
