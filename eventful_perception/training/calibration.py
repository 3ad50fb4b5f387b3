"""Score calibration: the exponent that makes 0.5 the best operating point on the training frames.

A head trained with centreness-weighted quality targets ranks detections well but its scores sit
lower than 0.5 (its most central tokens hedge between neighbours). A monotone power keeps every
ranking (mAP, NMS order) and moves the F1-best threshold t* of the training frames, pooled over
input scales, onto the package-wide default 0.5: score' = score ** (ln 0.5 / ln t*).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eventful_perception.models.results import Detections
from eventful_perception.models.token_head import TokenHead
from eventful_perception.training.evaluate import ground_truth, predict
from eventful_perception.training.features import SampleFeatures
from eventful_perception.training.labels import FrameLabels
from eventful_perception.training.metrics import GroundTruth, precision_recall

DEFAULT_THRESHOLD = 0.5
_CANDIDATES = np.round(np.arange(0.10, 0.91, 0.01), 2)


@dataclass(frozen=True)
class Calibration:
    """The F1-best raw threshold on the calibration frames, its F1 and the resulting exponent."""

    threshold: float
    f1: float
    exponent: float


def calibrate(head: TokenHead, frames: list[tuple[SampleFeatures, FrameLabels]]) -> Calibration:
    """Calibration of the uncalibrated `head` on `frames` (features, labels in sample pixels)."""
    if head.config.score_exponent != 1.0:
        raise ValueError("calibrate an uncalibrated head (score_exponent 1)")
    predictions = [predict(head, features, float(_CANDIDATES[0])) for features, _ in frames]
    return fit_exponent(predictions, [ground_truth(labels) for _, labels in frames])


def fit_exponent(predictions: list[Detections], truths: list[GroundTruth]) -> Calibration:
    """The lowest raw threshold of the best pooled F1 (0.10-0.90 in steps of 0.01) and its exponent."""
    best_f1, best_threshold = -1.0, DEFAULT_THRESHOLD
    for threshold in _CANDIDATES:
        precision, recall = precision_recall(predictions, truths, float(threshold))
        f1 = 2 * precision * recall / max(precision + recall, 1e-9)
        if f1 > best_f1:
            best_f1, best_threshold = f1, float(threshold)
    return Calibration(best_threshold, best_f1, math.log(DEFAULT_THRESHOLD) / math.log(best_threshold))
