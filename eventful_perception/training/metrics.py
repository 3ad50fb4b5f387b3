"""Mean average precision at IoU 0.5 (VOC-style, all-point interpolation), precision / recall at a
threshold and precision per score bin, in plain numpy."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eventful_perception.models.results import Detections


@dataclass(frozen=True)
class GroundTruth:
    """Reference objects of one frame: boxes (K, 4), labels, and ignore regions (M, 4)."""

    boxes: np.ndarray
    labels: list[str]
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


def mean_average_precision(predictions: list[Detections], truths: list[GroundTruth],
                           iou_threshold: float = 0.5) -> float:
    """mAP over the classes present in `truths`; NaN when there is no reference object at all.

    Predictions are matched greedily by decreasing score to the unmatched reference box of the
    same class with the highest IoU >= `iou_threshold`. An unmatched prediction that lies mostly
    (>= 50 % of its area) inside an ignore region counts neither as true nor as false positive.
    """
    if len(predictions) != len(truths):
        raise ValueError(f"expected one prediction per frame, got {len(predictions)} for {len(truths)}")
    classes = sorted({label for truth in truths for label in truth.labels})
    if not classes:
        return float("nan")
    return float(np.mean([average_precision(predictions, truths, c, iou_threshold) for c in classes]))


def average_precision(predictions: list[Detections], truths: list[GroundTruth], label: str,
                      iou_threshold: float = 0.5) -> float:
    """AP of one class (area under the precision envelope over recall)."""
    scores, hits, n_truth = [], [], 0
    for prediction, truth in zip(predictions, truths):
        mine = np.array([l == label for l in prediction.labels], bool)
        reference = truth.boxes[np.array([l == label for l in truth.labels], bool)].reshape(-1, 4)
        n_truth += len(reference)
        frame_scores, frame_hits = _match(prediction.boxes[mine], prediction.scores[mine], reference,
                                          truth.ignore, iou_threshold)
        scores += frame_scores
        hits += frame_hits
    if n_truth == 0:
        return float("nan")
    order = np.argsort(-np.array(scores), kind="stable")
    true_positives = np.cumsum(np.array(hits, float)[order])
    recall = true_positives / n_truth
    precision = true_positives / np.arange(1, len(order) + 1)
    return _area(recall, precision)


def precision_recall(predictions: list[Detections], truths: list[GroundTruth], score_threshold: float,
                     iou_threshold: float = 0.5) -> tuple[float, float]:
    """Precision and recall (all classes pooled) of the predictions scoring >= `score_threshold`.

    Precision is 1 when nothing is predicted; matching and ignore regions as in `average_precision`.
    """
    _, hits, n_truth = _pooled_matches(predictions, truths, score_threshold, iou_threshold)
    precision = sum(hits) / len(hits) if hits else 1.0
    return precision, sum(hits) / n_truth if n_truth else float("nan")


def precision_by_score(predictions: list[Detections], truths: list[GroundTruth],
                       edges: tuple[float, ...], iou_threshold: float = 0.5) -> list[dict]:
    """Reliability of the scores: for each bin [edges[i], edges[i + 1]) (the last one closed) the
    counted predictions and the share of them that match a reference object (None when empty);
    matching and ignore regions as in `average_precision`."""
    scores, hits, _ = _pooled_matches(predictions, truths, edges[0], iou_threshold)
    scores, hits = np.array(scores), np.array(hits, bool)
    out = []
    for low, high in zip(edges, edges[1:]):
        below = scores <= high if high == edges[-1] else scores < high
        inside = (scores >= low) & below
        out.append({"scores": [low, high], "detections": int(inside.sum()),
                    "precision": float(hits[inside].mean()) if inside.any() else None})
    return out


def _pooled_matches(predictions: list[Detections], truths: list[GroundTruth], score_threshold: float,
                    iou_threshold: float) -> tuple[list[float], list[bool], int]:
    """Scores and true/false flags of every counted prediction scoring >= `score_threshold`,
    matched class by class, and the number of reference objects."""
    scores, hits, n_truth = [], [], 0
    for prediction, truth in zip(predictions, truths, strict=True):
        for label in set(prediction.labels) | set(truth.labels):
            mine = np.array([l == label for l in prediction.labels], bool) & (prediction.scores >= score_threshold)
            reference = truth.boxes[np.array([l == label for l in truth.labels], bool)].reshape(-1, 4)
            n_truth += len(reference)
            frame_scores, frame_hits = _match(prediction.boxes[mine], prediction.scores[mine], reference,
                                              truth.ignore, iou_threshold)
            scores += frame_scores
            hits += frame_hits
    return scores, hits, n_truth


def _match(boxes: np.ndarray, scores: np.ndarray, reference: np.ndarray, ignore: np.ndarray,
           iou_threshold: float) -> tuple[list[float], list[bool]]:
    """Scores and true/false flags of the counted predictions of one frame."""
    order = np.argsort(-scores, kind="stable")
    iou = iou_matrix(boxes[order], reference) if len(reference) else np.zeros((len(boxes), 0))
    taken = np.zeros(len(reference), bool)
    out_scores, out_hits = [], []
    for row, index in enumerate(order):
        candidates = np.where(~taken & (iou[row] >= iou_threshold), iou[row], -1.0)
        if len(reference) and candidates.max() >= 0:
            taken[candidates.argmax()] = True
            out_scores.append(float(scores[index]))
            out_hits.append(True)
        elif not _mostly_inside(boxes[index], ignore):
            out_scores.append(float(scores[index]))
            out_hits.append(False)
    return out_scores, out_hits


def _mostly_inside(box: np.ndarray, regions: np.ndarray) -> bool:
    if len(regions) == 0:
        return False
    top_left = np.maximum(box[:2], regions[:, :2])  # (M, 2)
    bottom_right = np.minimum(box[2:], regions[:, 2:])  # (M, 2)
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=1)  # (M,)
    area = max(float(np.prod(box[2:] - box[:2])), 1e-9)
    return bool((intersection / area >= 0.5).any())


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (K, M) of boxes a (K, 4) and b (M, 4)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])  # (K, M, 2)
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (K, M, 2)
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)  # (K, M)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=-1)
    return intersection / np.maximum(area_a[:, None] + area_b[None, :] - intersection, 1e-9)


def _area(recall: np.ndarray, precision: np.ndarray) -> float:
    recall = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    precision = np.concatenate([[1.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # envelope: best precision at >= recall
    return float(np.sum(np.diff(recall) * precision[1:]))
