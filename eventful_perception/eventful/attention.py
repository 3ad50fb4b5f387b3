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

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .counting import FlopCounter
from .stream import Scope, StreamConfig

# Recompute a row once its denominator fell below this fraction of the largest value it had since
# it was last computed: the deltas' rounding errors scale with that peak, so the relative error
# stays below float32 epsilon / DEN_FLOOR.
DEN_FLOOR = 1e-2
# Recompute a row when a new logit exceeds its cached max by this much (exp overflows at ~88).
MAX_LOGIT_DRIFT = 30.0


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
    # (values to compute with, values to store): equal, so later subtractions cancel exactly
    if dtype == torch.float32:
        return e, e
    stored = e.to(dtype)
    return stored.float(), stored


class _Cache(NamedTuple):
    """One batch element's cache; every tensor is a view into the stream's state."""

    exp: torch.Tensor  # (H, N keys, N queries): key-major, so changed keys are contiguous rows
    num: torch.Tensor  # (H, N, dh)
    den: torch.Tensor  # (H, N, 1)
    den_peak: torch.Tensor  # (H, N, 1), largest denominator since the row was last computed
    row_max: torch.Tensor  # (H, N, 1)
    v: torch.Tensor  # (H, N, dh), the values the numerators were built from


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
        b, h, n, dh = q.shape
        changed = n if index is None else index.shape[1]
        too_many = changed > config.sparse_max_fraction * n
        if config.attention == "dense" or (config.attention == "auto" and too_many):
            scope.drop(*_Cache._fields)
            return dense_attention(q, k, v, counter)
        q = q * dh**-0.5
        if index is None or scope.get("exp") is None:
            counter.add(2 * b * h * n * n * dh, 2 * b * h * n * n * dh)
            return self._build(scope, q, k, v, config.cache_dtype)
        for i in range(b):
            cache = _Cache(*(scope.get(key)[i] for key in _Cache._fields))
            macs = self._update(cache, q[i], k[i], v[i], index[i].unique(), config.cache_dtype)
            counter.add(macs, 2 * h * n * n * dh)
        return scope.get("num") / scope.get("den")

    @staticmethod
    def _build(scope: Scope, q, k, v, dtype: torch.dtype) -> torch.Tensor:
        logits = k @ q.transpose(-1, -2)  # (B, H, N keys, N queries)
        row_max = logits.amax(dim=-2, keepdim=True)  # (B, H, 1, N)
        e, stored = _cached(logits.sub_(row_max).exp_(), dtype)
        num = e.transpose(-1, -2) @ v  # (B, H, N, dh)
        den = e.sum(dim=-2).unsqueeze(-1)  # (B, H, N, 1)
        row_max = row_max.transpose(-1, -2).contiguous()  # (B, H, N, 1)
        for key, value in zip(_Cache._fields, (stored, num, den, den.clone(), row_max, v.clone())):
            scope.put(key, value)
        return num / den

    def _update(self, cache: _Cache, q, k, v, index: torch.Tensor, dtype: torch.dtype) -> int:
        # q, k, v (H, N, dh); index (M,) sorted unique; returns the multiply-adds done
        v_new = v.index_select(1, index)  # (H, M, dh)
        e_old = cache.exp.index_select(1, index).float()  # (H, M, N)
        logits = k.index_select(1, index) @ q.transpose(-1, -2)  # (H, M, N)
        max_t = cache.row_max.transpose(-1, -2)  # (H, 1, N)
        drift = (logits.amax(dim=1, keepdim=True) - max_t).transpose(-1, -2) > MAX_LOGIT_DRIFT  # (H, N, 1)
        e_new, stored = _cached(logits.sub_(max_t).exp_(), dtype)
        cache.num.baddbmm_(e_new.transpose(-1, -2), v_new)  # (H, N, dh) += (H, N, M) @ (H, M, dh)
        cache.num.baddbmm_(e_old.transpose(-1, -2), cache.v.index_select(1, index), alpha=-1.0)
        cache.den.add_((e_new.sum(dim=1) - e_old.sum(dim=1)).unsqueeze(-1))  # (H, N, 1)
        torch.maximum(cache.den_peak, cache.den, out=cache.den_peak)
        cache.exp.index_copy_(1, index, stored)
        cache.v.index_copy_(1, index, v_new)
        stale = drift | (cache.den < DEN_FLOOR * cache.den_peak) | ~torch.isfinite(cache.den)  # (H, N, 1)
        rows = stale[..., 0].any(dim=0)  # (N,)
        rows[index] = True
        rows = rows.nonzero()[:, 0]  # (R,)
        self._recompute_rows(cache, q.index_select(1, rows), k, rows, dtype)
        h, n, dh = q.shape
        return 3 * h * n * index.numel() * dh + 2 * h * rows.numel() * n * dh

    @staticmethod
    def _recompute_rows(cache: _Cache, q_rows, k, rows: torch.Tensor, dtype: torch.dtype) -> None:
        # query rows `rows` (R,) of every head, from their queries q_rows (H, R, dh)
        logits = q_rows @ k.transpose(-1, -2)  # (H, R, N)
        row_max = logits.amax(dim=-1, keepdim=True)  # (H, R, 1)
        e, stored = _cached(logits.sub_(row_max).exp_(), dtype)
        den = e.sum(dim=-1, keepdim=True)  # (H, R, 1)
        cache.exp.index_copy_(2, rows, stored.transpose(-1, -2))  # strided: (H, N, R) query columns
        cache.num.index_copy_(1, rows, e @ cache.v)
        cache.den.index_copy_(1, rows, den)
        cache.den_peak.index_copy_(1, rows, den)
        cache.row_max.index_copy_(1, rows, row_max)
