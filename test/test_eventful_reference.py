"""Eventful at partial budgets against a plain re-implementation of the paper (eventful_reference.py).

The real DINOv2-S backbone on real vtest.avi frames at short side 224 (16 x 21 patches + class).
Both exact attention modes must match the reference to float rounding at every frame; the same
bound rejects a stale stream, a dense (never gated) stream and a shuffled token order by a
factor of more than 1000.
"""
import pytest
import torch

import eventful_perception as ep
from eventful_perception.assets import default_backbone_dir
from eventful_perception.models.loading import load_checkpoint

from eventful_reference import ReferenceEventfulDinov2

TOLERANCE = 1e-4  # max abs difference of final tokens; measured 1.3e-5 to 2.1e-5


@pytest.fixture(scope="module")
def backbones():
    from transformers import Dinov2Model

    folder = default_backbone_dir()
    return load_checkpoint(folder, short_side=224).eval(), Dinov2Model.from_pretrained(folder, local_files_only=True).eval()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("budget", [0.5, 0.25, 0.1])
def test_exact_modes_equal_the_paper_reference(backbones, vtest_frames, budget):
    ours, hf = backbones
    reference = ReferenceEventfulDinov2(hf, budget)
    streams = {mode: ours.new_stream(ep.StreamConfig(attention=mode)) for mode in ("sparse", "dense")}
    first = None
    shuffle = torch.randperm(337, generator=torch.Generator().manual_seed(0))
    for t, frame in enumerate(vtest_frames[:6]):
        expected = reference(ours.preprocess(frame).pixels)
        results = {mode: ours(frame, stream, budget=budget) for mode, stream in streams.items()}
        for mode, result in results.items():
            assert result.usage.tokens_total == 337
            assert _max_diff(result.features, expected) <= TOLERANCE, (mode, t)
        first = expected if first is None else first
        if t == 0:
            continue
        # What the bound rejects: a stream that never updates, a stream that updates everything
        # (no gating at all), and the right rows in the wrong order.
        assert results["sparse"].usage.tokens_updated < 0.6 * 337
        assert _max_diff(first, expected) > 1000 * TOLERANCE
        assert _max_diff(ours.dense(frame).features, expected) > 1000 * TOLERANCE
        assert _max_diff(results["sparse"].features[shuffle], expected) > 1000 * TOLERANCE


def test_exact_modes_agree_through_the_index_path(backbones, vtest_frames):
    """Threshold(0) recomputes exactly the tokens whose input changed, through the gates' index
    path; on a frame whose top half is unchanged the result must equal the dense model."""
    ours, _ = backbones
    base = vtest_frames[0]
    changed = base.copy()
    changed[base.shape[0] // 2:] = vtest_frames[5][base.shape[0] // 2:]
    dense = ours.dense(changed).features
    for mode in ("sparse", "dense"):
        stream = ours.new_stream(ep.StreamConfig(attention=mode))
        ours(base, stream, budget=1.0)
        result = ours(changed, stream, policy=ep.Threshold(0.0))
        assert 0 < min(result.usage.tokens_per_block) < 337  # some gate skipped the unchanged half
        assert _max_diff(result.features, dense) <= TOLERANCE, mode
