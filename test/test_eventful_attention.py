"""Attention modes on buffered q, k, v against references written here from the definitions.

Exact modes ("sparse", "dense", "auto") must equal softmax(q k^T / sqrt(dh)) v over the buffered
q/k/v at every step; "query_rows" must equal a plain re-implementation of its rule (each
selected query's row recomputed against all current keys/values, every other row kept). Each
bound is also shown to reject a wrong implementation: rows that are never written (a stale
stream) or written to the wrong tokens (a shuffled token order).
"""
import pytest
import torch

from eventful_perception.eventful import attention as attention_module
from eventful_perception.eventful import gate as gate_module
from eventful_perception.eventful.attention import EventfulAttention
from eventful_perception.eventful.counting import FlopCounter
from eventful_perception.eventful.state import AttentionState
from eventful_perception.eventful.stream import StreamConfig

B, H, N, DH = 2, 3, 40, 8
D = H * DH
M = 5  # tokens changed per step
EXACT = ("sparse", "dense", "auto")

pytestmark = pytest.mark.usefixtures("single_thread")


def plain_attention(qkv: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh)) v from the definition, for qkv (B, N, 3D) -> (B, N, D)."""
    q, k, v = (qkv[..., i * D:(i + 1) * D].reshape(B, -1, H, DH).transpose(1, 2) for i in range(3))
    weights = torch.softmax(q @ k.transpose(-1, -2) / DH**0.5, dim=-1)  # (B, H, N, N)
    return (weights @ v).transpose(1, 2).reshape(B, -1, D)


def _steps(count: int, seed: int = 0, scale: float = 1.0):
    """A first full frame, then `count` updates of M random tokens per batch element:
    yields (index (B, M) or None, new rows (B, M, 3D), the full q|k|v after the step)."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, N, 3 * D, generator=generator)
    yield None, qkv.clone(), qkv.clone()
    for _ in range(count):
        index = torch.stack([torch.randperm(N, generator=generator)[:M] for _ in range(B)])  # (B, M)
        for b in range(B):
            qkv[b, index[b]] += scale * torch.randn(M, 3 * D, generator=generator)
        yield index, torch.stack([qkv[b, index[b]] for b in range(B)]), qkv.clone()


def _run(mode: str, steps, config_kwargs=None):
    """(output, exact reference, query-row reference) after each step of one stream."""
    config = StreamConfig(attention=mode, **(config_kwargs or {}))
    state, attention = AttentionState(), EventfulAttention()
    rows_reference = None
    for index, rows, qkv in steps:
        counter = FlopCounter()
        out = attention(state, rows, index, H, config, counter)
        exact = plain_attention(qkv)
        if index is None:
            rows_reference = exact.clone()
        else:  # the query-row rule, token by token
            for b in range(B):
                for token in index[b].tolist():
                    rows_reference[b, token] = exact[b, token]
        yield out, exact, rows_reference.clone(), counter


def _max_error(mode: str, steps=None) -> float:
    reference = 2 if mode == "query_rows" else 1
    return max(float((r[0] - r[reference]).abs().max()) for r in _run(mode, steps or _steps(8)))


@pytest.mark.parametrize("mode", EXACT)
def test_exact_modes_equal_dense_over_the_buffered_qkv_at_every_step(mode):
    assert _max_error(mode) < 1e-5


def test_query_rows_equals_its_plain_reimplementation_and_differs_from_exact():
    results = list(_run("query_rows", _steps(8)))
    assert max(float((out - rows).abs().max()) for out, _, rows, _ in results) < 1e-5
    # it is an approximation: unselected rows ignore other tokens' new keys and values
    assert float((results[-1][0] - results[-1][1]).abs().max()) > 1e-2


@pytest.mark.parametrize("mode", [*EXACT, "query_rows"])
def test_first_frame_and_full_updates_are_exact_in_every_mode(mode):
    def everything_changes():
        generator = torch.Generator().manual_seed(3)
        for step in range(4):
            qkv = torch.randn(B, N, 3 * D, generator=generator)
            yield (None if step == 0 else torch.arange(N).expand(B, -1)), qkv, qkv

    for out, exact, _, _ in _run(mode, everything_changes()):
        assert float((out - exact).abs().max()) < 1e-5


def _stale_scatter(x, index, rows):
    return x  # new rows are never written: the stream keeps answering with old tokens


def _shuffled_scatter(x, index, rows):
    return x.scatter_(1, index.flip(-1).unsqueeze(-1).expand(-1, -1, x.shape[-1]), rows)


@pytest.mark.parametrize("mode", [*EXACT, "query_rows"])
@pytest.mark.parametrize("wrong", [_stale_scatter, _shuffled_scatter])
def test_the_bounds_reject_stale_and_shuffled_updates(mode, wrong, monkeypatch):
    monkeypatch.setattr(attention_module, "scatter_rows_", wrong)
    monkeypatch.setattr(gate_module, "scatter_rows_", wrong)
    assert _max_error(mode) > 1e-2


def test_query_rows_and_sparse_count_less_than_dense():
    for mode, expected in (("query_rows", 2 * B * H * M * N * DH), ("dense", 2 * B * H * N * N * DH)):
        *_, (_, _, _, counter) = _run(mode, _steps(2))
        assert counter.macs == expected and counter.macs_dense == 2 * B * H * N * N * DH
    *_, (_, _, _, counter) = _run("sparse", _steps(2))
    assert counter.macs < counter.macs_dense


def test_sparse_rows_whose_dominant_key_changes_are_recomputed():
    generator = torch.Generator().manual_seed(4)
    qkv = torch.randn(B, N, 3 * D, generator=generator)
    q, k = qkv[..., :D].view(B, N, H, DH), qkv[..., D:2 * D].view(B, N, H, DH)
    # query 0 of every head attends almost only to key 7 (logit ~ +200)
    q[:, 0] *= 25.0 / q[:, 0].norm(dim=-1, keepdim=True)
    k[:, 7] = q[:, 0]

    def flips():
        yield None, qkv.clone(), qkv.clone()
        for _ in range(2):  # key 7 flips: row 0's denominator collapses, then its logit overflows
            k[:, 7] *= -1.0
            index = torch.tensor([[7], [7]])
            yield index, qkv[:, 7:8].clone(), qkv.clone()

    for out, exact, _, _ in _run("sparse", flips()):
        assert torch.isfinite(out).all()
        assert float((out - exact).abs().max()) < 1e-4


def test_bfloat16_cache_halves_memory_and_stays_close():
    states = {}
    for dtype in (torch.float32, torch.bfloat16):
        config = StreamConfig(attention="sparse", cache_dtype=dtype)
        state, attention = AttentionState(), EventfulAttention()
        for index, rows, qkv in _steps(3, scale=0.3):
            out = attention(state, rows, index, H, config, FlopCounter())
        states[dtype] = state
        assert float((out - plain_attention(qkv)).abs().max()) < (1e-5 if dtype == torch.float32 else 2e-2)
    assert states[torch.bfloat16].sparse.exp.dtype == torch.bfloat16
    assert states[torch.bfloat16].sparse.exp.nbytes * 2 == states[torch.float32].sparse.exp.nbytes


def test_auto_uses_dense_above_the_crossover_and_drops_the_cache():
    config = StreamConfig(attention="auto", sparse_max_fraction=0.1)  # M = 5 of 40 changed: above
    state, attention = AttentionState(), EventfulAttention()
    steps = _steps(2)
    index, rows, _ = next(steps)
    attention(state, rows, index, H, config, FlopCounter())
    assert state.sparse is not None  # a full frame builds the cache
    index, rows, qkv = next(steps)
    counter = FlopCounter()
    out = attention(state, rows, index, H, config, counter)
    assert state.sparse is None and counter.macs == counter.macs_dense == 2 * B * H * N * N * DH
    assert float((out - plain_attention(qkv)).abs().max()) < 1e-5
    few = StreamConfig(attention="auto", sparse_max_fraction=0.5)
    index, rows, qkv = next(steps)
    out = attention(state, rows, index, H, few, FlopCounter())  # rebuilds the cache
    assert state.sparse is not None
    assert float((out - plain_attention(qkv)).abs().max()) < 1e-5


def test_outputs_never_alias_the_state():
    attention = EventfulAttention()
    for mode in ("query_rows", "sparse", "dense"):
        config = StreamConfig(attention=mode)
        state = AttentionState()
        for index, rows, _ in _steps(2):
            out = attention(state, rows, index, H, config, FlopCounter())
            rows.fill_(1e6)  # the caller's rows and the returned output are the caller's to change
            out.fill_(1e6)
            held = [state.qkv, state.rows] + ([] if state.sparse is None else [state.sparse.num])
            assert all(t is None or float(t.abs().max()) < 1e5 for t in held)
