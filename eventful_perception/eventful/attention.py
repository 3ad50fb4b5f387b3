"""Attention over a block's buffered q, k, v: query-row, exact sparse and dense updates.

Every mode first scatters the selected tokens' new q, k, v into the block's buffer.
"query_rows" recomputes the output rows of the selected queries against all buffered keys and
values with torch's fused attention and keeps every other row from its last update.
"sparse" (the Eventful paper's update) caches, per block and head, E = exp(logits - row max)
(N x N), the numerator E @ v (N x dh) and the denominator sum(E) (N x 1). When the tokens M
changed (their q, k and v):
  - columns M of every row: E[:, M] is recomputed from the new keys, the numerator gains
    E_new[:, M] @ v_new[M] - E_old[:, M] @ v_old[M] and the denominator the matching sums;
  - rows M (changed queries) are recomputed in full (new row max);
  - rows whose denominator collapsed (the keys that dominated them changed, so the delta
    update cancelled almost everything) or whose new logits far exceed the cached row max are
    recomputed too; without this guard those rows lose all precision or overflow.
Given the same buffered q, k, v, "sparse" equals dense attention up to rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .counting import FlopCounter
from .gate import buffer_rows, scatter_rows_
from .state import AttentionState, SparseCache
from .stream import StreamConfig

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
    """softmax(q k^T / sqrt(dh)) v for q (B, H, M, dh), k, v (B, H, N, dh), counted as 2 * M * N * D."""
    b, h, m, dh = q.shape
    n = k.shape[2]
    counter.add(2 * b * h * m * n * dh, 2 * b * h * n * n * dh)
    return F.scaled_dot_product_attention(q, k, v)  # (B, H, M, dh)


def _cached(e: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # (values to compute with, values to store): equal, so later subtractions cancel exactly
    if dtype == torch.float32:
        return e, e
    stored = e.to(dtype)
    return stored.float(), stored


class EventfulAttention:
    """Attention of one block on a stream; holds nothing (its state is an `AttentionState`)."""

    def __call__(
        self,
        state: AttentionState,
        qkv_rows: torch.Tensor,
        index: torch.Tensor | None,
        heads: int,
        config: StreamConfig,
        counter: FlopCounter,
    ) -> torch.Tensor:
        """New q|k|v rows (B, M, 3D) of tokens `index` (B, M) or of all (None) -> output (B, N, D).

        The output is a new tensor; the state keeps its own copies.
        """
        n = qkv_rows.shape[1] if state.qkv is None else state.qkv.shape[1]
        mode = config.attention
        if mode == "auto":
            few = index is not None and index.shape[1] <= config.sparse_max_fraction * n
            mode = "sparse" if few or index is None else "dense"
        if mode != "sparse":
            state.sparse = None
        if mode == "sparse" and index is not None and state.sparse is not None:
            return self._sparse_update(state, qkv_rows, index, heads, config.cache_dtype, counter)
        state.qkv = buffer_rows(state.qkv, qkv_rows, index)
        q, k, v = split_heads(state.qkv, heads)  # each (B, H, N, dh)
        if mode == "sparse":
            return self._sparse_build(state, q, k, v, config.cache_dtype, counter)
        if mode == "query_rows" and index is not None:
            q_rows = split_heads(qkv_rows, heads)[0]  # (B, H, M, dh): the new queries
            scatter_rows_(state.rows, index, merge_heads(dense_attention(q_rows, k, v, counter)))
            return state.rows.clone()
        out = merge_heads(dense_attention(q, k, v, counter))  # (B, N, D)
        if mode == "query_rows":
            state.rows = out.clone()
        return out

    @staticmethod
    def _sparse_build(state: AttentionState, q, k, v, dtype: torch.dtype,
                      counter: FlopCounter) -> torch.Tensor:
        b, h, n, dh = q.shape
        counter.add(2 * b * h * n * n * dh, 2 * b * h * n * n * dh)
        logits = k @ (q * dh**-0.5).transpose(-1, -2)  # (B, H, N keys, N queries)
        row_max = logits.amax(dim=-2, keepdim=True)  # (B, H, 1, N)
        e, stored = _cached(logits.sub_(row_max).exp_(), dtype)
        num = e.transpose(-1, -2) @ v  # (B, H, N, dh)
        den = e.sum(dim=-2).unsqueeze(-1)  # (B, H, N, 1)
        state.sparse = SparseCache(stored, num, den, den.clone(), row_max.transpose(-1, -2).contiguous())
        return merge_heads(num / den)

    def _sparse_update(self, state: AttentionState, qkv_rows, index, heads: int, dtype: torch.dtype,
                       counter: FlopCounter) -> torch.Tensor:
        b, n, d3 = state.qkv.shape
        # the values the numerators were built from, before the buffer takes the new ones
        unique = [index[i].unique() for i in range(b)]  # sorted, as index_copy_ needs
        v_old = [_heads(state.qkv[i, rows, 2 * d3 // 3:], heads)  # (H, M, dh)
                 for i, rows in enumerate(unique)]
        state.qkv = buffer_rows(state.qkv, qkv_rows, index)
        q, k, v = split_heads(state.qkv, heads)
        q = q * q.shape[-1] ** -0.5
        cache = state.sparse
        for i in range(b):  # a batch element's changed tokens differ from the others'
            view = SparseCache(cache.exp[i], cache.num[i], cache.den[i], cache.den_peak[i], cache.row_max[i])
            macs = self._update(view, q[i], k[i], v[i], v_old[i], unique[i], dtype)
            counter.add(macs, 2 * q.shape[1] * n * n * q.shape[-1])
        return merge_heads(cache.num / cache.den)

    def _update(self, cache: SparseCache, q, k, v, v_old, index: torch.Tensor, dtype: torch.dtype) -> int:
        # q, k, v (H, N, dh) after the update, v_old (H, M, dh); index (M,) sorted unique;
        # returns the multiply-adds done
        v_new = v.index_select(1, index)  # (H, M, dh)
        e_old = cache.exp.index_select(1, index).float()  # (H, M, N)
        logits = k.index_select(1, index) @ q.transpose(-1, -2)  # (H, M, N)
        max_t = cache.row_max.transpose(-1, -2)  # (H, 1, N)
        drift = (logits.amax(dim=1, keepdim=True) - max_t).transpose(-1, -2) > MAX_LOGIT_DRIFT  # (H, N, 1)
        e_new, stored = _cached(logits.sub_(max_t).exp_(), dtype)
        cache.num.baddbmm_(e_new.transpose(-1, -2), v_new)  # (H, N, dh) += (H, N, M) @ (H, M, dh)
        cache.num.baddbmm_(e_old.transpose(-1, -2), v_old, alpha=-1.0)
        cache.den.add_((e_new.sum(dim=1) - e_old.sum(dim=1)).unsqueeze(-1))  # (H, N, 1)
        torch.maximum(cache.den_peak, cache.den, out=cache.den_peak)
        cache.exp.index_copy_(1, index, stored)
        stale = drift | (cache.den < DEN_FLOOR * cache.den_peak) | ~torch.isfinite(cache.den)  # (H, N, 1)
        rows = stale[..., 0].any(dim=0)  # (N,)
        rows[index] = True
        rows = rows.nonzero()[:, 0]  # (R,)
        self._recompute_rows(cache, q.index_select(1, rows), k, v, rows, dtype)
        h, n, dh = q.shape
        return 3 * h * n * index.numel() * dh + 2 * h * rows.numel() * n * dh

    @staticmethod
    def _recompute_rows(cache: SparseCache, q_rows, k, v, rows: torch.Tensor, dtype: torch.dtype) -> None:
        # query rows `rows` (R,) of every head, from their queries q_rows (H, R, dh)
        logits = q_rows @ k.transpose(-1, -2)  # (H, R, N)
        row_max = logits.amax(dim=-1, keepdim=True)  # (H, R, 1)
        e, stored = _cached(logits.sub_(row_max).exp_(), dtype)
        den = e.sum(dim=-1, keepdim=True)  # (H, R, 1)
        cache.exp.index_copy_(2, rows, stored.transpose(-1, -2))  # strided: (H, N, R) query columns
        cache.num.index_copy_(1, rows, e @ v)
        cache.den.index_copy_(1, rows, den)
        cache.den_peak.index_copy_(1, rows, den)
        cache.row_max.index_copy_(1, rows, row_max)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(M, D) -> (H, M, dh)."""
    return x.view(x.shape[0], heads, -1).transpose(0, 1)
