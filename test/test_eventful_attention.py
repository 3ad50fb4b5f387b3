"""Sparse attention update vs dense attention on the same buffered q, k, v."""
import pytest
import torch

from eventful_perception.eventful.attention import SparseAttention, dense_attention
from eventful_perception.eventful.counting import FlopCounter
from eventful_perception.eventful.stream import Stream, StreamConfig

B, H, N, DH = 2, 3, 40, 8
SPARSE = StreamConfig(attention="sparse")

pytestmark = pytest.mark.usefixtures("single_thread")


def _qkv(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, N, DH, generator=generator) for _ in range(3)]


def _dense(q, k, v) -> torch.Tensor:
    return dense_attention(q, k, v, FlopCounter())


def _built(config: StreamConfig = SPARSE):
    scope = Stream(config).scope("attn")
    q, k, v = _qkv()
    out = SparseAttention()(scope, q, k, v, None, config, FlopCounter())
    return scope, (q, k, v), out


def test_full_build_equals_dense():
    _, (q, k, v), out = _built()
    assert (out - _dense(q, k, v)).abs().max() < 1e-5


def test_update_of_every_token_equals_dense():
    scope, (q, k, v), _ = _built()
    q2, k2, v2 = _qkv(seed=1)
    index = torch.arange(N).expand(B, -1)  # (B, N): the sparse path with all tokens changed
    out = SparseAttention()(scope, q2, k2, v2, index, SPARSE, FlopCounter())
    assert (out - _dense(q2, k2, v2)).abs().max() < 1e-5


def test_partial_updates_track_dense_over_many_steps():
    scope, (q, k, v), _ = _built()
    generator = torch.Generator().manual_seed(2)
    for _ in range(8):
        index = torch.stack([torch.randperm(N, generator=generator)[:5] for _ in range(B)])  # (B, 5)
        for tensor in (q, k, v):
            for b in range(B):
                tensor[b][:, index[b]] += torch.randn(H, 5, DH, generator=generator)
        counter = FlopCounter()
        out = SparseAttention()(scope, q, k, v, index, SPARSE, counter)
        assert (out - _dense(q, k, v)).abs().max() < 1e-5
        assert counter.macs < counter.macs_dense


def test_rows_whose_dominant_key_changes_are_recomputed():
    scope, (q, k, v), _ = _built()
    # Query 0 of every head attends almost only to key 7 (logit ~ +200); rebuild the cache.
    k[:, :, 7] = 25.0 * q[:, :, 0] / q[:, :, 0].norm(dim=-1, keepdim=True)
    q[:, :, 0] *= 25.0 / q[:, :, 0].norm(dim=-1, keepdim=True)
    SparseAttention()(scope, q, k, v, None, SPARSE, FlopCounter())
    # Key 7 flips to the opposite direction: the cached denominator of row 0 collapses to ~0.
    k[:, :, 7] *= -1.0
    index = torch.tensor([[7], [7]])
    out = SparseAttention()(scope, q, k, v, index, SPARSE, FlopCounter())
    assert torch.isfinite(out).all()
    assert (out - _dense(q, k, v)).abs().max() < 1e-4
    # ... and back, with a logit far above the cached row max (exp would overflow).
    k[:, :, 7] *= -1.0
    out = SparseAttention()(scope, q, k, v, index, SPARSE, FlopCounter())
    assert torch.isfinite(out).all()
    assert (out - _dense(q, k, v)).abs().max() < 1e-4


def test_bfloat16_cache_halves_memory_and_stays_close():
    config = StreamConfig(attention="sparse", cache_dtype=torch.bfloat16)
    scope32, (q, k, v), _ = _built()
    stream16 = Stream(config)
    scope16 = stream16.scope("attn")
    SparseAttention()(scope16, q, k, v, None, config, FlopCounter())
    assert scope16.get("exp").dtype == torch.bfloat16
    assert scope16.get("exp").nbytes * 2 == scope32.get("exp").nbytes
    index = torch.tensor([[1, 2, 3], [4, 5, 6]])
    k[0, :, 1:4] += 0.5
    k[1, :, 4:7] += 0.5
    out = SparseAttention()(scope16, q, k, v, index, config, FlopCounter())
    assert (out - _dense(q, k, v)).abs().max() < 2e-2


def test_auto_mode_uses_dense_attention_above_the_crossover_and_drops_the_cache():
    config = StreamConfig(attention="auto", sparse_max_fraction=0.1)
    scope, (q, k, v), _ = _built(StreamConfig(attention="sparse"))
    many = torch.arange(10).expand(B, -1)  # 25% of the tokens changed
    counter = FlopCounter()
    out = SparseAttention()(scope, q, k, v, many, config, counter)
    assert scope.get("exp") is None
    assert counter.macs == counter.macs_dense == 2 * B * H * N * N * DH
    assert torch.equal(out, _dense(q, k, v))
    few = torch.arange(2).expand(B, -1)
    out = SparseAttention()(scope, q, k, v, few, config, FlopCounter())  # rebuilds the cache
    assert scope.get("exp") is not None
    assert (out - _dense(q, k, v)).abs().max() < 1e-5
