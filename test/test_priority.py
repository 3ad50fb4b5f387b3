"""Detection-aware gating: the stream's priority map comes from its own previous detections."""
import torch

from eventful_perception.eventful.policy import BudgetFraction, Prioritized, detection_priority
from eventful_perception.eventful.state import PatchGrid
from eventful_perception.eventful.stream import StreamConfig
from eventful_perception.models.loading import load_checkpoint
from eventful_perception.models.token_head import TokenHead, TokenHeadConfig, token_scores


def _model(folder):
    torch.manual_seed(0)
    head = TokenHead(TokenHeadConfig(("person",), 32, mlp_dim=16)).eval()
    return load_checkpoint(folder, 112, head).eval()


def test_each_frame_is_gated_by_the_previous_frames_scores(tiny_dinov2_dir, vtest_frames):
    """A plain re-implementation: the policy of frame t is BudgetFraction(0.3) on errors times
    1 + 4 * the 3 x 3 max of frame t-1's token scores, computed from its returned features."""
    model = _model(tiny_dinov2_dir)
    stream = model.new_stream(StreamConfig(score_priority=4.0))
    plain = model.new_stream(StreamConfig(score_priority=0.0))
    weights = None
    for frame in vtest_frames[:4]:
        found = model(frame, stream, budget=0.3)
        policy = BudgetFraction(0.3) if weights is None else Prioritized(BudgetFraction(0.3), weights)
        expected = model(frame, plain, policy=policy)
        assert torch.equal(found.features, expected.features)
        with torch.inference_mode():
            scores = token_scores(model.head(expected.features[None, 1:]))[..., 0]
        weights = detection_priority(scores, expected.grid, 4.0)
        assert torch.allclose(stream.priority, weights)
    # Without the priority the same frames give other tokens: the comparison above means something.
    unweighted = model.new_stream(StreamConfig(score_priority=0.0))
    last = [model(frame, unweighted, budget=0.3) for frame in vtest_frames[:4]][-1]
    assert not torch.equal(last.features, found.features)


def test_priority_moves_with_a_shift_is_dropped_on_reset_and_absent_without_a_head(tiny_dinov2_dir, vtest_frames):
    model = _model(tiny_dinov2_dir)
    stream = model.new_stream()
    result = model(vtest_frames[0], stream, budget=0.3)
    height, width = result.grid
    assert stream.priority is not None and stream.priority.shape == (1, height * width)
    blocks = sum(t.nbytes for name, t in stream.snapshot().items() if name != "priority")
    assert stream.memory_bytes() == blocks + stream.priority.nbytes  # the map is counted as state
    before = stream.priority.reshape(height, width).clone()
    with torch.inference_mode():  # as the model shifts it: content one row down, one column left
        stream.shift(PatchGrid(1, height, width), 1, -1)
    after = stream.priority.reshape(height, width)
    assert torch.equal(after[1:, :-1], before[:-1, 1:])
    assert torch.equal(after[0], torch.ones(width)) and torch.equal(after[:, -1], torch.ones(height))
    model(vtest_frames[1], stream, budget=0.3)
    stream.reset()
    assert stream.priority is None
    backbone = load_checkpoint(tiny_dinov2_dir, 112).eval()
    plain = backbone.new_stream()
    backbone(vtest_frames[0], plain, budget=0.3)
    assert plain.priority is None
