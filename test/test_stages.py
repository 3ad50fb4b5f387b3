"""StagedStream, the one camera state the node and `detect` share: fixed granularity is the
model's own stream exactly; adaptive is the granularity ladder, wrapped without change."""
import numpy as np
import pytest

import eventful_perception
from eventful_perception import assets, clips
from eventful_perception.eventful.stream import StreamConfig
from eventful_perception.granularity import Ladder, LadderConfig
from eventful_perception.stages import StagedStream, load_ladder_config
from ros_helpers import REPO

# thresholds 0.0 for the coarse stages: a frame exits at the first stage it runs
LADDER = LadderConfig(short_sides=(64, 96, 128), exit_thresholds={0.5: (0.0, 0.0)}, ladder_below=1.0)


@pytest.fixture(scope="module")
def clip(vtest_frames):
    """Still for 4 frames, then panning 8 px per frame (the first panning crop is still)."""
    return [*clips.panning(vtest_frames[:4], 640, 0), *clips.panning(vtest_frames[4:10], 640, 8)]


@pytest.fixture(scope="module")
def model(tiny_yolos_dir):
    return eventful_perception.load_model(str(tiny_yolos_dir))


def test_fixed_is_the_models_own_stream(model, vtest_frames):
    staged, stream = StagedStream(model, StreamConfig()), model.new_stream(StreamConfig())
    for frame in vtest_frames[:4]:
        got = staged(frame, 0.5, score_threshold=0.0)
        want = model(frame, stream, budget=0.5, score_threshold=0.0)
        assert (got.stage, got.stages, got.stages_run, got.short_side) == (0, 1, 1, 128)
        np.testing.assert_array_equal(got.result.detections.boxes, want.detections.boxes)
        assert (got.result.usage.tokens_updated, got.result.usage.gflops) == (
            want.usage.tokens_updated, want.usage.gflops)
    assert staged.exit_rates() == [] and staged.memory_bytes() == stream.memory_bytes()


def test_adaptive_is_the_ladder_with_its_costs_over_every_stage(model, clip):
    staged, ladder = StagedStream(model, StreamConfig(), LADDER), Ladder(model, LADDER)
    state = ladder.new_state(StreamConfig())
    for frame in clip:
        got, want = staged(frame, 0.5, score_threshold=0.5), ladder(frame, state, 0.5, 0.5)
        assert (got.stage, got.stages, got.stages_run) == (want.stage, 3, len(want.confidences))
        assert got.short_side == LADDER.short_sides[want.stage]
        assert (got.result.usage.gflops, got.result.usage.gflops_dense) == (want.gflops,
                                                                          want.gflops_dense)
        assert got.result.usage.tokens_total == want.result.usage.tokens_total
        np.testing.assert_array_equal(got.result.detections.scores, want.result.detections.scores)
    assert staged.exit_rates() == list(zip(LADDER.short_sides, state.exit_rates()))
    # stage 0: frame 0 (no motion known yet) and the 5 panning frames after the first panning
    # crop, which is still where the still camera's was
    assert state.exits == [6, 0, 4]


def test_reset_forgets_the_motion_and_every_stage_but_keeps_the_exit_counts(model, clip):
    staged = StagedStream(model, StreamConfig(), LADDER)
    before = [staged(frame, 0.5).stage for frame in clip[:3]]
    assert staged.memory_bytes() > 0
    staged.reset()
    assert staged.memory_bytes() == 0  # every stage's stream, not only the motion, starts over
    after = staged(clip[2], 0.5)
    assert before == [0, 2, 2] and after.stage == 0  # no motion known after a reset
    assert after.result.usage.tokens_updated == after.result.usage.tokens_total
    assert sum(rate for _, rate in staged.exit_rates()) == pytest.approx(1.0)
    assert staged.exit_rates()[0][1] == pytest.approx(0.5)  # 2 of 4 frames at stage 0


def test_the_threshold_policy_needs_granularity_fixed(model, clip):
    with pytest.raises(ValueError, match="threshold policy needs granularity fixed"):
        StagedStream(model, StreamConfig(), LADDER)(clip[0], 0.5, threshold=0.2)


def test_ladder_config_errors_name_the_file(tmp_path):
    path = tmp_path / "exits.json"
    with pytest.raises(ValueError, match=f"exit thresholds file {path}: .*No such file"):
        load_ladder_config(path)
    path.write_text('{"short_sides": [224, 336], "score_low": 0.1, "exit_thresholds": {"0.5": []}}')
    with pytest.raises(ValueError, match="budget 0.5: expected 1 exit thresholds, got 0"):
        load_ladder_config(path)
    path.write_text(f'{{"short_sides": [224, 336], "score_low": 0.1, "exit_thresholds": {{}}, '
                    f'"reuse": "{tmp_path / "gone"}"}}')
    with pytest.raises(ValueError, match=f"exit thresholds file {path}: feature reuse folder .*gone does not exist"):
        load_ladder_config(path)


def test_the_shipped_ladder_has_feature_reuse_for_the_default_detector_only(model):
    shipped = load_ladder_config()
    assert shipped.reuse == "default"
    with pytest.raises(ValueError, match="trained for width 384 and 12 layers, the model has 32 and 3"):
        Ladder(model, LadderConfig(shipped.short_sides, reuse="default"))


def test_config_files_are_found_in_the_clone_and_missing_ones_named():
    assert assets.config_file("params.yaml") == REPO / "config" / "params.yaml"
    with pytest.raises(FileNotFoundError, match="config/no_such.json not found in .*config"):
        assets.config_file("no_such.json")
