"""mAP50 of eventful outputs against dense outputs of the same model on a held-out clip tail."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from eventful_perception import assets
from eventful_perception.models.results import Result
from eventful_perception.training.labels import FrameLabels, LabelConfig, iter_frames
from eventful_perception.training.metrics import GroundTruth, mean_average_precision
from eventful_perception.training.train import TrainConfig, split

# Low, so the eventful predictions keep their whole precision-recall curve.
_EVAL_SCORE_THRESHOLD = 0.05


def run(head_dir: Path, clip: str, budgets: list[float], label_config: LabelConfig,
        labels: dict[int, FrameLabels] | None = None) -> dict:
    """Run dense and eventful (one stream per budget) over every frame of the held-out tail.

    Returns per budget the mAP50 against the dense detections (score >= the model's default
    threshold) and the mean fraction of dense GFLOPs spent, plus mAP50 against `labels`.
    """
    from eventful_perception.models.loading import load_model
    from eventful_perception.models.token_head import TokenHead

    model = load_model(assets.default_backbone_dir())
    model.head = TokenHead.from_folder(head_dir)
    frames = _heldout_frames(clip, label_config)
    dense = _run(model, clip, frames, None)
    reference = _reference(dense, model.default_score_threshold)
    out = {"clip": clip, "frames": [frames[0], frames[-1]], "dense_threshold": model.default_score_threshold}
    if labels is not None:
        out["dense_map50_vs_labels"] = _against_labels(dense, frames, labels)
    for budget in budgets:
        results = _run(model, clip, frames, budget)
        entry = {
            "map50_vs_dense": mean_average_precision([r.detections for r in results], reference),
            "gflops_fraction": float(np.mean([r.usage.gflops / r.usage.gflops_dense for r in results])),
        }
        if labels is not None:
            entry["map50_vs_labels"] = _against_labels(results, frames, labels)
        out[f"budget_{budget}"] = entry
    return out


def _heldout_frames(clip: str, label_config: LabelConfig) -> list[int]:
    count = sum(1 for _ in iter_frames(assets.video_path(clip)))
    labelled = list(range(0, count, label_config.frame_step))
    _, tail = split(labelled, TrainConfig.holdout)
    return list(range(tail[0], count))


def _run(model, clip: str, frames: list[int], budget: float | None) -> list[Result]:
    stream = None if budget is None else model.new_stream()
    name = "dense" if budget is None else f"budget {budget}"
    out = []
    for _, frame in tqdm(iter_frames(assets.video_path(clip), set(frames)), total=len(frames),
                         desc=f"{clip} {name}", unit="frame"):
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if stream is None:
            out.append(model.dense(rgb, score_threshold=_EVAL_SCORE_THRESHOLD))
        else:
            out.append(model(rgb, stream, budget=budget, score_threshold=_EVAL_SCORE_THRESHOLD))
    return out


def _reference(results: list[Result], threshold: float) -> list[GroundTruth]:
    out = []
    for r in results:
        keep = r.detections.scores >= threshold
        out.append(GroundTruth(r.detections.boxes[keep], [l for l, k in zip(r.detections.labels, keep) if k]))
    return out


def _against_labels(results: list[Result], frames: list[int], labels: dict[int, FrameLabels]) -> float:
    pairs = [(r.detections, labels[f]) for r, f in zip(results, frames) if f in labels]
    return mean_average_precision([p for p, _ in pairs],
                                  [GroundTruth(l.boxes, ["person"] * len(l.boxes), l.ignore) for _, l in pairs])
