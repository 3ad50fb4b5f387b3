"""DVT feature reuse: DVT's equations written here, transformers with the offsets at every layer's
input, the Eventful gates seeing a change of the reused tokens, the ladder passing a stage's tokens
of the same frame on, loading, and distillation lowering its loss."""
import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from eventful_perception.clips import panning
from eventful_perception.eventful.counting import FlopCounter
from eventful_perception.eventful.policy import Threshold
from eventful_perception.granularity import Ladder, LadderConfig
from eventful_perception.models.loading import load_checkpoint, load_model
from eventful_perception.models.token_head import TokenHead, TokenHeadConfig
from eventful_perception.reuse import FeatureReuse, Reused, ReuseConfig, check_reuse, load_reuse, pass_on

pytestmark = pytest.mark.usefixtures("single_thread")


def _random_reuse(width: int, layers: int, up: int, down: int, seed: int = 0) -> FeatureReuse:
    """A module with random adapters (a fresh one's are zero: it would change nothing)."""
    module = FeatureReuse(ReuseConfig(width, layers, up, down))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return module.eval().requires_grad_(False)


def _dvt_offsets(module: FeatureReuse, tokens: torch.Tensor, up_grid, grid, first: int, n: int):
    """DVT's feature reuse from its equations: LayerNorm, MLP (GELU), the upstream grid, bilinear
    upsampling (OpenCV's, half-pixel centres), zeros for the other tokens, one linear per layer."""
    x = tokens[0, first:first + up_grid[0] * up_grid[1]].double()  # (h*w, D)
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    x = x * module.norm.weight.double() + module.norm.bias.double()
    h = x @ module.fc1.weight.double().T + module.fc1.bias.double()
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    c = (h @ module.fc2.weight.double().T + module.fc2.bias.double()).numpy()  # (h*w, C)
    maps = c.reshape(*up_grid, -1)  # row-major grid, channels last
    up = np.stack([cv2.resize(maps[..., k], grid[::-1], interpolation=cv2.INTER_LINEAR)
                   for k in range(maps.shape[-1])], axis=-1)  # (H, W, C)
    per_token = np.zeros((n, maps.shape[-1]))
    per_token[first:first + grid[0] * grid[1]] = up.reshape(-1, maps.shape[-1])
    return [torch.from_numpy(per_token) @ a.weight.double().T for a in module.adapters]


@pytest.mark.parametrize("up_grid, grid", [((4, 5), (6, 8)), ((3, 7), (5, 11))])
def test_offsets_follow_dvts_equations(up_grid, grid):
    module = _random_reuse(16, 3, 56, 84)
    first, n = 1, 1 + grid[0] * grid[1] + 5  # a class token, the patches, 5 detection tokens
    tokens = torch.randn(1, 1 + up_grid[0] * up_grid[1] + 5, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = module(Reused(module, tokens, up_grid), grid, first, n, FlopCounter())
    expected = _dvt_offsets(module, tokens, up_grid, grid, first, n)
    for offset, reference in zip(ours, expected):
        assert offset.shape == (1, n, 16)
        assert (offset[0].double() - reference).abs().max() <= 1e-4 * reference.abs().max()
    assert all(o[0, :first].abs().max() == 0 and o[0, -5:].abs().max() == 0 for o in ours)
    # controls: the upstream tokens read column-major, or the grid upsampled to its transpose
    transposed = tokens.clone()
    patches = tokens[0, 1:1 + up_grid[0] * up_grid[1]].reshape(*up_grid, 16).transpose(0, 1).reshape(-1, 16)
    transposed[0, 1:1 + len(patches)] = patches
    wrong = _dvt_offsets(module, transposed, up_grid, grid, first, n)
    assert (ours[0][0].double() - wrong[0]).abs().max() > 0.1 * expected[0].abs().max()


def _hooked_transformers(folder, offsets):
    """transformers' own DINOv2 with `offsets[i]` added to the input of layer i."""
    from transformers import Dinov2Model

    reference = Dinov2Model.from_pretrained(folder, local_files_only=True).eval()
    for layer, offset in zip(reference.encoder.layer, offsets):
        def add(module, args, kwargs, offset=offset):
            if args:
                return (args[0] + offset, *args[1:]), kwargs
            return args, kwargs | {"hidden_states": kwargs["hidden_states"] + offset}
        layer.register_forward_pre_hook(add, with_kwargs=True)
    return reference


def test_reuse_enters_every_layer_input_as_in_transformers(tiny_dinov2_dir):
    model = load_model(tiny_dinov2_dir)
    module = _random_reuse(32, len(model.blocks), 56, 84)
    small, large = (torch.randn(1, 3, s, s * 4 // 3 // 14 * 14, generator=torch.Generator().manual_seed(s))
                    for s in (56, 84))
    with torch.no_grad():
        upstream, up_grid, _ = model.encode(small, FlopCounter())
        reused = Reused(module, upstream, up_grid)
        ours = model.encode(large, FlopCounter(), reuse=reused)[0]
        offsets = reused.offsets((6, 8), 1, 1 + 6 * 8, FlopCounter())
        expected = _hooked_transformers(tiny_dinov2_dir, offsets)(pixel_values=large).last_hidden_state
        first_only = _hooked_transformers(tiny_dinov2_dir, offsets[:1])(pixel_values=large).last_hidden_state
        plain = model.encode(large, FlopCounter())[0]
    assert (ours - expected).abs().max() <= 1e-4
    assert (ours - first_only).abs().max() > 1e-2 and (ours - plain).abs().max() > 1e-2  # controls


def test_a_fresh_module_is_the_plain_stage_and_eventful_equals_dense_with_reuse(tiny_yolos_dir, vtest_frames):
    model = load_model(tiny_yolos_dir)
    up = model.dense(vtest_frames[0], short_side=96)
    fresh = FeatureReuse(ReuseConfig(32, len(model.blocks), 96, 128))
    assert torch.equal(model.dense(vtest_frames[0], reuse=pass_on(fresh, up, model.device)).features,
                       model.dense(vtest_frames[0]).features)
    module, stream = _random_reuse(32, len(model.blocks), 96, 128), model.new_stream()
    for frame in vtest_frames[:3]:
        reused = pass_on(module, model.dense(frame, short_side=96), model.device)
        eventful = model(frame, stream, budget=1.0, reuse=reused)
        dense = model.dense(frame, reuse=reused)
        assert (eventful.features - dense.features).abs().max() <= 1e-4
        assert (dense.features - model.dense(frame).features).abs().max() > 1e-2


def test_the_gates_see_a_change_of_the_reused_tokens(tiny_yolos_dir, vtest_frames):
    """The same frame twice: with the same reused tokens nothing but the always-computed tokens
    is recomputed; with other reused tokens the stream recomputes them and is exact again."""
    model = load_model(tiny_yolos_dir)
    module, frame = _random_reuse(32, len(model.blocks), 96, 128), vtest_frames[0]
    before, after = (pass_on(module, model.dense(f, short_side=96), model.device) for f in vtest_frames[:2])
    always = len(model.always_computed(model.dense(frame).usage.tokens_total))
    same, changed = model.new_stream(), model.new_stream()
    for stream, second in ((same, before), (changed, after)):
        model(frame, stream, reuse=before, policy=Threshold(1e-3))
        result = model(frame, stream, reuse=second, policy=Threshold(1e-3))
        if stream is same:
            assert result.usage.tokens_per_block[0] == always
        else:
            assert result.usage.tokens_per_block[0] > result.usage.tokens_total // 2
            assert (result.features - model.dense(frame, reuse=after).features).abs().max() <= 1e-3


def test_the_ladder_passes_each_stages_tokens_of_the_same_frame_on(tiny_yolos_dir, vtest_frames):
    model = load_model(tiny_yolos_dir, short_side=160)
    sides = (96, 128, 160)
    modules = {1: _random_reuse(32, len(model.blocks), 96, 128, 1), 2: _random_reuse(32, len(model.blocks), 128, 160, 2)}
    config = LadderConfig(sides, {0.5: (math.inf, math.inf)}, ladder_below=1.0)  # never an early exit
    ladder = Ladder(model, config, modules)
    state, previous = ladder.new_state(), None
    for frame in panning(vtest_frames[:3], 700, 5):  # a moving camera: the ladder, every stage dense
        out = ladder(frame, state, 0.5)
        r0 = model.dense(frame, short_side=96)
        r1 = model.dense(frame, short_side=128, reuse=pass_on(modules[1], r0, model.device))
        r2 = model.dense(frame, short_side=160, reuse=pass_on(modules[2], r1, model.device))
        assert out.stage == 2 and (out.result.features - r2.features).abs().max() <= 1e-4
        if previous is not None:  # control: a stage fed the previous frame's coarser tokens
            stale = model.dense(frame, short_side=160, reuse=pass_on(modules[2], previous, model.device))
            assert (out.result.features - stale.features).abs().max() > 1e-2
        previous = r1


def test_modules_must_join_the_stages_they_were_trained_between(tmp_path):
    module = _random_reuse(16, 2, 224, 336)
    check_reuse({1: module}, (224, 336, 448))
    with pytest.raises(ValueError, match=r"expects short sides \(336, 448\).*trained for \(224, 336\)"):
        check_reuse({2: module}, (224, 336, 448))
    with pytest.raises(ValueError, match="stage 0"):
        check_reuse({0: module}, (224, 336, 448))
    module.save(tmp_path / "224-336")
    (loaded,) = load_reuse(tmp_path, (224, 336, 448)).values()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), module.state_dict().values()))
    with pytest.raises(ValueError, match="not a stage"):
        load_reuse(tmp_path, (160, 448))
    (tmp_path / "224-336" / "reuse.json").write_text('{"hidden_size": 16}')
    with pytest.raises(ValueError, match="224-336"):
        load_reuse(tmp_path, (224, 336, 448))


def test_distillation_lowers_its_loss(tiny_dinov2_dir, vtest_frames):
    """A few epochs on planted targets: only the module learns, through the frozen backbone."""
    from eventful_perception.training.reuse import ReuseTrainConfig, Target, mean_loss, train_reuse

    torch.manual_seed(0)
    head = TokenHead(TokenHeadConfig(("person",), 32, mlp_dim=16)).eval()
    model = load_checkpoint(tiny_dinov2_dir, 112, head).eval()
    config = ReuseTrainConfig(upstream_side=56, downstream_side=84, epochs=12, learning_rate=1e-2)
    samples = []
    for frame in vtest_frames[:4]:
        up = model.dense(frame, short_side=56)
        boxes = torch.tensor([[300.0, 150.0, 420.0, 450.0]])
        samples.append((frame, Target(up.features[None].half(), up.grid, boxes, torch.zeros(0, 4))))
    trained = train_reuse(model, samples, config)
    assert mean_loss(model, trained, samples, config) < 0.8 * mean_loss(model, None, samples, config)
    assert all(not p.requires_grad for p in model.parameters())


def test_cached_targets_belong_to_one_head(tiny_dinov2_dir):
    """The targets are a head's detections: other NMS settings or other weights get other files."""
    from eventful_perception.training.reuse import _head_digest

    torch.manual_seed(0)
    head = TokenHead(TokenHeadConfig(("person",), 32, mlp_dim=16)).eval()
    model = load_checkpoint(tiny_dinov2_dir, 112, head).eval()
    digest = _head_digest(model)
    assert _head_digest(load_checkpoint(tiny_dinov2_dir, 112, head).eval()) == digest
    head.config = replace(head.config, nms_iou=0.4)
    assert _head_digest(model) != digest
    head.config = replace(head.config, nms_iou=0.5)
    with torch.no_grad():
        head.box.bias.add_(1e-3)
    assert _head_digest(model) != digest
