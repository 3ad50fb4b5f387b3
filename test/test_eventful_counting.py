"""Counted GFLOPs vs an independent closed form (1 multiply-add = 1 FLOP)."""
import numpy as np
import pytest

from eventful_perception import load_model

pytestmark = pytest.mark.usefixtures("single_thread")


def vit_macs(n: int, d: int, d_mlp: int, layers: int, patches: int, patch: int) -> int:
    """Closed form: per block 4*N*D^2 + 2*N^2*D + 2*N*D*D_mlp, plus the patch embedding."""
    return layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * d_mlp) + patches * 3 * patch * patch * d


def test_dinov2_gflops_match_closed_form_at_full_budget_and_fall_with_budget(tiny_dinov2_dir, vtest_frames):
    model = load_model(tiny_dinov2_dir, short_side=112)
    expected = vit_macs(n=89, d=32, d_mlp=128, layers=3, patches=88, patch=14) / 1e9
    assert model.dense(vtest_frames[0]).usage.gflops == pytest.approx(expected, rel=1e-12)
    mean_gflops = []
    for budget in (1.0, 0.5, 0.2, 0.05):
        stream = model.new_stream()
        usages = [model(frame, stream, budget=budget).usage for frame in vtest_frames[:6]]
        assert all(u.gflops_dense == pytest.approx(expected, rel=1e-12) for u in usages)
        assert usages[0].gflops == pytest.approx(expected, rel=1e-12)  # first frame: everything
        mean_gflops.append(np.mean([u.gflops for u in usages[1:]]))
    assert mean_gflops[0] == pytest.approx(expected, rel=1e-12)
    assert all(a > b for a, b in zip(mean_gflops, mean_gflops[1:])), mean_gflops


def test_yolos_gflops_include_the_heads(tiny_yolos_dir, vtest_frames):
    model = load_model(tiny_yolos_dir)  # short side 128 (its preprocessor_config): 8x11 patches of 16
    d, t, classes = 32, 5, 3
    backbone = vit_macs(n=1 + 88 + t, d=d, d_mlp=64, layers=3, patches=88, patch=16)
    heads = t * (2 * d * d + d * (classes + 1)) + t * (2 * d * d + d * 4)
    stream = model.new_stream()
    for frame in vtest_frames[:3]:
        usage = model(frame, stream, budget=1.0).usage
        assert usage.gflops == pytest.approx((backbone + heads) / 1e9, rel=1e-12)
        assert usage.gflops_dense == usage.gflops
    assert model(vtest_frames[3], stream, budget=0.1).usage.gflops < usage.gflops_dense


def test_sparse_attention_counts_less_than_dense_attention(tiny_dinov2_dir, vtest_frames):
    from eventful_perception.eventful.stream import StreamConfig

    model = load_model(tiny_dinov2_dir, short_side=112)
    dense_attention = model.new_stream(StreamConfig(attention="dense"))
    sparse_attention = model.new_stream(StreamConfig(attention="sparse"))
    for frame in vtest_frames[:4]:
        dense_usage = model(frame, dense_attention, budget=0.1).usage
        sparse_usage = model(frame, sparse_attention, budget=0.1).usage
    # same tokens updated, the attention products themselves shrink from 2*N^2*D to ~5*N*M*D
    assert sparse_usage.tokens_per_block == dense_usage.tokens_per_block
    assert sparse_usage.gflops < dense_usage.gflops < dense_usage.gflops_dense
