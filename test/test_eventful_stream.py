"""Eventful vs dense on real video frames with a tiny random DINOv2; stream state semantics."""
import numpy as np
import pytest
import torch

from eventful_perception import load_model
from eventful_perception.eventful.policy import TopR
from eventful_perception.eventful.stream import ATTENTION_MODES, StreamConfig

SHORT_SIDE = 112  # 8x11 patches: real frames, small enough for a 2-core CI machine
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model(tiny_dinov2_dir):
    return load_model(tiny_dinov2_dir, short_side=SHORT_SIDE)


@pytest.fixture(scope="module")
def dense(model, vtest_frames):
    return [model.dense(frame).features for frame in vtest_frames]


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _run(model, frames, budgets, stream=None):
    stream = stream or model.new_stream()
    return [model(frame, stream, budget=budget) for frame, budget in zip(frames, budgets)]


@pytest.mark.parametrize("attention", ATTENTION_MODES)
def test_full_budget_equals_dense_at_every_frame(model, vtest_frames, dense, attention):
    stream = model.new_stream(StreamConfig(attention=attention))
    for frame, reference in zip(vtest_frames, dense):
        result = model(frame, stream, budget=1.0)
        assert _max_error(result.features, reference) <= 1e-4
        assert result.usage.tokens_updated == result.usage.tokens_total == 89


def test_error_is_finite_nonzero_and_falls_as_budget_rises(model, vtest_frames, dense):
    errors = []
    for budget in (0.1, 0.25, 0.5, 0.75, 1.0):
        results = _run(model, vtest_frames, [budget] * len(vtest_frames))
        frame_errors = [_max_error(r.features, d) for r, d in zip(results[1:], dense[1:])]
        assert all(np.isfinite(frame_errors))
        errors.append(float(np.mean(frame_errors)))
    assert errors[-1] <= 1e-4
    assert min(errors[:-1]) > 1e-4
    assert all(later <= earlier * 1.1 for earlier, later in zip(errors, errors[1:])), errors
    assert errors[0] > 2 * errors[3], errors


def test_budget_changes_between_frames_take_effect_at_once(model, vtest_frames, dense):
    budgets = [0.5, 0.1, 0.1, 1.0, 0.05, 0.3, 1.0, 0.2, 0.2, 0.6]
    results = _run(model, vtest_frames, budgets)
    for result, budget in zip(results[1:], budgets[1:]):
        # every block follows the new budget, not only the first
        assert result.usage.tokens_per_block == (1 + int(np.ceil(budget * 88)),) * len(model.blocks)
    for i in (3, 6):  # a full-budget frame after cheap ones is exact again
        assert _max_error(results[i].features, dense[i]) <= 1e-4


def test_interleaved_streams_equal_separate_runs(model, vtest_frames):
    frames_a, frames_b = vtest_frames[:10], vtest_frames[::-1][:10]
    budgets_a, budgets_b = [0.3, 0.1, 0.5, 0.2] * 3, [0.05, 1.0, 0.4] * 4
    alone_a, alone_b = _run(model, frames_a, budgets_a), _run(model, frames_b, budgets_b)
    stream_a, stream_b = model.new_stream(), model.new_stream()
    for i in range(10):
        a = model(frames_a[i], stream_a, budget=budgets_a[i])
        b = model(frames_b[i], stream_b, budget=budgets_b[i])
        assert torch.equal(a.features, alone_a[i].features)
        assert torch.equal(b.features, alone_b[i].features)


def test_reset_gives_a_fresh_stream(model, vtest_frames, dense):
    stream = model.new_stream()
    _run(model, vtest_frames[:5], [0.2] * 5, stream)
    stream.reset()
    after = _run(model, vtest_frames[5:], [0.2] * 7, stream)
    fresh = _run(model, vtest_frames[5:], [0.2] * 7)
    assert after[0].full_update and _max_error(after[0].features, dense[5]) <= 1e-4
    assert all(torch.equal(a.features, f.features) for a, f in zip(after, fresh))
    assert stream.frame_index == 12 and stream.frames_since_reset == 7


def test_resolution_change_resets_the_stream(model, vtest_frames):
    # a square 576x576 crop: a new model-input size (8x8 patches instead of 8x11)
    small = [np.ascontiguousarray(frame[:, 96:672]) for frame in vtest_frames[6:]]
    stream = model.new_stream()
    before = _run(model, vtest_frames[:6], [0.2] * 6, stream)
    after = _run(model, small, [0.2] * 6, stream)
    fresh = _run(model, small, [0.2] * 6)
    assert before[0].grid == (8, 11) and after[0].grid == (8, 8)
    assert after[0].full_update and not after[1].full_update
    assert _max_error(after[0].features, model.dense(small[0]).features) <= 1e-4
    assert all(torch.equal(a.features, f.features) for a, f in zip(after, fresh))


def test_a_new_frame_size_resets_even_at_the_same_model_input_size(model, vtest_frames):
    import cv2

    # 768x576 and its half, 384x288, both become 112x154 model inputs (8x11 patches)
    half = [cv2.resize(frame, (384, 288), interpolation=cv2.INTER_AREA) for frame in vtest_frames[6:9]]
    stream = model.new_stream()
    before = _run(model, vtest_frames[:6], [0.2] * 6, stream)
    after = _run(model, half, [0.2] * 3, stream)
    fresh = _run(model, half, [0.2] * 3)
    assert before[-1].input_size == after[0].input_size
    assert after[0].full_update and not after[1].full_update
    assert all(torch.equal(a.features, f.features) for a, f in zip(after, fresh))


def test_refresh_interval_recomputes_every_k_frames(model, vtest_frames, dense):
    stream = model.new_stream(StreamConfig(refresh_interval=4))
    results = _run(model, vtest_frames, [0.1] * 12, stream)
    assert [r.full_update for r in results] == [i % 4 == 0 for i in range(12)]
    for i in (4, 8):
        assert _max_error(results[i].features, dense[i]) <= 1e-4


def test_policy_and_threshold_arguments(model, vtest_frames):
    stream = model.new_stream()
    model(vtest_frames[0], stream)
    assert model(vtest_frames[1], stream, policy=TopR(10)).usage.tokens_per_block[0] == 11
    assert model(vtest_frames[2], stream, threshold=1e9).usage.tokens_per_block[0] == 1  # class token only
    everything = model(vtest_frames[3], stream, threshold=0.0).usage
    assert everything.tokens_updated == everything.tokens_total


def test_results_never_alias_stream_state(model, vtest_frames):
    stream, twin = model.new_stream(), model.new_stream()
    for frame in vtest_frames[:4]:
        mutated = model(frame, stream, budget=0.3)
        mutated.features.fill_(1e6)
        reference = model(frame, twin, budget=0.3)
    assert torch.equal(model(vtest_frames[4], stream, budget=0.3).features,
                       model(vtest_frames[4], twin, budget=0.3).features)
    snapshot = stream.snapshot()
    next(iter(snapshot.values())).fill_(1e6)
    assert stream.memory_bytes() == sum(t.nbytes for t in snapshot.values())
    assert torch.equal(model(vtest_frames[5], stream, budget=0.3).features,
                       model(vtest_frames[5], twin, budget=0.3).features)
    assert reference.features.shape == (89, 32)


@pytest.mark.parametrize("frame", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                                   np.zeros((10, 10, 4), np.uint8), [[0, 0, 0]]])
def test_bad_frames_are_rejected(model, frame):
    with pytest.raises(ValueError, match="uint8"):
        model(frame, model.new_stream())


@pytest.mark.parametrize("budget", [0.0, -0.5, 1.5])
def test_bad_budgets_are_rejected(model, vtest_frames, budget):
    with pytest.raises(ValueError, match="budget"):
        model(vtest_frames[0], model.new_stream(), budget=budget)


def test_bad_stream_config_is_rejected():
    for bad in (dict(refresh_interval=-1), dict(attention="fast"), dict(sparse_max_fraction=2.0),
                dict(cache_dtype=torch.float16)):
        with pytest.raises(ValueError):
            StreamConfig(**bad)


@pytest.mark.parametrize("attention", ATTENTION_MODES)
def test_memory_bytes_is_the_closed_form_of_each_mode_and_stays_flat(model, vtest_frames, attention):
    n, d, heads, blocks = 89, 32, 2, 3
    sparse_cache = heads * n * n + n * d + 3 * heads * n  # exp-logits, numerator, den, den peak, row max
    extra = {"query_rows": n * d, "dense": 0, "sparse": sparse_cache,
             "auto": sparse_cache}[attention]  # auto: 5 of 89 tokens change, below the crossover
    # three gate references (N x D), q|k|v (N x 3D), projection and MLP buffers, float32
    expected = 4 * blocks * (8 * n * d + extra)
    stream = model.new_stream(StreamConfig(attention=attention))
    for frame in vtest_frames:
        model(frame, stream, budget=0.05)
        assert stream.memory_bytes() == expected


def test_a_bfloat16_model_runs_streams_close_to_float32(tiny_dinov2_dir, vtest_frames, dense):
    import copy

    model16 = copy.deepcopy(load_model(tiny_dinov2_dir, short_side=SHORT_SIDE)).to(torch.bfloat16)
    stream = model16.new_stream()
    for frame, reference in zip(vtest_frames[:4], dense):
        features = model16(frame, stream, budget=0.5).features
        assert features.dtype == torch.float32
        cosine = torch.nn.functional.cosine_similarity(features, reference, dim=-1)
        assert 0.99 < float(cosine.min()) and float((features - reference).abs().max()) > 1e-4  # really bf16


def test_remembered_position_embeddings_follow_weight_changes(tiny_dinov2_dir, vtest_frames):
    model = load_model(tiny_dinov2_dir, short_side=SHORT_SIDE)
    before = model.dense(vtest_frames[0]).features
    assert torch.equal(model.dense(vtest_frames[0]).features, before)  # remembered: same result
    with torch.no_grad():
        model.embeddings.position_embeddings.mul_(2.0)  # in place: a new version of the parameter
    changed = model.dense(vtest_frames[0]).features
    assert _max_error(changed, before) > 1e-2
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})  # new storage
    assert torch.equal(model.dense(vtest_frames[0]).features, changed)
