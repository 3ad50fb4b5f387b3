"""`python -m eventful_perception.training {labels,features,train,eventful,all}`: train the default head.

Reproduces `eventful_perception/default_model/` from the set-up videos on a CPU: pseudo-labels
from classic OpenCV detectors, frozen DINOv2 features, the token head, held-out mAP50 and the
eventful-vs-dense mAP50. Every step caches its output under `<cache>/training/`.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from eventful_perception import assets
from eventful_perception.training import eventful_eval
from eventful_perception.training.features import SHORT_SIDE, ClipFeatures, cache_features
from eventful_perception.training.labels import FrameLabels, LabelConfig, label_clip, load_labels, save_labels
from eventful_perception.training.train import (TrainConfig, build_training_set, evaluate, evaluate_at_threshold,
                                                predict_clip, split, train_head)

CLIPS = ("vtest.avi", "tree.avi")
DEFAULT_SCORE_THRESHOLD = 0.5  # what the model applies unless told otherwise


def _work_dir() -> Path:
    return assets.cache_dir() / "training"


def step_labels(args: argparse.Namespace) -> list[dict[int, FrameLabels]]:
    """Pseudo-labels of every clip (cached JSON, recomputed when the config changes)."""
    out = []
    for clip in args.clips:
        path = _work_dir() / f"labels_{Path(clip).stem}.json"
        config = LabelConfig(frame_step=args.frame_step)
        if args.force or not path.is_file() or json.loads(path.read_text())["config"] != asdict(config):
            save_labels(label_clip(assets.video_path(clip), config), path, clip, config)
        out.append(load_labels(path))
        boxes = sum(len(frame.boxes) for frame in out[-1].values())
        print(f"[labels] {clip}: {len(out[-1])} frames, {boxes} person boxes -> {path}", flush=True)
    return out


def step_features(args: argparse.Namespace, labels: list[dict[int, FrameLabels]]) -> list[ClipFeatures]:
    """Frozen backbone tokens of the labelled frames (cached)."""
    out = []
    for clip, clip_labels in zip(args.clips, labels):
        path = _work_dir() / f"features_{Path(clip).stem}_{SHORT_SIDE}.safetensors"
        out.append(cache_features(assets.video_path(clip), sorted(clip_labels),
                                  assets.default_backbone_dir(), path))
        print(f"[features] {clip}: {tuple(out[-1].tokens.shape)} -> {path}", flush=True)
    return out


def step_train(args: argparse.Namespace, labels: list[dict[int, FrameLabels]], features: list[ClipFeatures]) -> dict:
    """Train the head, evaluate the held-out tails, write the head and metrics.json."""
    config = TrainConfig(epochs=args.epochs, mlp_dim=args.mlp_dim)
    train_frames, test_frames = zip(*(split(sorted(l), config.holdout) for l in labels))
    head = train_head(build_training_set(features, labels, list(train_frames)), config)
    precision, recall = evaluate_at_threshold(head, features, labels, list(test_frames), DEFAULT_SCORE_THRESHOLD)
    metrics = {
        "map50_heldout": evaluate(head, features, labels, list(test_frames), config),
        "map50_train": evaluate(head, features, labels, list(train_frames), config),
        f"precision_recall_heldout_at_{DEFAULT_SCORE_THRESHOLD}": [precision, recall],
        "heldout_frames": {c: [f[0], f[-1]] for c, f in zip(args.clips, test_frames) if f},
        "train_config": asdict(config),
    }
    for clip, frames, clip_labels, clip_features in zip(args.clips, test_frames, labels, features):
        if any(len(clip_labels[f].boxes) for f in frames):
            metrics[f"map50_heldout_{clip}"] = evaluate(head, [clip_features], [clip_labels], [frames], config)
        else:  # a clip without people: how often the head fires at its default threshold
            found = predict_clip(head, clip_features, frames, DEFAULT_SCORE_THRESHOLD)
            metrics[f"detections_per_frame_heldout_{clip}"] = sum(map(len, found)) / len(frames)
    head.save(args.out)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"[train] held-out mAP50 {metrics['map50_heldout']:.3f} -> {args.out}", flush=True)
    return metrics


def step_eventful(args: argparse.Namespace, labels: list[dict[int, FrameLabels]]) -> None:
    """Add the eventful-vs-dense evaluation to metrics.json."""
    path = args.out / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics["eventful_vs_dense"] = eventful_eval.run(args.out, args.clips[0], args.budgets,
                                                     LabelConfig(frame_step=args.frame_step), labels[0])
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"[eventful] {json.dumps(metrics['eventful_vs_dense'])} -> {path}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the chosen step and the steps it needs."""
    torch.set_num_threads(args.threads)
    args.out = Path(args.out)
    labels = step_labels(args)
    if args.step in ("features", "train", "all"):
        features = step_features(args, labels)
    if args.step in ("train", "all"):
        step_train(args, labels, features)
    if args.step in ("eventful", "all"):
        step_eventful(args, labels)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The training command line."""
    parser = argparse.ArgumentParser(prog="python -m eventful_perception.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("labels", "features", "train", "eventful", "all"),
                        help="pipeline step to run (earlier steps run too, reusing their cache)")
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=sorted(assets.VIDEOS),
                        help="static-camera set-up clips (default: %(default)s)")
    parser.add_argument("--out", default=str(assets.default_head_dir()),
                        help="folder for the head weights and metrics.json (default: the committed one)")
    parser.add_argument("--frame-step", type=int, default=2, help="label every N-th frame")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--mlp-dim", type=int, default=TrainConfig.mlp_dim)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25],
                        help="eventful budgets to compare against dense outputs")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--force", action="store_true", help="recompute cached labels")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m eventful_perception.training`."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
