"""Score calibration: the fitted exponent (closed form) and what it does to a head's detections."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from eventful_perception.models.results import Detections
from eventful_perception.models.token_head import TokenHead, TokenHeadConfig, token_scores
from eventful_perception.training.calibration import fit_exponent
from eventful_perception.training.metrics import GroundTruth


def frame(boxes, scores):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      ["person"] * len(scores))


def test_exponent_moves_the_f1_best_threshold_onto_one_half():
    """10 frames, one person each, found at 0.30; a false box at 0.20 in each.

    Thresholds up to 0.20 keep both (precision 0.5, F1 2/3); 0.21-0.30 only the true ones
    (F1 1); above 0.30 nothing. The lowest F1-best threshold is 0.21, so the exponent is
    ln 0.5 / ln 0.21 and 0.30 ** exponent = 0.5 ** (ln 0.30 / ln 0.21) lies above 0.5.
    """
    truths = [GroundTruth(np.array([[10, 10, 50, 100]], np.float32), ["person"]) for _ in range(10)]
    predictions = [frame([[11, 10, 50, 98], [200, 10, 240, 100]], [0.30, 0.20]) for _ in range(10)]
    calibration = fit_exponent(predictions, truths)
    assert calibration.threshold == pytest.approx(0.21)
    assert calibration.f1 == pytest.approx(1.0)
    assert calibration.exponent == pytest.approx(math.log(0.5) / math.log(0.21))
    assert 0.30 ** calibration.exponent > 0.5 > 0.20 ** calibration.exponent


def test_calibrated_head_is_the_raw_head_at_the_fitted_threshold():
    """Scores become raw ** exponent; boxes, NMS and order stay: threshold 0.5 on the calibrated
    head keeps exactly what the raw threshold 0.5 ** (1 / exponent) keeps."""
    torch.manual_seed(0)
    raw = TokenHead(TokenHeadConfig(("person",), hidden_size=8, mlp_dim=16)).eval()
    with torch.no_grad():
        raw.objectness.weight.mul_(20)
        raw.objectness.bias.fill_(-0.8)  # raw scores on both sides of 0.5 ** (1 / 0.6) = 0.315
    calibrated = TokenHead(replace(raw.config, score_exponent=0.6)).eval()
    calibrated.load_state_dict(raw.state_dict())
    tokens, grid = torch.randn(1, 48, 8), (6, 8)
    raw_threshold = 0.5 ** (1 / 0.6)
    (expected,) = raw.predict(tokens, grid, 14, score_threshold=raw_threshold)
    (found,) = calibrated.predict(tokens, grid, 14, score_threshold=0.5)
    below = int((token_scores(raw(tokens)) < raw_threshold).sum())
    assert len(expected) > 3 and below > 3  # the threshold cuts: the comparison means something
    np.testing.assert_array_equal(found.boxes, expected.boxes)
    np.testing.assert_allclose(found.scores, expected.scores ** 0.6, rtol=1e-5)
    # An exponent applied the other way round keeps other boxes.
    (inverted,) = raw.predict(tokens, grid, 14, score_threshold=0.5 ** 0.6)
    assert len(inverted) != len(found)


def test_exponent_must_be_positive():
    with pytest.raises(ValueError, match="score_exponent"):
        TokenHeadConfig(("person",), hidden_size=8, score_exponent=0.0)
