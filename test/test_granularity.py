"""The granularity ladder (DVT stages on one Eventful detector): stages, exit rule, threshold
fitting and the controller's law."""
import math

import numpy as np
import pytest
import torch

from eventful_perception.clips import panning
from eventful_perception.granularity import ExitRule, Ladder, LadderConfig, finest_px, fit_exits, plan_frame
from eventful_perception.motion import GlobalMotion
from eventful_perception.fit_exits import realised_cost
from eventful_perception.models.loading import load_model
from eventful_perception.models.results import Detections


@pytest.fixture(scope="module")
def model(single_thread):
    return load_model("default")


def detections(scores):
    scores = np.asarray(scores, np.float32)
    return Detections(np.tile([0, 0, 10, 10], (len(scores), 1)), scores, ["person"] * len(scores))


@pytest.mark.parametrize("side", [224, 336])
def test_each_stage_alone_at_budget_1_equals_the_dense_model_at_its_scale(model, vtest_frames, side):
    stream = model.new_stream()
    for frame in vtest_frames[:3]:
        result = model(frame, stream, budget=1.0, short_side=side)
        dense = model.dense(frame, short_side=side)
        assert result.features.shape == dense.features.shape != model.dense(frame).features.shape
        assert torch.allclose(result.features, dense.features, atol=1e-4)
        np.testing.assert_allclose(result.detections.boxes, dense.detections.boxes, atol=1e-2)


def test_a_stage_skipped_for_some_frames_equals_a_stream_that_only_saw_its_frames(model, vtest_frames):
    """Stage states are independent: the finest stage of a ladder whose moving frames stopped at
    the coarse stage holds exactly what a lone stream fed the finest stage's frames holds; its
    first frame after skipped ones is a full update (no ghosts of the older view)."""
    config = LadderConfig(exit_thresholds={0.5: (0.0, 0.0)}, ladder_below=1.0)  # moving: exit at 0
    ladder = Ladder(model, config)
    state = ladder.new_state()
    frames = vtest_frames[:2] + list(panning(vtest_frames[2:5], 700, 6)) + vtest_frames[5:7]
    results = [ladder(frame, state, budget=0.5) for frame in frames]
    stages = [r.stage for r in results]
    # frame 0: motion unknown -> ladder -> exits at 0; 1: static -> finest; 2: the pan starts
    # (a jump) -> 0; 3-4: panning -> 0; 5: jump back -> 0; 6: static -> finest
    assert stages == [0, 2, 0, 0, 0, 0, 2], stages
    lone = model.new_stream()
    model(frames[1], lone, budget=0.5)
    expected = model(frames[6], lone, budget=1.0)  # frames 2-5 skipped: all tokens updated
    assert results[6].result.usage.tokens_updated == results[6].result.usage.tokens_total
    assert torch.equal(results[6].result.features, expected.features)
    final = ladder(vtest_frames[7], state, budget=0.5)  # ran last frame: a partial update again
    assert final.stage == 2 and final.result.usage.tokens_updated < final.result.usage.tokens_total
    lone_again = model(vtest_frames[7], lone, budget=0.5)
    assert torch.equal(final.result.features, lone_again.features)
    assert state.exits == [5, 0, 3] and state.exit_rates()[0] == pytest.approx(5 / 8)


def test_the_exit_rule_is_a_closed_form_of_the_least_certain_candidate():
    rule = ExitRule((0.5, 0.8), score_low=0.1, score_threshold=0.5)
    assert rule.confidence(None) == rule.confidence(detections([])) == 1.0
    assert rule.confidence(detections([0.05])) == 1.0  # below score_low: not a candidate
    assert rule.confidence(detections([0.9, 0.3])) == pytest.approx((0.5 - 0.3) / 0.4)
    assert rule.confidence(detections([0.9, 0.6])) == pytest.approx((0.6 - 0.5) / 0.5)
    assert rule.exits(0, 0.5) and not rule.exits(0, 0.49) and not rule.exits(1, 0.79)
    assert rule.exits(2, 0.0)  # the last stage always exits
    assert rule.confidence(detections([0.3, 0.9])) == rule.confidence(detections([0.9, 0.3]))


def test_the_exit_rule_gives_the_same_stage_for_the_same_input(model, vtest_frames):
    config = LadderConfig(exit_thresholds={0.5: (0.6, 0.6)}, ladder_below=1.0)
    runs = []
    for _ in range(2):
        ladder, frames = Ladder(model, config), list(panning(vtest_frames[:4], 700, 5))
        state = ladder.new_state()
        results = [ladder(f, state, 0.5) for f in frames]
        runs.append([(r.stage, r.confidences) for r in results])
        for r in results:  # the first stage whose confidence reaches 0.6 exits; the last always
            confident = [k for k, c in enumerate(r.confidences[:-1]) if c >= 0.6]
            assert r.stage == r.plan.first_stage + (confident[0] if confident else len(r.confidences) - 1)
    assert runs[0] == runs[1]


def test_the_controller_follows_its_law():
    config = LadderConfig(still_px=0.5, ladder_below=0.3)
    assert plan_frame(config, 0.2, 0.2) == plan_frame(config, 0.2, 0.5)
    static = plan_frame(config, 0.2, 0.2)
    assert (static.first_stage, static.update_fractions, static.moving) == (2, (1.0, 1.0, 0.2), False)
    for motion in (0.51, 3.0, None):  # moving, or motion unknown
        moving = plan_frame(config, 0.29, motion)
        assert (moving.first_stage, moving.update_fractions, moving.moving) == (0, (1.0, 1.0, 1.0), True)
        generous = plan_frame(config, 0.3, motion)  # at or above ladder_below: the finest, gated
        assert (generous.first_stage, generous.update_fractions, generous.moving) == (2, (1.0, 1.0, 0.3), True)


def test_exit_thresholds_are_chosen_by_the_largest_fitted_budget_not_above():
    config = LadderConfig(exit_thresholds={0.3: (0.1, 0.2), 0.6: (0.5, 0.6)})
    assert config.exit_rule(0.2, 0.5).thresholds == (0.1, 0.2)
    assert config.exit_rule(0.59, 0.5).thresholds == (0.1, 0.2)
    assert config.exit_rule(0.7, 0.5).thresholds == (0.5, 0.6)
    assert LadderConfig().exit_rule(0.5, 0.5).thresholds == (math.inf, math.inf)  # none fitted
    with pytest.raises(ValueError, match="expected 2 exit thresholds"):
        LadderConfig(exit_thresholds={0.5: (0.1,)})
    with pytest.raises(ValueError, match="increasing"):
        LadderConfig(short_sides=(448, 224))


def brute_force_cost(confidences, costs, thresholds):
    cumulative, total = np.cumsum(costs), 0.0
    for row in confidences:
        stage = next((k for k, t in enumerate(thresholds) if row[k] >= t), len(costs) - 1)
        total += cumulative[stage]
    return total / len(confidences)


@pytest.mark.parametrize("budget", [0.3, 0.45, 0.6, 0.9])
def test_fitted_thresholds_meet_their_budget_within_5_percent(budget):
    rng = np.random.default_rng(0)
    confidences = rng.random((400, 3)) ** np.array([2.0, 1.0, 0.5])  # later stages more sure
    costs = [0.19, 0.49, 1.0]
    thresholds = fit_exits(confidences, costs, [budget])[budget]
    cost = realised_cost(confidences, costs, thresholds)
    assert cost == pytest.approx(brute_force_cost(confidences, costs, thresholds))
    assert abs(cost - budget) <= 0.05 * budget, (thresholds, cost)
    # DVT's shares: the exit counts follow q^k, so stage 1's share over stage 0's equals
    # stage 2's over stage 1's
    stage = [next((k for k, t in enumerate(thresholds) if row[k] >= t), 2) for row in confidences]
    shares = np.bincount(stage, minlength=3) / len(stage)
    assert shares[1] / shares[0] == pytest.approx(shares[2] / shares[1], rel=0.1)


def test_a_fit_on_the_whole_population_instead_of_the_frames_that_reach_a_stage_misses_the_budget():
    """The control for the 5 % bound: quantiles of every frame's stage-1 confidence (not of the
    frames that did not exit at stage 0) exit the wrong number of frames."""
    rng = np.random.default_rng(0)
    base = rng.random(400)
    confidences = np.stack([base, base ** 0.5, np.ones(400)], axis=1)  # correlated stages
    costs, budget = [0.19, 0.49, 1.0], 0.6
    right = fit_exits(confidences, costs, [budget])[budget]
    wrong_1 = float(np.quantile(confidences[:, 1], 1 - _share_1(right, confidences)))
    assert abs(realised_cost(confidences, costs, right) - budget) <= 0.05 * budget
    assert abs(realised_cost(confidences, costs, (right[0], wrong_1)) - budget) > 0.05 * budget


def _share_1(thresholds, confidences):
    exits_0 = confidences[:, 0] >= thresholds[0]
    return float(np.mean(~exits_0 & (confidences[:, 1] >= thresholds[1])))


def test_the_camera_motion_is_measured_in_finest_stage_pixels(vtest_frames):
    config = LadderConfig()
    estimator = GlobalMotion()
    frame = vtest_frames[0]
    panned = np.ascontiguousarray(np.roll(frame, 7, axis=1))  # content 7 px to the right
    assert estimator(frame) is None and finest_px(config, frame, None) is None  # no previous frame
    finest = 7 * config.short_sides[-1] / min(frame.shape[:2])
    assert finest_px(config, panned, estimator(panned)) == pytest.approx(finest, abs=0.2)
    assert finest_px(config, panned, estimator(panned)) == pytest.approx(0.0, abs=0.2)


def test_the_finest_stage_follows_a_moving_camera_and_not_a_still_one(model, vtest_frames):
    """At a budget >= ladder_below the finest stage runs gated; its stream gets the camera's
    motion exactly when the controller calls the camera moving."""
    config = LadderConfig(ladder_below=0.3)
    ladder = Ladder(model, config)
    state = ladder.new_state()
    frames = vtest_frames[:2] + list(panning(vtest_frames[2:6], 700, 6))  # still, then 6 px/frame
    estimator, following, ignoring = GlobalMotion(), model.new_stream(), model.new_stream()
    differs = []
    for frame in frames:
        out = ladder(frame, state, budget=0.5)
        motion = estimator(frame)
        moving = motion is not None and finest_px(config, frame, motion) > config.still_px
        expected = model(frame, following, budget=0.5, motion=motion if moving else None)
        assert out.stage == 2 and out.plan.moving == (motion is None or moving)
        assert torch.equal(out.result.features, expected.features)
        differs.append(not torch.equal(out.result.features, model(frame, ignoring, budget=0.5).features))
    # The jump into the pan is no motion GlobalMotion trusts (None); then the state moves once the
    # content has moved half a patch (4.7 model-input px per frame here), and differs from then on.
    assert differs == [False, False, False, False, True, True], differs
