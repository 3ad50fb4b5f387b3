"""The model card's numbers: the head on held-out footage at short sides 224 / 336 / 448.

`python -m eventful_perception.training evaluate [--out HEAD_DIR] [--annotate DIR]` writes
`metrics.json` into the head folder:
- precision / recall at the default score threshold and mAP50 against the hand-labelled frames
  (`hand_labels.json`: vtest 640/700/760, carphone 10/90);
- mAP50 against cleaned teacher labels on the held-out vtest tail and the carphone close-up;
- recall of persons taller than 100 px (in vtest's 576-px frames);
- person boxes per frame on people-free stretches of `bikes.mp4` (and, separately, on the
  animated rabbit of `bigbuckbunny.mp4`), and boxes per frame on the one-person close-up;
- the share of detections matching a person per score bin (0.3-0.4 ... 0.7-1.0; hand labels, and
  teacher labels of the other frames): whether the default threshold means the same at every scale;
- eventful vs dense outputs of the same model at budgets 0.5 / 0.25 / 0.1 (static vtest tail).
Backbone tokens are cached per frame and scale under `<cache>/training/eval_features/`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from eventful_perception import assets
from eventful_perception.models.results import Detections
from eventful_perception.models.token_head import TokenHead
from eventful_perception.training import footage
from eventful_perception.training.features import PATCH_SIZE, Backbones, SampleFeatures, load_features, save_features
from eventful_perception.training.labels import FrameLabels, LabelConfig, hand_labels, label_video, load_labels, save_labels
from eventful_perception.training.metrics import GroundTruth, mean_average_precision, precision_by_score, precision_recall

SCALES = (224, 336, 448)
BUDGETS = (0.5, 0.25, 0.1)
EVAL_SCORE_THRESHOLD = 0.05  # low, so AP sees the whole precision-recall curve
SCORE_BINS = (0.3, 0.4, 0.5, 0.6, 0.7, 1.0)
TALL = 100.0  # px, in vtest's 576-px-high frames
TEACHER_SPANS = (footage.VideoSpan("vtest.avi", footage.VTEST_HELDOUT_START, None, 6, sample_every=2,
                                   static_camera=True),
                 footage.VideoSpan("carphone_pristine.mp4", 0, None, 10))
EMPTY_SPANS = (footage.VideoSpan("bikes.mp4", 50, 76, 10), footage.VideoSpan("bikes.mp4", 140, 186, 10),
               footage.VideoSpan("bikes.mp4", 220, 250, 10))
CARTOON_SPAN = footage.VideoSpan("bigbuckbunny.mp4", 0, None, 33)
EVENTFUL_SPAN = footage.VideoSpan("vtest.avi", 700, 730, 1)


def _work_dir() -> Path:
    return assets.cache_dir() / "training"


class FrameFeatures:
    """Cached dense backbone tokens of evaluation frames."""

    def __init__(self) -> None:
        self.backbones = Backbones(assets.default_backbone_dir())

    def get(self, video: str, frames: list[int], short_side: int) -> dict[int, SampleFeatures]:
        """`frame -> features` of `video` at `short_side`, computed once."""
        todo = [f for f in frames if not self.path(video, f, short_side).is_file()]
        for frame, rgb in tqdm(footage.video_frames(video, todo) if todo else [], total=len(todo),
                               desc=f"{video} @{short_side}", unit="frame", leave=False):
            save_features(self.backbones(rgb, short_side), self.path(video, frame, short_side))
        return {f: load_features(self.path(video, f, short_side)) for f in frames}

    @staticmethod
    def path(video: str, frame: int, short_side: int) -> Path:
        """Cache file of one frame's tokens."""
        return _work_dir() / "eval_features" / f"{video}_{frame}_{short_side}.safetensors"


def predict(head: TokenHead, features: SampleFeatures, score_threshold: float) -> Detections:
    """Head detections in original-frame pixels."""
    (detections,) = head.predict(features.tokens[None].float(), features.grid, PATCH_SIZE, score_threshold)
    return detections.scaled(*features.scale)


def _truth(labels: FrameLabels) -> GroundTruth:
    return GroundTruth(labels.boxes, ["person"] * len(labels.boxes), labels.ignore)


def teacher_labels(span: footage.VideoSpan) -> dict[int, FrameLabels]:
    """Cleaned teacher labels of every `sample_every`-th frame of an evaluation span (cached)."""
    config = LabelConfig()
    path = _work_dir() / "labels" / f"eval_{span.name}_{span.start}_{span.step}.json"
    labels = load_labels(path, config)
    if labels is None:
        from eventful_perception.training.teacher import Teacher

        frames = dict(footage.video_frames(span.name, span.frames(footage.frame_count(span.name))))
        labels = label_video(Teacher(assets.ensure_teacher()), frames, span.step, config,
                             footage.static_background(span, frames))
        labels = save_labels(labels, path, span.name, config)
    return {f: labels[f] for f in sorted(labels)[::span.sample_every]}


def scale_metrics(head: TokenHead, features: FrameFeatures, short_side: int, threshold: float) -> dict:
    """Every held-out metric of one input scale."""
    out = {}
    hand = [(v, f, l) for v, frames in hand_labels().items() for f, l in sorted(frames.items())]
    found = {(v, f): predict(head, features.get(v, [f], short_side)[f], EVAL_SCORE_THRESHOLD) for v, f, _ in hand}
    predictions, truths = [found[(v, f)] for v, f, _ in hand], [_truth(l) for _, _, l in hand]
    out["hand_precision"], out["hand_recall"] = precision_recall(predictions, truths, threshold)
    out["hand_map50"] = mean_average_precision(predictions, truths)
    labelled = list(zip(predictions, truths))  # hand labels, then teacher labels of other frames
    predictions, truths, tall = [], [], []
    for span in TEACHER_SPANS:
        labels = teacher_labels(span)
        frame_features = features.get(span.name, sorted(labels), short_side)
        for frame, label in sorted(labels.items()):
            predictions.append(predict(head, frame_features[frame], EVAL_SCORE_THRESHOLD))
            truths.append(_truth(label))
            if (span.name, frame) not in found:
                labelled.append((predictions[-1], truths[-1]))
            if span.name == "vtest.avi":
                tall.append((predictions[-1], _tall_only(label)))
        out[f"teacher_map50_{span.name}"] = mean_average_precision(predictions[-len(labels):], truths[-len(labels):])
    out["teacher_map50"] = mean_average_precision(predictions, truths)
    out["teacher_precision"], out["teacher_recall"] = precision_recall(predictions, truths, threshold)
    out["tall_recall_vs_teacher"] = precision_recall(*zip(*tall), threshold)[1]
    out["precision_by_score"] = precision_by_score(*zip(*labelled), SCORE_BINS)
    out["closeup_boxes_per_frame"] = _boxes_per_frame(head, features, [TEACHER_SPANS[1]], short_side, threshold)
    out["empty_street_persons_per_frame"] = _boxes_per_frame(head, features, EMPTY_SPANS, short_side, threshold)
    out["cartoon_rabbit_persons_per_frame"] = _boxes_per_frame(head, features, [CARTOON_SPAN], short_side, threshold)
    return out


def _tall_only(label: FrameLabels) -> GroundTruth:
    heights = label.boxes[:, 3] - label.boxes[:, 1]
    return GroundTruth(label.boxes[heights > TALL], ["person"] * int((heights > TALL).sum()),
                       np.concatenate([label.ignore, label.boxes[heights <= TALL]]))


def _boxes_per_frame(head, features: FrameFeatures, spans, short_side: int, threshold: float) -> float:
    counts = []
    for span in spans:
        frames = span.frames(footage.frame_count(span.name))
        for frame_features in features.get(span.name, frames, short_side).values():
            counts.append(len(predict(head, frame_features, threshold)))
    return float(np.mean(counts))


def eventful_vs_dense(head_dir: Path, span: footage.VideoSpan = EVENTFUL_SPAN,
                      budgets: tuple[float, ...] = BUDGETS) -> dict:
    """mAP50 of eventful detections (one stream per budget) against the dense ones (>= threshold)."""
    from eventful_perception.models.loading import load_checkpoint

    model = load_checkpoint(assets.default_backbone_dir(), head=TokenHead.from_folder(head_dir))
    frames = [rgb for _, rgb in footage.video_frames(span.name, span.frames(footage.frame_count(span.name)))]
    dense = [model.dense(f, score_threshold=EVAL_SCORE_THRESHOLD) for f in tqdm(frames, desc="dense", leave=False)]
    reference = []
    for result in dense:
        keep = result.detections.scores >= model.default_score_threshold
        reference.append(GroundTruth(result.detections.boxes[keep], ["person"] * int(keep.sum())))
    out = {"video": span.name, "frames": [span.start, span.stop - 1], "short_side": model.short_side}
    for budget in budgets:
        stream = model.new_stream()
        results = [model(f, stream, budget=budget, score_threshold=EVAL_SCORE_THRESHOLD)
                   for f in tqdm(frames, desc=f"budget {budget}", leave=False)]
        out[f"budget_{budget}"] = {
            "map50_vs_dense": mean_average_precision([r.detections for r in results], reference),
            "gflops_fraction": float(np.mean([r.usage.gflops / r.usage.gflops_dense for r in results])),
        }
    return out


def evaluate_head(head_dir: Path, threads: int = 1, annotate: Path | None = None) -> dict:
    """Compute every metric of the model card and write `metrics.json` into `head_dir`."""
    torch.set_num_threads(threads)
    head = TokenHead.from_folder(head_dir)
    from eventful_perception.models.base import EventfulViT

    threshold = EventfulViT.default_score_threshold
    features = FrameFeatures()
    metrics = {"score_threshold": threshold, "max_detections": head.config.max_detections,
               "nms_iou": head.config.nms_iou}
    for short_side in SCALES:
        metrics[f"short_side_{short_side}"] = scale_metrics(head, features, short_side, threshold)
        print(f"[evaluate] {short_side}: {json.dumps(metrics[f'short_side_{short_side}'])}", flush=True)
    metrics["eventful_vs_dense"] = eventful_vs_dense(head_dir)
    print(f"[evaluate] eventful: {json.dumps(metrics['eventful_vs_dense'])}", flush=True)
    (head_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(markdown_tables(metrics), flush=True)
    if annotate is not None:
        from eventful_perception.training.annotate import write_annotated

        write_annotated(head, features, annotate, threshold)
    return metrics


_ROWS = (
    ("precision / recall at the default threshold vs hand labels (23 persons, 5 frames)",
     lambda m: f"{m['hand_precision']:.2f} / {m['hand_recall']:.2f}"),
    ("mAP50 vs hand labels", lambda m: f"{m['hand_map50']:.2f}"),
    ("mAP50 vs teacher labels (vtest 636-794 every 12th, carphone every 10th)", lambda m: f"{m['teacher_map50']:.2f}"),
    ("precision / recall vs teacher labels", lambda m: f"{m['teacher_precision']:.2f} / {m['teacher_recall']:.2f}"),
    ("recall of persons taller than 100 px (vtest, teacher labels)", lambda m: f"{m['tall_recall_vs_teacher']:.2f}"),
    ("boxes per frame on the one-person close-up (carphone)", lambda m: f"{m['closeup_boxes_per_frame']:.2f}"),
    ("false person boxes per frame, empty street (bikes, 11 frames)", lambda m: f"{m['empty_street_persons_per_frame']:.2f}"),
    ("person boxes per frame on the animated rabbit (bigbuckbunny, 4 frames)",
     lambda m: f"{m['cartoon_rabbit_persons_per_frame']:.2f}"),
    *((f"detections scoring {low}-{high}: share that match a person (how many)",
       lambda m, i=i: _bin_cell(m["precision_by_score"][i]))
      for i, (low, high) in enumerate(zip(SCORE_BINS, SCORE_BINS[1:]))),
)


def _bin_cell(entry: dict) -> str:
    share = "-" if entry["precision"] is None else f"{entry['precision']:.2f}"
    return f"{share} ({entry['detections']})"


def markdown_tables(metrics: dict) -> str:
    """The model card's metric tables from `metrics.json`'s content."""
    lines = ["| held out, threshold " + f"{metrics['score_threshold']} | " + " | ".join(
        f"short side {s}" for s in SCALES) + " |", "|---" * (len(SCALES) + 1) + "|"]
    for name, cell in _ROWS:
        lines.append(f"| {name} | " + " | ".join(cell(metrics[f"short_side_{s}"]) for s in SCALES) + " |")
    eventful = metrics["eventful_vs_dense"]
    lines += ["", f"| eventful vs dense, {eventful['video']} frames {eventful['frames'][0]}-{eventful['frames'][1]} "
              f"(short side {eventful['short_side']}) | mAP50 vs dense | GFLOPs vs dense |", "|---|---|---|"]
    for budget in BUDGETS:
        entry = eventful[f"budget_{budget}"]
        lines.append(f"| budget {budget} | {entry['map50_vs_dense']:.3f} | {entry['gflops_fraction']:.0%} |")
    return "\n".join(lines)
